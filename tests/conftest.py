import os

# Offline always, set before anything imports huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from moderation.backends import BackendConfig  # noqa: E402
from moderation.backends.fake import FakeBackend  # noqa: E402
from moderation.pipeline import Moderator  # noqa: E402
from moderation.policy import load_policy  # noqa: E402
from moderation.prompts import load_template  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "moderation" / "data" / "demo_dump.jsonl"


@pytest.fixture(scope="session")
def policy():
    return load_policy()


@pytest.fixture(scope="session")
def template():
    return load_template()


@pytest.fixture
def make_moderator(policy, template):
    def make(respond=None, **kwargs):
        adapter = kwargs.get("adapter")
        config = BackendConfig(adapters=(adapter,) if adapter else ())
        return Moderator(FakeBackend(config, respond=respond), policy, template, **kwargs)

    return make


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def listing(i, **extra) -> dict:
    return {"id": f"it-{i:04d}", "title": f"Item number {i}", "description": "A plain household item.", "price": 10 + i, **extra}
