"""Evidence attributed through the scorer (moderation.explain), built and checked rationales
(moderation.rationale), and the generation-free path of score first."""

import json

import pytest

from moderation.backends import BackendConfig
from moderation.backends.fake import FakeBackend
from moderation.errors import ConfigError
from moderation.explain import Attributor, fallback_quote, occluded, overlaps, units
from moderation.items import Item
from moderation.pipeline import Moderator
from moderation.rationale import FRAMES, built_rationale, invented, named_policies
from moderation.schema import EVIDENCE_MAX_CHARS, RATIONALE_MAX_CHARS

# A stand-in scorer: each policy's score rises with its keywords in the item's text.
KEYWORDS = {"counterfeit_ip": ("replica", "AAA"), "off_platform_transaction": ("WhatsApp", "Telegram"),
            "fraud_scam": ("deposit",), "spam": ("link in bio",)}


def keyword_scores(items):
    out = []
    for item in items:
        text = item.text()
        out.append({"policies": {p: min(1.0, 0.1 + 0.4 * sum(text.count(w) for w in words)) for p, words in KEYWORDS.items()}})
    return out


def evidence_of(item, policies, **kwargs):
    [found] = Attributor(keyword_scores, **kwargs).evidence([item], keyword_scores([item]), [policies])
    return {p: e.quote for p, e in found.items()}


def test_the_clause_that_drives_a_policys_score_is_its_evidence():
    item = Item("a", "listing", {"title": "Oak watch box, fits six watches", "description":
                                 "Solid wood. AAA replica Rolex inside as a gift. Message me on WhatsApp: +44 7700 900123"})
    quotes = evidence_of(item, ("counterfeit_ip", "off_platform_transaction"))
    assert quotes == {"counterfeit_ip": "AAA replica Rolex inside as a gift",
                      "off_platform_transaction": "Message me on WhatsApp: +44 7700 900123"}  # the number after the clause joins it
    assert all(q in item.text() for q in quotes.values())


def test_handles_labels_and_emoji_or_number_pieces_are_never_evidence():
    item = Item("c", "live_chat", {"channel": "replica_talk", "messages": [
        {"user": "lina_bakes", "text": "Caption: ⭐⭐⭐⭐⭐ 5"},
        {"user": "replica_king", "text": "@lina_bakes | WhatsApp me for replica AAA bags"}]})
    assert [u.text for u in units(item)] == ["WhatsApp me for replica AAA bags"]
    assert evidence_of(item, ("counterfeit_ip",)) == {"counterfeit_ip": "WhatsApp me for replica AAA bags"}
    spoken_to = Item("m", "live_chat", {"channel": "x", "messages": [{"user": "u", "text": "@lina_bakes @ella you people go home"}]})
    assert [u.text for u in units(spoken_to)] == ["you people go home"]  # the mentions that open a message are not quoted
    only_handles = Item("d", "live_chat", {"channel": "x", "messages": [{"user": "replica_king", "text": "@replica_king"}]})
    assert units(only_handles) == [] and evidence_of(only_handles, ("counterfeit_ip",))["counterfeit_ip"] in only_handles.text()


def test_quotes_are_exact_substrings_within_the_schema_limit():
    long_clause = "AAA " + " ".join(f"word{i}" for i in range(60)) + " replica"
    item = Item("e", "creator_video", {"creator": "vid_guy", "caption": "new drop", "transcript": long_clause,
                                       "language": "zh"})
    quote = evidence_of(item, ("counterfeit_ip",))["counterfeit_ip"]
    assert quote in item.text() and len(quote) <= EVIDENCE_MAX_CHARS
    cjk = Item("f", "listing", {"title": "高仿" * 80, "seller": "s"})
    assert all(len(u.text) <= EVIDENCE_MAX_CHARS and u.text in cjk.text() for u in units(cjk))
    assert len(fallback_quote(cjk)) <= EVIDENCE_MAX_CHARS


def test_a_contact_number_after_the_clause_joins_the_quote_a_measure_does_not():
    def quote(title):
        item = Item("n", "listing", {"title": title, "seller": "s"})
        return evidence_of(item, ("counterfeit_ip",))["counterfeit_ip"]

    assert quote("AAA replica, +44 7700 900123 and pay") == "AAA replica, +44 7700 900123"
    assert quote("AAA replica, 3135 movement") == "AAA replica"
    assert quote("AAA replica: $99. Ships fast") == "AAA replica: $99"


