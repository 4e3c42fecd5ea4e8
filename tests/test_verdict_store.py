"""The persistent verdict cache: keyed by content and source, shared across runs and processes."""

import json
import multiprocessing

import pytest
from conftest import listing, read_jsonl, write_jsonl

from moderation.batch import BatchRunner, RunOptions, source_key
from moderation.cli import main
from moderation.errors import ConfigError
from moderation.items import read_items
from moderation.model import Adapter
from moderation.verdict_store import VerdictStore


def run(moderator, src, out, store, **options):
    return BatchRunner(moderator, RunOptions(**options), store=store).run(read_items(src), out)


def backend_items(moderator) -> int:
    return sum(len(call) for call in moderator.backend.calls)


def test_a_repeated_dump_pays_only_for_new_or_changed_items(tmp_path, make_moderator):
    store = VerdictStore(tmp_path / "verdicts.sqlite")
    day1 = write_jsonl(tmp_path / "day1.jsonl", [listing(i) for i in range(10)])
    first = make_moderator()
    stats = run(first, day1, tmp_path / "day1.out.jsonl", store, chunk_size=4)
    assert stats.store_hits == 0 and backend_items(first) == 10
    # Day 2: 8 unchanged listings under new ids, 1 changed, 1 new.
    rows = [{**listing(i), "id": f"d2-{i}"} for i in range(8)]
    rows += [listing(8, description="A plain household item, now with a box."), listing(99)]
    day2 = write_jsonl(tmp_path / "day2.jsonl", rows)
    second = make_moderator()
    stats = run(second, day2, tmp_path / "day2.out.jsonl", store, chunk_size=4)
    assert stats.store_hits == 8 and backend_items(second) == 2
    out1 = {r["content_sha"]: r for r in read_jsonl(tmp_path / "day1.out.jsonl")}
    for record in read_jsonl(tmp_path / "day2.out.jsonl")[:8]:
        assert record["provenance"]["cached"] is True
        assert record["verdict"] == out1[record["content_sha"]]["verdict"]
        assert record["scores"] == out1[record["content_sha"]]["scores"]
    assert store.count() == 12


def test_entries_do_not_cross_model_adapter_prompt_or_policy(tmp_path, make_moderator):
    store = VerdictStore(tmp_path / "verdicts.sqlite")
    src = write_jsonl(tmp_path / "in.jsonl", [listing(i) for i in range(3)])
    run(make_moderator(), src, tmp_path / "a.jsonl", store)
    other = make_moderator(adapter=Adapter("ft", tmp_path, 8, "a" * 64))
    stats = run(other, src, tmp_path / "b.jsonl", store)
    assert stats.store_hits == 0 and backend_items(other) == 3
    base = make_moderator().provenance()
    for key in ("model_sha", "adapter_sha", "prompt_sha", "policy_version", "backend"):
        assert source_key({**base, key: "changed"}) != source_key(base)


def test_entries_without_scores_do_not_serve_a_run_that_wants_them(tmp_path, make_moderator):
    store = VerdictStore(tmp_path / "verdicts.sqlite")
    src = write_jsonl(tmp_path / "in.jsonl", [listing(i) for i in range(3)])
    run(make_moderator(scores=False), src, tmp_path / "a.jsonl", store)
    with_scores = make_moderator()
    stats = run(with_scores, src, tmp_path / "b.jsonl", store)
    assert stats.store_hits == 0 and backend_items(with_scores) == 3
    without = make_moderator(scores=False)
    assert run(without, src, tmp_path / "c.jsonl", store).store_hits == 3 and backend_items(without) == 0


def _writer(path, source, start):
    store = VerdictStore(path)
    for n in range(start, start + 200, 20):
        store.put_many(source, {}, {f"sha{i}": {"verdict": {"decision": "allow"}, "scores": None} for i in range(n, n + 20)})
    store.close()


def test_several_processes_share_one_file(tmp_path):
    path = tmp_path / "verdicts.sqlite"
    VerdictStore(path).close()
    procs = [multiprocessing.get_context("spawn").Process(target=_writer, args=(path, "s", k * 1000)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = VerdictStore(path)
    assert store.count("s") == 600
    assert set(store.get_many("s", ["sha0", "sha2199", "sha500"])) == {"sha0", "sha2199"}


def test_cli_reports_the_hit_rate_of_a_repeated_run(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [listing(i) for i in range(6)])
    cache = tmp_path / "cache" / "verdicts.sqlite"
    assert main(["run", str(src), "-o", str(tmp_path / "a.jsonl"), "--backend", "fake", "--no-progress",
                 "--verdict-cache", str(cache)]) == 0
    assert main(["run", str(src), "-o", str(tmp_path / "b.jsonl"), "--backend", "fake", "--no-progress",
                 "--verdict-cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "6 from the persistent verdict cache, 100%" in out
    summary = json.loads((tmp_path / "b.jsonl.summary.json").read_text())
    assert summary["this_run"]["verdict_cache_hit_rate"] == 1.0


def test_a_file_that_is_not_sqlite_is_a_config_error(tmp_path):
    bad = tmp_path / "verdicts.sqlite"
    bad.write_text("not a database, just text " * 100)
    with pytest.raises(ConfigError, match="cannot be opened as SQLite"):
        VerdictStore(bad)
