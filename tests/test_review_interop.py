"""Case-check export (the JSONL contract, a Hugging Face dataset) and the Label Studio round trip."""

import json

import pytest
from jsonschema import Draft202012Validator
from review_services import entries

from moderation.cli import main
from moderation.review import dashboard
from moderation.review.interop import export_label_studio, import_label_studio, label_config, label_studio_tasks
from moderation.review.store import Store
from moderation.schema import DEFAULT_POLICY_IDS, verdict_schema

CONTRACT = {"check_id", "queue", "item", "model_verdict", "provenance", "review_decision", "reviewer_verdict",
            "reviewer", "notes", "created_at", "updated_at"}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "x.sqlite")
    s.create_queue("q", entries(6), {})
    yield s
    s.close()


def review_all(store, decisions):
    for decision in decisions:
        check = store.claim_next("q", "ann")
        correction = {"decision": "review", "policies": ["fraud_scam"]} if decision == "correct" else None
        store.decide(check.check_id, "ann", check.version, decision, correction=correction, notes=f"{decision} note")


def test_cli_export_jsonl_follows_the_contract(store, tmp_path, capsys):
    review_all(store, ["accept", "correct", "skip", "escalate"])  # two of six stay open: not exported
    out = tmp_path / "checks.jsonl"
    assert main(["review", "export", store.url, "--format", "jsonl", "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all(set(r) == CONTRACT for r in rows)
    by = {r["review_decision"]: r for r in rows}
    assert by["accept"]["reviewer_verdict"] == by["accept"]["model_verdict"]
    assert not list(Draft202012Validator(verdict_schema(DEFAULT_POLICY_IDS)).iter_errors(by["correct"]["reviewer_verdict"]))
    assert by["skip"]["reviewer_verdict"] is None and by["escalate"]["reviewer_verdict"] is None
    item = by["accept"]["item"]
    assert {"id", "kind", "title", "description", "region", "language"} <= set(item)
    assert all(r["reviewer"] == "ann" and r["created_at"].endswith("+00:00") for r in rows)


def test_cli_export_hf_dataset(store, tmp_path):
    datasets = pytest.importorskip("datasets")
    review_all(store, ["accept", "correct", "skip"])
    assert main(["review", "export", store.url, "--format", "hf", "-o", str(tmp_path / "hf")]) == 0
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert len(ds) == 3 and set(ds.column_names) == CONTRACT
    row = ds[[i for i in range(3) if ds[i]["review_decision"] == "correct"][0]]
    assert row["reviewer_verdict"]["violations"][0]["policy"] == "fraud_scam"
    assert json.loads(row["item"])["kind"] == "listing"


def _choices(name, values, rid):
    return {"id": rid, "from_name": name, "to_name": "text", "type": "choices", "origin": "manual", "value": {"choices": values}}


def label_studio_export(tasks):
    """What Label Studio's JSON export gives back after annotation (format per labelstud.io/guide/task_format)."""
    out = []
    for n, task in enumerate(tasks, start=1):
        out.append({"id": n, "created_at": "2026-11-20T09:00:00.000000Z", "updated_at": "2026-11-20T10:00:00.000000Z",
                    "project": 3, "data": task["data"], "predictions": task.get("predictions", []), "annotations": [],
                    "drafts": [], "meta": {}, "inner_id": n, "total_annotations": 0, "cancelled_annotations": 0})
    # Task 1: the annotator agrees with the pre-annotation (remove, counterfeit_ip).
    out[0]["annotations"] = [{"id": 11, "completed_by": 7, "was_cancelled": False, "ground_truth": False,
                              "created_at": "2026-11-20T10:00:01.1Z", "updated_at": "2026-11-20T10:00:01.1Z",
                              "lead_time": 5.2, "task": 1, "project": 3,
                              "result": [_choices("decision", ["remove"], "a1"), _choices("policies", ["counterfeit_ip"], "a2")]}]
    # Task 2: the model allowed it; the annotator (newer export: completed_by as an object) restricts it, with a note,
    # after a first annotation they later replaced.
    out[1]["annotations"] = [
        {"id": 12, "completed_by": {"id": 8, "email": "kim@example.com", "first_name": "Kim", "last_name": "L"},
         "was_cancelled": False, "created_at": "2026-11-20T10:01:00Z", "updated_at": "2026-11-20T10:01:00Z",
         "result": [_choices("decision", ["allow"], "b0")]},
        {"id": 13, "completed_by": {"id": 8, "email": "kim@example.com", "first_name": "Kim", "last_name": "L"},
         "was_cancelled": False, "created_at": "2026-11-20T10:02:00Z", "updated_at": "2026-11-20T10:02:30Z",
         "result": [_choices("decision", ["restrict"], "b1"), _choices("policies", ["restricted_item"], "b2"),
                    {"id": "b3", "from_name": "notes", "to_name": "text", "type": "textarea", "origin": "manual",
                     "value": {"text": ["sells a regulated item"]}}]}]
    # Task 3: skipped in Label Studio.
    out[2]["annotations"] = [{"id": 14, "completed_by": 7, "was_cancelled": True, "result": [],
                              "created_at": "2026-11-20T10:03:00Z", "updated_at": "2026-11-20T10:03:00Z"}]
    # Task 4: a choice our config does not have (an edited labelling config): reported, not stored.
    out[3]["annotations"] = [{"id": 15, "completed_by": 7, "was_cancelled": False, "created_at": "2026-11-20T10:04:00Z",
                              "updated_at": "2026-11-20T10:04:00Z",
                              "result": [_choices("decision", ["remove"], "d1"), _choices("policies", ["weapons"], "d2")]}]
    # Tasks 5-6: not annotated yet.
    return out


def test_label_studio_round_trip(store, tmp_path, capsys):
    tasks_path = tmp_path / "tasks.json"
    assert main(["review", "export", store.url, "--format", "label-studio", "--queue", "q", "-o", str(tasks_path)]) == 0
    tasks = json.loads(tasks_path.read_text())
    assert len(tasks) == 6 and (tmp_path / "tasks.label_config.xml").read_text().strip() == label_config(store.taxonomy("q"))
    first = tasks[0]
    assert "AAA replica handbag" in first["data"]["text"] and first["data"]["check_id"]
    assert first["predictions"][0]["result"] == [
        {"id": "decision-pred", "from_name": "decision", "to_name": "text", "type": "choices", "value": {"choices": ["remove"]}},
        {"id": "policies-pred", "from_name": "policies", "to_name": "text", "type": "choices", "value": {"choices": ["counterfeit_ip"]}}]
    assert [r["from_name"] for r in tasks[1]["predictions"][0]["result"]] == ["decision"]  # allow: no policies
    exported = tmp_path / "project-3-at-2026-11-20.json"
    exported.write_text(json.dumps(label_studio_export(tasks)))
    assert main(["review", "import", store.url, str(exported)]) == 0
    assert "3 imported, 0 already done, 1 invalid, 2 unannotated, 0 unknown check" in capsys.readouterr().out
    by_item = {c.item["id"]: c for c in store.checks("q")}
    assert by_item["it-000"].review_decision == "accept" and by_item["it-000"].reviewer == "label-studio:7"
    kim = by_item["it-001"]
    assert kim.review_decision == "correct" and kim.reviewer == "label-studio:kim@example.com"
    assert kim.reviewer_verdict["decision"] == "restrict" and kim.notes == "sells a regulated item"
    assert not list(Draft202012Validator(verdict_schema(DEFAULT_POLICY_IDS)).iter_errors(kim.reviewer_verdict))
    assert by_item["it-002"].review_decision == "skip" and by_item["it-003"].status == "pending"
    assert [a["action"] for a in store.audit_log()].count("import") == 3
    assert import_label_studio(store, exported)["already_done"] == 3  # a second import changes nothing
    count, _ = export_label_studio(store.checks("q"), tmp_path / "left.json", store.taxonomy("q"))
    assert count == 3  # only open checks become tasks
    assert len(label_studio_tasks([])) == 0


def test_dashboard_figures():
    from sklearn.metrics import cohen_kappa_score

    a = ["remove", "allow", "allow", "review", "remove", "allow", "restrict", "allow"]
    b = ["remove", "allow", "review", "review", "allow", "allow", "restrict", "allow"]
    assert dashboard.cohen_kappa(list(zip(a, b))) == pytest.approx(cohen_kappa_score(a, b))
    assert dashboard.cohen_kappa([]) is None and dashboard.cohen_kappa([("allow", "allow")]) == 1.0


def test_dashboard_on_overlap_reviews(tmp_path):
    store = Store(tmp_path / "d.sqlite")
    store.create_queue("q", entries(6, overlap_every=1), {})  # every item twice
    for reviewer in ("ann", "bob"):
        while (check := store.claim_next("q", reviewer)) is not None:
            if reviewer == "bob" and check.item["id"] == "it-000":  # bob disagrees once: the replica is only for review
                store.decide(check.check_id, reviewer, check.version, "correct",
                             correction={"decision": "review", "policies": ["counterfeit_ip"]})
            else:
                store.decide(check.check_id, reviewer, check.version, "accept")
    stats = dashboard.summary(store.checks())
    assert stats["agreement"]["pairs"] == 6 and stats["agreement"]["observed"] == pytest.approx(5 / 6)
    assert stats["override_rate"] == pytest.approx(1 / 12)
    assert stats["precision"]["counterfeit_ip"] == {"flagged": 4, "kept": 4, "precision": 1.0}
    assert stats["violation_rates"]["policy"]["counterfeit_ip"] == pytest.approx(4 / 12)
    assert stats["violation_rates"]["region"]["EU"] == 1.0 and stats["violation_rates"]["region"]["US"] == 0.0
    svgs = dashboard.charts(stats)
    assert len(svgs) == 6 and all(s.startswith("<svg") for s in svgs)
    assert "&lt;b&gt;" in dashboard.bar_chart("t", {"<b>": 0.5})
