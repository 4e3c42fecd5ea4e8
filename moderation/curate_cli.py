"""`moderation curate`: the CLI side of curation (it prints)."""

from __future__ import annotations

import datetime
import sys

from moderation.curate import CurateConfig, class_balance, curate, write_datasets
from moderation.settings import DATA_DIR_HELP, POLICY_HELP, add_fields, from_args


def add_curate_parser(sub) -> None:
    p = sub.add_parser("curate", help="build SFT / preference / KTO data sets from case checks and train splits")
    p.add_argument("-o", "--out-dir", required=True, help="output folder: sft/, preference/, kto/, README.md, leaks.json")
    p.add_argument("--case-checks", action="append", default=[], help="a `moderation review export` JSONL file (repeatable)")
    p.add_argument("--sets", help="comma-separated labelled sets whose train splits to sample (default: all, with the "
                                  "marketplace training corpus 'marketplace_corpus'); 'none' for none")
    p.add_argument("--test-sets", help="sets whose test splits are checked for leakage (default: all)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--prompt", default="prompts/moderate.short.v1.txt", help="prompt template the rows are rendered with")
    p.add_argument("--policy", help=POLICY_HELP)
    p.add_argument("--labels", metavar="FILE", action="append", default=[], help=(
        "a team's labelled file, read as `eval --labels` reads it, in the --policy taxonomy (repeatable): its train "
        "rows (every row, without a split column) are sampled like a set's; its dev and test rows are checked for leakage"))
    add_fields(p, CurateConfig)
    from moderation.labels import LabelOptions

    add_fields(p.add_argument_group("reading --labels files"), LabelOptions)


def _set_list(text: str | None, training: bool = False) -> list[str]:
    from moderation.evalsets import CORPUS, set_names

    known = [*set_names(), CORPUS] if training else set_names()
    if text == "none":
        return []
    names = [n.strip() for n in text.split(",")] if text else known
    unknown = sorted(set(names) - set(known))
    if unknown:
        from moderation.errors import ConfigError

        raise ConfigError(f"unknown sets {unknown}; choose from {known}")
    return names


def cmd_curate(args) -> int:
    from moderation.evalsets import load_set, load_sets
    from moderation.labels import LabelOptions, read_labelled
    from moderation.policy import load_policy
    from moderation.prompts import load_template

    config = from_args(CurateConfig, args)
    policy, template = load_policy(args.policy), load_template(args.prompt)
    print("loading labelled sets ...", file=sys.stderr)
    train, skipped = load_sets(_set_list(args.sets, training=True), "train", args.data_dir, policy)
    for note in skipped:
        print(f"note: {note}", file=sys.stderr)
    # Leak checks look at every test item, whatever its labels: the unmapped ones too.
    test = {n: load_set(n, "test", args.data_dir) for n in _set_list(args.test_sets)}
    for path in args.labels:
        labelled = read_labelled(path, from_args(LabelOptions, args), policy, default_split="train")
        train[labelled.name] = labelled.split("train")
        test[f"{labelled.name} (held out)"] = labelled.split("dev") + labelled.split("test")
    curated = curate(train, test, args.case_checks, policy, template, config)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["moderation", *sys.argv[1:]]) if "moderation" in sys.argv[0] else None,
            "prompt": args.prompt, "prompt_sha": template.sha, "policy_version": policy.version,
            "policy_sha": policy.sha, "schema_id": policy.schema_id, "policies": list(policy.ids)}
    write_datasets(curated, args.out_dir, config, meta)
    balance = class_balance(curated.sft)
    print(f"SFT rows {len(curated.sft)}, preference pairs {len(curated.preference)}, KTO rows {len(curated.kto)}")
    print(f"case checks: {dict(curated.checks)}; dropped: {dict(curated.dropped)}")
    print("decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(balance["decision"].items())))
    print("policies: " + ", ".join(f"{k} {v}" for k, v in sorted(balance["policy"].items())))
    print(f"wrote {args.out_dir}/sft, preference, kto, README.md (dataset card), leaks.json")
    return 0
