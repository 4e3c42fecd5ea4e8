"""Evidence from the scorer: which clauses of an item raise each flagged policy's score.

Score first decides a flagged item's policies from its scores (moderation.pipeline); this module
says why, through the same scorer, by occlusion: each clause of the item is removed in turn, the
item is scored again, and the drop of a policy's score is that clause's attribution. A policy's
evidence is its clause with the largest drop, joined with a neighbouring clause whose drop is at
least half of it (and a phone number or price right after it), as one exact substring of the item
no longer than the verdict schema's evidence limit.

Clauses are the pieces of the item's own text between the schema's clause breaks
(`schema.CLAUSE_BREAKS`, never inside a number), over the fields a person wrote. Never evidence on their own: user
handles (a listing's seller, a video's creator, a chat's channel and its users, `@names`, and
single tokens like `lina_bakes`), field labels (`Caption:`), and pieces with fewer than two
letters (`⭐⭐⭐⭐⭐ 5`, a bare price). The cost is bounded: an item with more than `max_units`
clauses is first occluded in `max_units` runs of neighbouring clauses, and then clause by clause
inside the runs that scored highest; with a screen (the heads' TF-IDF half, `lexical_screen`), every
clause goes through the screen and only a shortlist through the whole scorer.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from moderation.items import Item
from moderation.schema import EVIDENCE_MAX_CHARS, quotable

MAX_UNITS = 16  # without a screen: clauses occluded one by one per item, at most (longer items go in runs first)
SHORTLIST = 3  # with a screen: clauses per decided policy that the whole scorer occludes, at most
SHORTLIST_SHARE = 0.3  # ... those whose screen drop is at least this share of the top one's (chosen on marketplace dev)
SCREEN_UNITS = 256  # with a screen: clauses the screen occludes per item, at most (the rest are never evidence)
MERGE_SHARE = 0.5  # a neighbouring clause joins the evidence when its drop is at least this share of the top one
HANDLE_FIELDS = frozenset({"seller", "creator", "channel", "user"})  # their values name people or accounts
# Codes and labels picked from a list, not sentences a person wrote.
META_FIELDS = frozenset({"region", "language", "currency", "category", "categories", "business_type"})
# Field and attribute names that exports write into text ("Caption: ...", "Size: M"): never evidence alone.
FIELD_LABELS = frozenset({
    "title", "description", "caption", "transcript", "about", "name", "seller", "creator", "channel", "price",
    "category", "categories", "contact", "website", "licence", "license", "business type", "text", "body", "content",
    "user", "username", "message", "messages", "comment", "comments", "bio", "tags", "hashtags", "subject", "region",
    "language", "currency", "kind", "id", "attributes", "size", "condition", "colour", "color", "brand", "model",
    "ingredients", "shipping", "delivery", "location", "payment", "note", "notes", "details", "features", "specs",
    "quantity", "weight", "material", "warranty", "review", "reviews", "rating", "stock", "sku"})
# One token that names an account: with '_' or letters and digits mixed (`lina_bakes`), an @name, an e-mail address.
HANDLE = re.compile(r"@?[\w.]*(_|\d[^\W\d_]|[^\W\d_]\d)[\w.]*|@[\w.]+|[\w.+-]+@[\w.-]+")
LETTER = re.compile(r"[^\W\d_]")
# The verdict schema's clause breaks (schema.CLAUSE_BREAKS), except a ',' between two digits ("10,5 %") and a
# '.' or ':' inside a token ("1.6 TDCi", "10:30", "claim-prize.example/login", "https://"), so that a number, an
# address or a link is never cut in two.
BREAK = re.compile("(?:[\n!?;|()\\[\\]{}\"，。！？、；：「」『』【】《》（）…،؛؟]|(?<!\\d),|,(?!\\d)|[.:](?!\\S))+")

Scores = Callable[[list[Item]], list[dict[str, Any]]]  # items -> their `scores` records ({"policies": {...}})


@dataclass(frozen=True)
class Unit:
    """One clause of an item: where it is (`path` into the item's fields, character span in that string)."""

    path: tuple[Any, ...]
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Evidence:
    """A policy's evidence: the quote, and the clause with the largest attribution (score drop) it was made
    from, with that drop ("" and 0.0 for an item without clauses)."""

    quote: str
    clause: str
    drop: float


def text_leaves(fields: dict[str, Any], path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """(path, string) for every string of an item's fields, in the order `Item.text()` joins them."""
    out = []
    for key, value in (fields.items() if isinstance(fields, dict) else enumerate(fields)):
        here = (*path, key)
        if isinstance(value, str):
            out.append((here, value))
        elif isinstance(value, (dict, list)):
            out += text_leaves(value, here)
    return out


def _handles(item: Item) -> set[str]:
    return {value.strip().casefold() for path, value in text_leaves(item.fields) if path[-1] in HANDLE_FIELDS}


def quotable_alone(piece: str, handles: frozenset[str] | set[str] = frozenset()) -> bool:
    """Whether a piece of text may be evidence by itself: not a field label, not a handle, at least two letters."""
    if len(LETTER.findall(piece)) < 2 or " ".join(piece.casefold().split()) in FIELD_LABELS:
        return False
    return piece.casefold() not in handles and not HANDLE.fullmatch(piece)


def _pieces(text: str) -> list[tuple[int, int]]:
    """(start, end) of each stripped piece between clause breaks, longer ones cut to the evidence limit."""
    spans = []
    bounds = [0, *(x for m in BREAK.finditer(text) for x in m.span()), len(text)]
    for start, end in zip(bounds[::2], bounds[1::2]):
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        while end - start > EVIDENCE_MAX_CHARS:  # a long run-on clause becomes quotable windows
            cut = start + len(quotable(text[start:end]))
            spans.append((start, cut))
            start = cut
            while start < end and text[start].isspace():
                start += 1
        if end > start:
            spans.append((start, end))
    return spans


def units(item: Item) -> list[Unit]:
    """The clauses of an item that may be evidence, in text order (see the module docstring)."""
    handles = _handles(item)
    out = []
    for path, value in text_leaves(item.fields):
        if path[-1] in HANDLE_FIELDS or path[0] in META_FIELDS:
            continue
        for start, end in _pieces(value):
            start = _after_mentions(value, start, end)  # a clause of mentions alone is left with nothing
            piece = value[start:end]
            if len(piece) >= 3 and quotable_alone(piece, handles):
                out.append(Unit(path, start, end, piece))
    return out


def _after_mentions(value: str, start: int, end: int) -> int:
    """Where a clause starts once the @mentions that open it are passed (`@lina_bakes nobody wants...`): a mention
    names the person spoken to, it is not what was said."""
    match = re.match(r"(?:@[\w.]+[\s,:]*)+", value[start:end])
    return start + match.end() if match else start


def occluded(item: Item, removed: Sequence[Unit]) -> Item:
    """The item with these clauses cut out of their fields (everything else as it was)."""
    fields = _copy(item.fields)
    for unit in sorted(removed, key=lambda u: -u.start):  # from the end, so earlier spans keep their offsets
        parent = fields
        for key in unit.path[:-1]:
            parent = parent[key]
        value = parent[unit.path[-1]]
        parent[unit.path[-1]] = value[:unit.start] + value[unit.end:]
    return dataclasses.replace(item, fields=fields)


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _runs(n: int, count: int) -> list[range]:
    """`n` clauses in `count` runs of neighbours, as even as can be."""
    bounds = [round(i * n / count) for i in range(count + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


class Attributor:
    """Attribution by occlusion through a scorer.

    Args:
        scores: items -> their score records (`{"policies": {id: score}}`): the scorer that decided the
            verdicts (Moderator.score), the reference every drop is measured with.
        screen: optional items -> score records from a cheap part of that scorer (the policy heads'
            TF-IDF half, `lexical_screen`). With it every clause is first occluded through the screen, and
            only each decided policy's `shortlist` clauses with the largest screen drops (those at least
            SHORTLIST_SHARE of the largest) go through `scores`.
        shortlist: clauses per decided policy that `scores` attributes after the screen, at most.
        max_units: without a screen, clauses occluded one by one per item at most; more go in runs first.
    """

    def __init__(self, scores: Scores, screen: Scores | None = None, shortlist: int = SHORTLIST,
                 max_units: int = MAX_UNITS):
        if max_units < 2 or shortlist < 1:
            raise ValueError(f"max_units must be at least 2 and shortlist at least 1, got {max_units} and {shortlist}")
        self.scores, self.screen, self.shortlist, self.max_units = scores, screen, shortlist, max_units

    def evidence(self, items: list[Item], base: list[dict[str, Any]],
                 decided: list[Sequence[str]]) -> list[dict[str, Evidence]]:
        """Per item, each decided policy's evidence. `base` holds the items' own score records (score first
        made them); items that decide nothing get {} and cost no scoring."""
        found = {i: units(items[i]) for i, policies in enumerate(decided) if policies}
        attributed = self._attribute(items, base, decided, found)
        # A policy that no single clause lowers (its signal is said twice, or the scorer saturates): rank its
        # clauses by the score of each alone in the item instead (sufficiency), its drop staying what it was.
        flat = {i: [p for p in decided[i] if max((d.get(p, 0.0) for d in drops), default=1.0) <= 0]
                for i, (chosen, drops) in attributed.items()}
        alone = self._occlude(self.scores, items, base, found,
                              {i: [[k for k in range(len(found[i])) if k != c] for c in attributed[i][0]]
                               for i, policies in flat.items() if policies})
        out: list[dict[str, Evidence]] = [{} for _ in items]
        for i, (chosen, drops) in attributed.items():
            for p in decided[i]:
                ranks = [-d.get(p, 0.0) for d in alone[i]] if p in flat[i] else [d.get(p, 0.0) for d in drops]
                evidence = pick(items[i], found[i], chosen, ranks)
                out[i][p] = dataclasses.replace(evidence, drop=max((d.get(p, 0.0) for d in drops), default=0.0))
        return out

    def _attribute(self, items, base, decided, found) -> dict[int, tuple[list[int], list[dict[str, float]]]]:
        """{item index: (the clauses attributed, as indices into its clauses; per clause, each policy's drop)}."""
        if self.screen is not None:
            chosen = self._screened(items, found, decided)
        else:
            chosen = self._coarse_to_fine(items, base, found, decided)
        drops = self._occlude(self.scores, items, base, found, {i: [[k] for k in ks] for i, ks in chosen.items()})
        return {i: (chosen[i], drops[i]) for i in found}

    def _screened(self, items, found, decided) -> dict[int, list[int]]:
        """Each item's clauses worth exact occlusion: every decided policy's top `shortlist` by screen drop."""
        if not found:
            return {}
        plain = self.screen([items[i] for i in found])
        screen_base = {i: record for i, record in zip(found, plain)}
        groups = {i: [[k] for k in range(min(len(clauses), SCREEN_UNITS))] for i, clauses in found.items()}
        drops = self._occlude(self.screen, items, screen_base, found, groups)
        chosen = {}
        for i, clause_drops in drops.items():
            picked = set()
            for p in decided[i]:
                ranked = sorted(range(len(clause_drops)), key=lambda k: -clause_drops[k].get(p, 0.0))[:self.shortlist]
                top = clause_drops[ranked[0]].get(p, 0.0) if ranked else 0.0
                picked |= {k for k in ranked if top <= 0 or clause_drops[k].get(p, 0.0) >= SHORTLIST_SHARE * top}
            chosen[i] = sorted(picked)
        return chosen

    def _coarse_to_fine(self, items, base, found, decided) -> dict[int, list[int]]:
        """Each item's clauses, or for an item of more than `max_units` clauses those of each decided policy's
        best run of neighbouring clauses (runs occluded through `scores` first)."""
        long = {i: [list(r) for r in _runs(len(found[i]), self.max_units)] for i in found if len(found[i]) > self.max_units}
        drops = self._occlude(self.scores, items, base, found, long)
        chosen = {i: list(range(len(found[i]))) for i in found}
        for i, runs in long.items():
            best = {max(range(len(runs)), key=lambda g: drops[i][g].get(p, 0.0)) for p in decided[i]}
            chosen[i] = [k for g in sorted(best) for k in runs[g]]
        return chosen

    @staticmethod
    def _occlude(scores: Scores, items, base, found, groups) -> dict[int, list[dict[str, float]]]:
        """{item index: per group, each policy's score drop with the group's clauses cut out}: every variant
        of every item goes to the scorer in one call."""
        variants, owner = [], []
        for i, item_groups in groups.items():
            for group in item_groups:
                variants.append(occluded(items[i], [found[i][k] for k in group]))
                owner.append(i)
        out: dict[int, list[dict[str, float]]] = {i: [] for i in groups}
        for i, record in zip(owner, scores(variants) if variants else []):
            policies = base[i]["policies"]
            out[i].append({p: policies[p] - record["policies"].get(p, 0.0) for p in policies})
        return out


def pick(item: Item, clauses: list[Unit], order: list[int], drops: list[float]) -> Evidence:
    """One policy's evidence: its top clause, joined with neighbouring clauses (in the same string) whose drop
    is at least MERGE_SHARE of the top's while the quote fits, and with a number right after it.

    `order[k]` is the index among `clauses` of the k-th attributed clause, `drops[k]` its drop."""
    if not order:
        return Evidence(fallback_quote(item), "", 0.0)
    top = max(range(len(order)), key=lambda k: drops[k])
    at = {index: k for k, index in enumerate(order)}
    first = last = order[top]
    if drops[top] > 0:
        def strong(j: int) -> bool:
            return j in at and drops[at[j]] >= MERGE_SHARE * drops[top] and clauses[j].path == clauses[order[top]].path

        while strong(first - 1) and clauses[last].end - clauses[first - 1].start <= EVIDENCE_MAX_CHARS:
            first -= 1
        while strong(last + 1) and clauses[last + 1].end - clauses[first].start <= EVIDENCE_MAX_CHARS:
            last += 1
    value = _leaf(item, clauses[first].path)
    end = _number_after(value, clauses[last].end, clauses[first].start)
    return Evidence(value[clauses[first].start:end], clauses[order[top]].text, float(drops[top]))


def _number_after(value: str, end: int, start: int) -> int:
    """Extend a quote over a phone number or price that follows it after a clause break (`WhatsApp: +44 7700 900123`),
    whole; a short bare number that a word follows (`3135 movement`, `10 pack`) is a measure, not taken."""
    match = re.match(r"[\s:：,，-]{1,3}([+$€£¥]?\d[\d\s().-]*)", value[end:])
    if not match:
        return end
    number = match.group(1).rstrip(" ().-")
    stop = end + match.start(1) + len(number)
    contact = number[0] in "+$€£¥" or len(re.sub(r"\D", "", number)) >= 6
    if (not contact and re.match(r"\s*[^\W\d_]", value[stop:])) or stop - start > EVIDENCE_MAX_CHARS:
        return end
    return stop


def _leaf(item: Item, path: tuple[Any, ...]) -> str:
    value: Any = item.fields
    for key in path:
        value = value[key]
    return value


def fallback_quote(item: Item) -> str:
    """A quote for an item with no clause to attribute (all handles and numbers): its first text, cut to the limit."""
    from moderation.schema import evidence_candidates

    text = item.text()
    return next(iter(evidence_candidates(text)), None) or quotable(text) or text[:EVIDENCE_MAX_CHARS]


def _occurrences(text: str, quote: str) -> list[tuple[int, int]]:
    spans = [(m.start(), m.start() + len(quote)) for m in re.finditer(re.escape(quote), text)] if quote else []
    if not spans and quote:  # parse_verdict accepts a quote up to case and runs of whitespace
        pattern = r"\s+".join(map(re.escape, quote.split()))
        spans = [m.span() for m in re.finditer(pattern, text, re.IGNORECASE)]
    return spans


def overlaps(text: str, quote: str, gold: str) -> bool:
    """Whether a quote and a gold span share a letter or digit of the item's text (any occurrences of each)."""
    for a, b in _occurrences(text, quote):
        for c, d in _occurrences(text, gold):
            if max(a, c) < min(b, d) and re.search(r"\w", text[max(a, c):min(b, d)]):
                return True
    return False


def lexical_screen(scorer, template, policy) -> Scores | None:
    """The TF-IDF half of policy heads (moderation.heads.HeadScorer.lexical) as a screen for `Attributor`: exact for
    that half and about a thousand times cheaper than the hidden-state half; None for a scorer without one."""
    lexical = getattr(scorer, "lexical", None)
    if not hasattr(lexical, "score_texts"):
        return None
    from moderation.heads import user_text

    def screen(items: list[Item]) -> list[dict[str, Any]]:
        if not items:  # a chunk where nothing was flagged: nothing to attribute (TF-IDF refuses an empty batch)
            return []
        rows = lexical.score_texts([user_text(template.messages(item, policy)) for item in items])
        return [{"policies": dict(zip(policy.ids, map(float, row)))} for row in rows]

    return screen
