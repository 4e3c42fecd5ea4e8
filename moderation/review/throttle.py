"""Login throttling for the review app: failed logins are counted per account and per address in
the store (so every process serving one store sees them, and a restart forgets nothing), and past
a limit within a window the account, or the address, is locked until enough of them age out.

Each failure and each refused attempt is an audit-log row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from moderation.errors import ConfigError
from moderation.review.store import Store, now_iso


@dataclass(frozen=True)
class LoginLimits:
    """How many failed logins lock an account or an address, and for how long."""

    per_account: int = field(default=5, metadata={"help": "Failed logins to one account within the window that lock it."})
    per_address: int = field(default=20, metadata={"help": "Failed logins from one address (to any accounts) within "
                                                            "the window that lock it."})
    window_s: float = field(default=900.0, metadata={"help": "The window in seconds; a lock lasts until enough "
                                                             "failures are older than this."})

    def __post_init__(self):
        for name in ("per_account", "per_address"):
            if getattr(self, name) < 1:
                raise ConfigError(f"LoginLimits.{name} must be at least 1, got {getattr(self, name)!r}")
        if not self.window_s > 0:
            raise ConfigError(f"LoginLimits.window_s must be positive, got {self.window_s!r}")


class LoginThrottle:
    """Failed logins in the store's `login_failures` table."""

    def __init__(self, store: Store, limits: LoginLimits | None = None):
        self.store, self.limits = store, limits or LoginLimits()

    def refuse_for(self, account: str, address: str) -> float:
        """Seconds until a login to `account` from `address` may be tried (0: now). A refusal is audited."""
        since = now_iso(-self.limits.window_s)
        waits = {"account": self._wait(self._failures("account", account, since), self.limits.per_account),
                 "address": self._wait(self._failures("address", address, since), self.limits.per_address)}
        by, wait = max(waits.items(), key=lambda kv: kv[1])
        if wait > 0:
            self.store.audit(account, "login_locked", address=address, by=by, retry_after_s=round(wait))
        return wait

    def failed(self, account: str, address: str) -> None:
        with self.store.db.transaction():
            self.store.db.execute("INSERT INTO login_failures (at, account, address) VALUES (?, ?, ?)",
                                  (now_iso(), account, address))
            self.store.audit(account, "login_failed", address=address)

    def succeeded(self, account: str) -> None:
        """A right password clears the account's failures (not the address's)."""
        self.store.db.execute("DELETE FROM login_failures WHERE account = ?", (account,))

    def _failures(self, column: str, value: str, since: str) -> list[str]:
        rows = self.store.db.query(f"SELECT at FROM login_failures WHERE {column} = ? AND at >= ? ORDER BY at",
                                   (value, since))
        return [r["at"] for r in rows]

    def _wait(self, failures: list[str], limit: int) -> float:
        """Seconds until fewer than `limit` of these failures are inside the window."""
        if len(failures) < limit:
            return 0.0
        oldest_that_counts = datetime.fromisoformat(failures[len(failures) - limit])
        ends = oldest_that_counts.timestamp() + self.limits.window_s
        return max(ends - datetime.fromisoformat(now_iso()).timestamp(), 1.0)
