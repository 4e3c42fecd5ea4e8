"""Policy as data: a team's own taxonomy end to end (run, eval --labels, review, curate), artefacts of
another taxonomy refused, caches that never mix taxonomies, and `moderation policy diff`."""

import json
import re

import pytest
import yaml
from conftest import ROOT, read_jsonl, write_jsonl

from moderation.cli import main
from moderation.errors import ConfigError
from moderation.evalsets import OutsideTaxonomy, load_set, to_taxonomy
from moderation.policy import load_policy
from moderation.review import auth
from moderation.review.store import Store
from moderation.schema import DEFAULT_POLICY_IDS

IDS = ("fraud_scam", "spam", "tobacco_nicotine")
PASSWORD = "taxonomy password 1"
ITEMS = [
    {"id": "a", "title": "iPhone 16 Pro new sealed, $99, pay deposit first"},  # fraud_scam fires in the fake's rules
    {"id": "b", "title": "FREE followers!!! click the link in bio link in bio"},  # spam fires
    {"id": "c", "title": "Glock 19 frame plus 200 rounds, no paperwork"},  # only a default policy fires: not ours
    {"id": "d", "title": "Disposable vapes 10-pack, no age check"},  # restricted_item by default; ours: tobacco_nicotine
    {"id": "e", "title": "Oak dining table, seats six"},
    {"id": "f", "title": "Western Union only, gift cards accepted"},
]
GOLD = {"a": ["fraud_scam"], "b": ["spam"], "c": [], "d": ["tobacco_nicotine"], "e": [], "f": ["fraud_scam"]}


def taxonomy_file(path, ids=IDS, **extra):
    """A policy file of `ids`, with the shipped file's decisions and severities and no region overlays."""
    shipped = yaml.safe_load((ROOT / "prompts" / "policy.yaml").read_text())
    policies = [{"id": i, "title": i.replace("_", " ").capitalize(), "definition": f"Items that are {i.replace('_', ' ')}.",
                 "severity": "high", "default_action": "remove", "examples": {"violating": [f"an example of {i}"]}}
                for i in ids]
    data = {"version": "t1", "name": "Team policy", "decisions": shipped["decisions"], "severities": shipped["severities"],
            "policies": policies, **extra}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def named_policies(record: dict) -> set[str]:
    """Every policy id a run record names: its verdict's, its scores' and its flagged ones."""
    names = {v["policy"] for v in (record.get("verdict") or {}).get("violations", [])}
    names |= set((record.get("scores") or {}).get("policies", {}))
    return names | set(record.get("flagged") or [])


@pytest.fixture
def team(tmp_path):
    return taxonomy_file(tmp_path / "team.yaml")


def test_the_schema_is_generated_from_the_policy_file_and_the_shipped_file_is_the_default(team):
    policy = load_policy(team)
    assert policy.ids == IDS and policy.schema["$defs"]["violation"]["properties"]["policy"]["enum"] == list(IDS)
    assert policy.schema_id != load_policy().schema_id and policy.schema_id in policy.schema["$id"]
    shipped = json.loads((ROOT / "moderation" / "verdict.schema.json").read_text())
    assert load_policy().schema == shipped and load_policy().ids == DEFAULT_POLICY_IDS


def test_bad_policy_files_are_refused_by_name(tmp_path):
    for ids, problem in ((("spam", "spam"), "distinct"), (("Spam!",), "lower-case")):
        with pytest.raises(ConfigError, match=problem):
            load_policy(taxonomy_file(tmp_path / "bad.yaml", ids))
    with pytest.raises(ConfigError, match="label_map maps onto.*not policy ids"):
        load_policy(taxonomy_file(tmp_path / "bad.yaml", label_map={"misleading_claim": "nonsense"}))
    for text, problem in (("", "must be a mapping"), ("- a\n- b\n", "must be a mapping"),
                          ("version: 1\npolicies:\n  - id: x\n", "lacks the key 'title'")):
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(ConfigError, match=problem):
            load_policy(tmp_path / "bad.yaml")


