"""The rationale of a flagged verdict: built from facts the system has, and the check a written one must pass.

A built rationale says only what the system knows: the decided action, each decided policy's title and
one-line summary from the policy file, the attributed evidence (quoted, never translated), and the region
rule that applied (an overlay entry of the item's region that shares a word with the item, for policies
whose `region_rules` name the overlay list). It is written in the item's language where the policy file
gives that language's titles and summaries and this module has the sentence frame (FRAMES), else in
English, and it always fits the verdict schema's rationale limit: the parts least needed go first
(quotes, then summaries, then the region rule).

A generated rationale (`--rationale llm`) is kept only if `invented` finds nothing in it: it must not
name a policy that was not decided, and every word of it must be grounded, that is said by the item,
be a decided policy's title, id or summary word, be in a rule of the item's region overlay, or be one of the
plain words of a rationale (GENERIC). Definitions do not ground: "False medical claim." for a fake-review item
names a harm (medical) that misleading_claim's definition lists and the item does not state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from moderation.items import Item
from moderation.policy import Policy, PolicyEntry
from moderation.schema import RATIONALE_MAX_CHARS

RATIONALE_MODES = ("built", "llm")


@dataclass(frozen=True)
class Frame:
    """How one language writes a built rationale: action words, the quote marks, and its punctuation."""

    actions: dict[str, str]  # decision -> the action, as the sentence opens
    quote: str = '"{}"'
    summary: str = " ({})"
    colon: str = ": "
    join: str = "; "
    end: str = "."
    region: str = "{code} rule: {rule}"  # only English: overlay rules are written in English


FRAMES: dict[str, Frame] = {
    "en": Frame({"remove": "Remove", "restrict": "Restrict", "review": "Hold for review"}),
    "de": Frame({"remove": "Entfernen", "restrict": "Einschränken", "review": "Zur Prüfung"}, quote="„{}“", region=""),
    "fr": Frame({"remove": "Retirer", "restrict": "Restreindre", "review": "À vérifier"}, quote="« {} »", colon=" : ",
                join=" ; ", region=""),
    "es": Frame({"remove": "Retirar", "restrict": "Restringir", "review": "Revisar"}, quote="«{}»", region=""),
    "pt": Frame({"remove": "Remover", "restrict": "Restringir", "review": "Revisar"}, quote="“{}”", region=""),
    "it": Frame({"remove": "Rimuovere", "restrict": "Limitare", "review": "Da verificare"}, quote="«{}»", region=""),
    "id": Frame({"remove": "Hapus", "restrict": "Batasi", "review": "Tinjau"}, quote="“{}”", region=""),
    "zh": Frame({"remove": "移除", "restrict": "限制", "review": "待审核"}, quote="“{}”", colon="：", join="；", end="。",
                summary="（{}）", region=""),
    "ja": Frame({"remove": "削除", "restrict": "制限", "review": "要確認"}, quote="「{}」", colon="：", join="；", end="。",
                summary="（{}）", region=""),
    "ko": Frame({"remove": "삭제", "restrict": "제한", "review": "검토 필요"}, quote="“{}”", region=""),
}


def language_of(item: Item, policy: Policy, policies: tuple[str, ...]) -> str:
    """The language a built rationale is written in: the item's, where FRAMES has its frame and the policy
    file has every decided policy's title in it; else English."""
    lang = (item.language or "en").split("-")[0].casefold()
    if lang in FRAMES and all(lang in policy.entry(p).titles() for p in policies):
        return lang
    return "en"


def region_rule(policy: Policy, entry: PolicyEntry, item: Item) -> str | None:
    """The overlay rule of the item's region that applied to a decided policy: the entry of the overlay list the
    policy's `region_rules` names that shares the most subject words (4+ letters, not the plain words of a rule,
    plurals folded) with the item; None if none does, or if two share as many (a rule the item may not be under
    is never stated)."""
    overlay = policy.regions.get((item.region or "").upper())
    if overlay is None or not entry.region_rules:
        return None
    words = _subjects(item.text())
    rules = overlay.restricted if entry.region_rules == "restricted" else overlay.required_info
    scored = sorted(((len(_subjects(rule) & words), rule) for rule in rules), key=lambda pair: -pair[0])
    if not scored or not scored[0][0] or (len(scored) > 1 and scored[1][0] == scored[0][0]):
        return None
    return scored[0][1]


