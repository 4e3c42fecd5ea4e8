import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, listing, read_jsonl, write_jsonl

from moderation.batch import BatchRunner, ErrorBudgetExceeded, RunOptions, VerdictCache, summarize
from moderation.errors import ConfigError, InputError
from moderation.items import read_items
from moderation.model import Adapter
from moderation.runfile import OutputFile, repair_tail
from moderation.schema import DEFAULT_POLICY_IDS, parse_verdict


def run(moderator, src, out, **options):
    return BatchRunner(moderator, RunOptions(**options)).run(read_items(src), out)


def test_one_line_per_row_in_input_order(tmp_path, make_moderator):
    rows = [listing(i) for i in range(10)] + [{"title": "no id"}, listing(3)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    stats = run(make_moderator(), src, tmp_path / "out.jsonl", chunk_size=4)
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [r["line"] for r in out] == list(range(1, 13))
    assert stats.processed == 12 and stats.verdicts == 10 and stats.errors == 2
    assert out[10]["error"]["reason"] == "row has no id"
    assert "duplicate id" in out[11]["error"]["reason"] and out[11]["id"] == "it-0003"
    for record in out[:10]:
        assert record["schema_version"] == "1" and record["content_sha"]
        assert set(record["provenance"]) >= {"model", "model_sha", "adapter", "adapter_sha", "backend", "prompt_sha", "policy_version", "latency_ms"}


def test_identical_content_is_moderated_once(tmp_path, make_moderator):
    rows = [{"id": f"d{i}", "title": "Same lamp", "price": 5} for i in range(6)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    moderator = make_moderator()
    stats = run(moderator, src, tmp_path / "out.jsonl", chunk_size=2)
    assert sum(len(call) for call in moderator.backend.calls) == 1
    assert stats.cache_hits == 5 and len(read_jsonl(tmp_path / "out.jsonl")) == 6


def test_rerun_skips_done_rows_and_reuses_their_verdicts(tmp_path, make_moderator):
    src = write_jsonl(tmp_path / "in.jsonl", [listing(i) for i in range(8)])
    out = tmp_path / "out.jsonl"
    run(make_moderator(), src, out)
    moderator = make_moderator()
    stats = run(moderator, src, out)
    assert stats.skipped == 8 and stats.processed == 0 and moderator.backend.calls == []
    assert len(read_jsonl(out)) == 8


def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path, make_moderator):
    src = write_jsonl(tmp_path / "in.jsonl", [listing(i) for i in range(20)] + [{"title": "bad"}])
    out = tmp_path / "out.jsonl"
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return json.dumps({"decision": "allow", "violations": [], "rationale": "ok"})

    with pytest.raises(KeyboardInterrupt):
        run(make_moderator(respond=flaky), src, out, chunk_size=4)
    assert len(read_jsonl(out)) == 8  # two whole chunks were checkpointed
    run(make_moderator(respond=lambda request: json.dumps({"decision": "allow", "violations": [], "rationale": "ok"})),
        src, out, chunk_size=4)  # the same (scripted) model: resumed
    ids = [r["id"] for r in read_jsonl(out)]
    assert len(ids) == 21 and len(set(ids)) == 21


def test_torn_last_line_is_cut_before_resuming(tmp_path, make_moderator):
    src = write_jsonl(tmp_path / "in.jsonl", [listing(i) for i in range(5)])
    out = tmp_path / "out.jsonl"
    run(make_moderator(), src, out)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:3]) + lines[3][:25])  # a crash mid-write
    assert repair_tail(out) == 25
    out.write_bytes(b"".join(lines[:3]) + lines[3][:25])
    run(make_moderator(), src, out)
    assert [r["line"] for r in read_jsonl(out)] == [1, 2, 3, 4, 5]


def test_error_budget_stops_the_run_after_writing(tmp_path, make_moderator):
    src = write_jsonl(tmp_path / "in.jsonl", [listing(i) for i in range(30)])
    moderator = make_moderator(respond=lambda r: "not json")
    with pytest.raises(ErrorBudgetExceeded, match="error budget"):
        run(moderator, src, tmp_path / "out.jsonl", chunk_size=5, error_budget=0.2, budget_min_rows=10)
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 10


def test_second_writer_is_refused(tmp_path):
    out = tmp_path / "out.jsonl"
    first = OutputFile(out, VerdictCache(10), {})
    try:
        with pytest.raises(ConfigError, match="another run"):
            OutputFile(out, VerdictCache(10), {})
    finally:
        first.close()


