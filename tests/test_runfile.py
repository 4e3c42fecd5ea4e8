"""The run-file record: RunRecord's JSON round trip, its one validity rule, and the lines a run writes."""

import json

import pytest
from conftest import write_jsonl

from moderation.batch import BatchRunner, RunOptions
from moderation.cli import main
from moderation.errors import InputError
from moderation.items import Item
from moderation.runfile import RunRecord, read_output, read_records

PROVENANCE = {"model": "m", "adapter": None, "backend": "fake", "prompt_sha": "p", "latency_ms": 0, "cached": True}
VERDICT = {"decision": "remove", "violations": [{"policy": "spam", "severity": "low", "evidence": "WIN"}], "rationale": "r"}
SCORES = {"violation": 0.9, "decisions": {"allow": 0.1, "remove": 0.9}, "policies": {"spam": 0.9, "fraud_scam": 0.2}}


@pytest.mark.parametrize("record", [
    RunRecord(id="a", line=1, kind="listing", content_sha="abc", verdict=VERDICT, provenance=PROVENANCE),
    RunRecord(id=None, line=2, error={"stage": "input", "reason": "row is not valid JSON"}, provenance=PROVENANCE),
    RunRecord(id="c", line=3, kind="listing", content_sha="def", ignored_columns=["notes"], verdict=VERDICT, scores=SCORES,
              flagged=["spam"], screen={"name": "tfidf", "score": 0.01, "threshold": 0.04},
              provenance={**PROVENANCE, "cached": True}),
], ids=["verdict", "error", "score-first"])
def test_a_record_survives_its_json_round_trip(record):
    data = json.loads(json.dumps(record.to_json()))
    assert RunRecord.from_json(data) == record
    assert list(data) == [k for k, v in vars(record).items() if v is not None or k in ("id", "line")]


def test_absent_keys_stay_absent_and_the_id_and_line_are_always_written():
    data = RunRecord(id=None, line=4, error={"stage": "input", "reason": "x"}).to_json()
    assert data == {"schema_version": "1", "id": None, "line": 4, "error": {"stage": "input", "reason": "x"}}
    flagged_none = RunRecord(line=5, verdict=VERDICT, scores=SCORES, flagged=[]).to_json()
    assert flagged_none["flagged"] == []  # thresholds that flag nothing: an empty list, not an absent key


@pytest.mark.parametrize("data,problem", [
    (["a", "list"], "JSON object, not an array"),
    ({"id": "x", "verdict": VERDICT}, "'line'"),
    ({"id": "x", "line": 1, "title": "an input row"}, "'verdict' or an 'error'"),
    ({"line": 1, "verdict": None}, "'verdict' or an 'error'"),
])
def test_an_invalid_record_is_refused_naming_what_is_wrong(data, problem):
    with pytest.raises(InputError, match=problem):
        RunRecord.from_json(data)


def test_the_reader_names_the_file_and_line_of_a_line_that_is_not_a_record(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text(json.dumps(RunRecord(id="a", line=1, verdict=VERDICT).to_json()) + "\n\n" + '{"id": "b"}\n')
    with pytest.raises(InputError, match=r"run.jsonl line 3 is not a moderation output record \(a record has a 'line'"):
        list(read_records(path))
    path.write_text("not json\n")
    with pytest.raises(InputError, match=r"line 1 is not a moderation output record \(not JSON\)"):
        list(read_output(path))


KEYS = ["schema_version", "id", "line", "kind", "content_sha"]


def written(path):
    """Each line's JSON object, after checking that the line is exactly that object as json.dumps writes it."""
    lines = path.read_bytes().splitlines()
    objects = [json.loads(line) for line in lines]
    assert lines == [json.dumps(o, ensure_ascii=False).encode() for o in objects]
    assert objects == [r.to_json() for r in read_records(path)] == list(read_output(path))
    return objects


def test_a_fake_backend_run_writes_each_key_in_its_place(tmp_path):
    rows = [{"id": "a", "title": "AAA replica Rolex, WhatsApp me", "seller_notes": "call me"}, "not json",
            {"id": "é", "title": "a café table"}, {"title": "no id"}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))
    (tmp_path / "t.json").write_text(json.dumps({"counterfeit_ip": 0.3, "spam": 0.5}))
    out = tmp_path / "out.jsonl"
    assert main(["run", str(src), "-o", str(out), "--backend", "fake", "--thresholds", str(tmp_path / "t.json"),
                 "--no-progress"]) == 0
    flagged, bad, clean, no_id = written(out)
    assert list(flagged) == [*KEYS, "ignored_columns", "verdict", "scores", "flagged", "provenance"]
    assert flagged["flagged"] == ["counterfeit_ip"] and flagged["ignored_columns"] == ["seller_notes"]
    assert list(bad) == list(no_id) == ["schema_version", "id", "line", "error", "provenance"]
    assert list(bad["error"]) == ["stage", "reason"] and no_id["id"] is None
    assert list(clean) == [*KEYS, "verdict", "scores", "flagged", "provenance"] and clean["flagged"] == []
    assert list(flagged["provenance"])[-2:] == ["latency_ms", "cached"]


def test_model_errors_and_screened_items_write_their_keys_in_place(make_moderator, tmp_path):
    class ClearsCheapItems:
        def clear(self, items):
            return [{"name": "stub", "score": 0.0, "threshold": 0.5} if "cheap" in item.text() else None for item in items]

    items = [Item("x", "listing", {"title": "cheap"}), Item("y", "listing", {"title": "broken"})]
    moderator = make_moderator(respond=lambda request: "not a verdict", scores=False, max_attempts=1)
    out = tmp_path / "out.jsonl"
    BatchRunner(moderator, RunOptions(error_budget=1.0), screen=ClearsCheapItems()).run(list(enumerate(items, 1)), out)
    screened, failed = written(out)
    assert list(screened) == [*KEYS, "verdict", "screen", "provenance"]
    assert list(failed) == [*KEYS, "error", "provenance"] and list(failed["error"]) == ["stage", "reason", "raw", "attempts"]


def test_records_that_share_a_file_with_unknown_keys_read_without_them(tmp_path):
    path = write_jsonl(tmp_path / "run.jsonl", [{"key": "a", "file": "", "id": "a", "line": 1, "verdict": VERDICT}])
    assert next(read_records(path)) == RunRecord(schema_version=None, id="a", line=1, verdict=VERDICT)
    assert next(read_output(path))["key"] == "a"  # the JSON as it is on disk
