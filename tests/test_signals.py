"""A stopped command leaves nothing behind: SIGTERM to `moderation run` on the real vLLM engine stops the
engine's processes, keeps the output valid for resume and writes the summary (issue 26)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DEMO

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def descendants(pid: int) -> set:
    import psutil

    try:
        return set(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return set()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_run_stops_the_engine_processes_and_leaves_a_resumable_output(tmp_path, signum):
    pytest.importorskip("vllm")
    import psutil

    out = tmp_path / "out.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "moderation.cli", "run", str(DEMO), "-o", str(out), "--backend", "vllm",
                             "--rationale", "llm", "--chunk-size", "16", "--no-progress"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    engine: set = set()
    try:
        # mid-run: the engine is up and at least one chunk is written, but not the whole dump
        wait_for(lambda: out.is_file() and out.stat().st_size > 0 or proc.poll() is not None, 600, "a first chunk")
        assert proc.poll() is None, proc.stdout.read()
        engine = descendants(proc.pid)
        assert engine, "the engine started no process"  # EngineCore (and its workers)
        stopped_at = time.monotonic()
        proc.send_signal(signum)
        proc.wait(timeout=60)
        wait_for(lambda: not [p for p in engine if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], 10,
                 "the engine's processes to end")
        assert time.monotonic() - stopped_at < 70
    finally:
        for p in engine | descendants(proc.pid):
            if p.is_running():
                p.kill()
        if proc.poll() is None:
            proc.kill()
    printed = proc.stdout.read()
    assert proc.returncode == 130, printed
    assert "interrupted: rerun the same command to resume" in printed
    lines = out.read_text().splitlines()
    assert 0 < len(lines) < 240
    records = [json.loads(line) for line in lines[:-1]]  # a torn last line is cut off on resume
    assert [r["line"] for r in records] == list(range(1, len(records) + 1))
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    assert summary["this_run"]["processed"] >= len(records) and summary["this_run"]["dtype"]