def test_summary_counts_decisions_policies_and_errors(tmp_path, make_moderator):
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "a", "title": "Rolex replica, WhatsApp me"}, {"id": "b", "title": "Oak table"}, {"title": "no id"}])
    run(make_moderator(), src, tmp_path / "out.jsonl")
    s = summarize(tmp_path / "out.jsonl")
    assert s["rows"] == 3 and s["verdicts"] == 2 and s["errors"] == 1
    assert s["decisions"] == {"remove": 1, "allow": 1}
    assert s["policies"] == {"counterfeit_ip": 1, "off_platform_transaction": 1}
    assert s["errors_by_stage"] == {"input": 1}


SLOW_RUN = """
import sys, time, json
from moderation.backends import BackendConfig
from moderation.backends.fake import FakeBackend, keyword_verdict, item_text_of
from moderation.batch import BatchRunner, RunOptions
from moderation.items import read_items
from moderation.pipeline import Moderator
from moderation.policy import load_policy
from moderation.prompts import load_template

def slow(request):
    time.sleep(0.002)
    return json.dumps(keyword_verdict(item_text_of(request)))

backend = FakeBackend(BackendConfig(), respond=slow)
moderator = Moderator(backend, load_policy(), load_template())
BatchRunner(moderator, RunOptions(chunk_size=7)).run(read_items(sys.argv[1]), sys.argv[2])
"""


def test_kill_9_at_any_moment_loses_and_duplicates_nothing(tmp_path):
    rows = [listing(i, title=f"Item {i} replica" if i % 3 else f"Item {i}") for i in range(400)]
    rows[50] = {"title": "row without id"}
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for delay in (0.9, 1.3, 1.7, 2.1):
        proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(src), str(out)], env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    subprocess.run([sys.executable, "-c", SLOW_RUN, str(src), str(out)], env=env, check=True)
    records = read_jsonl(out)
    assert sorted(r["line"] for r in records) == list(range(1, 401))
    ids = [r["id"] for r in records if r["id"] is not None]
    assert len(ids) == len(set(ids)) == 399
    items = {row.id: row for _, row in read_items(src)}
    for record in records:
        if "verdict" in record:
            parse_verdict(json.dumps(record["verdict"]), items[record["id"]].text(), DEFAULT_POLICY_IDS)


def test_a_resumed_run_reuses_the_verdicts_already_in_the_file(tmp_path, make_moderator):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "title": "Lamp"}])
    out = tmp_path / "out.jsonl"
    run(make_moderator(), src, out)
    more = write_jsonl(tmp_path / "more.jsonl", [{"id": "a", "title": "Lamp"}, {"id": "b", "title": "Lamp"}])
    same = make_moderator()
    run(same, more, out)
    assert same.backend.calls == []  # "b" has a's content: served from a's verdict


def test_resuming_with_another_model_adapter_or_option_is_refused(tmp_path, make_moderator):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "title": "Lamp"}, {"id": "b", "title": "Chair"}])
    out = tmp_path / "out.jsonl"
    run(make_moderator(), src, out)
    other = make_moderator(adapter=Adapter("eu-lora", tmp_path, 8, "0" * 64))
    with pytest.raises(ConfigError, match=r"model\.adapter: None then, 'eu-lora' now"):
        run(other, src, out)
    with pytest.raises(ConfigError, match=r"records\.scores: True then, False now.*--restart"):
        run(make_moderator(scores=False), src, out)
    assert other.backend.calls == [] and len(read_jsonl(out)) == 2  # nothing was mixed in


def test_an_edited_row_is_moderated_again_on_resume_never_served_stale(tmp_path, make_moderator):
    # A caller that names no input file (as `moderation eval` does) resumes by row; rows are checked by content.
    rows = [{"id": "a", "title": "Oak table"}, {"id": "b", "title": "Lamp"}, {"id": "c", "title": "Chair"}]
    out = tmp_path / "out.jsonl"
    run(make_moderator(), write_jsonl(tmp_path / "day1.jsonl", rows), out)
    rows[1] = {"id": "b", "title": "Rolex replica, WhatsApp me"}  # the listing was edited
    moderator = make_moderator()
    stats = run(moderator, write_jsonl(tmp_path / "day2.jsonl", rows), out)
    assert stats.skipped == 2 and stats.processed == 1 and stats.replaced == 1
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["a", "b", "c"]  # one record per row, in input order
    assert records[1]["verdict"]["decision"] == "remove"
    sent = [r.messages[-1]["content"] for call in moderator.backend.calls for r in call]
    assert len(sent) == 1 and "Rolex replica" in sent[0]  # only the edited row went to the model