def test_a_run_follows_the_team_taxonomy_and_names_only_its_ids(team, tmp_path):
    dump, out = write_jsonl(tmp_path / "dump.jsonl", ITEMS), tmp_path / "out.jsonl"
    assert main(["run", str(dump), "-o", str(out), "--backend", "fake", "--policy", str(team), "--no-progress"]) == 0
    records = {r["id"]: r for r in read_jsonl(out)}
    assert all(named_policies(r) <= set(IDS) for r in records.values())
    assert all(set(r["scores"]["policies"]) == set(IDS) for r in records.values())
    policies = {i: [v["policy"] for v in r["verdict"]["violations"]] for i, r in records.items()}
    assert policies == {"a": ["fraud_scam"], "b": ["spam"], "c": [], "d": [], "e": [], "f": ["fraud_scam"]}
    assert records["a"]["provenance"]["schema_id"] == load_policy(team).schema_id


@pytest.mark.slow
def test_a_transformers_run_under_the_team_taxonomy_names_only_its_ids(team, tmp_path):
    """The zero-shot base model scores the team's policies with its own token probabilities (the transformers
    backend has no constrained decoding, so verdicts come from the scores: score first, nothing reaching 0.99)."""
    dump, out = write_jsonl(tmp_path / "dump.jsonl", ITEMS[:3]), tmp_path / "out.jsonl"
    (tmp_path / "t.json").write_text(json.dumps(dict.fromkeys(IDS, 0.99)))
    assert main(["run", str(dump), "-o", str(out), "--backend", "transformers", "--model", "base", "--policy", str(team),
                 "--thresholds", str(tmp_path / "t.json"), "--no-progress"]) == 0
    records = read_jsonl(out)
    assert len(records) == 3 and all(r["verdict"] and named_policies(r) <= set(IDS) for r in records)
    assert all(set(r["scores"]["policies"]) == set(IDS) and 0 < sum(r["scores"]["policies"].values()) for r in records)


def labelled_file(path):
    rows = [{**item, "title": f"{item['title']} ({split} copy)", "violations": GOLD[item["id"]], "split": split}
            for split in ("train", "dev", "test") for item in ITEMS]
    return write_jsonl(path, [{**r, "id": f"{r['split']}-{r['id']}"} for r in rows])


