"""Evidence against hand-marked gold spans: the quotes the model writes, and the evidence attributed through the
scorer, on the same items of eval_sets/evidence_gold (75 violating items, 8 languages, never trained on).

Every item is scored once (score first); on each flagged item, for each gold policy the scores decided:

- written: the verdict the engine generates under the decided schema, settled as score first did before
  issue 28 (`--rationale llm` without attribution): its quote for the policy;
- attributed: moderation.explain as shipped (the TF-IDF half of the heads shortlists up to 3 clauses per
  policy, the whole scorer occludes them);
- reference: every clause occluded through the whole scorer (`HeadScorer.policy_scores`).

A quote counts when it shares a letter or digit of the item's text with the gold span. Also measured: how
often the shipped evidence lies in the reference's top clause, the full-scorer scorings and seconds each
costs per flagged item, and how many of the written rationales the check would replace. The table goes
into docs/explanations.md between its markers.

    python scripts/benchmark_evidence.py                       # default model, vLLM (about 10 minutes on 2 CPUs)
    python scripts/benchmark_evidence.py --json runs/evidence.json --no-docs
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moderation.errors import ConfigError, VerdictError  # noqa: E402
from moderation.evalsets import load_evidence_gold  # noqa: E402
from moderation.explain import Attributor, lexical_screen, overlaps  # noqa: E402
from moderation.factory import RunSettings, add_backend_args, run_moderator  # noqa: E402
from moderation.pipeline import decide, settle  # noqa: E402
from moderation.rationale import built_rationale, invented, named_policies  # noqa: E402
from moderation.report import splice_markdown  # noqa: E402
from moderation.schema import parse_verdict  # noqa: E402

DOC = ROOT / "docs" / "explanations.md"
START, END = "<!-- benchmark_evidence:start -->", "<!-- benchmark_evidence:end -->"


class Counting:
    """A scorer (items -> score records) that counts the items it scores."""

    def __init__(self, scores):
        self.scores, self.items = scores, 0

    def __call__(self, items):
        self.items += len(items)
        return self.scores(items)


def written_verdicts(moderator, items, decided, flagged) -> dict[int, dict]:
    """The generated verdict of each flagged item, settled to its decided outcome with the model's own quotes,
    with the moderator's retries (an item whose every attempt is invalid has none)."""
    out, todo = {}, list(flagged)
    for attempt in range(1, moderator.max_attempts + 1):
        if not todo:
            break
        generations = moderator.backend.generate([moderator.request(items[i], attempt, None, decided[i]) for i in todo])
        failed = []
        for i, generation in zip(todo, generations):
            try:
                verdict = parse_verdict(generation.text, items[i].text(), moderator.policy.ids)
                out[i] = settle(verdict, decided[i], moderator.policy, items[i].text())
            except VerdictError:
                failed.append(i)
        todo = failed
    return out


def timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def measure(moderator) -> dict:
    if not moderator.score_first:
        raise ConfigError("the evidence benchmark needs score first: a model with thresholds (--thresholds FILE)")
    gold = load_evidence_gold()
    items = [li.item for li in gold]
    moderator.score(items[:8])  # warm up the scorer (first tokenizer and model calls), so the timings compare
    scores, score_s = timed(lambda: moderator.score(items))
    decided = [decide(s, moderator.thresholds, moderator.policy) for s in scores]
    flagged = [i for i, d in enumerate(decided) if d.policies]
    policies = [d.policies for d in decided]
    # Attribution first: a lazily started engine (moderation.backends) is not running yet, so it takes no CPU.
    shipped_scorer = Counting(moderator.score)
    shipped = Attributor(shipped_scorer, lexical_screen(moderator.scorer, moderator.template, moderator.policy))
    attributed, shipped_s = timed(lambda: shipped.evidence(items, scores, policies))
    reference_scorer = Counting(moderator.score)
    reference = Attributor(reference_scorer, max_units=10 ** 6)
    ref_evidence, reference_s = timed(lambda: reference.evidence(items, scores, policies))
    moderator.backend.generate([moderator.request(items[flagged[0]], 1, None, decided[flagged[0]])])  # start-up, untimed
    written, written_s = timed(lambda: written_verdicts(moderator, items, decided, flagged))
    pairs = [(i, p) for i in flagged for p in sorted(gold[i].gold_violations) if p in decided[i].policies]

    def overlap(quote_of) -> list[bool]:
        return [bool(q) and overlaps(items[i].text(), q, dict(gold[i].evidence)[p]) for (i, p), q in
                zip(pairs, (quote_of(i, p) for i, p in pairs))]

    quotes = {
        "written": overlap(lambda i, p: next((v["evidence"] for v in written.get(i, {}).get("violations", [])
                                              if v["policy"] == p), None)),
        "attributed": overlap(lambda i, p: attributed[i][p].quote),
        "reference": overlap(lambda i, p: ref_evidence[i][p].quote),
    }
    agree = [bool(ref_evidence[i][p].clause) and overlaps(items[i].text(), attributed[i][p].quote, ref_evidence[i][p].clause)
             for i in flagged for p in decided[i].policies]
    reasons = [invented(v["rationale"], v, moderator.policy, items[i]) for i, v in written.items()]
    built = [built_rationale(moderator.policy, decided[i].decision, decided[i].policies,
                             {p: e.quote for p, e in attributed[i].items()}, items[i]) for i in flagged]
    decided_only = [not named_policies(text, moderator.policy, items[i].text()) - set(decided[i].policies)
                    for i, text in zip(flagged, built)]
    n = max(len(flagged), 1)
    return {
        "items": len(items), "gold_pairs": sum(len(li.gold_violations) for li in gold), "flagged_items": len(flagged),
        "correct_pairs": len(pairs), "languages": dict(Counter(it.language for it in items)),
        "overlap": {k: [sum(v), len(v)] for k, v in quotes.items()},
        "written_valid": [len(written), len(flagged)],
        "shipped_in_reference_top": [sum(agree), len(agree)],
        "scorings_per_flagged": {"attributed": shipped_scorer.items / n, "reference": reference_scorer.items / n},
        "seconds_per_flagged": {"written": written_s / n, "attributed": shipped_s / n, "reference": reference_s / n},
        "score_seconds_per_item": score_s / len(items),
        "written_rationales_replaced": [sum(r is not None for r in reasons), len(reasons)],
        "replaced_because": Counter((r or "").split(",")[0].split(" which")[0] for r in reasons if r).most_common(5),
        "built_rationales_decided_only": [sum(decided_only), len(decided_only)],
        "rationales": [{"id": items[i].id, "policies": list(decided[i].policies), "built": text,
                        "written": written[i]["rationale"] if i in written else None,
                        "replaced_because": invented(written[i]["rationale"], written[i], moderator.policy, items[i])
                        if i in written else None} for i, text in zip(flagged, built)],
        "examples": [{"id": items[i].id, "policy": p, "gold": dict(gold[i].evidence)[p],
                      "written": next((v["evidence"] for v in written.get(i, {}).get("violations", []) if v["policy"] == p), None),
                      "attributed": attributed[i][p].quote, "reference": ref_evidence[i][p].quote} for i, p in pairs],
    }


def agreement(moderator, split: str = "dev") -> dict:
    """On the marketplace set's `split` (where the shortlist was chosen): how often the shipped evidence lies in the
    reference's top clause, and the whole-scorer scorings each costs per flagged item."""
    from moderation.evalsets import load_marketplace

    items = [li.item for li in load_marketplace(split)]
    scores = moderator.score(items)
    policies = [decide(s, moderator.thresholds, moderator.policy).policies for s in scores]
    flagged = sum(bool(p) for p in policies)
    shipped_scorer, reference_scorer = Counting(moderator.score), Counting(moderator.score)
    shipped = Attributor(shipped_scorer, lexical_screen(moderator.scorer, moderator.template, moderator.policy))
    found, reference = shipped.evidence(items, scores, policies), Attributor(reference_scorer).evidence(items, scores, policies)
    agree = [bool(reference[i][p].clause) and overlaps(items[i].text(), found[i][p].quote, reference[i][p].clause)
             for i, ps in enumerate(policies) for p in ps]
    return {"split": f"marketplace/{split}", "flagged_items": flagged, "shipped_in_reference_top": [sum(agree), len(agree)],
            "scorings_per_flagged": {"attributed": shipped_scorer.items / max(flagged, 1),
                                     "reference": reference_scorer.items / max(flagged, 1)}}