def test_a_run_file_from_before_manifests_is_checked_row_by_row(tmp_path, make_moderator):
    rows = [{"id": "a", "title": "Oak table"}, {"id": "b", "title": "Lamp"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    run(make_moderator(adapter=Adapter("eu-lora", tmp_path, 8, "0" * 64)), src, out)
    Path(f"{out}.manifest.json").unlink()  # as written by an older version
    stats = run(make_moderator(), src, out)
    assert stats.replaced == 2  # made by another adapter: moderated again, not kept
    assert [r["provenance"]["adapter"] for r in read_jsonl(out)] == [None, None]
    assert run(make_moderator(), src, out).skipped == 2


def test_a_foreign_file_is_not_mistaken_for_an_output(tmp_path, make_moderator):
    src = write_jsonl(tmp_path / "in.jsonl", [listing(1)])
    with pytest.raises(InputError, match="not a moderation output record"):
        run(make_moderator(), src, src)


def test_a_hostile_row_is_an_error_record_and_the_run_and_its_rerun_finish(tmp_path, make_moderator):
    deep = '{"a": ' * 5000 + "1" + "}" * 5000
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(listing(1)) + "\n" + '{"id": "deep", "title": "x", "attributes": ' + deep + "}\n"
                   + json.dumps(listing(3)) + "\n")
    out = tmp_path / "out.jsonl"
    stats = run(make_moderator(), src, out)
    records = read_jsonl(out)
    assert stats.processed == 3 and [("verdict" in r) for r in records] == [True, False, True]
    assert "nested" in records[1]["error"]["reason"]
    assert run(make_moderator(), src, out).skipped == 3  # and the rerun does not trip over it again


class FragileTemplate:
    """The standard prompt template, except that it cannot render one item."""

    def __init__(self, template, bad_id):
        self.template, self.bad_id, self.sha, self.path = template, bad_id, template.sha, template.path

    def messages(self, item, policy):
        if item.id == self.bad_id:
            raise ValueError(f"cannot render {item.id}")
        return self.template.messages(item, policy)


def test_a_row_that_fails_to_prepare_becomes_its_own_error_record(tmp_path, policy, template):
    from moderation.backends import BackendConfig
    from moderation.backends.fake import FakeBackend
    from moderation.pipeline import Moderator

    moderator = Moderator(FakeBackend(BackendConfig()), policy, FragileTemplate(template, "it-0002"))
    src = write_jsonl(tmp_path / "in.jsonl", [listing(i) for i in range(1, 5)])
    out = tmp_path / "out.jsonl"
    stats = run(moderator, src, out, chunk_size=4)
    records = read_jsonl(out)
    assert stats.processed == 4 and stats.errors == 1
    assert [r["id"] for r in records if "error" in r] == ["it-0002"]
    assert "cannot render it-0002" in records[1]["error"]["reason"]


def test_local_and_ray_runs_summarise_this_run_in_one_shape():
    import argparse
    import time

    from moderation.batch import RunStats, count_records, run_figures
    from moderation.distributed import _figures
    from moderation.runfile import RunRecord

    records = [RunRecord(line=1, verdict={}, provenance={"cached": True}),
               RunRecord(line=2, verdict={}, provenance={"cached": False}, screen={}),
               RunRecord(line=3, error={}, provenance={})]
    local = run_figures(count_records(RunStats(skipped=4), records), engine="local")
    ray = _figures(records, "r1", 4, argparse.Namespace(actors=2, actor_cpus=1, actor_gpus=0), time.perf_counter())
    assert set(local) - {"engine"} <= set(ray) and ray["engine"] == "ray" and ray["actors"] == 2
    for key in ("processed", "verdicts", "errors", "cache_hits", "screened", "skipped_already_done"):
        assert local[key] == ray[key], key
    assert (local["processed"], local["verdicts"], local["errors"], local["cache_hits"], local["screened"]) == (3, 2, 1, 1, 1)
    assert ray["prompt_tokens"] is None  # counted by the actors, not in the records
