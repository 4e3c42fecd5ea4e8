"""Who may do what to whose case check in the review app, tested through HTTP as a browser does it:
one test per cell of the authorization table (docs/security.md, moderation/review/access.py), on
SQLite and PostgreSQL. A refused request answers 403 and changes nothing: not the check, not its
version, not the audit log.

The expected outcomes are written out here, not read from the table, so that a change to the table
has to be made twice to pass.
"""

import re

import pytest
from review_services import entries, pg_server, store_url  # noqa: F401 (fixtures)

from moderation.review import auth
from moderation.review.app import create_app
from moderation.review.store import Store

PASSWORD = "correct horse battery"

# The check's state when the request comes, from the point of view of the reviewer ann:
# who holds it (open) or who decided it (finished).
STATES = ("unclaimed", "held by ann", "held by bob", "held by lee", "finished by ann", "finished by bob",
          "finished by ann, changed by lee", "held by ann, decided by lee")

# (who, what) -> {state: answer}; a 303 is the decision saved, a 409 the lead asked to confirm.
EXPECTED = {
    ("ann", "see"): {"unclaimed": 403, "held by ann": 200, "held by bob": 403, "held by lee": 403,
                     "finished by ann": 200, "finished by bob": 403, "finished by ann, changed by lee": 200,
                     "held by ann, decided by lee": 200},
    ("ann", "decide"): {"unclaimed": 403, "held by ann": 303, "held by bob": 403, "held by lee": 403,
                        "finished by ann": 403, "finished by bob": 403, "finished by ann, changed by lee": 403,
                        "held by ann, decided by lee": 403},
    ("ann", "redecide"): {"unclaimed": 403, "held by ann": 303, "held by bob": 403, "held by lee": 403,
                          "finished by ann": 403, "finished by bob": 403, "finished by ann, changed by lee": 403,
                          "held by ann, decided by lee": 403},
    ("lee", "see"): dict.fromkeys(STATES, 200),
    ("lee", "decide"): {"unclaimed": 303, "held by ann": 303, "held by bob": 303, "held by lee": 303,
                        "finished by ann": 409, "finished by bob": 409, "finished by ann, changed by lee": 409,
                        "held by ann, decided by lee": 409},
    ("lee", "redecide"): dict.fromkeys(STATES, 303),
}
CELLS = [(who, what, state, answer) for (who, what), row in EXPECTED.items() for state, answer in row.items()]


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    for name, role in (("ann", "reviewer"), ("bob", "reviewer"), ("lee", "lead")):
        s.add_user(name, role, auth.hash_password(PASSWORD))
    s.create_queue("q", entries(3), {})
    yield s
    s.close()


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def browser(store, user: str | None = None):
    """A TestClient with a logged-in session, as a browser has after the login form."""
    from fastapi.testclient import TestClient

    c = TestClient(create_app(store))
    if user:
        r = c.post("/login", data={"name": user, "password": PASSWORD, "csrf_token": csrf(c.get("/login").text)},
                   follow_redirects=False)
        assert r.status_code == 303
    return c


def check_in(store, state: str) -> str:
    """The id of a case check put in `state` (see STATES) through the store."""
    if state == "unclaimed":
        return store.checks("q")[0].check_id
    holder = state.split()[2].rstrip(",")
    check = store.claim_next("q", holder)
    if state.startswith("finished"):
        check = store.decide(check.check_id, holder, check.version, "accept")
    if state.endswith("changed by lee"):
        store.decide(check.check_id, "lee", check.version, "correct", lead=True, redecide=True,
                     correction={"decision": "remove", "policies": ["counterfeit_ip"]})
    if state.endswith("decided by lee"):
        store.decide(check.check_id, "lee", check.version, "escalate", lead=True)
    return check.check_id


def snapshot(store, check_id: str):
    check = store.get(check_id)
    return check.status, check.review_decision, check.reviewer, check.version, len(store.audit_log())