def test_occlusion_cuts_only_the_clause_and_numbers_are_never_split():
    item = Item("g", "listing", {"title": "2016 Ford Focus 1.6 TDCi, AAA replica", "seller": "s", "attributes": {"km": "10,5"}})
    assert [u.text for u in units(item)] == ["2016 Ford Focus 1.6 TDCi", "AAA replica"]
    cut = occluded(item, units(item)[1:])
    assert cut.fields["title"] == "2016 Ford Focus 1.6 TDCi, " and item.fields["title"].endswith("replica")


def test_a_long_item_is_attributed_in_runs_then_clause_by_clause_at_bounded_cost():
    clauses = [f"plain clause number {i}" for i in range(40)]
    clauses[27] = "AAA replica here"
    item = Item("h", "listing", {"title": "t", "description": ". ".join(clauses), "seller": "s"})
    calls = []

    def counting(items):
        calls.append(len(items))
        return keyword_scores(items)

    [found] = Attributor(counting, max_units=8).evidence([item], keyword_scores([item]), [("counterfeit_ip",)])
    assert found["counterfeit_ip"].quote == "AAA replica here"
    assert sum(calls) <= 8 + 2 * 8 and len(calls) == 2  # runs, then the best run's clauses: two scorer calls


def test_a_screen_shortlists_clauses_for_the_whole_scorer():
    item = Item("i", "listing", {"title": "Plain lamp", "description": "AAA replica shade. Send a deposit first. Nice.",
                                 "seller": "s"})
    full = []

    def whole(items):
        full.append(len(items))
        return keyword_scores(items)

    [found] = Attributor(whole, screen=keyword_scores, shortlist=1).evidence([item], keyword_scores([item]),
                                                                            [("counterfeit_ip", "fraud_scam")])
    assert {p: e.quote for p, e in found.items()} == {"counterfeit_ip": "AAA replica shade", "fraud_scam": "Send a deposit first"}
    assert full == [2]  # one clause per decided policy went to the whole scorer
    assert overlaps(item.text(), "AAA replica shade", "replica") and not overlaps(item.text(), "Plain lamp", "replica")


def test_nothing_decided_costs_no_scoring():
    def refuse(items):
        raise AssertionError(f"scored {len(items)} items")

    assert Attributor(refuse, screen=refuse).evidence([ITEM], keyword_scores([ITEM]), [()]) == [{}]
    assert Attributor(refuse).evidence([], [], []) == []


# --- the pipeline: no generation when the rationale is built ---------------------------------------

THRESHOLDS = {p: 0.5 for p in ("counterfeit_ip", "fraud_scam", "spam", "off_platform_transaction")}
ITEM = Item("b", "listing", {"title": "Steel watch, 40 mm", "description": "Boxed. AAA replica Rolex, mirror quality.",
                             "seller": "watch_guy", "region": "UK", "language": "en"})


def test_built_rationale_path_makes_no_generate_call(make_moderator, policy):
    moderator = make_moderator(thresholds=THRESHOLDS)  # the default: rationale="built"
    [outcome] = moderator.moderate([ITEM])
    assert moderator.backend.calls == []  # the fake backend records every generate call
    verdict = outcome.verdict
    assert verdict["decision"] != "allow" and verdict["violations"] and outcome.attempts == 0
    assert all(v["evidence"] in ITEM.text() for v in verdict["violations"])
    decided = tuple(v["policy"] for v in verdict["violations"])
    quotes = {v["policy"]: v["evidence"] for v in verdict["violations"]}
    assert verdict["rationale"] == built_rationale(policy, verdict["decision"], decided, quotes, ITEM)
    explanation = outcome.scores["explanation"]
    assert explanation["rationale"] == "built" and set(explanation["thresholds"]) == set(decided) == set(explanation["attribution"])
    assert moderator.provenance()["rationale"] == "built"


