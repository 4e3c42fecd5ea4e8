"""Regenerate the worked examples of docs/impact.md: their tables, and their plots under docs/impact/.

    python scripts/impact_example.py            # reports under runs/impact-example/ (seconds, no model)
    python scripts/impact_example.py --write    # and splice them into docs/impact.md, plots to docs/impact/

A. Real scores: the shipped default model's run on the demo dump, `runs/demo-built.jsonl`, made with
   `moderation run moderation/data/demo_dump.jsonl -o runs/demo-built.jsonl` (CPU minutes; give another
   with --demo-run). A2: the same run under a policy file in which misleading_claim is sent to review.
   No case check exists for the demo dump, so both are unmeasured, with the sample to review first.
B. The measured path: the fake backend (keyword rules, no model) runs the marketplace set's dev and test
   items; `moderation review sample` draws a random audit of them into a fresh review store, and a
   scripted reviewer answers from the set's gold labels (accept what agrees with them, else correct to
   them, as scripts/review_loop.py's oracle does); impact then measures a threshold change against them.
   The fake's scores are coarse (a rule hit is 0.87, two share 0.435): B shows the mechanics, not the model.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from moderation.impact import ImpactRequest, assess  # noqa: E402
from moderation.impact_measure import ImpactSettings  # noqa: E402
from moderation.impact_report import headline, sections, write_report  # noqa: E402
from moderation.policy import DEFAULT_POLICY  # noqa: E402
from moderation.report import splice_markdown  # noqa: E402

DEMO = "moderation/data/demo_dump.jsonl"
DAY, NOW = "2026-11-23", "2026-11-23"
THRESHOLDS_A = ("fraud_scam=0.6", "spam=0.5", "misleading_claim=0.8")
THRESHOLDS_B = ("off_platform_transaction=0.4", "fraud_scam=0.4", "counterfeit_ip=0.9", "spam=0.9")
AUDIT = 150  # items the scripted reviewers check in B


def block(name: str, text: str) -> tuple[str, str, str]:
    start, end = f"<!-- impact-example-{name}:start -->", f"<!-- impact-example-{name}:end -->"
    return f"{start}\n\n{text.strip()}\n\n{end}", start, end


def as_doc(report_md: str, plots: str) -> str:
    """A report's Markdown as a part of docs/impact.md: headings one level down, plots from docs/impact/NAME/."""
    text = re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 1) + " ", report_md, flags=re.M)
    text = re.sub(r"!\[([^]]*)\]\(([^)/]+\.png)\)", rf"![\1]({plots}/\2)", text)
    return text.replace("## Impact of a policy change\n\n", "")


def example_a(out: Path, demo_run: str) -> tuple[str, str]:
    request = ImpactRequest(run=(demo_run,), input=(DEMO,), run_date=(DAY,), now=NOW, threshold=THRESHOLDS_A)
    a = assess(request)
    write_report(a, out / "a")
    data = yaml.safe_load(Path(DEFAULT_POLICY).read_text())
    for entry in data["policies"]:
        if entry["id"] == "misleading_claim":
            entry["default_action"] = "review"
    (out / "a2").mkdir(parents=True, exist_ok=True)
    policy = out / "a2" / "policy.yaml"
    policy.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    a2 = assess(ImpactRequest(run=(demo_run,), input=(DEMO,), run_date=(DAY,), now=NOW, proposed_policy=str(policy)))
    write_report(a2, out / "a2")
    parts = dict(sections(a2.result))
    decisions = parts["Decisions that change"]
    short = "\n".join([*headline(a2.result), "", *decisions[:decisions.index("")], "", *parts["Review queue"]])
    return as_doc((out / "a" / "impact.md").read_text(), "impact/a"), short