@pytest.mark.parametrize("who, what, state, answer", CELLS, ids=[f"{w}-{a}-{s}" for w, a, s, _ in CELLS])
def test_each_cell_of_the_table_for_a_case_check(store, who, what, state, answer):
    check_id = check_in(store, state)
    c = browser(store, who)
    before = snapshot(store, check_id)
    if what == "see":
        assert c.get(f"/checks/{check_id}").status_code == answer
        assert snapshot(store, check_id) == before
        return
    form = {"csrf_token": csrf(c.get("/").text), "version": str(before[3]), "action": "skip"}
    if what == "redecide":
        form["redecide"] = "yes"
    r = c.post(f"/checks/{check_id}", data=form, follow_redirects=False)
    assert r.status_code == answer, r.text[-400:]
    after = snapshot(store, check_id)
    if answer == 303:
        assert after[1:3] == ("skip", who) and after[3] == before[3] + 1
        assert store.audit_log(check_id)[-1]["actor"] == who
    else:
        assert after == before  # nothing changed, nothing audited


def test_the_issue_probe_a_reviewer_cannot_overrule_a_leads_correction(store):
    """A lead corrects a check; its reviewer, shown no form, POSTs one with redecide=yes anyway."""
    check_id = check_in(store, "finished by ann, changed by lee")
    ann = browser(store, "ann")
    page = ann.get(f"/checks/{check_id}").text
    assert 'id="decide"' not in page  # no form to send...
    before = snapshot(store, check_id)
    r = ann.post(f"/checks/{check_id}", data={"csrf_token": csrf(page), "version": str(before[3]), "action": "accept",
                                              "redecide": "yes"}, follow_redirects=False)
    assert r.status_code == 403 and "finished" in r.text  # ...and a forged one is refused
    assert snapshot(store, check_id) == before and store.get(check_id).reviewer == "lee"


@pytest.mark.parametrize("state", [s for s in STATES if EXPECTED["ann", "decide"][s] == 403])
def test_a_reviewers_post_to_what_needs_a_lead_is_403_whatever_the_form_says(store, state):
    """Every way a reviewer might dress up a POST on a check that only a lead may change."""
    check_id = check_in(store, state)
    ann = browser(store, "ann")
    token, version = csrf(ann.get("/").text), store.get(check_id).version
    before = snapshot(store, check_id)
    forms = [{"action": a, "redecide": r, "version": str(v)} for a in ("accept", "correct", "skip", "escalate")
             for r in ("yes", "no", "") for v in (version, version - 1, version + 1)]
    for form in forms:
        form.update(csrf_token=token, decision="allow", notes="mine now")
        assert ann.post(f"/checks/{check_id}", data=form, follow_redirects=False).status_code == 403, form
    assert snapshot(store, check_id) == before


ROUTES = [  # (method, path, reviewer's answer, lead's answer); {check} is a check held by bob
    ("GET", "/", 200, 200),
    ("GET", "/queues/q", 200, 200),
    ("POST", "/queues/q/next", 303, 303),
    ("GET", "/dashboard", 403, 200),
    ("GET", "/dashboard?queue=q", 403, 200),
    ("POST", "/logout", 303, 303),
]


@pytest.mark.parametrize("method, path, reviewer, lead", ROUTES, ids=[f"{m} {p}" for m, p, *_ in ROUTES])
def test_each_cell_of_the_table_for_the_other_routes(store, method, path, reviewer, lead):
    for who, answer in (("ann", reviewer), ("lee", lead)):
        c = browser(store, who)
        data = {"csrf_token": csrf(c.get("/").text)} if method == "POST" else None
        assert c.request(method, path, data=data, follow_redirects=False).status_code == answer, who


