"""Exact and near-duplicate detection of item texts (MinHash over character shingles).

Curation uses it twice: to drop repeats inside the training data, and to keep any text that
is (nearly) the same as an evaluation test item out of training. Near-duplicates are found
with MinHash signatures and locality-sensitive hashing (bands of rows), then confirmed by the
signatures' estimated Jaccard similarity.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

_PRIME = (1 << 61) - 1
_WORDS = re.compile(r"\w+")


def normalise(text: str) -> str:
    """Lower case, words only, single spaces: the form compared for exact duplicates."""
    return " ".join(_WORDS.findall(text.casefold()))


def shingles(text: str, size: int = 5) -> set[int]:
    """CRC32 hashes of the normalised text's character shingles (the whole text if shorter)."""
    norm = normalise(text)
    if len(norm) <= size:
        return {zlib.crc32(norm.encode())}
    return {zlib.crc32(norm[i:i + size].encode()) for i in range(len(norm) - size + 1)}


@dataclass
class MinHashIndex:
    """MinHash signatures of labelled texts with an LSH lookup for near-duplicates.

    Args:
        num_perm: hash functions per signature.
        bands: LSH bands; num_perm must divide evenly. 32 bands of 4 rows find pairs with
            Jaccard 0.5 or more with high probability; the threshold then confirms them.
        threshold: estimated Jaccard similarity at or above which two texts are near-duplicates.
        seed: seeds the hash functions, so signatures are reproducible.
    """

    num_perm: int = 128
    bands: int = 32
    threshold: float = 0.8
    seed: int = 1
    _keys: list[str] = field(default_factory=list)
    _signatures: list[np.ndarray] = field(default_factory=list)
    _exact: dict[str, str] = field(default_factory=dict)
    _buckets: dict[tuple, list[int]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self):
        if self.num_perm % self.bands:
            raise ValueError(f"MinHashIndex.num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"MinHashIndex.threshold must be in (0, 1], got {self.threshold}")
        rng = np.random.default_rng(self.seed)
        self._a = rng.integers(1, _PRIME, self.num_perm, dtype=np.uint64)
        self._b = rng.integers(0, _PRIME, self.num_perm, dtype=np.uint64)

    def signature(self, text: str) -> np.ndarray:
        """The MinHash signature of a text."""
        x = np.fromiter(shingles(text), dtype=np.uint64)
        # (a*x + b) mod p with uint64 wrap-around: a universal-enough hash family for MinHash
        return ((np.outer(x, self._a) + self._b) % _PRIME).min(axis=0)

    def _bands(self, sig: np.ndarray):
        rows = self.num_perm // self.bands
        return [(b, sig[b * rows:(b + 1) * rows].tobytes()) for b in range(self.bands)]

    def add(self, key: str, text: str) -> None:
        """Index one text under a key (such as `set/item id`)."""
        sig = self.signature(text)
        self._exact.setdefault(normalise(text), key)
        for band in self._bands(sig):
            self._buckets[band].append(len(self._keys))
        self._keys.append(key)
        self._signatures.append(sig)

    def exact(self, text: str) -> str | None:
        """The key of an indexed text equal to this one after normalisation, if any."""
        return self._exact.get(normalise(text))

    def near(self, text: str) -> tuple[str, float] | None:
        """The most similar indexed text at or above the threshold, with its estimated Jaccard."""
        sig = self.signature(text)
        candidates = {i for band in self._bands(sig) for i in self._buckets.get(band, ())}
        best = None
        for i in candidates:
            similarity = float((self._signatures[i] == sig).mean())
            if similarity >= self.threshold and (best is None or similarity > best[1]):
                best = (self._keys[i], similarity)
        return best

    def __len__(self) -> int:
        return len(self._keys)


def jaccard(a: str, b: str) -> float:
    """The exact Jaccard similarity of two texts' shingle sets (for tests and reports)."""
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)
