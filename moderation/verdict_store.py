"""The persistent verdict cache: SQLite, shared by runs (and by the processes of one machine).

A nightly dump that repeats yesterday's listings pays the LLM only for new or changed ones.
Entries are keyed by (source, content_sha): the source is a hash of the model (weights hash),
adapter (weights hash), backend, prompt template hash, policy version, policy file hash and verdict
schema id (the taxonomy), thresholds and scorer (batch.source_key), and content_sha hashes every field
of the item but its id: two taxonomies never share an entry. Change any of them and the old entries
simply stop matching.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from moderation.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    source TEXT PRIMARY KEY,
    provenance TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS verdicts (
    source TEXT NOT NULL,
    content_sha TEXT NOT NULL,
    verdict TEXT NOT NULL,
    scores TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (source, content_sha)
) WITHOUT ROWID;
"""

LOOKUP_BATCH = 500  # SQLite's default limit on bound parameters is 999


class VerdictStore:
    """Verdicts (and their scores) by source and content hash, in one SQLite file.

    WAL mode with a busy timeout, so several processes on one machine (Ray actors, parallel
    runs) can read and write the same file. Not for a network file system: give each node its
    own file.
    """

    def __init__(self, path: str | Path, timeout_s: float = 60.0):
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"verdict cache {self.path} cannot be opened as SQLite: {exc}") from None
        self.known_sources: set[str] = set()

    def get_many(self, source: str, shas: list[str]) -> dict[str, dict[str, Any]]:
        """{content_sha: {"verdict", "scores"}} for the hashes the store holds under `source`."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(shas), LOOKUP_BATCH):
            chunk = shas[start:start + LOOKUP_BATCH]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT content_sha, verdict, scores FROM verdicts WHERE source = ? AND content_sha IN ({marks})",
                [source, *chunk],
            )
            for sha, verdict, scores in rows:
                found[sha] = {"verdict": json.loads(verdict), "scores": json.loads(scores) if scores else None}
        return found

    def put_many(self, source: str, provenance: dict[str, Any], entries: dict[str, dict[str, Any]]) -> None:
        """Store verdicts in one transaction; a newer entry for the same key replaces the old."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if source not in self.known_sources:
                self.db.execute("INSERT OR IGNORE INTO sources VALUES (?, ?, ?)",
                                (source, json.dumps(provenance, sort_keys=True), now))
                self.known_sources.add(source)
            self.db.executemany(
                "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?)",
                [(source, sha, json.dumps(e["verdict"], ensure_ascii=False),
                  json.dumps(e["scores"]) if e.get("scores") is not None else None, now)
                 for sha, e in entries.items()],
            )

    def count(self, source: str | None = None) -> int:
        if source is None:
            return self.db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM verdicts WHERE source = ?", (source,)).fetchone()[0]

    def close(self) -> None:
        self.db.close()