def example_b(out: Path) -> str:
    from moderation.backends.base import BackendConfig
    from moderation.backends.fake import FakeBackend
    from moderation.batch import BatchRunner
    from moderation.evalsets import load_marketplace
    from moderation.items import read_items
    from moderation.pipeline import Moderator
    from moderation.policy import load_policy
    from moderation.prompts import load_template

    policy, b = load_policy(), out / "b"
    if b.exists():
        shutil.rmtree(b)
    b.mkdir(parents=True)
    labelled = [li for li in load_marketplace() if li.split in ("dev", "test")]
    dump, run, current = b / "marketplace-dev-test.jsonl", b / "run.jsonl", b / "current-thresholds.json"
    dump.write_text("".join(json.dumps(li.item.record(), ensure_ascii=False) + "\n" for li in labelled))
    thresholds = {p: 0.5 for p in policy.ids}
    current.write_text(json.dumps(thresholds))
    moderator = Moderator(FakeBackend(BackendConfig()), policy, load_template(), thresholds=thresholds)
    BatchRunner(moderator).run(read_items(dump), run)
    db = b / "review.sqlite"
    audit(run, dump, db, {li.item.id: li for li in labelled})
    request = ImpactRequest(run=(str(run),), input=(str(dump),), run_date=(DAY,), now=NOW, current_thresholds=str(current),
                            threshold=THRESHOLDS_B, db=str(db))
    assessment = assess(request, ImpactSettings(min_checks=10))
    write_report(assessment, b / "report")
    return as_doc((b / "report" / "impact.md").read_text(), "impact/b")


def audit(run: Path, dump: Path, db: Path, gold: dict) -> None:
    """`moderation review sample` (random, AUDIT items) into a fresh store; a scripted reviewer answers each check
    from gold: accept when the model's decision and policies are gold's, else correct to gold (at most 3 policies)."""
    from moderation.review import cli as review_cli
    from moderation.review.store import Store

    parser = argparse.ArgumentParser()
    review_cli.add_parser(parser.add_subparsers(dest="command"))
    review_cli.cmd_review(parser.parse_args(["review", "sample", str(run), "--input", str(dump), "-n", str(AUDIT),
                                             "--seed", "0", "--db", str(db), "--queue", "audit"]))
    store = Store(db, create=False)
    for check in store.checks("audit"):
        truth = gold[check.item["id"]]
        policies = sorted(truth.gold_violations)[:3]
        decision = truth.gold_decision or ("remove" if policies else "allow")
        model = check.model_verdict
        if (model["decision"], sorted(v["policy"] for v in model["violations"])) == (decision, policies):
            store.decide(check.check_id, "oracle", check.version, "accept", lead=True)
        else:
            store.decide(check.check_id, "oracle", check.version, "correct", lead=True,
                         correction={"decision": decision, "policies": policies})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/impact-example", help="where the reports go (default runs/impact-example)")
    parser.add_argument("--demo-run", default="runs/demo-built.jsonl", help="the default model's run on the demo dump")
    parser.add_argument("--write", action="store_true", help="splice into docs/impact.md, copy plots to docs/impact/")
    args = parser.parse_args()
    out = Path(args.out)
    blocks = {"b": example_b(out)}
    if Path(args.demo_run).is_file():
        blocks["a"], blocks["a2"] = example_a(out, args.demo_run)
    else:
        print(f"{args.demo_run} not found: example A skipped (make it with `moderation run {DEMO} -o {args.demo_run}`)")
    for name, text in blocks.items():
        print(f"--- example {name}\n{text[:1500]}\n")
    if args.write:
        doc = ROOT / "docs" / "impact.md"
        for name, text in blocks.items():
            splice_markdown(doc, *block(name, text))
        for name in (n for n in ("a", "b") if n in blocks):
            target = ROOT / "docs" / "impact" / name
            target.mkdir(parents=True, exist_ok=True)
            source = out / name / ("report" if name == "b" else "")
            for png in source.glob("*.png"):
                shutil.copy(png, target / png.name)
        print(f"spliced {', '.join(blocks)} into {doc}; plots in docs/impact/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
