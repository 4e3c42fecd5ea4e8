"""`moderation investigate [ACCOUNT]`: groups of accounts linked by shared off-platform contacts and
near-duplicate text, ranked by risk; with ACCOUNT, one group in full, optionally as a review queue
(the CLI side: it prints)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from moderation.errors import ConfigError
from moderation.investigate import InvestigateSettings, group_text
from moderation.settings import POLICY_HELP, add_fields, from_args

FLAGS = [f.name for f in dataclasses.fields(InvestigateSettings)]
DEFAULT_OUT = "runs/investigate/investigation.json"
DEFAULT_DB = os.environ.get("MODERATION_REVIEW_DB", "runs/review.sqlite")


def add_investigate_parser(sub) -> None:
    p = sub.add_parser("investigate", help="accounts linked by shared off-platform contacts (phones, handles, e-mail, "
                                           "URLs, payment handles) or listing text, ranked by risk; ACCOUNT: its group")
    p.add_argument("account", nargs="?", help="show this account's group: role:name (merchant:, creator:, chat:) or a "
                                              "name; its members, shared identifiers, evidence and flagged items")
    p.add_argument("--input", action="append", default=[], help="a dump (.jsonl, .csv, .parquet; repeatable)")
    p.add_argument("--run", action="append", default=[],
                   help="the run file of the matching --input (repeatable, in order; or none): its flags")
    p.add_argument("--from", dest="from_json", help="an investigation written before with -o: read it instead of the "
                                                    "dumps (--input is still needed for --queue)")
    p.add_argument("--bans", help="ban list, CSV or JSONL: account (role:name or a merchant's name), and optionally "
                                  "banned_at, reason, contacts (the identifiers it was known by)")
    p.add_argument("--ledger", help="merchants store (`moderation merchants --db`): merchants in --offboarded-tier "
                                    "count as banned")
    p.add_argument("--policy", help=POLICY_HELP)
    p.add_argument("--kind", default="listing", help="kind of --input rows without a 'kind' column")
    p.add_argument("--format", choices=["jsonl", "csv", "parquet"], help="--input format, when its name does not tell")
    p.add_argument("--columns", help="--input column mapping, as for `moderation run`")
    p.add_argument("-o", "--output", default=DEFAULT_OUT, help=f"the investigation as JSON (default {DEFAULT_OUT})")
    p.add_argument("--top", type=int, default=10, help="groups to list (default 10)")
    p.add_argument("--json", action="store_true", help="with ACCOUNT: print its group as JSON")
    p.add_argument("--queue", help="with ACCOUNT: put the group's items in this review queue of --db")
    p.add_argument("--queue-file", help="with ACCOUNT: write the queue's entries to this JSONL file as well")
    p.add_argument("--queue-limit", type=int, default=200, help="most items in the queue (default 200): evidence "
                                                                "first, then flagged ones")
    p.add_argument("--db", default=DEFAULT_DB, help=f"review store for --queue (default {DEFAULT_DB})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_fields(p, InvestigateSettings, FLAGS)


def _read_options(args) -> dict[str, Any]:
    from moderation.items import parse_column_map

    return {"fmt": args.format, "columns": parse_column_map(args.columns), "default_kind": args.kind}


def _investigation(args, settings: InvestigateSettings, policy) -> dict[str, Any]:
    from moderation import investigate as inv

    if args.from_json:
        return inv.read_json(args.from_json)
    if not args.input:
        raise ConfigError("give the dumps with --input DUMP (repeatable), or an investigation written before "
                          "with --from FILE")
    bans = (inv.load_bans(args.bans) if args.bans else []) + \
        (inv.ledger_bans(args.ledger, settings.offboarded_tier) if args.ledger else [])
    collector = inv.collect(args.input, args.run, bans=bans, settings=settings, policy=policy,
                            progress=not args.no_progress, **_read_options(args))
    result = inv.build(collector, bans, inv.load_allow_list(settings.allow_list))
    result["inputs"] = {"dumps": args.input, "runs": args.run, "bans": args.bans, "ledger": args.ledger}
    path = inv.write_json(result, args.output)
    stats = result["stats"]
    print(f"{stats['items']} items, {stats['accounts']} accounts, {stats['identifiers']} identifiers: "
          f"{len(result['groups'])} linked groups; written to {path}", file=sys.stderr)
    return result


def cmd_investigate(args) -> int:
    from moderation import investigate as inv
    from moderation.policy import load_policy

    settings, policy = from_args(InvestigateSettings, args, FLAGS), load_policy(args.policy)
    if (args.queue or args.queue_file) and not args.account:
        raise ConfigError("--queue and --queue-file export one account's group: name the ACCOUNT")
    result = _investigation(args, settings, policy)
    if not args.account:
        _print_groups(result, args.top)
        return 0
    group = inv.find_group(result, args.account)
    if group is None:
        print(f"{args.account} shares no identifier or listing text with another account")
        return 0
    print(json.dumps(group, indent=1, ensure_ascii=False) if args.json else group_text(group))
    if args.queue or args.queue_file:
        _export_queue(args, group, policy)
    return 0


def _print_groups(result: dict[str, Any], top: int) -> None:
    for c in result["common_identifiers"][:5]:
        print(f"common, not linked: {c['identifier']} ({c['accounts']} accounts)")
    groups = result["groups"]
    for g in groups[:top]:
        shown = ", ".join(g["members"][:6]) + (f" and {len(g['members']) - 6} more" if len(g["members"]) > 6 else "")
        print(f"{g['id']} risk {g['risk']:g}: {shown}\n    " + "; ".join(g["reasons"])
              + f"\n    via {', '.join(i['identifier'] for i in g['identifiers'][:4])}")
    print(f"{len(groups)} groups ({min(top, len(groups))} shown); `moderation investigate ACCOUNT --from FILE` shows one")


def _export_queue(args, group: dict[str, Any], policy) -> None:
    from moderation.investigate import queue_entries
    from moderation.review.store import Store
    from moderation.review.verdicts import Taxonomy

    if not args.input:
        raise ConfigError("--queue and --queue-file read the group's items from the dumps: give them with --input")
    entries = queue_entries(group, args.input, args.run, limit=args.queue_limit, progress=not args.no_progress,
                            **_read_options(args))
    if args.queue_file:
        Path(args.queue_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.queue_file).write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
        print(f"{len(entries)} queue entries written to {args.queue_file}")
    if args.queue:
        params = {"strategy": "investigation", "group": group["id"], "account": args.account, "inputs": args.input,
                  "runs": args.run, "taxonomy": Taxonomy.of(policy).to_json()}
        Store(args.db, create=True).create_queue(args.queue, entries, params)
        print(f"queue {args.queue!r} in {args.db}: {len(entries)} case checks of group {group['id']} "
              f"(`moderation review serve --db {args.db}`)")