def test_llm_rationale_that_invents_is_replaced_and_counted(make_moderator, policy):
    def respond(request):
        return json.dumps({"decision": "remove", "rationale": "Counterfeit watch with injection.",
                           "violations": [{"policy": "counterfeit_ip", "severity": "high", "evidence": "Rolex"}]})

    moderator = make_moderator(respond=respond, thresholds=THRESHOLDS, rationale="llm")
    [outcome] = moderator.moderate([ITEM])
    assert len(moderator.backend.calls) == 1
    assert outcome.scores["explanation"]["rationale"] == "replaced"
    assert "injection" in outcome.scores["explanation"]["replaced_because"]
    decided = tuple(v["policy"] for v in outcome.verdict["violations"])
    assert not named_policies(outcome.verdict["rationale"], policy, ITEM.text()) - set(decided)
    with pytest.raises(ConfigError, match="rationale"):
        make_moderator(rationale="poetry")


def test_invented_finds_the_issues_examples(policy):
    review_item = Item("r", "listing", {"title": "Phone case", "description": "Leave 5 stars and get a full refund"})
    spam = {"violations": [{"policy": "misleading_claim", "evidence": "Leave 5 stars and get a full refund"}]}
    assert "medical" in invented("False medical claim.", spam, policy, review_item)
    prop = Item("p", "listing", {"title": "Prop money, 100 bills", "description": "Looks real on camera"})
    fake = {"violations": [{"policy": "counterfeit_ip", "evidence": "Prop money"}]}
    assert invented("Prostitution and child-facilitation services.", fake, policy, prop)
    assert invented("", fake, policy, prop) == "empty"
    assert invented("Sells fake bills that look real.", fake, policy, prop) is None  # "fakes": the decided summary
    assert "fake" in invented("Sells fake bills.", {"violations": [{"policy": "fraud_scam", "evidence": "x"}]}, policy, prop)
    assert "spam" in invented("Spam listing of prop money.", fake, policy, prop)


def test_built_rationales_fit_and_name_only_decided_policies_in_every_language(policy):
    import itertools

    item = Item("x", "listing", {"title": "Disposable vapes, toys and lamps", "seller": "s"})
    for lang, region in itertools.product(FRAMES, ("EU", "UK", "US", "SG", None)):
        probe = Item("x", "listing", {**item.fields, "language": lang, **({"region": region} if region else {})})
        for k in (1, 2, 3):
            for combo in itertools.combinations(policy.ids, k):
                for decision in ("review", "restrict", "remove"):
                    text = built_rationale(policy, decision, combo, {p: "Disposable vapes" for p in combo}, probe)
                    assert len(text) <= RATIONALE_MAX_CHARS
                    assert named_policies(text, policy, probe.text()) <= set(combo), (lang, combo, text)
    de = Item("y", "listing", {"title": "Echte Rolex", "language": "de"})
    assert built_rationale(policy, "remove", ("counterfeit_ip",), {"counterfeit_ip": "Echte Rolex"}, de).startswith("Entfernen")
    vapes = Item("v", "listing", {"title": "Disposable vapes 10 pack", "region": "UK", "language": "en"})
    assert "UK rule: Disposable vapes banned" in built_rationale(policy, "restrict", ("restricted_item",), {}, vapes)
    assert len(built_rationale(policy, "remove", policy.ids[:3], {}, vapes, limit=40)) <= 40


def _sets():
    from moderation.evalsets import set_names

    return [*set_names(), "evidence_gold"]


@pytest.mark.parametrize("name", _sets())
def test_no_built_rationale_names_a_policy_that_was_not_decided_on_any_test_split(name, policy):
    """Every test split's violating items, flagged with their gold policies (fake scores), and their evidence
    attributed through a stand-in scorer (longer text, higher score: the longest clause is the evidence, a
    quote as long as any): each built rationale names only its decided policies."""
    from moderation.evalsets import load_evidence_gold, load_set
    from moderation.pipeline import decide

    try:
        items = load_evidence_gold() if name == "evidence_gold" else load_set(name, "test", policy=policy)
    except ConfigError as exc:
        pytest.skip(f"{name} not readable here: {exc}")
    flagged = [li for li in items if li.gold_violations]
    if not flagged:
        pytest.skip(f"{name} has no violating test item")

    def length_scores(batch):
        return [{"policies": dict.fromkeys(policy.ids, len(it.text()) / 1e5)} for it in batch]

    scores = [{"policies": {p: 1.0 if p in li.gold_violations else 0.0 for p in policy.ids}} for li in flagged]
    decided = [decide(s, {p: 0.5 for p in policy.ids}, policy) for s in scores]
    evidence = Attributor(length_scores).evidence([li.item for li in flagged], length_scores(
        [li.item for li in flagged]), [d.policies for d in decided])
    wrong = []
    for li, d, found in zip(flagged, decided, evidence):
        text = built_rationale(policy, d.decision, d.policies, {p: e.quote for p, e in found.items()}, li.item)
        assert len(text) <= RATIONALE_MAX_CHARS and all(e.quote in li.item.text() for e in found.values())
        if named_policies(text, policy, li.item.text()) - set(d.policies):
            wrong.append((li.item.id, text))
    assert not wrong, wrong[:5]


