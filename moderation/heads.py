"""Scorer folders, and policy heads: per-policy scores from a frozen model's hidden states and a character TF-IDF.

`load_heads` loads any scorer folder (a card, `heads.json`, names its kind): policy heads, or the
fine-tuned encoder that scores the default model since issue 27 (moderation/encoder.py). Policy heads
were the default's scores before: a LoRA fine-tune of the 135M model did not learn to make its
decision token depend on the item (see finetune/MODEL_CARD.md), while a logistic regression on the
base model's mean-pooled hidden states separates violating from clean marketplace items. With heads,
an item's score for a policy is the mean of two probabilities, each from one logistic regression per
policy:

- `PolicyHeads` on the mean-pooled hidden states of layers `layers` of a causal LM (the
  prompt's user message: region rules and the item), standardised;
- a character n-gram TF-IDF (`moderation.screen.TfidfScorer`) on the same text.

Both are fitted on the `moderation curate` rows (`finetune/fit_heads.py`) and stored as plain
arrays (no pickles). A flagged item's evidence is attributed through whichever scorer decided
(moderation.explain); the model's adapter writes a rationale only with `--rationale llm`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from moderation.errors import ConfigError
from moderation.policy import Policy
from moderation.prompts import user_text  # noqa: F401  (re-exported: what the heads read of a prompt)

LAYERS = (15, 20)
MAX_PREFIXES = 4096  # tokenized prefixes kept (one per region and kind in practice)
PREFIX_END = "<item>\n"  # the shared part of a rendered item prompt ends here (prompts/*.txt)
FEATURES_VERSION = 2  # bump when the features of a text change (2: shared prefixes computed once); keys feature caches
C = 0.05  # inverse L2 strength of the hidden-state heads, chosen on dev splits (finetune/MODEL_CARD.md)
HEADS_FILE, LEXICAL_FILE, CARD_FILE = "heads.npz", "lexical.npz", "heads.json"
HEADS_KEYS = ("mean", "scale", "coef", "intercept")
LEXICAL_KEYS = ("terms", "idf", "coef", "intercept", "fitted")


class HiddenFeatures:
    """Mean-pooled hidden states of chosen layers of a causal LM, on CPU, in `dtype` (auto: the
    machine's format, moderation.machine: bfloat16 where the CPU has it natively, else float32).

    Only the layers up to the deepest one chosen are kept, and texts go through in length-grouped
    batches of about `batch_tokens` tokens.
    """

    def __init__(self, model_dir: str | Path, layers: tuple[int, ...] = LAYERS, batch_tokens: int = 4096,
                 max_tokens: int = 1024, dtype: str = "auto"):
        from transformers import AutoModel, AutoTokenizer

        from moderation.machine import resolve_dtype, torch_dtype

        self.layers, self.batch_tokens, self.max_tokens = tuple(layers), batch_tokens, max_tokens
        self.dtype = resolve_dtype(dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModel.from_pretrained(str(model_dir), dtype=torch_dtype(self.dtype))
        if max(self.layers) > model.config.num_hidden_layers:
            raise ConfigError(f"heads read layer {max(self.layers)}, the model has {model.config.num_hidden_layers}")
        model.layers = model.layers[:max(self.layers)]  # nothing above the deepest chosen layer is needed
        self.model = model.eval()
        self.dim = model.config.hidden_size * len(self.layers)
        self._prefix_ids: dict[str, list[int]] = {}  # a shared prefix is tokenized once, not once per text

    def __call__(self, texts: list[str], progress=None) -> np.ndarray:
        """(texts x dim) features. Texts that share a prefix (everything up to `PREFIX_END`: the
        prompt's region rules and framing) have it computed once: its key-value cache and its
        hidden-state sums are reused for each text's own tokens, which gives the same mean."""
        parts = [self._tokens(t) for t in texts]
        self.last_tokens = sum(len(p) + len(s) for p, s in parts)  # what the last call read, for throughput figures
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (prefix, _) in enumerate(parts):
            groups.setdefault(prefix, []).append(i)
        for prefix, members in groups.items():
            context = self._prefix(prefix)
            lengths = [len(parts[i][1]) for i in members]
            for batch in _length_batches(lengths, self.batch_tokens):
                rows = [members[j] for j in batch]
                out[rows] = self._pooled([parts[i][1] for i in rows], context)
                if progress is not None:
                    progress.update(len(rows))
        return out

    def _tokens(self, text: str) -> tuple[tuple[int, ...], list[int]]:
        """The text's shared prefix and its own tokens, tokenized apart (the split falls after a
        newline, where the tokenizer splits anyway), together at most `max_tokens`."""
        cut = text.rfind(PREFIX_END)
        cut = cut + len(PREFIX_END) if cut >= 0 else 0
        prefix = self._shared_prefix(text[:cut])
        own = self._encode(text[cut:])[:self.max_tokens - len(prefix)]
        return (tuple(prefix), own) if own else ((), prefix or [0])

    def _shared_prefix(self, text: str) -> list[int]:
        ids = self._prefix_ids.get(text)
        if ids is None:
            ids = self._encode(text)[:self.max_tokens // 2]
            if len(self._prefix_ids) < MAX_PREFIXES:
                self._prefix_ids[text] = ids
        return ids

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _prefix(self, prefix: tuple[int, ...]):
        """(key-value cache, per-layer hidden-state sums, length) of a shared prefix; None for none."""
        import torch

        if not prefix:
            return None
        with torch.no_grad():
            result = self.model(input_ids=torch.tensor([prefix]), output_hidden_states=True, use_cache=True)
        sums = [result.hidden_states[layer][0].float().sum(0) for layer in self.layers]
        return result.past_key_values, sums, len(prefix)

    def _pooled(self, ids: list[list[int]], context) -> np.ndarray:
        """Mean-pooled chosen layers of prefix + own tokens, for one batch of texts."""
        import copy

        import torch

        width = max(len(x) for x in ids)
        tokens = torch.zeros((len(ids), width), dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.float32)
        for row, x in enumerate(ids):
            tokens[row, :len(x)] = torch.tensor(x)
            mask[row, :len(x)] = 1
        cache, sums, offset = context if context is not None else (None, [0.0] * len(self.layers), 0)
        if cache is not None:
            cache = copy.deepcopy(cache)
            cache.batch_repeat_interleave(len(ids))
        with torch.no_grad():  # right padding under the causal mask: real tokens never see a pad
            hidden = self.model(input_ids=tokens, past_key_values=cache, use_cache=cache is not None,
                                output_hidden_states=True).hidden_states
        count = mask.sum(1, keepdim=True) + offset
        pooled = [((hidden[layer].float() * mask[..., None]).sum(1) + total) / count for layer, total in zip(self.layers, sums)]
        return torch.cat(pooled, dim=1).numpy()


def _length_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, batch = [], []
    for i in order:
        if batch and (len(batch) + 1) * lengths[i] > batch_tokens:
            batches.append(batch)
            batch = []
        batch.append(i)
    return batches + ([batch] if batch else [])


class PolicyHeads:
    """One logistic regression per policy on standardised features; arrays only."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: np.ndarray):
        self.mean, self.scale, self.coef, self.intercept = mean, scale, coef, intercept

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, c: float = C, seed: int = 0) -> PolicyHeads:
        """x: (n, d) features; y: (n, policies) 0/1. A policy without positives scores 0."""
        from sklearn.linear_model import LogisticRegression

        mean, scale = x.mean(0), x.std(0) + 1e-6
        z = (x - mean) / scale
        coef = np.zeros((y.shape[1], x.shape[1]), dtype=np.float32)
        intercept = np.full(y.shape[1], -30.0, dtype=np.float32)
        for i in range(y.shape[1]):
            if 0 < y[:, i].sum() < len(y):
                model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=seed).fit(z, y[:, i])
                coef[i], intercept[i] = model.coef_[0], model.intercept_[0]
        return cls(mean.astype(np.float32), scale.astype(np.float32), coef, intercept)

    def score(self, x: np.ndarray) -> np.ndarray:
        from scipy.special import expit

        return expit(((x - self.mean) / self.scale) @ self.coef.T + self.intercept)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": self.intercept}


class HeadScorer:
    """Scores of rendered prompts: the mean of the hidden-state heads and the TF-IDF head, one per policy
    of the taxonomy they were fitted for (`policies`)."""

    def __init__(self, features: HiddenFeatures, heads: PolicyHeads, lexical, card: dict[str, Any], sha: str):
        self.features, self.heads, self.lexical, self.card, self.sha = features, heads, lexical, card, sha
        self.policies = tuple(card["policies"])

    def policy_scores(self, texts: list[str], progress=None) -> np.ndarray:
        """(texts x policies) scores in [0, 1]."""
        hidden = self.heads.score(self.features(texts, progress))
        return (hidden + self.lexical.score_texts(texts)) / 2

    def score(self, messages: list[list[dict[str, str]]], progress=None) -> list[dict[str, Any]]:
        """The `scores` field of each item's record, from its rendered prompt (`progress`: a tqdm-style
        bar advanced as the model reads each batch)."""
        scores = self.policy_scores([user_text(m) for m in messages], progress)
        return [{"violation": round(float(row.max()), 5), "policies": {p: round(float(s), 5) for p, s in zip(self.policies, row)},
                 "scorer": "heads"} for row in scores]


def save_heads(directory: str | Path, heads: PolicyHeads, lexical, card: dict[str, Any], policy_ids: tuple[str, ...]) -> str:
    """Write heads.npz, lexical.npz and heads.json (naming the taxonomy, `policy_ids`) into `directory`; return their hash."""
    directory = Path(directory)
    np.savez_compressed(directory / HEADS_FILE, **heads.arrays())
    arrays = lexical.arrays()
    np.savez_compressed(directory / LEXICAL_FILE, **{**arrays, "coef": arrays["coef"].astype(np.float32)})
    card = {**card, "policies": list(policy_ids), "vectorizer": lexical.settings}
    (directory / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return heads_sha(directory)


def heads_sha(directory: Path) -> str:
    """SHA-256 over a scorer folder's files (the card, the heads or the encoder's fine-tune, the TF-IDF)."""
    from moderation.encoder import WEIGHTS_FILE

    digest = hashlib.sha256()
    for name in (CARD_FILE, HEADS_FILE, WEIGHTS_FILE, LEXICAL_FILE):
        if name in (CARD_FILE, LEXICAL_FILE) or (Path(directory) / name).is_file():
            digest.update((Path(directory) / name).read_bytes())
    return digest.hexdigest()


def has_heads(directory: str | Path) -> bool:
    return (Path(directory) / CARD_FILE).is_file()


def load_heads(directory: str | Path, policy: Policy, dtype: str = "auto"):
    """The scorer stored in `directory`, for the taxonomy of `policy`: policy heads on hidden states of the model
    its card names ('base', 'default' or a model directory), or a fine-tuned encoder (card format
    moderation.encoder.ENCODER_FORMAT), either with its TF-IDF, in `dtype` (auto: the machine's format; a scorer
    fitted on one format scores the other's alike, tests/test_machine.py).

    Raises:
        ConfigError: a file is missing or unreadable, or the arrays do not fit together or were
            fitted for another policy taxonomy (the message names both).
    """
    from moderation.encoder import ENCODER_FORMAT, check_card, load_encoder
    from moderation.screen import TfidfScorer

    directory = Path(directory)
    where = f"policy heads in {directory}"
    try:
        card = json.loads((directory / CARD_FILE).read_text())
        encoder = card.get("format") == ENCODER_FORMAT
        heads = {}
        if not encoder:
            with np.load(directory / HEADS_FILE, allow_pickle=False) as npz:
                heads = {k: npz[k] for k in HEADS_KEYS}
        with np.load(directory / LEXICAL_FILE, allow_pickle=False) as npz:
            lexical = {k: npz[k] for k in LEXICAL_KEYS}
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{where}: unreadable ({type(exc).__name__}: {exc})") from None
    if encoder:
        check_card(card, directory)
    if card.get("policies") != list(policy.ids):
        raise ConfigError(f"{where} were fitted for another taxonomy, policies {card.get('policies')}; the policy file "
                          f"is {policy.describe()}. Fit a scorer for it (finetune/fit_encoder.py or fit_heads.py --policy FILE) "
                          "or run --no-scores")
    p = len(policy.ids)
    if (heads and heads["coef"].shape[0] != p) or lexical["coef"].shape != (p, len(lexical["terms"])):
        raise ConfigError(f"{where}: the arrays do not fit {p} policies")
    scorer = TfidfScorer(card["vectorizer"], lexical["terms"], lexical["idf"], lexical["coef"], lexical["intercept"],
                         lexical["fitted"].astype(bool))
    if encoder:
        return load_encoder(directory, card, scorer, heads_sha(directory), dtype)
    from moderation.model import resolve_model

    features = HiddenFeatures(resolve_model(card["model"]), tuple(card["layers"]), dtype=dtype)
    if heads["coef"].shape[1] != features.dim:
        raise ConfigError(f"{where}: heads read {heads['coef'].shape[1]} features, layers {card['layers']} give {features.dim}")
    return HeadScorer(features, PolicyHeads(**heads), scorer, card, heads_sha(directory))
