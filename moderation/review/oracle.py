"""A scripted reviewer that answers from gold labels, through the review app's HTTP endpoints.

It does what a reviewer's browser does: GET /login for the form's CSRF token, POST /login, POST
/queues/Q/next to claim an item, read the check page (item id, the model's decision and policies,
the form's version and CSRF token), then POST /checks/ID with `accept`, or `correct` with the gold
decision and policies. So a replayed review round exercises the same routes, sessions, CSRF
checks, leases and compare-and-set saves as people do (scripts/review_loop.py). Like most reviewers it
writes no rationale of its own.

`noise` makes it wrong on that share of items, to model reviewer error: it then accepts a wrong
verdict, or corrects a right one to a wrong outcome.
"""

from __future__ import annotations

import html
import random
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from moderation.errors import InputError


@dataclass(frozen=True)
class Gold:
    """What the oracle knows of one item: its decision and policies."""

    decision: str
    policies: frozenset[str]


@dataclass(frozen=True)
class CheckPage:
    """What a reviewer reads on a check page."""

    check_id: str
    item_id: str
    version: str
    csrf: str
    decision: str | None  # None: the model gave no verdict
    policies: frozenset[str]
    choices: tuple[str, ...] = ()  # the policies the correction form offers: the queue's taxonomy


class _PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.inputs: dict[str, str] = {}
        self.check_id = self.decision = None
        self.h1: list[str] = []
        self.strong: list[str] = []
        self.choices: list[str] = []
        self._in: str | None = None
        self._tag_span = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.inputs[a["name"]] = a.get("value") or ""
        elif tag == "input" and a.get("type") == "checkbox" and a.get("name") == "policy":
            self.choices.append(a.get("value") or "")
        elif tag == "section" and a.get("data-check-id"):
            self.check_id = a["data-check-id"]
        elif tag == "p" and "decision" in (a.get("class") or "").split() and self.decision is None:
            self._in = "decision"
        elif tag in ("h1", "strong", "code"):  # a flagged policy's id is in <code> beside its title (why.py)
            self._in = tag
        elif tag == "span" and self._in == "h1":
            self._tag_span = True

    def handle_endtag(self, tag):
        if tag == "span":
            self._tag_span = False
        elif tag in ("h1", "strong", "code", "p"):
            self._in = None

    def handle_data(self, data):
        if self._in == "h1" and not self._tag_span:
            self.h1.append(data)
        elif self._in in ("strong", "code"):
            self.strong.append(data.strip())
        elif self._in == "decision":
            self.decision = data.strip()


def parse_check_page(text: str) -> CheckPage:
    """The fields of a check page.

    Raises:
        InputError: the page is not an editable check page.
    """
    parser = _PageParser()
    parser.feed(text)
    if not parser.check_id or "version" not in parser.inputs or "csrf_token" not in parser.inputs:
        raise InputError("not an editable check page")
    policies = frozenset(p for p in parser.strong if p in parser.choices)
    return CheckPage(parser.check_id, html.unescape("".join(parser.h1)).strip(), parser.inputs["version"],
                     parser.inputs["csrf_token"], parser.decision or None, policies, tuple(parser.choices))


def csrf_of(text: str) -> str:
    """The CSRF token of any page's form."""
    parser = _PageParser()
    parser.feed(text)
    if not parser.inputs.get("csrf_token"):
        raise InputError("no CSRF token on the page")
    return parser.inputs["csrf_token"]


class OracleReviewer:
    """Reviews queues in the app as account `name`, answering from `gold` (item id -> Gold).

    Args:
        client: an httpx-style client for the app (httpx.Client(base_url=...) or FastAPI's TestClient).
        noise: share of items answered wrongly on purpose (seeded).
    """

    def __init__(self, client, name: str, password: str, gold: dict[str, Gold], noise: float = 0.0, seed: int = 0):
        if not 0 <= noise <= 1:
            raise ValueError(f"noise must be within [0, 1], got {noise}")
        self.client, self.name, self.password, self.gold, self.noise = client, name, password, gold, noise
        self.rng = random.Random(seed)
        self.counts: Counter = Counter()

    def login(self) -> None:
        token = csrf_of(self._ok(self.client.get("/login")).text)
        response = self.client.post("/login", data={"name": self.name, "password": self.password, "csrf_token": token},
                                    follow_redirects=False)
        if response.status_code != 303:
            raise InputError(f"login as {self.name} failed: HTTP {response.status_code}")

    def review(self, queue: str, limit: int | None = None, progress=None) -> Counter:
        """Claim and decide items of `queue` until it is empty (or `limit` are done); the counts of
        each action taken."""
        page = self._ok(self.client.get("/"))
        response = self.client.post(f"/queues/{queue}/next", data={"csrf_token": csrf_of(page.text)}, follow_redirects=True)
        while limit is None or sum(self.counts.values()) < limit:
            if "/checks/" not in str(response.url):
                break  # the queue page: nothing left
            check = parse_check_page(self._ok(response).text)
            response = self.client.post(f"/checks/{check.check_id}", data=self.answer(check), follow_redirects=True)
            if progress is not None:
                progress.update(1)
        return self.counts

    def answer(self, check: CheckPage) -> dict[str, Any]:
        """The form the oracle submits for one check page."""
        gold = self.gold.get(check.item_id)
        if gold is None:
            self.counts["skip (no gold)"] += 1
            return {"csrf_token": check.csrf, "version": check.version, "action": "skip"}
        right = check.decision == gold.decision and check.policies == gold.policies
        wrong_on_purpose = self.rng.random() < self.noise
        form = {"csrf_token": check.csrf, "version": check.version}
        if right != wrong_on_purpose and check.decision is not None:
            self.counts["accept"] += 1
            return {**form, "action": "accept"}
        target = self._wrong(gold, check.choices) if right else gold
        self.counts["correct"] += 1
        return {**form, "action": "correct", "decision": target.decision, "policy": sorted(target.policies)}

    def _wrong(self, gold: Gold, choices: tuple[str, ...]) -> Gold:
        if gold.policies:
            return Gold("allow", frozenset())
        return Gold("remove", frozenset({self.rng.choice(choices)}))

    @staticmethod
    def _ok(response):
        if response.status_code >= 400:
            raise InputError(f"review app: HTTP {response.status_code} on {response.url}")
        return response