def test_a_changed_rationale_mode_refuses_resume_and_misses_the_verdict_cache(tmp_path, make_moderator):
    from conftest import write_jsonl

    from moderation.batch import BatchRunner, source_key
    from moderation.items import read_items

    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "title": "AAA replica Rolex"}])
    out = tmp_path / "out.jsonl"
    BatchRunner(make_moderator(thresholds=THRESHOLDS)).run(read_items(src), out)
    llm = make_moderator(thresholds=THRESHOLDS, rationale="llm")
    with pytest.raises(ConfigError, match=r"model\.rationale: 'built' then, 'llm' now"):
        BatchRunner(llm).run(read_items(src), out)
    built = make_moderator(thresholds=THRESHOLDS)
    assert source_key(built.provenance()) != source_key(llm.provenance())  # the verdict cache keys on it


# --- moderation eval: the faithfulness of explanations ----------------------------------------------


def test_eval_reports_faithfulness_and_the_check_can_fail(tmp_path, make_moderator, policy):
    import dataclasses

    from moderation.evalsets import load_evidence_gold
    from moderation.evaluate import faithfulness, run_llm

    gold = load_evidence_gold()[:30]
    built = make_moderator(thresholds={p: 0.5 for p in policy.ids})
    records, _ = run_llm(built, gold, tmp_path / "built.jsonl")
    figures = faithfulness(built, gold, records, policy)
    flagged = sum(bool((r.verdict or {}).get("violations")) for r in records.values())
    assert flagged and figures["faithfulness_evidence_top_clause"] == 1.0 == figures["faithfulness_rationale_decided_only"]
    assert figures["faithfulness_evidence_top_clause_n"] == flagged and "faithfulness_rationale_replaced" not in figures
    assert 0 < figures["faithfulness_evidence_gold_overlap_n"] <= flagged * 3
    # quotes moved off the attributed clause (to the item's last clause) and a rationale naming another policy: caught
    moved = {}
    for key, r in records.items():
        if (r.verdict or {}).get("violations"):
            item = next(li.item for li in gold if li.item.id == key)
            last = units(item)[-1].text if units(item) else r.verdict["violations"][0]["evidence"]
            verdict = {**r.verdict, "rationale": "Spam and self-harm.",
                       "violations": [{**v, "evidence": last} for v in r.verdict["violations"]]}
            r = dataclasses.replace(r, verdict=verdict)
        moved[key] = r
    worse = faithfulness(built, gold, moved, policy)
    assert worse["faithfulness_evidence_top_clause"] < 1.0 and worse["faithfulness_rationale_decided_only"] < 1.0

    def respond(request):
        return json.dumps({"decision": "remove", "rationale": "Counterfeit watch with injection.",
                           "violations": [{"policy": "counterfeit_ip", "severity": "high", "evidence": "x"}]})

    llm = make_moderator(respond=respond, thresholds={p: 0.5 for p in policy.ids}, rationale="llm")
    records, _ = run_llm(llm, gold, tmp_path / "llm.jsonl")
    assert faithfulness(llm, gold, records, policy)["faithfulness_rationale_replaced"] == 1.0