def test_eval_labels_reports_only_the_team_taxonomy(team, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--labels", str(labelled_file(tmp_path / "labels.jsonl")), "--policy", str(team),
                 "--backend", "fake", "--out-dir", str(out), "--no-progress", "--bootstrap", "20"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    keys = {k.split("/")[0] for r in metrics["results"] for k in [*r["metrics"], *r["thresholds"]] if "/" in k or k in IDS}
    assert keys and keys <= set(IDS)
    assert all(set(r["thresholds"]) == set(IDS) for r in metrics["results"])
    assert set(json.loads((out / "thresholds" / "labels.json").read_text())) == set(IDS)
    runs = [r for f in (out / "runs").glob("*.jsonl") for r in read_jsonl(f)]
    assert len(runs) == 12 and all(named_policies(r) <= set(IDS) for r in runs)  # test and dev rows
    assert metrics["meta"]["llm"]["schema_id"] == load_policy(team).schema_id
    assert not set(re.findall(r"\b[a-z]+_[a-z_]+\b", (out / "report.md").read_text())) & (set(DEFAULT_POLICY_IDS) - set(IDS))


def test_review_and_curate_work_in_the_team_taxonomy(team, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from moderation.review.app import create_app
    from moderation.review.oracle import Gold, OracleReviewer, parse_check_page

    dump, run = write_jsonl(tmp_path / "dump.jsonl", ITEMS), tmp_path / "run.jsonl"
    assert main(["run", str(dump), "-o", str(run), "--backend", "fake", "--policy", str(team), "--no-progress"]) == 0
    db = str(tmp_path / "checks.sqlite")
    assert main(["review", "sample", str(run), "--input", str(dump), "-n", "6", "--db", db]) == 2  # the default policy
    assert "made under another taxonomy" in capsys.readouterr().err
    assert main(["review", "sample", str(run), "--input", str(dump), "-n", "6", "--db", db, "--queue", "q",
                 "--policy", str(team)]) == 0
    store = Store(db)
    store.add_user("oracle", "reviewer", auth.hash_password(PASSWORD))
    assert store.taxonomy("q").ids == IDS
    client = TestClient(create_app(store))
    oracle = OracleReviewer(client, "oracle", PASSWORD, {i: Gold("remove" if p else "allow", frozenset(p)) for i, p in GOLD.items()})
    oracle.login()
    check = parse_check_page(client.get(f"/checks/{store.claim_next('q', 'oracle').check_id}").text)
    assert check.choices == IDS  # the correction form offers the team's policies, and only them
    refused = client.post(f"/checks/{check.check_id}", data={"csrf_token": check.csrf, "version": check.version,
                                                            "action": "correct", "decision": "remove", "policy": "counterfeit_ip"})
    assert refused.status_code == 400 and "unknown policies" in refused.text
    counts = oracle.review("q")
    assert sum(counts.values()) == 6 and counts["correct"] >= 1
    checks = {c.item["id"]: c for c in store.checks("q")}
    assert [v["policy"] for v in checks["d"].reviewer_verdict["violations"]] == ["tobacco_nicotine"]  # the model missed it
    export = tmp_path / "checks.jsonl"
    assert main(["review", "export", db, "-o", str(export)]) == 0
    assert all(named_policies({"verdict": r["reviewer_verdict"]}) <= set(IDS) for r in read_jsonl(export))
    curated = tmp_path / "curated"
    assert main(["curate", "-o", str(curated), "--case-checks", str(export), "--policy", str(team), "--sets", "none",
                 "--test-sets", "marketplace"]) == 0
    rows = read_jsonl(curated / "sft" / "train.jsonl")
    assert len(rows) == 6 and all(named_policies({"verdict": json.loads(r["messages"][-1]["content"])}) <= set(IDS)
                                  for r in rows)
    assert json.loads((curated / "taxonomy.json").read_text())["policies"] == list(IDS)


def test_files_made_for_another_taxonomy_are_refused_naming_both(team, tmp_path, capsys):
    from moderation.model import DEFAULT_ADAPTER
    from moderation.screen import fit_screen

    marketplace = load_set("marketplace", "train"), load_set("marketplace", "dev")
    fit_screen(*marketplace, DEFAULT_POLICY_IDS, 0.05, max_features=2000).save(tmp_path / "screen")
    (tmp_path / "t.json").write_text(json.dumps({"prohibited_item": 0.5, "spam": 0.4}))
    dump = write_jsonl(tmp_path / "dump.jsonl", ITEMS)
    base = ["run", str(dump), "-o", str(tmp_path / "out.jsonl"), "--policy", str(team), "--no-progress"]
    for extra, problem in ((["--backend", "fake", "--screen", str(tmp_path / "screen")], "screen .* fitted for another taxonomy"),
                           (["--backend", "fake", "--thresholds", str(tmp_path / "t.json")], "made for another taxonomy"),
                           (["--backend", "fake", "--heads", str(DEFAULT_ADAPTER)], "heads .* fitted for another taxonomy"),
                           (["--backend", "fake", "--adapter", str(DEFAULT_ADAPTER)], "adapter .* trained for another taxonomy"),
                           (["--backend", "transformers", "--model", "default"], "fine-tuned for another taxonomy")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert re.search(problem, err) and "Team policy t1" in err and "prohibited_item" in err, err


def test_the_verdict_cache_and_resume_never_mix_taxonomies(team, tmp_path, capsys):
    dump, cache = write_jsonl(tmp_path / "dump.jsonl", ITEMS), str(tmp_path / "verdicts.sqlite")

    def run(out, *policy):
        assert main(["run", str(dump), "-o", str(tmp_path / out), "--backend", "fake", "--verdict-cache", cache,
                     "--no-progress", *policy]) == 0
        return read_jsonl(tmp_path / out)

    default = run("default.jsonl")
    assert any(named_policies(r) - set(IDS) for r in default)  # the default taxonomy flags prohibited_item and more
    ours = run("team.jsonl", "--policy", str(team))
    assert not any(r["provenance"].get("cached") for r in ours) and all(named_policies(r) <= set(IDS) for r in ours)
    again = run("team-again.jsonl", "--policy", str(team))
    assert all(r["provenance"].get("cached") for r in again)  # the same taxonomy does reuse its entries
    assert main(["run", str(dump), "-o", str(tmp_path / "default.jsonl"), "--backend", "fake", "--policy", str(team),
                 "--no-progress"]) == 2  # resuming a file made under the default taxonomy
    assert "schema_id" in capsys.readouterr().err


def test_public_sets_map_onto_a_taxonomy_through_its_label_map(tmp_path):
    mapped = load_policy(taxonomy_file(tmp_path / "m.yaml", ("fake_goods", "spam"), label_map={"counterfeit_ip": "fake_goods"}))
    items = load_set("marketplace", "test")
    out = to_taxonomy("marketplace", items, mapped)
    kept = {li.item.id for li in out}
    for li in items:
        if li.gold_violations <= {"counterfeit_ip", "spam"}:
            assert li.item.id in kept
        else:  # a label with no place in the taxonomy: left out, not counted clean
            assert li.item.id not in kept
    assert {p for li in out for p in li.gold_violations} == {"fake_goods", "spam"}
    unmapped = load_policy(taxonomy_file(tmp_path / "u.yaml", ("tobacco_nicotine",)))
    with pytest.raises(OutsideTaxonomy, match="set 'marketplace' skipped: none of its labels"):
        to_taxonomy("marketplace", items, unmapped)
    assert main(["eval", "--sets", "marketplace", "--policy", str(tmp_path / "u.yaml"), "--systems", "rules",
                 "--out-dir", str(tmp_path / "e"), "--no-progress"]) == 2


def test_policy_diff_shows_added_removed_and_changed_policies(tmp_path, capsys):
    data = yaml.safe_load((ROOT / "prompts" / "policy.yaml").read_text())
    data["policies"] = [p for p in data["policies"] if p["id"] != "spam"]
    data["policies"][0]["definition"] += " Also recalled products."
    data["policies"].append({**data["policies"][1], "id": "tobacco_nicotine", "title": "Tobacco and nicotine"})
    new = tmp_path / "new.yaml"
    new.write_text(yaml.safe_dump(data))
    assert main(["policy", "diff", str(ROOT / "prompts" / "policy.yaml"), str(new)]) == 1
    out = capsys.readouterr().out
    assert "+ tobacco_nicotine" in out and "- spam" in out and "~ prohibited_item: definition" in out
    assert "new taxonomy" in out
    assert main(["policy", "diff", str(ROOT / "prompts" / "policy.yaml"), str(new), "--json"]) == 1
    diff = json.loads(capsys.readouterr().out)
    assert diff["added"] == ["tobacco_nicotine"] and diff["removed"] == ["spam"] and not diff["same_taxonomy"]
    assert main(["policy", "diff", str(ROOT / "prompts" / "policy.yaml"), str(ROOT / "prompts" / "policy.yaml")]) == 0
    assert "no change" in capsys.readouterr().out
    assert main(["policy", "schema", str(new)]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "tobacco_nicotine" in schema["$defs"]["violation"]["properties"]["policy"]["enum"]


def test_an_adapter_trained_on_curated_data_carries_its_taxonomy(team, tmp_path, make_moderator):
    from finetune.common import record_taxonomy
    from moderation.model import load_adapter

    curated = tmp_path / "curated"
    (curated / "sft").mkdir(parents=True)
    (curated / "taxonomy.json").write_text(json.dumps({"policies": list(IDS)}))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (adapter / "moderation.json").write_text(json.dumps({"prompt": "prompts/moderate.short.v1.txt"}))
    assert record_taxonomy(str(curated / "sft"), adapter) == IDS
    assert json.loads((adapter / "moderation.json").read_text())["prompt"] == "prompts/moderate.short.v1.txt"
    assert load_adapter(str(adapter)).policies == IDS
    with pytest.raises(ConfigError, match="trained for another taxonomy.*Marketplace content policy"):
        make_moderator(adapter=load_adapter(str(adapter)))  # the default policy


def test_curate_trains_on_a_team_labelled_file_in_its_taxonomy(team, tmp_path):
    curated = tmp_path / "curated"
    assert main(["curate", "-o", str(curated), "--labels", str(labelled_file(tmp_path / "labels.jsonl")),
                 "--policy", str(team), "--sets", "none", "--test-sets", "marketplace"]) == 0
    rows = read_jsonl(curated / "sft" / "train.jsonl")
    verdicts = [json.loads(r["messages"][-1]["content"]) for r in rows]
    assert len(rows) == 6  # the train rows only: dev and test are held out
    assert {v["policy"] for verdict in verdicts for v in verdict["violations"]} == {"fraud_scam", "spam", "tobacco_nicotine"}
