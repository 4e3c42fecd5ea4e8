"""One small SQL layer over SQLite (stdlib) and PostgreSQL (psycopg 3), with migrations.

SQL is written once with `?` placeholders; PostgreSQL gets `%s`. The few statements that
differ between the two (auto-increment ids, triggers) are given per dialect in MIGRATIONS.
Each thread gets its own connection: sqlite3 and psycopg connections are not shared.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from moderation.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

# A statement is SQL text, or {"sqlite": ..., "postgresql": ...} where the dialects differ.
# Never edit a released step: append a new one. Version N means steps 1..N are applied.
MIGRATIONS: list[list[str | dict[str, str]]] = [
    [  # 1: accounts, queues, case checks, the audit log
        "CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,"
        " created_at TEXT NOT NULL)",
        "CREATE TABLE queues (name TEXT PRIMARY KEY, created_at TEXT NOT NULL, created_by TEXT NOT NULL,"
        " params TEXT NOT NULL)",
        "CREATE TABLE case_checks (check_id TEXT PRIMARY KEY, queue TEXT NOT NULL REFERENCES queues(name),"
        " position INTEGER NOT NULL, item_id TEXT NOT NULL, item TEXT NOT NULL, model_verdict TEXT,"
        " provenance TEXT NOT NULL, sample TEXT NOT NULL, overlap_group TEXT,"
        " status TEXT NOT NULL DEFAULT 'pending', assigned_to TEXT, lease_until TEXT,"
        " review_decision TEXT, reviewer_verdict TEXT, reviewer TEXT, notes TEXT NOT NULL DEFAULT '',"
        " created_at TEXT NOT NULL, updated_at TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 0)",
        {
            "sqlite": "CREATE TABLE audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,"
            " actor TEXT NOT NULL, action TEXT NOT NULL, check_id TEXT, detail TEXT NOT NULL)",
            "postgresql": "CREATE TABLE audit_log (id BIGSERIAL PRIMARY KEY, at TEXT NOT NULL,"
            " actor TEXT NOT NULL, action TEXT NOT NULL, check_id TEXT, detail TEXT NOT NULL)",
        },
        # Append-only: the database itself refuses to change or delete an audit row.
        {
            "sqlite": "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_log"
            " BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
            "postgresql": "CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$",
        },
        {
            "sqlite": "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_log"
            " BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
            "postgresql": "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit_log"
            " FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
        },
    ],
    [  # 2: server settings (the session-signing secret) and the claim index
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE INDEX case_checks_claim ON case_checks (queue, status, position)",
        "CREATE INDEX case_checks_group ON case_checks (overlap_group)",
    ],
    [  # 3: merchant health (moderation/merchants): model verdicts per item, health snapshots, tier
        # transitions and appeals; changes to them are also written to audit_log
        "CREATE TABLE merchant_inputs (item_id TEXT PRIMARY KEY, merchant TEXT NOT NULL, at TEXT NOT NULL,"
        " run TEXT NOT NULL, record TEXT NOT NULL)",
        "CREATE INDEX merchant_inputs_merchant ON merchant_inputs (merchant)",
        "CREATE TABLE merchant_health (merchant TEXT PRIMARY KEY, tier TEXT NOT NULL, points DOUBLE PRECISION NOT NULL,"
        " as_of TEXT NOT NULL, computed_at TEXT NOT NULL, config_version TEXT NOT NULL, record TEXT NOT NULL)",
        {
            "sqlite": "CREATE TABLE merchant_transitions (id INTEGER PRIMARY KEY AUTOINCREMENT, merchant TEXT NOT NULL,"
            " at TEXT NOT NULL, as_of TEXT NOT NULL, from_tier TEXT, to_tier TEXT NOT NULL,"
            " points DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL)",
            "postgresql": "CREATE TABLE merchant_transitions (id BIGSERIAL PRIMARY KEY, merchant TEXT NOT NULL,"
            " at TEXT NOT NULL, as_of TEXT NOT NULL, from_tier TEXT, to_tier TEXT NOT NULL,"
            " points DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL)",
        },
        "CREATE TABLE merchant_appeals (appeal_id TEXT PRIMARY KEY, merchant TEXT NOT NULL, item_id TEXT NOT NULL,"
        " check_id TEXT NOT NULL, policies TEXT NOT NULL, reason TEXT NOT NULL, status TEXT NOT NULL,"
        " region TEXT, language TEXT, filed_by TEXT NOT NULL, created_at TEXT NOT NULL, resolved_at TEXT)",
        "CREATE INDEX merchant_appeals_merchant ON merchant_appeals (merchant, status)",
    ],
    [  # 4: sessions that end (a per-account session version the cookie must match), disabled
        # accounts, and failed logins (for throttling per account and per address)
        "ALTER TABLE users ADD COLUMN session_version INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0",
        {
            "sqlite": "CREATE TABLE login_failures (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,"
            " account TEXT NOT NULL, address TEXT NOT NULL)",
            "postgresql": "CREATE TABLE login_failures (id BIGSERIAL PRIMARY KEY, at TEXT NOT NULL,"
            " account TEXT NOT NULL, address TEXT NOT NULL)",
        },
        "CREATE INDEX login_failures_account ON login_failures (account, at)",
        "CREATE INDEX login_failures_address ON login_failures (address, at)",
    ],
]


def parse_url(url: str | Path) -> tuple[str, str]:
    """('sqlite', path) or ('postgresql', conninfo) for a store URL or a plain path."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        return "postgresql", text
    if text.startswith("sqlite:///"):
        return "sqlite", text[len("sqlite:///"):]  # sqlite:///rel/path, sqlite:////abs/path
    if "://" in text:
        raise ConfigError(f"unknown store URL {text!r}: use a path, sqlite:///PATH or postgresql://...")
    return "sqlite", text


