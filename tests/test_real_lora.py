"""LoRA adapters on the default model: vLLM's enable_lora with one LoRARequest per request,
and the transformers backend through PEFT. Slow: builds its own engine. CI runs these."""

import json

import pytest
from conftest import DEMO

from moderation.backends import BackendConfig, load_backend
from moderation.cli import main
from moderation.items import read_items
from moderation.model import load_adapter, prepare_base_model
from moderation.pipeline import Moderator

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """A random (not zero-initialised) LoRA on q/v projections: it visibly changes the model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(prepare_base_model())
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    path = tmp_path_factory.mktemp("adapters") / "random-eu"
    lora.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vllm_lora(adapter_dir):
    pytest.importorskip("vllm")
    # float32: these tests compare outputs exactly across engine batches; bfloat16 (the CPU default)
    # rounds differently as batches differ, which changes greedy wording, not what is tested here
    backend = load_backend("vllm", BackendConfig(model="base", enforce_eager=True, dtype="float32", max_model_len=4096, adapters=(load_adapter(f"eu={adapter_dir}"),)))
    yield backend
    backend.close()


def items(n):
    return [item for _, item in list(read_items(DEMO))[:n]]


def test_one_engine_serves_the_base_model_and_the_adapter_per_request(vllm_lora, policy, template):
    adapter = vllm_lora.config.adapters[0]
    base = Moderator(vllm_lora, policy, template).moderate(items(4))
    tuned = Moderator(vllm_lora, policy, template, adapter=adapter).moderate(items(4))
    assert [o.scores["violation"] for o in base] != [o.scores["violation"] for o in tuned]
    assert Moderator(vllm_lora, policy, template, adapter=adapter).provenance()["adapter_sha"] == adapter.sha
    again = Moderator(vllm_lora, policy, template).moderate(items(4))
    assert [o.verdict for o in again] == [o.verdict for o in base]  # the adapter did not leak into base requests


def test_transformers_applies_the_same_adapter(vllm_lora, policy, template, adapter_dir):
    from moderation.scoring import decision_probes

    adapter = vllm_lora.config.adapters[0]
    tf = load_backend("transformers", BackendConfig(model="base", adapters=(adapter,)))
    try:
        messages = [template.messages(item, policy) for item in items(2)]
        for name in (None, "eu"):
            fast = vllm_lora.label_probs(decision_probes(messages, name))
            slow = tf.label_probs(decision_probes(messages, name))
            for a, b in zip(fast, slow):
                assert max(abs(a[k] - b[k]) for k in a) < 0.05, (name, a, b)
    finally:
        tf.close()


def test_unknown_adapter_directory_is_a_usage_error(tmp_path, capsys):
    code = main(["run", str(DEMO), "-o", str(tmp_path / "o.jsonl"), "--backend", "fake", "--adapter", str(tmp_path)])
    assert code == 2 and "not a PEFT LoRA adapter directory" in capsys.readouterr().err


def test_run_with_adapter_records_it(tmp_path, adapter_dir):
    out = tmp_path / "o.jsonl"
    code = main(["run", str(DEMO), "-o", str(out), "--backend", "fake", "--adapter", f"eu={adapter_dir}", "--no-progress"])
    assert code == 0
    first = json.loads(out.read_text().splitlines()[0])
    assert first["provenance"]["adapter"] == "eu" and len(first["provenance"]["adapter_sha"]) == 64
