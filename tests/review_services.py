"""Throwaway services for the review tests: a PostgreSQL cluster on loopback, headless Chromium.

A missing service skips its tests on a developer machine, but fails them in CI (env CI set) and
whenever scripts/test has run scripts/test-services, which installs both from Debian's packages.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def missing(what: str) -> None:
    """Fail in CI (or once scripts/test-services has installed the services), skip elsewhere."""
    if os.environ.get("CI") or os.environ.get("MODERATION_REQUIRE_SERVICES"):
        pytest.fail(f"{what} is missing in CI: scripts/test-services installs it", pytrace=False)
    pytest.skip(f"{what} not installed (scripts/test-services installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` user then."""
    if os.geteuid() != 0:
        return args
    runner = shutil.which("runuser")
    return [runner, "-u", "postgres", "--", *args] if runner else ["su", "postgres", "-c", " ".join(args)]


@contextmanager
def postgres_cluster():
    """Start a fresh cluster in a temp dir on 127.0.0.1; yield its URL; stop and delete it."""
    bindir = _pg_bin()
    if bindir is None:
        missing("PostgreSQL (Debian package postgresql)")
    root = Path(tempfile.mkdtemp(prefix="review-pg-"))
    data, port = root / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    try:
        subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                     "--no-sync", "-E", "UTF8"]), check=True, capture_output=True)
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"),
                                     "-w", "start"]), check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """A new empty database on the server; its URL."""
    import psycopg

    name = f"t{time.time_ns()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="module")
def pg_server():
    """A PostgreSQL server for the module's tests (import this fixture into a test module)."""
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A fresh store URL: an SQLite file, then a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "checks.sqlite")
    return fresh_database(request.getfixturevalue("pg_server"))


def chromium_or_skip() -> str:
    if not Path(CHROMIUM).exists():
        missing("Chromium (Debian package chromium)")
    return CHROMIUM


def entries(n: int, *, script_item: bool = False, overlap_every: int = 0) -> list[dict]:
    """Queue entries for n listings; every third flagged by the model. Optionally an item whose
    text holds a <script> tag, and overlap twins for every k-th item."""
    out = []
    for i in range(n):
        title = f"Listing {i}: AAA replica handbag" if i % 3 == 0 else f"Listing {i}: oak side table"
        if script_item and i == 1:
            title = 'Lamp <script>window.__xss = 1</script><img src=x onerror="window.__xss=2">'
        item = {"id": f"it-{i:03d}", "kind": "listing", "title": title, "description": "Ships in a week.",
                "region": ("EU", "US", "UK")[i % 3], "language": "en"}
        verdict = ({"decision": "remove", "violations": [{"policy": "counterfeit_ip", "severity": "high",
                                                          "evidence": "AAA replica"}], "rationale": "Replica goods."}
                   if i % 3 == 0 else {"decision": "allow", "violations": [], "rationale": "Nothing found."})
        entry = {"item": item, "model_verdict": verdict, "provenance": {"model": "fake-keywords", "backend": "fake"},
                 "sample": {"strategy": "random"}, "overlap_group": None}
        if overlap_every and i % overlap_every == 0:
            entry["overlap_group"] = f"{i}:{item['id']}"
            out += [entry, {**entry, "sample": {"strategy": "random", "overlap": True}}]
        else:
            out.append(entry)
    return out