class Database:
    """Connections per thread, `?` placeholders, explicit write transactions, migrations.

    `create=False` opens an existing store only: a mistyped SQLite path is an InputError, not a
    new empty database.
    """

    def __init__(self, url: str | Path, *, migrate_to: int | None = None, create: bool = True):
        self.dialect, self.target = parse_url(url)
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        if self.dialect == "sqlite" and self.target != ":memory:":
            if not create and not Path(self.target).is_file():
                raise InputError(f"no review store at {self.target}: check the path (`review sample` or "
                                 "`review user add` creates a store)")
            Path(self.target).parent.mkdir(parents=True, exist_ok=True)
        self.migrate(len(MIGRATIONS) if migrate_to is None else migrate_to)

    # -- connections ---------------------------------------------------------------------
    def _connect(self):
        if self.dialect == "sqlite":
            conn = sqlite3.connect(self.target, isolation_level=None, timeout=30, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            return conn
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise ConfigError("a PostgreSQL store needs psycopg: pip install 'marketplace-moderation[postgres]'") from None
        try:
            return psycopg.connect(self.target, autocommit=True, row_factory=dict_row)
        except psycopg.OperationalError as exc:
            raise ConfigError(f"cannot connect to PostgreSQL: {exc}") from None

    @property
    def conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except Exception:  # closing from another thread may fail; the process ends anyway
                    pass
            self._connections.clear()
        self._local = threading.local()

    # -- statements ----------------------------------------------------------------------
    def _sql(self, sql: str | dict[str, str]) -> str:
        text = sql[self.dialect] if isinstance(sql, dict) else sql
        return text.replace("?", "%s") if self.dialect == "postgresql" else text

    def execute(self, sql: str | dict[str, str], params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        cur = self.conn.execute(self._sql(sql), tuple(params)) if params else self.conn.execute(self._sql(sql))
        return cur.rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(self._sql(sql), tuple(params))
        return [dict(row) for row in cur.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction. SQLite takes the write lock at once (BEGIN IMMEDIATE), so two
        writers never both read a row as free and then both claim it."""
        if self.dialect == "postgresql":
            with self.conn.transaction():
                yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- migrations ----------------------------------------------------------------------
    def version(self) -> int:
        row = self.one("SELECT version FROM schema_version") if self._has_version_table() else None
        return row["version"] if row else 0

    def _has_version_table(self) -> bool:
        if self.dialect == "sqlite":
            return bool(self.query("SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"))
        return bool(self.query("SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_version'"
                               " AND table_schema = current_schema()"))

    def migrate(self, target: int) -> None:
        """Apply migration steps up to `target` in one transaction (concurrent openers wait)."""
        with self.transaction():
            if self.dialect == "postgresql":
                self.execute("SELECT pg_advisory_xact_lock(727274)")
            self.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = self.version()
            if current > len(MIGRATIONS):
                raise ConfigError(f"store schema version {current} is newer than this program knows ({len(MIGRATIONS)})")
            for number in range(current + 1, target + 1):
                for statement in MIGRATIONS[number - 1]:
                    self.execute(statement)
                logger.info("store migrated to schema version %d", number)
            if target > current:
                self.execute("DELETE FROM schema_version")
                self.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
