"""Load the public labelled data sets as items with gold policy labels.

The sets live outside the repository (by default `../shared/datasets`, see docs/datasets.md
for the layout and the download step). Each loader reads its set's own files as a stream,
maps its labels to our policy ids, and the common code here gives every row an id, a fixed
train/dev/test split and the set's licence. A row with no text is skipped and reported, not
silently dropped.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from moderation.errors import ConfigError
from moderation.items import Item, ReadLimits, RowError, build_item
from moderation.schema import DECISIONS

logger = logging.getLogger(__name__)

ENV_VAR = "MODERATION_DATA_DIR"
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
SPLITS = ("train", "dev", "test")
DOCS = "docs/datasets.md"


@dataclass(frozen=True)
class LabelledItem:
    """An item with its gold labels, split and provenance."""

    item: Item
    gold_violations: frozenset[str]  # policy ids of the taxonomy the set is labelled in (public sets: the default)
    split: str
    source: str
    licence: str
    gold_decision: str | None = None  # None: the set has no decision labels
    tags: tuple[str, ...] = ()
    rationale: str | None = None
    evidence: tuple[tuple[str, str], ...] = ()  # (policy, verbatim quote) where the set has spans

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"LabelledItem {self.item.id}: split {self.split!r} is not one of {SPLITS}")
        if self.gold_decision is not None and self.gold_decision not in DECISIONS:
            raise ValueError(f"LabelledItem {self.item.id}: decision {self.gold_decision!r} is not one of {DECISIONS}")


@dataclass(frozen=True)
class SkippedRow:
    """A source row that did not become an item (no text, an unknown label)."""

    id: str
    split: str
    reason: str


@dataclass(frozen=True)
class _Row:
    """What a loader yields: one source row, mapped, before ids and splits are assigned."""

    key: str
    kind: str = "live_chat"
    fields: dict[str, Any] = field(default_factory=dict)
    violations: frozenset[str] = frozenset()
    tags: tuple[str, ...] = ()
    decision: str | None = None
    rationale: str | None = None
    file_split: str | None = None  # "train" / "test" when the set ships its own split files
    skip: str | None = None


@dataclass(frozen=True)
class PublicSet:
    """One public set: where it is, how it is licensed, what to expect from it."""

    name: str
    licence: str
    loader: Callable[[Path], Iterator[_Row]]
    rows: dict[str, int]  # README row counts after its own filtering: {"all": n} or {"train": n, "test": m}
    mapping: str


# --- directories and files -------------------------------------------------------------


def data_dir(arg: str | os.PathLike | None = None) -> Path:
    """The directory holding the public sets: `arg`, else $MODERATION_DATA_DIR, else the default.

    Raises:
        ConfigError: the chosen directory does not exist.
    """
    if arg:
        chosen, origin = Path(arg), "the data directory given"
    elif os.environ.get(ENV_VAR):
        chosen, origin = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        chosen, origin = DEFAULT_DATA_DIR, "the default data directory"
    if not chosen.is_dir():
        raise ConfigError(
            f"public data sets not found: {origin} ({chosen}) is not a directory; "
            f"download them as {DOCS} describes, then pass their directory or set ${ENV_VAR}"
        )
    return chosen


def _is_utf8(path: Path) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _open_text(path: Path) -> TextIO:
    """Open a text file (gzip too), UTF-8 if the whole file decodes as UTF-8, else Latin-1.

    The shared copies are all UTF-8, but a copy from another mirror may not be; one check per
    file (a cheap pre-pass) beats a decode error half-way through a stream.
    """
    if not path.is_file():
        raise ConfigError(f"public data file not found: {path}; see {DOCS} for the download step")
    encoding = "utf-8-sig" if _is_utf8(path) else "latin-1"
    if encoding == "latin-1":
        logger.warning("%s is not UTF-8; reading it as Latin-1", path)
    opener = gzip.open if path.suffix == ".gz" else open
    return opener(path, "rt", encoding=encoding, newline="")


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with _open_text(path) as fh:
        yield from enumerate(csv.DictReader(fh))


def _chat(*messages: tuple[str, str]) -> dict[str, Any]:
    """A live_chat item's fields from (user, text) pairs; blank messages are left out."""
    kept = [{"user": user, "text": text} for user, text in messages if text and text.strip()]
    return {"messages": kept, "language": "en"}


def _text(text: str) -> dict[str, Any]:
    return _chat(("", text))


# --- loaders: one per set, each maps the set's labels to policy ids --------------------

