"""`moderation run --engine ray` on a real local Ray cluster (2 actors of 1 CPU), against local runs.

The cluster lives for the module (`ray.init` in this process); each run is the CLI in a
subprocess joining it with --address, as a user's driver would.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import DEMO, ROOT, listing, write_jsonl

from moderation.cli import main
from moderation.runfile import read_output

ray = pytest.importorskip("ray")
from moderation.distributed import ShardDir, read_ray_output  # noqa: E402

BAD_LINES = [
    b"not json at all\n",
    b'["a", "list"]\n',
    b'{"title": "no id here"}\n',
    b'{"id": "demo-0003", "title": "a repeated id"}\n',
    b'{"id": "bad-utf8", "title": "caf\xe9"}\n',
    b'{"id": "odd-kind", "kind": "spaceship", "title": "x"}\n',
    b"\n",
]


@pytest.fixture(scope="module")
def cluster():
    # 2 actors x 1 CPU, plus the one logical CPU that Ray Data needs for reading and writing.
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def messy_dump(tmp_path_factory):
    """The demo dump with bad rows mixed in, and the local run's records of it."""
    path = tmp_path_factory.mktemp("dump") / "messy.jsonl"
    lines = DEMO.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:50] + BAD_LINES + lines[50:]))
    return path


def local_records(path, tmp_path, *extra):
    out = tmp_path / "local.jsonl"
    assert main(["run", str(path), "-o", str(out), "--backend", "fake", "--no-progress", *extra]) == 0
    return list(read_output(out))


