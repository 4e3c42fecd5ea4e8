"""Investigations: merchants, creators and chat users linked by the off-platform contacts they share
(moderation.contacts) and by near-duplicate listing text, grouped and ranked by risk.

moderation.investigate_collect streams the dumps, their run files' flags and the bans into a
Collector: the accounts, the identifiers each wrote with evidence, near-duplicate clusters of text.
Here the graph (networkx) joins accounts to those identifiers; accounts that share one identifier,
directly or through others, form a group. An allow-listed identifier links nobody, nor does one
written by more than `max_accounts` accounts (reported as common). A group is found by account,
shown to a person, and exported as review case checks.

Risk (the rank), from what an analyst acts on: 10 per member banned before (a ban list or the
merchants ledger's offboarded tier), 3 per member with a flagged item, 1 per flagged item (up to
30), 2 per identifier written obfuscated (up to 5), 0.5 per member.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from moderation.errors import InputError
from moderation.investigate_collect import EVIDENCE_FIELDS, Ban, Collector, units
# The reading side's public names, so that `moderation.investigate` stays the one entry point.
from moderation.investigate_collect import (  # noqa: F401
    InvestigateSettings, collect, ledger_bans, load_allow_list, load_bans,
)
from moderation.items import Item, read_items

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"


def build(collector: Collector, bans: Iterable[Ban] = (), allow: set[str] = frozenset()) -> dict[str, Any]:
    """The investigation: groups of linked accounts ranked by risk, and the identifiers left out."""
    import networkx as nx

    settings, banned = collector.settings, {}
    for ban in bans:
        banned.setdefault(ban.account, dataclasses.asdict(ban))
    graph, common = nx.Graph(), []
    for key, by_account in collector.links.items():
        if len(by_account) < 2:
            continue
        if key in allow:
            collector.stats["allow-listed identifiers"] += 1
            continue
        if len(by_account) > settings.max_accounts and not key.startswith("text:"):
            common.append({"identifier": key, "accounts": len(by_account)})
            continue
        for account, evidence in by_account.items():
            graph.add_edge(account, key, evidence=[dict(zip(EVIDENCE_FIELDS, e)) for e in evidence])
    groups = [_group(graph, part, collector, banned) for part in nx.connected_components(graph)]
    groups.sort(key=lambda g: (-g["risk"], -len(g["members"]), g["id"]))
    return {"schema_version": SCHEMA_VERSION, "settings": dataclasses.asdict(settings),
            "stats": {**collector.stats, "accounts": len(collector.accounts), "identifiers": len(collector.links)},
            "groups": groups, "common_identifiers": sorted(common, key=lambda c: -c["accounts"]),
            "accounts": sorted(collector.accounts), "banned": sorted(banned)}


def _group(graph, part: set[str], collector: Collector, banned: Mapping[str, dict]) -> dict[str, Any]:
    members = sorted(n for n in part if n not in collector.links)
    keys = sorted(n for n in part if n in collector.links)
    identifiers = [{"identifier": k, "accounts": sorted(graph.neighbors(k)),
                    "evidence": [{"account": a, **e} for a in sorted(graph.neighbors(k))
                                 for e in graph.edges[a, k]["evidence"]]}
                   for k in keys]
    accounts = {m: _member(collector.accounts.get(m), banned.get(m)) for m in members}
    re_registrations = [{"banned": b, "account": a, "via": sorted(set(graph.neighbors(a)) & set(graph.neighbors(b)))}
                        for b in members if b in banned for a in members
                        if a not in banned and set(graph.neighbors(a)) & set(graph.neighbors(b))]
    group = {"id": "G-" + hashlib.sha1("\n".join(members).encode()).hexdigest()[:8], "members": members,
             "accounts": accounts, "identifiers": identifiers, "re_registrations": re_registrations}
    group["risk"], group["reasons"] = _risk(group)
    return group


def _member(record: dict[str, Any] | None, ban: dict[str, Any] | None) -> dict[str, Any]:
    record = record or {"items": 0, "flagged": 0, "policies": Counter(), "flagged_items": []}
    return {"items": record["items"], "flagged": record["flagged"], "policies": dict(record["policies"].most_common()),
            "flagged_items": record["flagged_items"], "banned": ban}


def _risk(group: dict[str, Any]) -> tuple[float, list[str]]:
    accounts = group["accounts"].values()
    banned = sum(1 for a in accounts if a["banned"])
    flagged_accounts = sum(1 for a in accounts if a["flagged"])
    flagged = sum(a["flagged"] for a in accounts)
    hidden = sum(1 for i in group["identifiers"] if any(e.get("hidden") for e in i["evidence"]))
    risk = 10 * banned + 3 * flagged_accounts + min(flagged, 30) + 2 * min(hidden, 5) + 0.5 * len(group["members"])
    policies = Counter()
    for a in accounts:
        policies.update(a["policies"])
    reasons = [f"{_n(len(group['members']), 'account')} linked by {_n(len(group['identifiers']), 'shared identifier')}"]
    if banned:
        reasons.append(f"{banned} banned before; {_n(len(group['re_registrations']), 'suspected re-registration')}")
    if flagged:
        reasons.append(f"{_n(flagged_accounts, 'account')} with {_n(flagged, 'flagged item')} ("
                       + ", ".join(f"{p} {n}" for p, n in policies.most_common(4)) + ")")
    if hidden:
        reasons.append(f"{_n(hidden, 'identifier')} written obfuscated")
    return round(risk, 1), reasons


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def find_group(result: dict[str, Any], account: str) -> dict[str, Any] | None:
    """The group of an account (`role:name`, or a bare name when only one role has it), or None
    when the account links to nobody.

    Raises:
        InputError: no account of that name was seen (the nearest names are suggested), or a bare
            name that several roles have.
    """
    known = set(result["accounts"]) | set(result["banned"])
    if account not in known:
        matches = sorted(a for a in known if a.partition(":")[2] == account)
        if len(matches) > 1:
            raise InputError(f"{account!r} is {len(matches)} accounts: name one of {matches}")
        if not matches:
            bare = {}
            for a in sorted(known):
                bare.setdefault(a.partition(":")[2], []).append(a)
            near = difflib.get_close_matches(account, sorted(known), n=5, cutoff=0.5) or [
                full for name in difflib.get_close_matches(account.partition(":")[2] or account, list(bare), n=5, cutoff=0.4)
                for full in bare[name]]
            near += [a for a in sorted(known) if account.lower() in a.lower() and a not in near][:5 - len(near)]
            hint = f"; the nearest: {', '.join(near[:5])}" if near else ""
            raise InputError(f"no account {account!r} in these dumps or bans{hint}")
        account = matches[0]
    return next((g for g in result["groups"] if account in g["members"]), None)


def group_text(group: dict[str, Any]) -> str:
    """One group for a person: members, re-registrations, shared identifiers with their evidence, flagged items."""
    lines = [f"{group['id']} (risk {group['risk']:g}): " + "; ".join(group["reasons"]), "", "members:"]
    for name, a in group["accounts"].items():
        policies = ", ".join(f"{p} {n}" for p, n in a["policies"].items())
        ban = a["banned"]
        lines.append(f"  {name}: {a['items']} items, {a['flagged']} flagged" + (f" ({policies})" if policies else "")
                     + (f"  BANNED {ban['banned_at'] or ''} ({ban['source']}: {ban['reason']})" if ban else ""))
    for r in group["re_registrations"]:
        lines.append(f"suspected re-registration: {r['account']} shares {', '.join(r['via'])} with banned {r['banned']}")
    lines += ["", "shared identifiers:"]
    for ident in group["identifiers"]:
        lines.append(f"  {ident['identifier']} ({len(ident['accounts'])} accounts)")
        for e in ident["evidence"]:
            where = f"{e['item']} {e['source']}:{e['line']}" if e["item"] else e["source"]
            mark = " (obfuscated)" if e["hidden"] else ""
            said = f"{e['context']}: {e['raw']}" if e["via"] == "near-duplicate text" else e["context"]
            how = "lists" if e["item"] is None else (e["via"] or "in text")
            lines.append(f"    {e['account']} {where} {how}{mark}: {said}")
    flagged = [(name, f) for name, a in group["accounts"].items() for f in a["flagged_items"]]
    if flagged:
        lines += ["", "flagged items:"]
        lines += [f"  {name} {f['item']} {f['source']}:{f['line']} {', '.join(f['policies'])}" for name, f in flagged]
    return "\n".join(lines)


def queue_entries(group: dict[str, Any], dumps: list[str | Path], runs: list[str | Path] | None = None, *,
                  limit: int = 200, progress: bool = False, **read_options) -> list[dict[str, Any]]:
    """Case-check entries (as `review sample` makes) for the group's items: first those that carry
    the linking evidence, then flagged ones, then the rest, at most `limit`."""
    from tqdm import tqdm

    from moderation.runfile import read_records

    members, runs = set(group["members"]), list(runs or [])
    evidence = {(e["source"], e["line"]) for i in group["identifiers"] for e in i["evidence"] if e["line"] is not None}
    found = []
    for n, dump in enumerate(dumps):
        source = Path(dump).name
        rows = tqdm(read_items(dump, **read_options), desc=f"collecting {source}", unit=" rows", disable=not progress)
        picked = {line: row for line, row in rows if isinstance(row, Item) and members & {a for a, _ in units(row)}}
        verdicts = {r.line: r for r in read_records(runs[n]) if r.line in picked} if runs else {}
        found += [(source, line, row, verdicts.get(line)) for line, row in picked.items()]
    found.sort(key=lambda f: ((f[0], f[1]) not in evidence, not (f[3] and f[3].flagged), f[0], f[1]))
    return [_entry(group, source, line, row, record, (source, line) in evidence)
            for source, line, row, record in found[:limit]]


def _entry(group, source, line, row: Item, record, carries_evidence: bool) -> dict[str, Any]:
    keys = [i["identifier"] for i in group["identifiers"]
            if any(e["source"] == source and e["line"] == line for e in i["evidence"])]
    sample = {"strategy": "investigation", "group": group["id"], "source": source, "line": line,
              "accounts": sorted({a for a, _ in units(row)} & set(group["members"])), "identifiers": keys,
              "evidence": carries_evidence}
    if record is not None and record.scores is not None:
        sample["scores"] = record.scores
    return {"item": row.record(), "model_verdict": record.verdict if record else None,
            "provenance": (record.provenance or {}) if record else {}, "sample": sample, "overlap_group": None}


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_json(path: str | Path) -> dict[str, Any]:
    """An investigation written by `write_json`.

    Raises:
        InputError: missing, not JSON, or not an investigation.
    """
    path = Path(path)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"investigation file not found: {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read investigation {path}: {exc}") from None
    if not isinstance(result, dict) or "groups" not in result or "accounts" not in result:
        raise InputError(f"{path} is not an investigation written by `moderation investigate -o`")
    return result