_OPENAI_FLAGS = {
    "S": "adult_sexual", "S3": "adult_sexual",
    "H": "hate_harassment", "H2": "hate_harassment", "HR": "hate_harassment",
    "V": "violence_graphic", "V2": "violence_graphic",
    "SH": "self_harm",
}  # fmt: skip


def _load_openai_moderation(folder: Path) -> Iterator[_Row]:
    with _open_text(folder / "samples-1680.jsonl.gz") as fh:
        for i, line in enumerate(fh):
            record = json.loads(line)
            # A missing flag means "not labelled"; only flags set to 1 map to a policy.
            flags = [k for k in _OPENAI_FLAGS if record.get(k) == 1]
            yield _Row(str(i), fields=_text(record["prompt"]), violations=frozenset(_OPENAI_FLAGS[k] for k in flags),
                       rationale=f"OpenAI moderation flags: {', '.join(flags) or 'none'}")


def _load_toxicchat(folder: Path) -> Iterator[_Row]:
    for file_split in ("train", "test"):
        with _open_text(folder / f"toxic_chat_{file_split}.json") as fh:
            instances = json.load(fh)["instances"]  # one JSON document: it cannot be streamed by line
        for inst in instances:
            notes = inst["annotations"]
            toxic = notes["toxicity"]["majority_human"] == "1"
            jailbreak = notes["jailbreaking"]["majority_human"] == "1"
            yield _Row(inst["id"], fields=_text(inst["instance"]), file_split=file_split,
                       violations=frozenset({"hate_harassment"} if toxic else ()),
                       tags=("jailbreak",) if jailbreak else (),
                       rationale=f"ToxicChat toxicity={int(toxic)}, jailbreaking={int(jailbreak)}")


def _price(value: str) -> float | None:
    try:
        price = float(value.replace(",", ""))
    except ValueError:
        return None
    return price if math.isfinite(price) else None


def _load_ebay(folder: Path) -> Iterator[_Row]:
    for _, row in _csv_rows(folder / "validation_sharks.csv"):
        fields = {
            # The scraped title is the page title: drop the " | eBay" suffix it always carries.
            "title": row["title"].removesuffix(" | eBay").strip(),
            "description": row["description"],
            "price": _price(row["price"]),
            "currency": row["currency"],
            "seller": row["seller"],
            "language": "en",
        }
        fields = {k: v for k, v in fields.items() if v not in (None, "")}
        positive = row["label"] == "1"
        yield _Row(row["id"], kind="listing", fields=fields,
                   violations=frozenset({"prohibited_item"} if positive else ()),
                   rationale="LTS label 1: sells a real shark product" if positive else "LTS label 0")


def _load_ivory(folder: Path) -> Iterator[_Row]:
    # tweet_id repeats across crawl sources (288 ids are reused), so the row index is the key.
    for i, row in _csv_rows(folder / "share_data.csv"):
        fields = _chat(("", row["tweet_text_cleaned"]), ("profile", row["user_description_cleaned"]))
        positive = row["label"] == "1"
        yield _Row(str(i), fields=fields, violations=frozenset({"prohibited_item"} if positive else ()),
                   rationale="WLT-OSN label 1: promotes an ivory sale" if positive else "WLT-OSN label 0")


_YOUTUBE_FILES = ("Youtube01-Psy.csv", "Youtube02-KatyPerry.csv", "Youtube03-LMFAO.csv",
                  "Youtube04-Eminem.csv", "Youtube05-Shakira.csv")


def _load_youtube(folder: Path) -> Iterator[_Row]:
    for name in _YOUTUBE_FILES:
        for _, row in _csv_rows(folder / name):
            if len(row["COMMENT_ID"]) < 20:  # Youtube04 holds 24 junk rows with short made-up ids
                continue
            spam = row["CLASS"] == "1"
            yield _Row(row["COMMENT_ID"], fields=_text(row["CONTENT"]),
                       violations=frozenset({"spam"} if spam else ()), rationale=f"{name}: CLASS {row['CLASS']}")


def _load_sms_spam(folder: Path) -> Iterator[_Row]:
    labels = {"spam": {"spam"}, "ham": set()}
    with _open_text(folder / "SMSSpamCollection") as fh:
        # Not csv: the messages hold bare quotes. The copy starts with a "Label<TAB>SMS" header.
        lines = (line.rstrip("\r\n") for line in fh)
        rows = (line for n, line in enumerate(lines) if line and not (n == 0 and line == "Label\tSMS"))
        for i, line in enumerate(rows):
            label, _, text = line.partition("\t")
            if label not in labels:
                yield _Row(str(i), skip=f"unknown label {label!r:.40}")
                continue
            yield _Row(str(i), fields=_text(text), violations=frozenset(labels[label]), rationale=f"UCI label {label}")


