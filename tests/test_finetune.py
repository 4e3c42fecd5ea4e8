"""CPU smoke tests of the training scripts: 2 steps each on tiny data with a tiny random Llama,
asserting that the trainable weights changed (trl's own test_sft_trainer.py does the same)."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # finetune/ is scripts, not an installed package
from finetune import dpo, export, reward, sft  # noqa: E402

PROMPT = [{"role": "system", "content": "You moderate marketplace items."},
          {"role": "user", "content": "Moderate this live_chat item.\n<item>\n{\"text\": \"WIN a free cruise, text CLAIM\"}\n</item>"}]
ALLOW = '{"decision":"allow","violations":[],"rationale":"No policy is broken."}'
SPAM = ('{"decision":"remove","violations":[{"policy":"spam","severity":"low","evidence":"WIN a free cruise"}],'
        '"rationale":"Breaks spam."}')


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random LlamaForCausalLM (hidden 32, 2 layers) with the default model's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from moderation.model import prepare_base_model

    tokenizer = AutoTokenizer.from_pretrained(prepare_base_model())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def write_rows(folder, split_rows):
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in split_rows.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({**r, "source": "test"}) + "\n" for r in rows))
    return str(folder)


def assistant(text):
    return [{"role": "assistant", "content": text}]


def common_args(out_dir, model):
    return ["--model_name_or_path", model, "--output_dir", str(out_dir), "--max_steps", "2", "--report_to", "none",
            "--per_device_train_batch_size", "2", "--learning_rate", "1e-2", "--logging_steps", "1",
            "--save_strategy", "no", "--use_cpu", "true", "--max_length", "128", "--use_peft", "true",
            "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "q_proj", "v_proj"]


def trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_changed(before, model):
    after = dict(model.named_parameters())
    assert before, "nothing was trainable"
    changed = [n for n, p in before.items() if not torch.equal(p, after[n].detach())]
    # LoRA A matrices get no gradient on the first step (B starts at zero), so look at B and heads
    assert any("lora_B" in n or "score" in n for n in changed), f"no trainable weight changed: {list(before)[:4]}"


def run_two_steps(module, argv, monkeypatch):
    """Parse like the script does, wrap train() to snapshot the weights first, then run main()."""
    from transformers import Trainer

    snapshot = {}
    original = Trainer.train

    def train(self, *a, **k):
        snapshot.update(trainable(self.model))
        snapshot["__model__"] = self.model
        return original(self, *a, **k)

    monkeypatch.setattr(Trainer, "train", train)
    result = module.main(*module.make_parser().parse_args_and_config(args=argv))
    model = snapshot.pop("__model__")
    assert_changed(snapshot, model)
    return result


def test_sft_two_steps_change_lora_weights_and_mask_the_prompt(tmp_path, tiny_model, monkeypatch):
    rows = [{"messages": [*PROMPT, *assistant(v)]} for v in (SPAM, ALLOW, SPAM, ALLOW)]
    data = write_rows(tmp_path / "sft", {"train": rows})
    trainer, _ = run_two_steps(sft, [*common_args(tmp_path / "out", tiny_model), "--dataset_name", data], monkeypatch)
    example = trainer.train_dataset[0]
    masked = [label == -100 for label in example["labels"]]
    assert 0 < sum(masked) < len(masked) and not masked[-2]  # loss on the verdict only, prompt masked
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    merged = export.merge(tmp_path / "out", tmp_path / "merged")
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    copied = export.copy_adapter(tmp_path / "out", tmp_path / "half")
    assert json.loads((copied / "adapter_config.json").read_text())["base_model_name_or_path"] == "base"
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(str(copied / "adapter_model.safetensors")).values()} == {torch.float16}


def test_reward_two_steps_change_weights_and_report_pairwise_accuracy(tmp_path, tiny_model, monkeypatch):
    pairs = [{"prompt": PROMPT, "chosen": assistant(SPAM), "rejected": assistant(ALLOW)}] * 4
    data = write_rows(tmp_path / "pref", {"train": pairs, "test": pairs[:2]})
    argv = [*common_args(tmp_path / "rm", tiny_model), "--dataset_name", data, "--lora_task_type", "SEQ_CLS",
            "--lora_modules_to_save", "score"]
    _, figures = run_two_steps(reward, argv, monkeypatch)
    saved = json.loads((tmp_path / "rm" / "pairwise_accuracy.json").read_text())
    assert saved == figures and 0 <= figures["accuracy_after"] <= 1 and figures["pairs_held_out"] == 2


def test_dpo_two_steps_change_lora_weights(tmp_path, tiny_model, monkeypatch):
    pairs = [{"prompt": PROMPT, "chosen": assistant(SPAM), "rejected": assistant(ALLOW)}] * 4
    data = write_rows(tmp_path / "pref", {"train": pairs})
    run_two_steps(dpo, [*common_args(tmp_path / "dpo", tiny_model), "--dataset_name", data], monkeypatch)
    assert (tmp_path / "dpo" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("script, config", [(sft, "sft_smollm2_cpu.yaml"),
                                            (reward, "reward_smollm2_cpu.yaml"), (dpo, "dpo_smollm2_cpu.yaml")])
def test_configs_parse(script, config):
    """The CPU configs (the GPU one asks for bf16, which a CPU-only CI cannot parse)."""
    root = Path(__file__).resolve().parent.parent
    script_args, training_args, model_args = script.make_parser().parse_args_and_config(
        args=["--config", str(root / "finetune" / "configs" / config)])
    assert script_args.dataset_name.startswith("data/curated/") and model_args.use_peft and training_args.report_to == []


def test_score_verdicts_routes_the_lowest_rewards_and_measures_the_effect():
    from finetune.score_verdicts import effect, route

    routed, cut = route([0.5, -2.0, 1.5, -1.0, 3.0], share=0.4, cut=None)
    assert routed == [False, True, False, True, False] and -1.0 <= cut < 0.5
    assert route([0.5, -2.0], share=None, cut=0.0)[0] == [False, True]
    spam = {"policy": "spam", "severity": "low", "evidence": "x"}
    records = [{"id": "a", "verdict": {"violations": [spam]}}, {"id": "b", "verdict": {"violations": []}},
               {"id": "c", "verdict": {"violations": [spam]}}]
    gold = {"a": frozenset({"spam"}), "b": frozenset({"spam"}), "c": frozenset()}
    summary = effect(records, gold, [False, True, True])
    assert summary["kept"] == {"n": 1, "exact_match_accuracy": 1.0, "flagged": 1, "flag_precision": 1.0}
    assert summary["routed"]["exact_match_accuracy"] == 0.0 and summary["routed"]["flag_precision"] == 0.0


def test_lean_sft_roles_mark_the_decision_and_policy_ids_only(tiny_model):
    from transformers import AutoTokenizer

    from finetune.lean_sft import DECISION, OTHER, POLICY, token_roles

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    encoded = tokenizer(SPAM, add_special_tokens=False, return_offsets_mapping=True)
    roles = token_roles(SPAM, encoded["offset_mapping"])
    text = {role: "".join(tokenizer.decode([t]) for t, r in zip(encoded["input_ids"], roles) if r == role)
            for role in (DECISION, POLICY, OTHER)}
    assert text[DECISION] == "remove" and text[POLICY] == "spam"
    assert "WIN a free cruise" in text[OTHER] and "severity" in text[OTHER]


def test_lean_sft_weighted_loss_follows_the_weights(tiny_model):
    from transformers import AutoTokenizer

    from finetune import lean_sft

    config = lean_sft.LeanSFTConfig(model=tiny_model, lora_r=4, lora_layers=2, dtype="float32")
    model, tokenizer, _ = lean_sft.build_model(config)
    rows = [{"messages": [*PROMPT, *assistant(v)]} for v in (SPAM, ALLOW)]
    encoded, skipped = lean_sft.encode_rows(rows, AutoTokenizer.from_pretrained(tiny_model), 256)
    ids, mask, labels, roles = lean_sft.collate(encoded, [0, 1], tokenizer.pad_token_id)
    assert skipped == 0 and int((roles == lean_sft.DECISION).sum()) == 2 and ((labels == -100) == (roles == -1)).all()
    with torch.no_grad():
        plain, n, decision = lean_sft.completion_loss(model, ids, labels, roles, (1.0, 1.0, 1.0), "float32")
        only_decision, _, _ = lean_sft.completion_loss(model, ids, labels, roles, (1e-9, 1e-9, 1.0), "float32")
    assert n == int((labels != -100).sum())
    assert only_decision.item() == pytest.approx(decision, rel=1e-4) and plain.item() != pytest.approx(decision, rel=1e-3)


def test_lean_sft_trains_checkpoints_and_resumes(tmp_path, tiny_model):
    from finetune import lean_sft

    rows = [{"messages": [*PROMPT, *assistant(v)]} for v in (SPAM, ALLOW) * 6]
    data = write_rows(tmp_path / "sft", {"train": rows})
    argv = ["--model", tiny_model, "--dataset", data, "--output_dir", str(tmp_path / "out"), "--batch_tokens", "256",
            "--lora_r", "4", "--lora_layers", "2", "--held_out", "2", "--save_steps", "1", "--log_steps", "1",
            "--learning_rate", "0.01", "--decision_weight", "10", "--epochs", "1", "--max_steps", "2"]
    first = lean_sft.train(lean_sft.parse_config(argv))
    state = torch.load(tmp_path / "out" / "checkpoint" / "state.pt", weights_only=False)
    assert state["step"] == 2 and any("lora_B" in n and p.abs().sum() > 0 for n, p in state["weights"].items())
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2] and all(e["decision_loss"] > 0 for e in log)
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    again = lean_sft.train(lean_sft.parse_config([*argv[:-1], "3"]))  # resumes at step 2, runs one more
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3] and again["steps"] == 3
    assert again["train_tokens"] > first["train_tokens"] and first["held_out_decision_loss"] > 0


def test_routing_by_the_classifiers_uncertainty_routes_scores_nearest_a_threshold_and_counts_wrong_verdicts_caught():
    from finetune.score_verdicts import effect, route, uncertainty

    spam = {"policy": "spam", "severity": "low", "evidence": "x"}
    records = [{"id": i, "verdict": {"violations": [spam] if s >= 0.5 else []}, "scores": {"policies": {"spam": s}}}
               for i, s in (("a", 0.95), ("b", 0.52), ("c", 0.1), ("d", 0.45))]
    doubt = uncertainty(records, {"spam": 0.5})
    assert doubt == pytest.approx([0.45, 0.02, 0.4, 0.05])
    routed, _ = route(doubt, share=0.5, cut=None)
    assert routed == [False, True, False, True]
    gold = {"a": frozenset({"spam"}), "b": frozenset(), "c": frozenset(), "d": frozenset({"spam"})}
    summary = effect(records, gold, routed)
    assert summary["wrong_caught"] == 1.0 and summary["routed"]["exact_match_accuracy"] == 0.0
    assert effect(records, gold, [True, False, False, False])["wrong_caught"] == 0.0


def test_a_review_rounds_data_trains_two_steps_of_reward_dpo_and_sft(tmp_path, tiny_model, monkeypatch):
    """Round data end to end: the oracle reviews a queue through the app, the store exports the case
    checks, `curate` turns only those into rows, and each trainer runs two steps on them."""
    from fastapi.testclient import TestClient

    sys.path.insert(0, str(Path(__file__).parent))
    from review_services import entries

    from moderation.cli import main as moderation
    from moderation.review import auth, interop
    from moderation.review.app import create_app
    from moderation.review.oracle import Gold, OracleReviewer
    from moderation.review.store import Store

    store = Store(str(tmp_path / "round.sqlite"))
    store.add_user("oracle", "reviewer", auth.hash_password("pw for the oracle"))
    store.create_queue("round", entries(12), {})  # every third listing flagged as counterfeit by the model
    replica = Gold("remove", frozenset({"counterfeit_ip"}))
    gold = {f"it-{i:03d}": replica if i % 2 == 0 else Gold("allow", frozenset()) for i in range(12)}
    oracle = OracleReviewer(TestClient(create_app(store)), "oracle", "pw for the oracle", gold)
    oracle.login()
    counts = oracle.review("round")
    assert counts["correct"] > 0 and counts["accept"] > 0
    interop.export_jsonl(interop.finished(store, "round"), tmp_path / "checks.jsonl")
    curated = tmp_path / "curated"
    assert moderation(["curate", "-o", str(curated), "--case-checks", str(tmp_path / "checks.jsonl"), "--sets", "none",
                       "--test-sets", "marketplace", "--held-out-share", "0.25"]) == 0
    pairs = [json.loads(line) for line in (curated / "preference" / "train.jsonl").read_text().splitlines()]
    assert pairs and {p["source"] for p in pairs} == {"case_check"}  # real corrections only, nothing synthetic
    real = ["--max_length", "1024"]  # the rows are whole moderation prompts
    rm = [*common_args(tmp_path / "rm", tiny_model), *real, "--lora_task_type", "SEQ_CLS", "--lora_modules_to_save", "score"]
    run_two_steps(reward, [*rm, "--dataset_name", str(curated / "preference")], monkeypatch)
    run_two_steps(dpo, [*common_args(tmp_path / "dpo", tiny_model), *real, "--dataset_name", str(curated / "preference")],
                  monkeypatch)
    run_two_steps(sft, [*common_args(tmp_path / "sft", tiny_model), *real, "--dataset_name", str(curated / "sft")], monkeypatch)