def test_claiming_takes_work_for_oneself_only(store):
    """`next` takes an item for the session's account, whatever the form names."""
    ann = browser(store, "ann")
    ann.post("/queues/q/next", data={"csrf_token": csrf(ann.get("/").text), "reviewer": "bob", "name": "bob"})
    assert {c.assigned_to for c in store.checks("q") if c.status == "assigned"} == {"ann"}


def test_nobody_logged_in_changes_nothing(store):
    check_id = check_in(store, "held by ann")
    before = snapshot(store, check_id)
    anonymous = browser(store)
    for method, path in (("POST", f"/checks/{check_id}"), ("POST", "/queues/q/next"), ("GET", f"/checks/{check_id}"),
                         ("GET", "/dashboard"), ("GET", "/queues/q"), ("GET", "/")):
        r = anonymous.request(method, path, data={"action": "accept", "version": str(before[3]), "redecide": "yes"},
                              follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login", (method, path)
    assert snapshot(store, check_id) == before


def test_a_get_never_changes_anything_and_post_routes_refuse_other_methods(store):
    check_id = check_in(store, "finished by bob")
    before = snapshot(store, check_id)
    lee = browser(store, "lee")
    query = f"action=accept&redecide=yes&version={before[3]}&csrf_token={csrf(lee.get('/').text)}"
    assert lee.get(f"/checks/{check_id}?{query}").status_code == 200
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        assert lee.request(method, "/queues/q/next").status_code == 405
        assert lee.request(method, "/logout").status_code == 405
    for method in ("PUT", "PATCH", "DELETE"):
        assert lee.request(method, f"/checks/{check_id}?{query}").status_code == 405
    assert snapshot(store, check_id) == before
    assert not [c for c in store.checks("q") if c.status == "assigned"]


@pytest.mark.parametrize("path", ["/export", "/import", "/users", "/queues", "/checks", "/admin", "/api/checks",
                                  "/docs", "/openapi.json"])
def test_export_import_and_accounts_have_no_web_route(store, path):
    """Export, import and accounts are `moderation review` commands on the store, not web routes."""
    lee = browser(store, "lee")
    token = csrf(lee.get("/").text)
    assert lee.get(path).status_code in (404, 405)
    assert lee.post(path, data={"csrf_token": token}).status_code in (404, 405)


def test_every_route_of_the_app_has_a_row_in_the_table(store):
    """No route without a rule: the app's routes are exactly the table's (and the public ones)."""
    from moderation.review import access

    app = create_app(store)
    served = {(m, r.path) for r in app.routes if hasattr(r, "methods") for m in r.methods - {"HEAD"}}
    ruled = {tuple(rule.route.split(" ", 1)) for rule in access.RULES.values()} | set(access.PUBLIC)
    assert served == ruled


def test_the_store_refuses_a_reviewers_write_to_a_finished_check_by_itself(store):
    """The save tests 'open and held by this reviewer' in its own UPDATE, so a check finished between the
    app's read and the write (another tab, a lead) is not changed either."""
    from moderation.review.store import ReviewConflict

    check_id = check_in(store, "finished by ann, changed by lee")
    version = store.get(check_id).version
    with pytest.raises(ReviewConflict, match="only a lead"):
        store.decide(check_id, "ann", version, "accept", redecide=True)
    assert store.get(check_id).reviewer == "lee"


def test_docs_security_prints_the_table():
    from pathlib import Path

    from moderation.review import access

    assert access.markdown_table() in (Path(__file__).parents[1] / "docs" / "security.md").read_text()


@pytest.mark.parametrize("version", ["9" * 30, "-1", "1e3", "", "²"])
def test_a_version_that_is_no_plain_number_is_a_conflict_not_a_crash(store, version):
    check_id = check_in(store, "held by ann")
    ann = browser(store, "ann")
    before = snapshot(store, check_id)
    r = ann.post(f"/checks/{check_id}", data={"csrf_token": csrf(ann.get("/").text), "version": version,
                                              "action": "accept"})
    assert r.status_code == 409 and snapshot(store, check_id) == before