def _load_sms_smishing(folder: Path) -> Iterator[_Row]:
    labels = {"smishing": {"fraud_scam"}, "spam": {"spam"}, "ham": set()}
    for i, row in _csv_rows(folder / "Dataset_5971.csv"):
        label = row["label"].strip().lower()  # the file mixes "Smishing" / "smishing", "Spam" / "spam"
        if label not in labels:
            yield _Row(str(i), skip=f"unknown label {row['label']!r:.40}")
            continue
        yield _Row(str(i), fields=_text(row["TEXT"]), violations=frozenset(labels[label]), rationale=f"label {label}")


def _load_deceptive(folder: Path) -> Iterator[_Row]:
    for i, row in _csv_rows(folder / "deceptive-opinion.csv"):
        fake = row["deceptive"] == "deceptive"
        yield _Row(str(i), fields=_text(row["text"]), violations=frozenset({"misleading_claim"} if fake else ()),
                   rationale=f"{row['deceptive']} {row['polarity']} review of hotel {row['hotel']}")


def _load_xstest(folder: Path) -> Iterator[_Row]:
    # Only the safe prompts: the unsafe ones are requests to an assistant, not marketplace content.
    for _, row in _csv_rows(folder / "xstest_prompts.csv"):
        if row["label"] == "safe":
            yield _Row(row["id"], fields=_text(row["prompt"]), decision="allow", tags=("overblocking",),
                       rationale=f"XSTest safe prompt ({row['type']}, focus {row['focus']!r})")


def _load_hatecheck(folder: Path) -> Iterator[_Row]:
    for _, row in _csv_rows(folder / "test_suite_cases.csv"):
        hateful = row["label_gold"] == "hateful"
        yield _Row(row["case_id"], fields=_text(row["test_case"]),
                   violations=frozenset({"hate_harassment"} if hateful else ()),
                   decision=None if hateful else "allow", tags=() if hateful else ("overblocking",),
                   rationale=f"HateCheck {row['label_gold']}: {row['functionality']}")


def _load_davidson(folder: Path) -> Iterator[_Row]:
    for _, row in _csv_rows(folder / "labeled_data.csv"):
        cls = row["class"]
        yield _Row(row[""], fields=_text(row["tweet"]), violations=frozenset({"hate_harassment"} if cls == "0" else ()),
                   tags=("offensive",) if cls == "1" else (),
                   rationale=f"votes of {row['count']}: hate {row['hate_speech']}, offensive "
                             f"{row['offensive_language']}, neither {row['neither']}")


def _load_conda(folder: Path) -> Iterator[_Row]:
    for file_name, file_split in (("CONDA_train.csv", "train"), ("CONDA_valid.csv", "test")):
        for _, row in _csv_rows(folder / file_name):
            toxic = row["intentClass"] in {"E", "I"}
            yield _Row(row["Id"], fields=_text(row["utterance"]), file_split=file_split,
                       violations=frozenset({"hate_harassment"} if toxic else ()),
                       rationale=f"CONDA intent {row['intentClass']}")


PUBLIC_SETS: dict[str, PublicSet] = {s.name: s for s in (
    PublicSet("openai_moderation", "MIT", _load_openai_moderation, {"all": 1680},
         "S, S3 -> adult_sexual; H, H2, HR -> hate_harassment; V, V2 -> violence_graphic; SH -> self_harm"),
    PublicSet("toxicchat", "ToxicChat is CC BY-NC 4.0", _load_toxicchat, {"train": 2801, "test": 2853},
         "toxicity 1 -> hate_harassment; jailbreaking 1 -> tag jailbreak (no policy)"),
    PublicSet("ebay_wildlife_listings", "not stated (research data)", _load_ebay, {"all": 499},
         "label 1 (real shark product) -> prohibited_item"),
    PublicSet("ivory_trade_posts", "research use only, no commercial use", _load_ivory, {"all": 8676},
         "label 1 (promotes an ivory sale) -> prohibited_item"),
    PublicSet("youtube_spam", "CC BY 4.0 (UCI)", _load_youtube, {"all": 1956}, "CLASS 1 -> spam"),
    PublicSet("sms_spam", "CC BY 4.0 (UCI)", _load_sms_spam, {"all": 5574}, "spam -> spam; ham -> none"),
    PublicSet("sms_smishing", "not stated", _load_sms_smishing, {"all": 5971},
         "smishing -> fraud_scam; spam -> spam; ham -> none"),
    PublicSet("deceptive_reviews", "CC BY-NC-SA 3.0", _load_deceptive, {"all": 1600},
         "deceptive -> misleading_claim; truthful -> none"),
    PublicSet("xstest", "CC BY 4.0", _load_xstest, {"all": 250},
         "safe prompts only -> none, decision allow, tag overblocking"),
    PublicSet("hatecheck", "CC BY 4.0", _load_hatecheck, {"all": 3728},
         "hateful -> hate_harassment; non-hateful -> none, decision allow, tag overblocking"),
    PublicSet("davidson_hate", "MIT", _load_davidson, {"all": 24783},
         "class 0 (hate) -> hate_harassment; 1 (offensive) -> none, tag offensive; 2 -> none"),
    PublicSet("conda_game_chat", "not stated (research data)", _load_conda, {"train": 26921, "test": 8974},
         "intent E, I (toxic) -> hate_harassment; A, O -> none"),
)}  # fmt: skip


