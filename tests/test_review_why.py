"""The check page's "why": each flagged policy's score against its threshold, its definition and its evidence
(moderation.review.why, through the app's HTTP routes), and the taxonomy a queue keeps its definitions in."""

import re

from moderation.review import auth
from moderation.review.app import create_app
from moderation.review.store import Store
from moderation.review.verdicts import Taxonomy
from moderation.review.why import reasons, rationale_source

PASSWORD = "correct horse battery"
ITEM = {"id": "w-1", "kind": "listing", "title": "Steel watch, AAA replica Rolex", "description": "Mirror quality.",
        "seller": "tick_tock", "region": "US", "language": "en"}
VERDICT = {"decision": "remove", "rationale": "Remove: Counterfeit and intellectual property.",
           "violations": [{"policy": "counterfeit_ip", "severity": "high", "evidence": "AAA replica Rolex"}]}
SCORES = {"violation": 0.84, "policies": {"counterfeit_ip": 0.84, "spam": 0.1}, "scorer": "heads",
          "explanation": {"rationale": "built", "thresholds": {"counterfeit_ip": 0.56}, "attribution": {"counterfeit_ip": 0.31}}}


def test_reasons_pair_each_violation_with_its_score_threshold_and_definition(policy):
    taxonomy = Taxonomy.of(policy)
    [r] = reasons(VERDICT, {"scores": SCORES}, taxonomy)
    assert (r.policy, r.title, r.evidence, r.score, r.threshold, r.reached, r.drop) == (
        "counterfeit_ip", "Counterfeit and intellectual property", "AAA replica Rolex", 0.84, 0.56, True, 0.31)
    assert r.definition == policy.entry("counterfeit_ip").definition
    [bare] = reasons(VERDICT, {}, Taxonomy.from_json({**taxonomy.to_json(), "policies": [
        {k: v for k, v in p.items() if k != "definition"} for p in taxonomy.to_json()["policies"]]}))
    assert bare.score is None and bare.reached is None and bare.definition == ""  # a queue from before definitions
    assert reasons({"decision": "allow", "violations": [], "rationale": ""}, {"scores": SCORES}, taxonomy) == []
    assert Taxonomy.from_json(taxonomy.to_json()) == taxonomy and Taxonomy.from_json(taxonomy.to_json()).definitions
    assert rationale_source({"scores": SCORES}) == "built from the policy file and the evidence"


def test_the_check_page_shows_score_against_threshold_definition_and_evidence_in_place(tmp_path, policy):
    from fastapi.testclient import TestClient

    store = Store(tmp_path / "review.sqlite")
    store.add_user("lee", "lead", auth.hash_password(PASSWORD))
    entry = {"item": ITEM, "model_verdict": VERDICT, "provenance": {"model": "m", "backend": "vllm"},
             "sample": {"strategy": "random", "scores": SCORES}, "overlap_group": None}
    store.create_queue("q", [entry], {"taxonomy": Taxonomy.of(policy).to_json()})
    c = TestClient(create_app(store))
    token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
    c.post("/login", data={"name": "lee", "password": PASSWORD, "csrf_token": token})
    [check] = store.checks("q")
    page = c.get(f"/checks/{check.check_id}").text
    why = page[page.index('id="why"'):page.index("</ol>", page.index('id="why"'))]
    assert "Counterfeit and intellectual property" in why and "counterfeit_ip" in why
    assert re.search(r'score <span class="score-value">0\.84</span>\s*≥ threshold <span class="threshold-value">0\.56</span>', why)
    assert policy.entry("counterfeit_ip").definition.replace('"', "&#34;") in why
    item = page[page.index('id="item"'):page.index("</section>", page.index('id="item"'))]
    assert "Steel watch, <mark>AAA replica Rolex</mark>" in item  # highlighted where it stands in the item's text
    assert "Rationale built from the policy file and the evidence." in page
    assert re.search(r"Without the quoted clause the score falls by\s+0\.31\.", why)
    store.close()
