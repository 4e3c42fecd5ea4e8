"""Who may do what in the review app, and to whose case check: the one table every route asks.

Each action a route performs has a rule giving, per role, whose things it may be done to:
`ANY` (anyone's), `OWN` (the account's own, as OWNS defines it for a case check) or `NOBODY`.
The page hides what a role may not do, but only this table decides: a route calls `require`
before it reads or changes anything on behalf of an account. docs/security.md prints the table
(`markdown_table`), and tests/test_review_access.py tests each cell through HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moderation.review.store import ROLES, CaseCheck

ANY, OWN, NOBODY = "any", "own", "nobody"


@dataclass(frozen=True)
class Rule:
    """One action of the review app: its route, what it does, and whose things each role may do it to."""

    route: str  # "METHOD /path", as the app declares it
    does: str
    reviewer: str
    lead: str
    own: str = ""  # what makes a thing the account's own, for this action

    def scope(self, role: str) -> str:
        return getattr(self, role) if role in ROLES else NOBODY


RULES: dict[str, Rule] = {
    "see_queues": Rule("GET /", "list the queues, with one's own progress", reviewer=ANY, lead=ANY),
    "see_queue": Rule("GET /queues/{queue}", "see a queue's case checks", reviewer=OWN, lead=ANY,
                      own="the checks one decided"),
    "claim": Rule("POST /queues/{queue}/next", "take the next item of a queue", reviewer=OWN, lead=OWN,
                  own="for oneself (the session's account, whatever the form says)"),
    "see_check": Rule("GET /checks/{check_id}", "see a case check", reviewer=OWN, lead=ANY,
                      own="held by one (now, or last before it was finished) or decided by one"),
    "decide": Rule("POST /checks/{check_id}", "decide an open case check", reviewer=OWN, lead=ANY,
                   own="open and held by one (tested again in the save's UPDATE)"),
    "redecide": Rule("POST /checks/{check_id}", "change a finished review (the form's `redecide=yes` confirms it)",
                     reviewer=NOBODY, lead=ANY),
    "see_dashboard": Rule("GET /dashboard", "see the dashboard (every reviewer's work)", reviewer=NOBODY, lead=ANY),
    "logout": Rule("POST /logout", "log out", reviewer=OWN, lead=OWN, own="one's own sessions, on every device"),
}
PUBLIC = (("GET", "/login"), ("POST", "/login"))  # no account needed (nor for /static: the script and styles)

# What makes a case check an account's own, per action (the other actions do not take a check).
OWNS: dict[str, Callable[[str, CaseCheck], bool]] = {
    "see_check": lambda name, check: name in (check.assigned_to, check.reviewer),  # held, or once held, or decided
    "decide": lambda name, check: check.status == "assigned" and check.assigned_to == name,  # held now
}
REFUSALS = {  # the 403 page's words, per action
    "see_check": "this case check is not yours",
    "decide": "this case check is not yours: it is held by someone else or not handed out yet",
    "redecide": "this review is finished: only a lead may change a finished review",
    "see_dashboard": "the dashboard is for leads",
}


def check_action(check: CaseCheck) -> str:
    """The action a POST to a case check performs: deciding it while open, changing it once finished."""
    return "redecide" if check.status == "done" else "decide"


def scope(user: dict[str, Any], action: str) -> str:
    """ANY, OWN or NOBODY: whose things this account may do `action` to."""
    return RULES[action].scope(user["role"])


def allowed(user: dict[str, Any], action: str, check: CaseCheck | None = None) -> bool:
    """Whether the account may do `action` (to `check`, for the actions on a case check)."""
    whose = scope(user, action)
    if whose == OWN and check is not None:
        return OWNS[action](user["name"], check)
    return whose != NOBODY


def require(user: dict[str, Any], action: str, check: CaseCheck | None = None) -> None:
    """Refuse what the table does not allow.

    Raises:
        PermissionError: the account may not do `action` (to `check`); the app answers 403.
    """
    if not allowed(user, action, check):
        raise PermissionError(REFUSALS.get(action, f"a {user['role']} may not {RULES[action].does}"))


def markdown_table() -> str:
    """The table as docs/security.md prints it (a test keeps the two the same)."""
    words = {ANY: "all", OWN: "own", NOBODY: "no"}
    lines = ["| route | action | reviewer | lead | own means |", "|---|---|---|---|---|"]
    for name, rule in RULES.items():
        lines.append(f"| `{rule.route}` | `{name}`: {rule.does} | {words[rule.reviewer]} | {words[rule.lead]} "
                     f"| {rule.own or '–'} |")
    return "\n".join(lines)