# --- ids, splits, loading ----------------------------------------------------------------


def assign_split(item_id: str, file_split: str | None = None) -> str:
    """The fixed split of an item, from a SHA-256 of its id (never `hash()`, which is salted).

    A set without split files gets 60/15/25 train/dev/test; a row of a train file goes to dev
    with 20% chance; a row of a test file stays in test.
    """
    if file_split == "test":
        return "test"
    bucket = int(hashlib.sha256(item_id.encode("utf-8")).hexdigest(), 16) % 100
    if file_split == "train":
        return "dev" if bucket < 20 else "train"
    return "train" if bucket < 60 else "dev" if bucket < 75 else "test"


def _has_text(row: _Row) -> bool:
    if row.kind == "listing":
        return any(row.fields.get(f, "").strip() for f in ("title", "description"))
    return bool(row.fields.get("messages"))


def read_public(
    name: str, directory: str | os.PathLike | None = None
) -> tuple[list[LabelledItem], list[SkippedRow]]:
    """All rows of one public set: the items, and the rows that could not become items.

    `directory` resolves as in `data_dir`.

    Raises:
        ConfigError: unknown set name, missing data directory or file.
    """
    if name not in PUBLIC_SETS:
        raise ConfigError(f"unknown public set {name!r}; known sets: {', '.join(PUBLIC_SETS)}")
    spec = PUBLIC_SETS[name]
    folder = data_dir(directory) / name
    items, skipped, seen = [], [], {}
    limits = ReadLimits()
    for n, row in enumerate(spec.loader(folder), start=1):
        base_id = f"{name}:{row.key}"
        # Exact repeats of a source id (three YouTube comments) get a suffix but share the split,
        # so one comment never sits in both train and test.
        seen[base_id] = seen.get(base_id, 0) + 1
        item_id = base_id if seen[base_id] == 1 else f"{base_id}~{seen[base_id]}"
        split = assign_split(base_id, row.file_split)
        built = _build(row, item_id, n, limits)
        if isinstance(built, str):
            skipped.append(SkippedRow(item_id, split, built))
            continue
        items.append(LabelledItem(
            built, row.violations, split, name, spec.licence, row.decision, row.tags, row.rationale
        ))
    return items, skipped


def _build(row: _Row, item_id: str, n: int, limits: ReadLimits) -> Item | str:
    """The row's Item, checked by the same code that reads dumps, or why it cannot be one."""
    if row.skip:
        return row.skip
    if not _has_text(row):
        return "row has no text"
    built = build_item({"id": item_id, **row.fields}, n, columns={}, default_kind=row.kind, limits=limits)
    return built.reason if isinstance(built, RowError) else built


def load_public(
    name: str, data_dir: str | os.PathLike | None = None, *, split: str | None = None
) -> list[LabelledItem]:
    """The items of one public set, optionally of one split only.

    Args:
        name: a key of PUBLIC_SETS.
        data_dir: the directory holding the sets (else $MODERATION_DATA_DIR, else the default).
        split: "train", "dev" or "test"; None for all.

    Raises:
        ConfigError: unknown set or split, missing data directory or file.
    """
    if split is not None and split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    items, skipped = read_public(name, data_dir)
    if skipped:
        logger.warning("%s: skipped %d rows (first: %s, %s)", name, len(skipped), skipped[0].id, skipped[0].reason)
    return [it for it in items if split is None or it.split == split]


def load_all(data_dir: str | os.PathLike | None = None, split: str | None = None) -> dict[str, list[LabelledItem]]:
    """Every public set, by name."""
    return {name: load_public(name, data_dir, split=split) for name in PUBLIC_SETS}