def ray_run(address, path, out, *extra, env=None, wait=True):
    cmd = [sys.executable, "-m", "moderation.cli", "run", str(path), "-o", str(out), "--engine", "ray",
           "--address", address, "--backend", "fake", "--actors", "2", "--actor-cpus", "1", "--no-progress", *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    if not wait:
        return proc
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    return output


def comparable(record):
    """A record without what differs between any two runs: latency, and whether a cache served it
    (each actor has its own in-memory cache)."""
    provenance = {k: v for k, v in record["provenance"].items() if k not in ("latency_ms", "cached")}
    return {**record, "provenance": provenance}


def assert_same_records(ray_out, local):
    ray_records = [r.to_json() for r in read_ray_output(str(ray_out))]
    keys = [row["key"] for shard in ShardDir(str(ray_out)).shards() for row in ShardDir(str(ray_out)).rows(shard)]
    assert len(keys) == len(set(keys)), "a key was written twice"
    by_line = {r["line"]: comparable(r) for r in ray_records}
    assert len(by_line) == len(ray_records) == len(local)
    assert by_line == {r["line"]: comparable(r) for r in local}


def test_jsonl_dump_with_bad_rows_gives_the_local_records_as_parquet(cluster, messy_dump, tmp_path):
    output = ray_run(cluster, messy_dump, tmp_path / "ray", "--chunk-size", "16")
    local = local_records(messy_dump, tmp_path)
    assert_same_records(tmp_path / "ray", local)
    reasons = {r["error"]["reason"] for r in local if "error" in r}
    assert "duplicate id: first seen at line 3" in reasons and "row is not valid UTF-8" in reasons
    summary = json.loads((tmp_path / "ray" / "_summary.json").read_text())
    assert summary["rows"] == len(local) and summary["this_run"]["processed"] == len(local)
    assert summary["this_run"]["actors"] == 2 and "this run:" in output


def test_csv_dump_to_jsonl_shards(cluster, tmp_path):
    import csv

    path = tmp_path / "dump.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "title", "description", "price"])
        for i in range(40):
            row = listing(i, description="Replica watch, WhatsApp me" if i % 7 == 0 else "Plain.")
            writer.writerow([row["id"], row["title"], row["description"], row["price"]])
        writer.writerow(["short-row", "only two"])
        writer.writerow(["", "no id", "", "1"])
    ray_run(cluster, path, tmp_path / "ray", "--output-format", "jsonl", "--chunk-size", "8")
    assert_same_records(tmp_path / "ray", local_records(path, tmp_path))
    shard = next((tmp_path / "ray").glob("*.jsonl"))
    first = json.loads(shard.read_text().splitlines()[0])
    assert {"key", "file", "schema_version", "provenance"} <= set(first)


def test_parquet_dump(cluster, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [listing(i, attributes={"colour": "red"}) for i in range(30)] + [{"id": "no-text", "price": 3}]
    path = tmp_path / "dump.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    ray_run(cluster, path, tmp_path / "ray")
    assert_same_records(tmp_path / "ray", local_records(path, tmp_path))


def test_ids_repeated_across_files_of_a_directory_keep_one_verdict(cluster, tmp_path):
    src = tmp_path / "parts"
    src.mkdir()
    write_jsonl(src / "a.jsonl", [listing(i) for i in range(10)])
    write_jsonl(src / "b.jsonl", [listing(i) for i in range(8, 14)] + [{"title": "no id"}])
    ray_run(cluster, src, tmp_path / "ray")
    out = ShardDir(str(tmp_path / "ray"))
    rows = [row for shard in out.shards() for row in out.rows(shard)]
    assert sorted(r["key"] for r in rows) == sorted(
        [f"it-{i:04d}" for i in range(14)] + ["it-0008@b.jsonl:1", "it-0009@b.jsonl:2", "@b.jsonl:7"])
    records = {r["key"]: json.loads(r["record"]) for r in rows}
    assert records["it-0008"]["verdict"] and records["it-0008"]["line"] == 9
    assert records["it-0008@b.jsonl:1"]["error"]["reason"] == "duplicate id: first seen at a.jsonl line 9"


def test_a_killed_actor_loses_no_item(cluster, messy_dump, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {"MODERATION_FAKE_DELAY_S": "0.1", "MODERATION_RAY_PID_DIR": str(pids)}
    proc = ray_run(cluster, messy_dump, tmp_path / "ray", "--chunk-size", "8", env=env, wait=False)
    deadline = time.time() + 120
    while len(list(pids.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # both actors mid-batch (a batch of 8 takes 0.8 s, the run about 12 s)
    assert proc.poll() is None
    victim = int(sorted(pids.iterdir())[0].stem)
    os.kill(victim, signal.SIGKILL)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    # Ray Data retries the lost batch on a restarted actor or on the other one.
    assert_same_records(tmp_path / "ray", local_records(messy_dump, tmp_path))


def test_a_killed_driver_resumes_with_each_key_once(cluster, messy_dump, tmp_path):
    out = tmp_path / "ray"
    env = {"MODERATION_FAKE_DELAY_S": "0.1"}  # about 12 s for the run
    proc = ray_run(cluster, messy_dump, out, "--chunk-size", "4", env=env, wait=False)
    deadline = time.time() + 120
    while not list(out.glob("*.parquet")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    done_before = len(ShardDir(str(out)).done_keys())
    assert 0 < done_before < 240
    ray_run(cluster, messy_dump, out, "--chunk-size", "4")
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["this_run"]["skipped_already_done"] == done_before
    assert_same_records(out, local_records(messy_dump, tmp_path))


def test_torn_shards_are_dropped_and_summary_reads_a_shard_directory(tmp_path, capsys):
    out = tmp_path / "ray"
    out.mkdir()
    record = {"schema_version": 1, "id": "a", "line": 1, "kind": "listing", "provenance": {},
              "verdict": {"decision": "allow", "violations": [], "rationale": "ok"}}
    (out / "r1_x_000000.jsonl").write_text(json.dumps({"key": "a", "file": "", **record}) + "\n")
    (out / "r2_x_000000.jsonl").write_text(json.dumps({"key": "b", "file": "", **record})[:30])
    (out / "r3_x_000000.parquet").write_bytes(b"PAR1 torn")
    assert ShardDir(str(out)).done_keys() == {"a"}
    assert sorted(p.name for p in out.iterdir()) == ["r1_x_000000.jsonl"]
    assert main(["summary", str(out)]) == 0
    assert "1 rows, 1 verdicts" in capsys.readouterr().out


@pytest.mark.slow
def test_real_model_verdicts_match_a_local_run(cluster, tmp_path):
    """The default model in 2 vLLM actors on CPU gives the local run's verdicts and scores."""
    pytest.importorskip("vllm")
    path = write_jsonl(tmp_path / "four.jsonl", [json.loads(line) for line in DEMO.read_text().splitlines()[:4]])
    # Each CPU engine reserves this share of RAM for its KV cache: two actors and the local run fit.
    real = ["--backend", "vllm", "--gpu-memory-utilization", "0.2", "--chunk-size", "2", "--no-progress"]
    local = tmp_path / "local.jsonl"
    assert main(["run", str(path), "-o", str(local), *real]) == 0
    cmd = [sys.executable, "-m", "moderation.cli", "run", str(path), "-o", str(tmp_path / "ray"), "--engine", "ray",
           "--address", cluster, "--actors", "2", *real]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ray_records = {r.id: r.to_json() for r in read_ray_output(str(tmp_path / "ray"))}
    local_records = {r["id"]: r for r in read_output(local)}
    assert len(ray_records) == 4 and set(ray_records) == set(local_records)
    for item_id, record in ray_records.items():
        assert record["verdict"] == local_records[item_id]["verdict"]
        # Probabilities are sums of floats whose order follows the engine's batch: another batch
        # composition moves them in the 4th decimal (measured with token probes: up to 2.3e-4).
        assert_close(record["scores"], local_records[item_id]["scores"], 2e-3)


def assert_close(a, b, tol):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_close(a[key], b[key], tol)
    elif isinstance(a, str):  # e.g. "scorer": "heads"
        assert a == b
    else:
        assert abs(a - b) <= tol, (a, b)
