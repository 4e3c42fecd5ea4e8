"""`moderation screen fit`: the CLI side of the cascade's first stage (it prints)."""

from __future__ import annotations

import sys
from pathlib import Path

from moderation.screen import Screen, ScreenSettings
from moderation.settings import DATA_DIR_HELP, POLICY_HELP, add_fields


def add_screen_parser(sub) -> None:
    p = sub.add_parser("screen", help="the cost cascade's cheap first stage (see docs/cascade.md)")
    screen_sub = p.add_subparsers(dest="screen_command", required=True)
    f = screen_sub.add_parser("fit", help="fit the TF-IDF screen on train splits, choose its threshold on dev splits")
    f.add_argument("-o", "--out-dir", required=True, help="where screen.json, model.npz and README.md go (for `run --screen`)")
    f.add_argument("--sets", help="comma-separated labelled sets (default: marketplace and every public set)")
    f.add_argument("--data-dir", help=DATA_DIR_HELP)
    f.add_argument("--policy", help=POLICY_HELP + "; the screen is fitted for its taxonomy, and runs under another refuse it")
    add_fields(f, ScreenSettings, ["max_recall_loss", "criterion", "max_features"])


def figures_table(screen: Screen) -> str:
    """Markdown table of the dev figures, per set and pooled."""
    dev = screen.card["dev"]
    lines = ["| set | dev items | violating | cleared | cleared share | clean items cleared | violations skipped | recall loss |",
             "|---|---|---|---|---|---|---|---|"]
    for name, f in [*dev["per_set"].items(), ("**pooled**", dev["pooled"])]:
        lines.append(f"| {name} | {f['items']} | {f['violating']} | {f['cleared']} | {f['cleared_share']:.1%} | "
                     f"{f['clean_cleared_share']:.1%} | {f['skipped_violations']} | {f['recall_loss']:.2%} |")
    return "\n".join(lines)


def card_markdown(screen: Screen, command: str | None) -> str:
    s = screen.card["settings"]
    return "\n".join([
        "# TF-IDF screen", "",
        "The cost cascade's first stage (docs/cascade.md): items whose violation score (the largest per-policy",
        "probability of the TF-IDF + logistic-regression baseline) is below the threshold get an allow verdict",
        "without the LLM. Use it with `moderation run --screen DIR`.", "",
        f"- threshold: {screen.threshold:.6f}, chosen on dev for a recall loss of at most {s['max_recall_loss']:.2%} "
        f"({s['criterion']})",
        f"- trained on the train splits of {', '.join(screen.card['train_sets'])} ({screen.card['train_items']} items)",
        f"- files sha: {screen.sha}; created {screen.card['created_at']}",
        *([f"- command: `{command}`"] if command else []), "",
        "## Dev figures", "", figures_table(screen), "",
    ])


def cmd_screen(args) -> int:
    from moderation.evalsets import load_sets, parse_names, set_names
    from moderation.policy import load_policy
    from moderation.screen import fit_screen

    policy = load_policy(args.policy)
    sets = parse_names(args.sets, set_names(), "sets")
    print(f"loading the train and dev splits of {len(sets)} sets ...", file=sys.stderr)
    train, skipped = load_sets(sets, "train", args.data_dir, policy)
    dev, _ = load_sets(list(train), "dev", args.data_dir, policy)
    for note in skipped:
        print(f"note: {note}", file=sys.stderr)
    train, dev = [li for items in train.values() for li in items], [li for items in dev.values() for li in items]
    print(f"fitting the TF-IDF screen on {len(train)} train items, threshold on {len(dev)} dev items ...", file=sys.stderr)
    screen = fit_screen(train, dev, policy.ids, args.max_recall_loss, criterion=args.criterion,
                        max_features=args.max_features)
    out = Path(args.out_dir)
    screen.save(out)
    command = " ".join(["moderation", *sys.argv[1:]]) if sys.argv and "moderation" in sys.argv[0] else None
    (out / "README.md").write_text(card_markdown(screen, command))
    pooled = screen.card["dev"]["pooled"]
    print(figures_table(screen))
    print(f"\nthreshold {screen.threshold:.6f}: {pooled['cleared_share']:.1%} of dev items skip the LLM, "
          f"{pooled['recall_loss']:.2%} of dev violations skipped")
    print(f"wrote {out / 'screen.json'}, model.npz and README.md (sha {screen.sha}); use `moderation run --screen {out}`")
    return 0
