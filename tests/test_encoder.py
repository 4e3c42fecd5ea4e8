"""The fine-tuned encoder scorer (moderation/encoder.py) and its trainer (finetune/fit_encoder.py)."""

import json

import numpy as np
import pytest
import torch

from moderation.encoder import ENCODER_FORMAT, WEIGHTS_FILE, EncoderScorer, build_classifier, item_text, length_batches, \
    trainable_state
from moderation.errors import ConfigError
from moderation.heads import CARD_FILE, heads_sha, load_heads
from moderation.policy import load_policy
from moderation.schema import DEFAULT_POLICY_IDS

POLICY = load_policy()
CORPUS_LANGUAGES = ("en", "de", "ja", "ar")


def test_the_encoder_reads_the_item_between_the_prompt_tags_and_all_of_a_bare_text():
    prompt = 'Extra rules for region UK:\n- knives\nModerate this listing item.\n<item>\n{"title": "Oak table"}\n</item>'
    assert item_text(prompt) == '{"title": "Oak table"}'
    assert item_text("just a chat line") == "just a chat line"
    assert item_text("<item>\nunclosed") == "unclosed"


def test_length_batches_cover_every_row_once_in_few_shapes_within_the_token_budget():
    from moderation.encoder import PAD_TO

    lengths = [5, 50, 7, 30, 30, 1, 64, 33, 40, 0]
    batches = length_batches(lengths, 128)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    widths = [-(-max(max(lengths[i] for i in b), 1) // PAD_TO) * PAD_TO for b in batches]
    assert all(len(b) * w <= 128 for b, w in zip(batches, widths))
    assert widths == sorted(widths) and len(set(map(tuple, zip(widths, map(len, batches))))) <= 2 * len(set(widths))
    assert length_batches(lengths, 128, order=[9, 5, 0, 2])[0] == [9, 5, 0, 2]  # a given order is kept within a width


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A random BertModel (hidden 32, 2 layers) with the real encoder's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from moderation.model import prepare_encoder_model

    tokenizer = AutoTokenizer.from_pretrained(prepare_encoder_model())
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def save_tiny_scorer(directory, encoder_dir, lexical_weight=0.0, rank=4):
    """A fine-tune of the tiny encoder with non-zero LoRA matrices, stored as fit_encoder.py stores one."""
    from safetensors.torch import save_file

    from moderation.baselines import TfidfBaseline
    from moderation.heads import LEXICAL_FILE
    from moderation.screen import TfidfScorer

    torch.manual_seed(1)
    module = build_classifier(encoder_dir, len(DEFAULT_POLICY_IDS), rank=rank, alpha=8)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # peft starts B at zero: make the LoRA change something
    save_file(trainable_state(module), str(directory / WEIGHTS_FILE))
    texts = ["WIN a free cruise, text CLAIM now", "Oak dining table", "FREE iPhone, claim today", "Picture books"]
    y = np.zeros((4, len(DEFAULT_POLICY_IDS)), dtype=int)
    y[[0, 2], DEFAULT_POLICY_IDS.index("spam")] = 1
    lexical = TfidfScorer.from_baseline(TfidfBaseline(DEFAULT_POLICY_IDS, max_features=500).fit_texts(texts, y))
    np.savez_compressed(directory / LEXICAL_FILE, **lexical.arrays())
    card = {"format": ENCODER_FORMAT, "model": encoder_dir, "rank": rank, "alpha": 8, "max_tokens": 64,
            "lexical_weight": lexical_weight, "policies": list(DEFAULT_POLICY_IDS), "vectorizer": lexical.settings}
    (directory / CARD_FILE).write_text(json.dumps(card))
    return module


def test_a_stored_fine_tune_loads_merged_and_scores_like_the_module_it_was_saved_from(tmp_path, tiny_encoder):
    module = save_tiny_scorer(tmp_path, tiny_encoder)
    scorer = load_heads(tmp_path, POLICY, dtype="float32")
    assert isinstance(scorer, EncoderScorer) and scorer.sha == heads_sha(tmp_path)
    assert not any("lora" in name for name, _ in scorer.module.named_parameters())  # merged: one copy of the weights
    texts = ["Moderate this listing item.\n<item>\nWIN a free cruise\n</item>", "Oak table, seats six, barely used"]
    ids = scorer.tokens([item_text(t) for t in texts])
    module.eval()
    with torch.no_grad():
        expected = torch.sigmoid(module(*scorer.tokens.batch(ids))).numpy()
    np.testing.assert_allclose(scorer.policy_scores(texts), expected, atol=1e-4)
    alone = scorer.policy_scores(texts[1:])  # a row scores the same beside a longer one as alone
    np.testing.assert_allclose(alone[0], expected[1], atol=1e-4)
    record = scorer.score([[{"role": "user", "content": t}] for t in texts])[0]
    assert record["scorer"] == "encoder" and set(record["policies"]) == set(DEFAULT_POLICY_IDS)


def test_the_tfidf_share_mixes_into_the_score_and_a_bad_folder_is_refused(tmp_path, tiny_encoder):
    save_tiny_scorer(tmp_path, tiny_encoder, lexical_weight=0.5)
    scorer = load_heads(tmp_path, POLICY, dtype="float32")
    texts = ["WIN a free cruise, text CLAIM now"]
    mixed = (scorer.encoder_scores(texts) + scorer.lexical.score_texts(texts)) / 2
    np.testing.assert_allclose(scorer.policy_scores(texts), mixed, atol=1e-6)
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / WEIGHTS_FILE))
    save_file({k: v for k, v in state.items() if not k.startswith("head.")}, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(ConfigError, match="lacks"):
        load_heads(tmp_path, POLICY)
    card = json.loads((tmp_path / CARD_FILE).read_text())
    (tmp_path / CARD_FILE).write_text(json.dumps({k: v for k, v in card.items() if k != "rank"}))
    with pytest.raises(ConfigError, match="lacks rank"):
        load_heads(tmp_path, POLICY)
    (tmp_path / CARD_FILE).write_text(json.dumps({**card, "policies": ["spam"]}))
    with pytest.raises(ConfigError, match="another taxonomy"):
        load_heads(tmp_path, POLICY)


def corpus_rows(n_per_language: int) -> list[dict]:
    """Curated-style rows (messages, gold verdict) from the training corpus, a few languages."""
    from moderation.resources import SOURCE_ROOT

    rows = []
    for language in CORPUS_LANGUAGES:
        lines = (SOURCE_ROOT / "eval_sets" / "marketplace_corpus" / f"{language}.jsonl").read_text().splitlines()
        for line in lines[:n_per_language]:
            row = json.loads(line)
            item = {k: row[k] for k in ("kind", "title", "description", "seller", "price", "currency") if k in row}
            verdict = {"decision": row["gold"]["decision"], "violations": [{"policy": p} for p in row["gold"]["violations"]]}
            rows.append({"messages": [{"role": "user", "content": f"Moderate this listing item.\n<item>\n{json.dumps(item, ensure_ascii=False)}\n</item>"},
                                      {"role": "assistant", "content": json.dumps(verdict)}]})
    return rows


@pytest.mark.slow
def test_the_trainer_fits_64_rows_of_its_own_training_data(tmp_path):
    """A trainer that cannot learn its own training rows has a bug: 64 rows in four languages, the real encoder."""
    from finetune.fit_encoder import main

    dataset = tmp_path / "sft"
    dataset.mkdir()
    rows = corpus_rows(16)
    (dataset / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    out = tmp_path / "scorer"
    assert main(["--dataset", str(dataset), "--out", str(out), "--rows", "64", "--epochs", "8", "--batch-tokens", "1024",
                 "--max-tokens", "96", "--dropout", "0", "--max-features", "2000"]) == 0
    card = json.loads((out / CARD_FILE).read_text())
    assert card["rows"] == 64 and card["format"] == ENCODER_FORMAT
    assert card["training"]["train_exact_accuracy"] >= 0.95, card["training"]
    assert not (out / "checkpoint.pt").exists()
    scorer = load_heads(out, POLICY)
    assert scorer.policy_scores([rows[0]["messages"][0]["content"]]).shape == (1, len(DEFAULT_POLICY_IDS))


def test_a_stopped_training_resumes_from_its_checkpoint(tmp_path, tiny_encoder):
    """Two steps, a checkpoint after the first: a rerun after a crash does not start over, and a rerun with other
    settings does not resume it."""
    from finetune.fit_encoder import CHECKPOINT, main

    dataset = tmp_path / "sft"
    dataset.mkdir()
    (dataset / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in corpus_rows(2)))
    out = tmp_path / "scorer"
    args = ["--dataset", str(dataset), "--out", str(out), "--model", tiny_encoder, "--rank", "2", "--epochs", "2",
            "--batch-tokens", "100000", "--checkpoint-every", "1", "--max-features", "500"]
    import finetune.fit_encoder as trainer

    real = trainer._save_checkpoint

    def crash_after_saving(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt

    trainer._save_checkpoint = crash_after_saving
    try:
        with pytest.raises(KeyboardInterrupt):
            main(args)
    finally:
        trainer._save_checkpoint = real
    assert torch.load(out / CHECKPOINT, weights_only=False)["step"] == 1
    with pytest.raises(SystemExit, match=r"other data or settings \(lr\)"):  # a stale checkpoint is never mixed in
        main([*args, "--lr", "1e-3"])
    assert main(args) == 0
    card = json.loads((out / CARD_FILE).read_text())
    assert card["training"]["steps"] == 2 and len(json.loads((out / "losses.json").read_text())) == 2


def test_a_round_continues_the_shipped_fine_tune_and_keeps_its_tfidf_half(tmp_path, tiny_encoder):
    """--init: the encoder, LoRA shape and TF-IDF come from the starting scorer; the weights start where it ended."""
    from finetune.fit_encoder import main
    from moderation.heads import LEXICAL_FILE

    start = tmp_path / "shipped"
    start.mkdir()
    save_tiny_scorer(start, tiny_encoder)
    dataset = tmp_path / "checks"
    dataset.mkdir()
    (dataset / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in corpus_rows(1)))
    out = tmp_path / "round"
    assert main(["--dataset", str(dataset), "--out", str(out), "--init", str(start), "--epochs", "1", "--lr", "0",
                 "--head-lr", "0", "--batch-tokens", "100000"]) == 0
    card = json.loads((out / CARD_FILE).read_text())
    assert (card["model"], card["rank"], card["max_tokens"]) == (tiny_encoder, 4, 64)
    assert (out / LEXICAL_FILE).read_bytes() == (start / LEXICAL_FILE).read_bytes()
    texts = ["WIN a free cruise, text CLAIM now", "Oak table"]
    np.testing.assert_allclose(load_heads(out, POLICY, dtype="float32").policy_scores(texts),  # learning rate 0: unchanged
                               load_heads(start, POLICY, dtype="float32").policy_scores(texts), atol=1e-5)
