"""What an investigation reads, streamed and kept small: the dumps with their run files' flags, ban
lists and the merchants ledger's offboarded, and the allow-list. moderation.investigate builds the
linked groups from the Collector this fills.

Who speaks in an item: a listing's `seller` and a merchant profile (its `name`, else its id) are
`merchant:NAME`, a video's `creator` is `creator:NAME`, each chat message's `user` is `chat:NAME`
(`merchant:NAME` when the user is the channel itself). Dumps are streamed: per account only counts
and a few flagged item ids are kept, per (identifier, account) a few pieces of evidence, and MinHash
signatures only of the texts the near-duplicate setting indexes (by default those flagged or
carrying an obfuscated contact), so memory grows with accounts and identifiers, not with rows.

Public identifiers must not link honest shops that both name them (a courier's hotline, the
marketplace's own URL): hosts of marketplaces, social networks, couriers and payment services
give no `domain` identifier (moderation.contacts.PUBLIC_NAMES), an allow-list file names others,
and an identifier written by more than `max_accounts` accounts is reported as common and links
nobody. Near-duplicate text links only (by default) texts that carry an obfuscated contact or
were flagged for a policy of coordinated abuse (fraud, off-platform deals, counterfeits,
prohibited items, spam), so two honest resellers of one product with the maker's description,
flagged restricted_item alike, are not joined.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moderation import contacts
from moderation.dedup import MinHashIndex
from moderation.errors import ConfigError, InputError
from moderation.items import Item, read_items
from moderation.trends import display_text

logger = logging.getLogger(__name__)

NEAR_MODES = ("suspect", "contacts", "all", "off")
COORDINATED = ("fraud_scam", "off_platform_transaction", "counterfeit_ip", "prohibited_item", "spam")
# One piece of evidence, kept as a tuple while streaming (a million of them): these fields, in order.
EVIDENCE_FIELDS = ("item", "source", "line", "raw", "via", "hidden", "context")
ROLES = ("merchant", "creator", "chat")
ROLE_OF_KIND = {"listing": "merchant", "merchant": "merchant", "creator_video": "creator"}
OWNER_FIELD = {"listing": "seller", "merchant": "name", "creator_video": "creator"}
CONTEXT_CHARS = 30  # text shown either side of an identifier's raw span


@dataclass(frozen=True)
class InvestigateSettings:
    """How accounts are linked and groups reported."""

    max_accounts: int = field(default=25, metadata={"help": "An identifier written by more accounts than this is "
                                                            "common (a public hotline, a platform address): reported, "
                                                            "never a link."})
    near_duplicates: str = field(default="suspect", metadata={
        "help": "Which texts near-duplicate text links: suspect (flagged by a run, or carrying an obfuscated "
                "contact), contacts (also any text with a contact), all (every text), off. The index keeps a "
                "signature per text it takes: memory grows with them.", "choices": NEAR_MODES})
    near_threshold: float = field(default=0.9, metadata={"help": "Estimated Jaccard similarity (5-character shingles of "
                                                                 "the text with contacts and numbers masked) that links "
                                                                 "two texts."})
    text_link_policies: str = field(default=",".join(COORDINATED), metadata={
        "help": "Comma-separated policies whose flags make a text suspect for near-duplicate links: those of "
                "coordinated abuse (honest resellers of one restricted product share the maker's text and its "
                "restricted_item flag). Policies the taxonomy lacks are ignored; with none left, every flag counts.",
        "metavar": "POLICIES"})
    min_text_chars: int = field(default=60, metadata={"help": "Shorter texts are never near-duplicates (greetings, "
                                                              "one-line chat messages)."})
    evidence: int = field(default=3, metadata={"help": "Pieces of evidence kept per (identifier, account)."})
    flagged_kept: int = field(default=20, metadata={"help": "Flagged item ids kept per account, for the report."})
    allow_list: str | None = field(default=None, metadata={"type": str, "help": "File of public identifiers never "
                                                                                "linked, one per line, written as "
                                                                                "they appear (a courier hotline, a "
                                                                                "support address); # starts a comment."})
    offboarded_tier: str = field(default="suspended", metadata={"help": "The merchants ledger's tier that means "
                                                                        "offboarded (with --ledger)."})

    def __post_init__(self):
        for name in ("max_accounts", "min_text_chars", "evidence", "flagged_kept"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "max_accounts" else 0):
                raise ConfigError(f"InvestigateSettings.{name} must be an integer of at least "
                                  f"{2 if name == 'max_accounts' else 0}, got {value!r}")
        if self.near_duplicates not in NEAR_MODES:
            raise ConfigError(f"InvestigateSettings.near_duplicates must be one of {list(NEAR_MODES)}, "
                              f"got {self.near_duplicates!r}")
        if not 0 < self.near_threshold <= 1:
            raise ConfigError(f"InvestigateSettings.near_threshold must be in (0, 1], got {self.near_threshold!r}")


@dataclass(frozen=True)
class Ban:
    """An account offboarded before, and the contacts it was known by."""

    account: str
    banned_at: str | None = None
    reason: str = ""
    contacts: str = ""  # free text: the identifiers are extracted from it
    source: str = "ban list"


def account_name(text: str) -> str:
    """`role:name` for a name given with or without its role (a bare name is a merchant's)."""
    role, sep, name = text.strip().partition(":")
    return f"{role}:{name.strip()}" if sep and role in ROLES else f"merchant:{text.strip()}"


def load_bans(path: str | Path) -> list[Ban]:
    """A ban list: CSV with a header, or JSONL, with `account` (role:name or a merchant's name) and
    optionally `banned_at`, `reason` and `contacts` (text, or a JSON list of texts).

    Raises:
        InputError: the file is missing, empty, or a row has no account.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ban list not found: {path}")
    text = path.read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(text.splitlines())) if path.suffix.lower() == ".csv" else \
        [json.loads(line) for line in text.splitlines() if line.strip()]
    if not rows:
        raise InputError(f"ban list is empty: {path}")
    bans = []
    for n, row in enumerate(rows, start=2 if path.suffix.lower() == ".csv" else 1):
        if not isinstance(row, dict) or not str(row.get("account") or "").strip():
            raise InputError(f"{path} row {n}: a ban needs an 'account' (role:name or a merchant's name), got {row!r:.80}")
        found = row.get("contacts") or ""
        bans.append(Ban(account_name(str(row["account"])), row.get("banned_at") or None, str(row.get("reason") or ""),
                        "; ".join(found) if isinstance(found, list) else str(found)))
    return bans


def ledger_bans(db: str, tier: str) -> list[Ban]:
    """Merchants in the ledger's offboarded tier (moderation merchants), as merchant and creator accounts
    (a ledger merchant is an item's owner: a seller, a creator or a chat channel)."""
    from moderation.merchants.store import MerchantStore
    from moderation.review.store import Store

    records = MerchantStore(Store(db, create=False)).health()
    return [Ban(f"{role}:{r['merchant']}", r.get("as_of"), f"merchants ledger tier {tier}", source="merchants ledger")
            for r in records if r.get("tier") == tier for role in ("merchant", "creator")]


def load_allow_list(path: str | Path | None) -> set[str]:
    """The identifier keys of an allow-list file (each line is read as text, so a hotline may be
    written as the shops write it).

    Raises:
        InputError: the file is missing.
    """
    if path is None:
        return set()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"allow-list file not found: {path}")
    lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    keys = {c.key for line in lines if line for c in contacts.extract(line)}
    unread = [line for line in lines if line and not contacts.extract(line)]
    if unread:
        raise InputError(f"{path}: no identifier in {unread[:3]} (write a phone with its + or a contact word)")
    return keys


def units(item: Item) -> list[tuple[str, str]]:
    """(account, text) for each voice in an item: its owner and what it wrote (moderation.trends.display_text:
    not its own name, price or region), or each chat message's writer and the message."""
    if item.kind == "live_chat":
        channel = str(item.fields.get("channel") or "").strip()
        out = []
        for message in item.fields.get("messages", []):
            user = (message.get("user") or "").strip()
            if user:
                out.append((f"{'merchant' if user == channel else 'chat'}:{user}", message["text"]))
        return out
    name = str(item.fields.get(OWNER_FIELD[item.kind]) or (item.id if item.kind == "merchant" else "")).strip()
    return [(f"{ROLE_OF_KIND[item.kind]}:{name}", display_text(item))] if name else []


def context(text: str, c: contacts.Contact) -> str:
    """The raw span with a little text either side, on one line."""
    left = ("…" if c.start > CONTEXT_CHARS else "") + text[max(0, c.start - CONTEXT_CHARS):c.start]
    right = text[c.end:c.end + CONTEXT_CHARS] + ("…" if len(text) > c.end + CONTEXT_CHARS else "")
    return " ".join(f"{left}[{c.raw}]{right}".split())


class TextIndex(MinHashIndex):
    """moderation.dedup's MinHashIndex, banded for a high threshold and remembering the last
    signature (`near` then `add` of one text compute it once).

    16 bands of 8 rows: two texts of Jaccard 0.9 share a band with probability 0.9999, of 0.8 with
    0.95, of 0.3 with 0.001, so the candidates checked stay few as the index grows to many texts
    of one language and category (32 bands of 4 rows, tuned for 0.5, would check most of them).
    """

    def __init__(self, threshold: float):
        super().__init__(num_perm=128, bands=16, threshold=threshold)
        self._last: tuple[str, Any] | None = None

    def signature(self, text: str):
        if self._last is None or self._last[0] is not text:
            self._last = (text, super().signature(text))
        return self._last[1]


class Collector:
    """What the dumps say, kept small: per account its item counts and flagged items, per
    (identifier, account) a few pieces of evidence, and near-duplicate clusters of texts."""

    def __init__(self, settings: InvestigateSettings):
        self.settings = settings
        self.links: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.accounts: dict[str, dict[str, Any]] = {}
        self.index = TextIndex(settings.near_threshold) if settings.near_duplicates != "off" else None
        self.cluster_of: dict[str, str] = {}  # index key -> near-duplicate cluster identifier
        self.stats = Counter()
        self.link_policies: set[str] | None = None  # set by `collect` from the taxonomy; None: any flag

    def use_taxonomy(self, ids) -> None:
        known = {p.strip() for p in self.settings.text_link_policies.split(",")} & set(ids)
        self.link_policies = known or None

    def account(self, name: str) -> dict[str, Any]:
        return self.accounts.setdefault(name, {"items": 0, "flagged": 0, "policies": Counter(), "flagged_items": []})

    def link(self, key: str, account: str, evidence: tuple) -> None:
        kept = self.links.setdefault(key, {}).setdefault(account, [])
        if len(kept) < self.settings.evidence:
            kept.append(evidence)

    def add_item(self, item: Item, source: str, line: int, flags: tuple[str, ...] | None) -> None:
        """One item's voices: counts, flags, identifiers and (for indexed texts) its near-duplicate cluster."""
        self.stats["items"] += 1
        voices = units(item)
        if not voices:
            self.stats["items without an owner"] += 1
        found_by_voice = [contacts.extract(text) for _, text in voices]
        # A flag is the item's: its owner's; in a chat, that of each writer who left a contact (else nobody's:
        # one flagged message does not make every viewer who said hello a suspect).
        chat = item.kind == "live_chat"
        for n, (account, text) in enumerate(voices):
            record = self.account(account)
            record["items"] += 1
            found = found_by_voice[n]
            if flags and (found if chat else n == 0):
                record["flagged"] += 1
                record["policies"].update(flags)
                if len(record["flagged_items"]) < self.settings.flagged_kept:
                    record["flagged_items"].append({"item": item.id, "source": source, "line": line, "policies": list(flags)})
            for c in found:
                self.link(c.key, account, (item.id, source, line, c.raw, c.via, c.hidden, context(text, c)))
            suspect = bool(flags) and bool(self.link_policies is None or self.link_policies & set(flags))
            self.add_text(account, text, found, suspect and (bool(found) or not chat), item.id, source, line, n)

    def add_text(self, account, text, found, flagged, item_id, source, line, n) -> None:
        mode = self.settings.near_duplicates
        taken = {"suspect": flagged or any(c.hidden for c in found), "contacts": flagged or bool(found), "all": True}
        if self.index is None or len(text) < self.settings.min_text_chars or not taken[mode]:
            return
        masked = contacts.mask(text, found)
        key = f"{source}:{line}:{n}"
        hit = self.index.near(masked)
        cluster = self.cluster_of[hit[0]] if hit else f"text:{item_id}"
        self.cluster_of[key] = cluster
        self.index.add(key, masked)
        self.stats["texts indexed"] += 1
        similarity = f"similarity {hit[1]:.2f} to {cluster[5:]}" if hit else "first of its cluster"
        self.link(cluster, account, (item_id, source, line, " ".join(text.split())[:90], "near-duplicate text", False,
                                     similarity))

    def add_ban(self, ban: Ban) -> None:
        self.account(ban.account)
        for c in contacts.extract(ban.contacts):
            self.link(c.key, ban.account, (None, ban.source, None, c.raw, c.via, c.hidden, c.raw))


def read_flags(run: str | Path, policy) -> dict[int, tuple[str, tuple[str, ...]]]:
    """{line: (item id, flagged policies)} of a run file's flagged records: its `flagged` list where
    the run scored against thresholds, else the policies of a verdict that is not allow.

    Raises:
        InputError: the file is missing or not a run file. ConfigError: made under another taxonomy.
    """
    from moderation.trends import checked_records

    flags = {}
    for record in checked_records(run, policy, "investigate"):
        if record.verdict is None:
            continue
        policies = record.flagged if record.flagged is not None else \
            [v["policy"] for v in record.verdict["violations"]] if record.verdict["decision"] != "allow" else []
        if policies:
            flags[record.line] = (record.id, tuple(policies))
    return flags


def collect(dumps: list[str | Path], runs: list[str | Path] | None = None, *, bans: Iterable[Ban] = (),
            settings: InvestigateSettings | None = None, policy=None, progress: bool = False,
            **read_options) -> Collector:
    """Stream the dumps (each with its run file's flags, if runs are given) into a Collector.

    Raises:
        ConfigError: runs given but not one per dump. InputError, ConfigError: as read_items, read_flags.
    """
    from tqdm import tqdm

    settings = settings or InvestigateSettings()
    runs = list(runs or [])
    if runs and len(runs) != len(dumps):
        raise ConfigError(f"give one run file per dump, in order, or none: {len(dumps)} dumps, {len(runs)} runs")
    collector = Collector(settings)
    if runs:
        from moderation.policy import load_policy

        policy = policy or load_policy()
        collector.use_taxonomy(policy.ids)
    for ban in bans:
        collector.add_ban(ban)
    for n, dump in enumerate(dumps):
        flags = read_flags(runs[n], policy) if runs else {}
        source = Path(dump).name
        rows = tqdm(read_items(dump, **read_options), desc=f"reading {source}", unit=" rows", disable=not progress)
        for line, row in rows:
            if not isinstance(row, Item):
                collector.stats["row errors"] += 1
                continue
            flag = flags.get(line)
            if flag and flag[0] != row.id:
                raise InputError(f"{dump}: line {line} holds item {row.id!r}, the run {runs[n]} says {flag[0]!r}: "
                                 "is that the run of this dump?")
            collector.add_item(row, source, line, flag[1] if flag else None)
    return collector
