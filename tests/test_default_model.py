"""`--model default` is the base model plus the shipped adapter, its prompt and its thresholds."""

import json

import pytest

from moderation.errors import ConfigError
from moderation.factory import RunSettings, run_thresholds
from moderation.items import Item
from moderation.model import DEFAULT_ADAPTER, PROFILE_FILE, PROJECT_ROOT, load_adapter, model_profile
from moderation.policy import load_policy
from moderation.schema import DEFAULT_POLICY_IDS
from moderation.scoring import check_thresholds

POLICY = load_policy()


def args(**kw):
    base = {"model": "default", "backend": "vllm", "thresholds": None, "scores": True}
    return RunSettings(**{**base, **kw})


def test_default_profile_names_the_adapter_its_prompt_and_thresholds():
    profile = model_profile("default")
    assert profile.label == f"default:SmolLM2-135M-Instruct+{DEFAULT_ADAPTER.name}"
    shipped = json.loads((DEFAULT_ADAPTER / PROFILE_FILE).read_text())
    assert profile.prompt == str(PROJECT_ROOT / shipped["prompt"]) and (PROJECT_ROOT / shipped["prompt"]).is_file()
    assert set(profile.thresholds) == set(DEFAULT_POLICY_IDS)
    assert check_thresholds(profile.thresholds, "shipped", POLICY) == profile.thresholds
    assert model_profile("base").thresholds is None and model_profile("base").prompt is None
    assert model_profile("/models/x").label == "/models/x"


def test_the_shipped_adapter_is_a_small_lora_on_the_default_base():
    adapter = load_adapter(str(DEFAULT_ADAPTER))
    assert adapter.rank >= 1 and len(adapter.sha) == 64
    size = sum(p.stat().st_size for p in DEFAULT_ADAPTER.iterdir())
    assert size < 25 * 1024 * 1024  # adapter plus card and profile stay small enough to commit
    assert (DEFAULT_ADAPTER / "README.md").is_file()


def test_run_applies_the_shipped_thresholds_by_default_and_one_flag_removes_them(tmp_path):
    assert run_thresholds(args(), POLICY) == model_profile("default").thresholds
    assert run_thresholds(args(thresholds="none"), POLICY) is None
    assert run_thresholds(args(model="base"), POLICY) is None  # zero-shot: verdicts from generation
    assert run_thresholds(args(backend="fake"), POLICY) is None  # the thresholds belong to the model's own scores
    assert run_thresholds(args(scores=False), POLICY) is None
    own = tmp_path / "t.json"
    own.write_text(json.dumps({"spam": 0.3}))
    assert run_thresholds(args(thresholds=str(own)), POLICY) == {"spam": 0.3}
    own.write_text(json.dumps({"spam": 3}))
    with pytest.raises(ConfigError, match="bad entries"):
        run_thresholds(args(thresholds=str(own)), POLICY)


@pytest.mark.slow
def test_the_shipped_default_flags_obvious_violations_and_allows_obvious_clean_items(tmp_path):
    """The real default (merged adapter, vLLM, shipped prompt and thresholds) on a few plain cases."""
    pytest.importorskip("vllm")
    from moderation.cli import build_parser
    from moderation.factory import run_moderator
    from moderation.model import MANIFEST, prepare_default_model

    merged = prepare_default_model()
    manifest = json.loads((merged / MANIFEST).read_text())
    assert manifest["adapter_sha256"] == load_adapter(str(DEFAULT_ADAPTER)).sha
    # exactly what `moderation run` builds with its defaults
    moderator = run_moderator(RunSettings.from_args(build_parser().parse_args(
        ["run", "in.jsonl", "-o", str(tmp_path / "out.jsonl"), "--enforce-eager", "--max-model-len", "4096"])))
    backend = moderator.backend
    assert moderator.score_first and moderator.thresholds == model_profile("default").thresholds
    try:
        violating = [
            Item("v1", "listing", {"title": "AAA replica Rolex Submariner 1:1 mirror quality", "description": "Looks 100% real, nobody can tell. Fake papers included.", "language": "en"}),
            Item("v2", "listing", {"title": "Glock 19 with 200 rounds, no paperwork needed", "description": "Untraceable, cash only, meet in person.", "language": "en"}),
            Item("v3", "listing", {"title": "iPhone 16 Pro Max sealed $99", "description": "Pay on WhatsApp +1 555 0100 first, cheaper than the app", "language": "en"}),
        ]
        clean = [
            Item("c1", "listing", {"title": "Oak dining table, seats six", "description": "Solid oak, light scratches, pick-up in Leeds.", "language": "en"}),
            Item("c2", "listing", {"title": "Children's picture books, set of 10", "description": "Good condition, smoke-free home.", "language": "en"}),
            Item("c3", "listing", {"title": "Stainless steel water bottle 750 ml", "description": "Keeps drinks cold for 24 hours. BPA free.", "language": "en"}),
        ]
        outcomes = moderator.moderate(violating + clean)
    finally:
        backend.close()
    decisions = [o.verdict["decision"] for o in outcomes]
    assert all(d != "allow" for d in decisions[:3]), decisions
    assert all(d == "allow" for d in decisions[3:]), decisions