def test_moderation_eval_on_the_gold_evidence_set_prints_the_checks(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    thresholds = tmp_path / "t.json"
    from moderation.policy import load_policy

    thresholds.write_text(json.dumps({p: 0.5 for p in load_policy().ids}))
    done = subprocess.run([sys.executable, "-m", "moderation.cli", "eval", "--labels", "eval_sets/evidence_gold/items.jsonl",
                           "--systems", "llm", "--backend", "fake", "--thresholds", str(thresholds), "--bootstrap", "20",
                           "--out-dir", str(tmp_path / "eval"), "--no-progress"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "Explanations of llm's flagged verdicts" in report and "evidence overlaps the gold span" in report
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["results"][0]["metrics"]
    assert metrics["faithfulness_evidence_gold_overlap_n"] > 0 and metrics["faithfulness_rationale_decided_only"] == 1.0
    assert "evidence overlaps the gold span" in (tmp_path / "eval" / "report.html").read_text()


def test_the_gold_evidence_set_covers_the_policies_and_stays_out_of_training():
    from moderation.dedup import MinHashIndex
    from moderation.evalsets import (
        EVIDENCE_GOLD_CARD_HEADER,
        EVIDENCE_GOLD_DIR,
        data_card,
        load_corpus,
        load_evidence_gold,
        load_marketplace,
        set_names,
    )
    from moderation.policy import load_policy

    gold = load_evidence_gold()
    assert len(gold) >= 60 and len({li.item.language for li in gold}) >= 6
    assert {p for li in gold for p in li.gold_violations} == set(load_policy().ids)
    assert all(dict(li.evidence).keys() == li.gold_violations for li in gold)
    assert all(q in li.item.text() and len(q) <= EVIDENCE_MAX_CHARS for li in gold for _, q in li.evidence)
    assert "evidence_gold" not in set_names()  # what curate and eval read by default
    seen = MinHashIndex()
    for li in load_corpus() + load_marketplace():
        seen.add(li.item.id, li.item.text())
    assert not [li.item.id for li in gold if seen.exact(li.item.text()) or seen.near(li.item.text())]
    assert (EVIDENCE_GOLD_DIR / "CARD.md").read_text() == data_card(gold, EVIDENCE_GOLD_CARD_HEADER) + "\n"


def test_a_region_rule_is_stated_only_when_one_rule_clearly_applies(policy):
    from moderation.rationale import region_rule

    restricted = policy.entry("restricted_item")
    vapes = Item("v", "listing", {"title": "Elf Bar 600 disposables - box of 10", "description": "10 vapes. No ID checks.",
                                  "region": "UK"})
    assert region_rule(policy, restricted, vapes) == "Disposable vapes banned; vapes and tobacco 18+ only"
    # "checks" is how a rule regulates, not what it is about: it never picks the knife rule for vapes
    assert region_rule(policy, restricted, Item("c", "listing", {"title": "Hoodie, no ID checks", "region": "UK"})) is None
    assert region_rule(policy, policy.entry("counterfeit_ip"), vapes) is None  # no region_rules: no overlay list


def test_addresses_and_links_stay_whole_and_an_address_alone_is_no_evidence():
    item = Item("u", "merchant", {"name": "Vape shop", "contact": "cloudninevapes@mail.example",
                                  "about": "Log in at claim-prize.example/login now. Version 1.6 ready."})
    assert [u.text for u in units(item)] == ["Vape shop", "Log in at claim-prize.example/login now", "Version 1.6 ready"]


def test_the_evidence_benchmark_measures_both_methods_on_the_same_pairs_and_writes_its_table(tmp_path):
    import importlib.util

    from conftest import ROOT

    from moderation.policy import load_policy

    spec = importlib.util.spec_from_file_location("benchmark_evidence", ROOT / "scripts" / "benchmark_evidence.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    thresholds, doc, out = tmp_path / "t.json", tmp_path / "doc.md", tmp_path / "e.json"
    thresholds.write_text(json.dumps({p: 0.5 for p in load_policy().ids}))
    doc.write_text(f"# Doc\n\n{bench.START}\nold\n{bench.END}\n\nafter\n")
    assert bench.main(["--backend", "fake", "--thresholds", str(thresholds), "--docs", str(doc), "--json", str(out),
                       "--no-agreement"]) == 0
    result = json.loads(out.read_text())
    pairs = result["correct_pairs"]
    assert pairs > 0 and all(result["overlap"][k][1] == pairs for k in ("written", "attributed", "reference"))
    text = doc.read_text()
    assert "\nold\n" not in text and text.endswith("after\n") and "| attributed, as shipped" in text