def share(pair: list[int]) -> str:
    return f"{pair[0] / pair[1]:.2f} ({pair[0]}/{pair[1]})" if pair[1] else "n/a (0/0)"


def markdown(result: dict, meta: dict) -> str:
    o, s, c = result["overlap"], result["seconds_per_flagged"], result["scorings_per_flagged"]
    lines = [START, "", f"Made by `{meta['command']}` on {meta['date']} ({meta['machine']}; model `{meta['model']}`, "
             f"backend `{meta['backend']}`). {result['items']} gold items ({', '.join(f'{k} {v}' for k, v in result['languages'].items())}), "
             f"{result['gold_pairs']} gold (item, policy) pairs; score first flagged {result['flagged_items']} items and decided "
             f"the gold policy of {result['correct_pairs']} pairs, on which the quotes are compared.", "",
             "| evidence | overlaps the gold span | whole-scorer scorings per flagged item | seconds per flagged item |",
             "|---|---|---|---|",
             f"| written by the model (generated under the decided schema, as before issue 28) | {share(o['written'])} | – | "
             f"{s['written']:.2f} (generation) |",
             f"| attributed, as shipped (TF-IDF shortlist of up to 3 clauses per policy, then the whole scorer) | {share(o['attributed'])} | "
             f"{c['attributed']:.1f} | {s['attributed']:.2f} |",
             f"| attributed, reference (every clause through the whole scorer) | {share(o['reference'])} | {c['reference']:.1f} | "
             f"{s['reference']:.2f} |", "",
             f"- Scoring an item once (score first) took {result['score_seconds_per_item']:.2f} s here; the machine was shared, so "
             "compare the seconds within this table only.",
             f"- Shipped evidence inside the reference's top clause: {share(result['shipped_in_reference_top'])} of the "
             "flagged (item, policy) pairs.",
             f"- Written verdicts that passed validation: {share(result['written_valid'])}; written rationales the check "
             f"replaces: {share(result['written_rationales_replaced'])}"
             + (" (" + "; ".join(f"{reason}: {k}" for reason, k in result["replaced_because"]) + ")" if result["replaced_because"] else "") + ".",
             f"- Built rationales that name only decided policies: {share(result['built_rationales_decided_only'])}."]
    if "agreement" in result:
        a = result["agreement"]
        lines.append(f"- On {a['split']} ({a['flagged_items']} flagged items), where the shortlist was chosen: shipped evidence "
                     f"inside the reference's top clause {share(a['shipped_in_reference_top'])}, at "
                     f"{a['scorings_per_flagged']['attributed']:.1f} whole-scorer scorings per flagged item against "
                     f"{a['scorings_per_flagged']['reference']:.1f} (every clause; items of more than 16 clauses in runs first).")
    lines += ["", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_backend_args(parser)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--docs", default=str(DOC), help="Markdown file whose table to regenerate (default %(default)s)")
    parser.add_argument("--no-docs", action="store_true", help="print the table, write no docs")
    parser.add_argument("--no-agreement", action="store_true",
                        help="skip the shipped-against-reference agreement on the marketplace dev split")
    args = parser.parse_args(argv)
    moderator = run_moderator(RunSettings.from_args(args), "benchmark_evidence")
    try:
        result = measure(moderator)
        if not args.no_agreement:
            result["agreement"] = agreement(moderator)
    finally:
        moderator.backend.close()
    command = "python scripts/benchmark_evidence.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    meta = {"command": command.strip(), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {platform.python_version()}", "model": args.model, "backend": args.backend}
    table = markdown(result, meta)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, **result}, indent=2, ensure_ascii=False) + "\n")
    if not args.no_docs:
        splice_markdown(Path(args.docs), table, START, END)
        print(f"wrote the table into {args.docs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