# Words of overlay rules that say how a thing is regulated, not what it is: a rule applies on its subject words.
RULE_WORDS = frozenset("""
only check checks checked banned legal sold sale sales adult adults consumer consumers state states law laws
limited registration registered licence license licensed approved marking items item except within period periods
where applicable needing needs business sellers seller trader identity name address contact details information
regulated controlled delivery product products goods under with without varying several their them must state
""".split())


def _subjects(text: str) -> set[str]:
    words = {_stem(w) for w in re.findall(r"[^\W\d_]{4,}", text.casefold()) if w not in RULE_WORDS}
    return {w[:6] for w in words}  # "disposable" and "disposables", "vape" and "vapes" meet


def _stem(word: str) -> str:
    word = word.casefold()
    for suffix in ("ies", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[:-len(suffix)]
    return word


def built_rationale(policy: Policy, decision: str, policies: tuple[str, ...], evidence: dict[str, str], item: Item,
                    limit: int = RATIONALE_MAX_CHARS) -> str:
    """The rationale of a flagged verdict from facts only (see the module docstring), at most `limit` characters."""
    lang = language_of(item, policy, policies)
    frame = FRAMES[lang]
    entries = [policy.entry(p) for p in policies]
    rules = [] if not frame.region else [r for r in (region_rule(policy, e, item) for e in entries) if r]
    region = frame.region.format(code=(item.region or "").upper(), rule=rules[0]) if rules else ""
    # From the fullest sentence down: quotes go first, then summaries, then the region rule.
    for quotes, summaries, with_region in ((True, True, True), (False, True, True), (False, False, True),
                                          (False, True, False), (True, False, False), (False, False, False)):
        if with_region and not region and not summaries:
            continue  # without a region rule this is the titles alone, which come last
        parts = [_policy_part(frame, e, lang, evidence.get(e.id) if quotes else None, summaries) for e in entries]
        text = frame.actions[decision] + frame.colon + frame.join.join(parts)
        text += (frame.join + region if region and with_region else "") + frame.end
        if len(text) <= limit:
            return text
    return _cut(text, limit)


def _policy_part(frame: Frame, entry: PolicyEntry, lang: str, quote: str | None, summary: bool) -> str:
    title, line = entry.titles()[lang], entry.summaries().get(lang, "")
    part = title + frame.summary.format(line) if summary and line else title
    return part + frame.colon + frame.quote.format(quote) if quote else part


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[:limit - 1]
    space = head.rfind(" ")
    return (head[:space] if space > limit // 2 else head).rstrip(" ,;:(") + "…"


# --- checking a written rationale ---------------------------------------------------------------

# The plain words of an English rationale: they state no fact about an item, so they need no grounding.
GENERIC = frozenset("""
a an the this that these those it its it's is are was were be been being has have had do does did not no nor
and or but if so as of for to in on at by with without from into via per than then there here which who what
item items listing listings post posts video videos chat chats message messages stream live profile shop store
merchant merchants seller sellers buyer buyers user users account accounts product products goods service services
sell sells selling sold sale offer offers offering offered ask asks asking asked request requests requesting
promote promotes promoting promotion advertise advertises advertising contain contains containing mention mentions
mentioning claim claims claiming say says saying state states stating show shows showing use uses using include
includes including appear appears appearing seem seems describe describes described
policy policies violation violations violate violates violating rule rules platform content text evidence quote
remove removed removal restrict restricted restriction review reviewed hold held flag flagged decision action
likely possible possibly potential potentially clear clearly unclear may might could would should must can
other others another any some all more most less also only just very such same own without
encourage encourages encouraging glorify glorifies glorifying repeat repeats repeated repeating target targets
targeting describe describes
""".split())
_NAMES: dict[str, dict[str, set[str]]] = {}  # policy sha -> what names each of its policies


def policy_names(policy: Policy) -> dict[str, set[str]]:
    """What names each policy in a rationale: its id; the words (4+ letters, not GENERIC) of its English title
    that no other policy's title has ("items" names no one policy); each translated title as a phrase, and a
    title in a script without spaces by its pieces between '・' or '·' too."""
    if policy.sha not in _NAMES:
        words = {e.id: {w for w in _words(e.title) if len(w) >= 4 and w not in GENERIC} for e in policy.policies}
        names = {}
        for e in policy.policies:
            own = words[e.id] - set().union(*(w for p, w in words.items() if p != e.id))
            phrases = {" ".join(_words(t)) or t for lang, t in e.titles().items() if lang != "en"}
            pieces = {x for t in e.titles().values() if " " not in t and not t.isascii()
                      for x in re.split(r"[・·]", t) if len(x) >= 2}
            names[e.id] = {e.id} | own | phrases | pieces
        _NAMES[policy.sha] = names
    return _NAMES[policy.sha]


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]+(?:-[^\W\d_]+)*", text.casefold())


def _quoted(text: str, item_text: str) -> str:
    """The text with quoted pieces that are the item's own words taken out (a quote names nothing itself)."""
    for piece in re.findall(r"[\"“„«「»](.+?)[\"”“»」«]", text):
        if piece.strip(" ,.") and piece.strip(" ,.").casefold() in item_text.casefold():
            text = text.replace(piece, " ")
    return text


def named_policies(rationale: str, policy: Policy, item_text: str = "") -> set[str]:
    """The policies a rationale names (by id, distinctive English title word or translated title, outside quotes
    of the item's own words)."""
    text = _quoted(rationale, item_text).casefold()
    spaced = " " + " ".join(_words(text)) + " "
    stems = {_stem(w) for w in _words(text)}
    found = set()
    for pid, names in policy_names(policy).items():
        for name in names:
            if name == pid or (" " not in name and not re.search(r"[a-zà-ÿ]", name)):
                hit = name in text  # an id, or a title (piece) in a script without spaces
            elif " " in name:
                hit = f" {name} " in spaced
            else:
                stem = _stem(name)
                hit = any(w == stem or (len(stem) >= 5 and w.startswith(stem[:-1])) for w in stems)
            if hit:
                found.add(pid)
                break
    return found


def invented(rationale: str, verdict: dict[str, Any], policy: Policy, item: Item) -> str | None:
    """Why a written rationale cannot be kept, or None: it is empty, names a policy the verdict does not decide,
    or states a word that is grounded nowhere (see the module docstring)."""
    if not rationale.strip():
        return "empty"
    decided = {v["policy"] for v in verdict.get("violations", [])}
    item_text = item.text()
    others = named_policies(rationale, policy, item_text) - decided
    if others:
        return f"names {', '.join(sorted(others))}, not decided"
    overlay = policy.regions.get((item.region or "").upper())
    rules = [*overlay.restricted, *overlay.required_info] if overlay else []
    grounds = _grounds(" ".join([item_text, *rules]), [policy.entry(p) for p in decided], verdict)
    for word in re.findall(r"[^\W_]+", _quoted(rationale, item_text).casefold()):
        if not _grounded(word, grounds, item_text.casefold()):
            return f"says {word!r}, which neither the item nor a decided policy says"
    return None


def _grounds(item_text: str, entries: list[PolicyEntry], verdict: dict[str, Any]) -> set[str]:
    words = set(GENERIC)
    for text in [item_text, *(v.get("evidence", "") for v in verdict.get("violations", []))]:
        words |= set(re.findall(r"[^\W_]+", text.casefold()))
    for entry in entries:
        words |= set(re.split(r"[_\W]+", entry.id))
        for text in [*entry.titles().values(), *entry.summaries().values()]:
            words |= set(re.findall(r"[^\W_]+", text.casefold()))
    return {_stem(w) for w in words} | words


def _grounded(word: str, grounds: set[str], item_text: str) -> bool:
    if (len(word) == 1 and not word.isdigit()) or word in grounds or _stem(word) in grounds:
        return True
    if word.isdigit():
        return word in item_text
    if not word.isascii() and not re.search(r"[a-zà-ÿ]", word):  # no spaces between words (Chinese, Japanese, Thai)
        pairs = [word[k:k + 2] for k in range(len(word) - 1)] or [word]
        return sum(pair in item_text for pair in pairs) >= len(pairs) / 2
    return len(word) >= 5 and any(g.startswith(word[:5]) for g in grounds if len(g) >= 5)
