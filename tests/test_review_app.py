"""The review web app through HTTP (FastAPI's TestClient): accounts, CSRF, escaping, roles, decisions."""

import re

import pytest
from review_services import entries, pg_server, store_url  # noqa: F401 (fixtures)

from moderation.review import auth
from moderation.review.app import CSP, create_app, highlight
from moderation.review.store import Store

PASSWORD = "correct horse battery"


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    s.add_user("ann", "reviewer", auth.hash_password(PASSWORD))
    s.add_user("bob", "reviewer", auth.hash_password(PASSWORD))
    s.add_user("lee", "lead", auth.hash_password(PASSWORD))
    s.create_queue("q", entries(6, script_item=True), {})
    yield s
    s.close()


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def client(store, user=None):
    from fastapi.testclient import TestClient

    c = TestClient(create_app(store))
    if user:
        page = c.get("/login")
        r = c.post("/login", data={"name": user, "password": PASSWORD, "csrf_token": csrf(page.text)}, follow_redirects=False)
        assert r.status_code == 303
    return c


def claim(c) -> tuple[str, str, str]:
    """Start reviewing queue q: (check id, version, csrf token) of the item handed out."""
    token = csrf(c.get("/").text)
    r = c.post("/queues/q/next", data={"csrf_token": token}, follow_redirects=False)
    page = c.get(r.headers["location"])
    return re.search(r'data-check-id="(\w+)"', page.text).group(1), re.search(r'name="version" value="(\d+)"', page.text).group(1), token


def test_passwords_are_salted_scrypt_hashes():
    one, two = auth.hash_password("pw-12345"), auth.hash_password("pw-12345")
    assert one != two and one.startswith("scrypt$") and "pw-12345" not in one
    assert auth.check_password("pw-12345", one) and not auth.check_password("pw-12346", one)


def test_sessions_are_signed():
    cookie = auth.sign_session({"user": "ann", "csrf": "t"}, "s1")
    assert auth.read_session(cookie, "s1")["user"] == "ann"
    assert auth.read_session(cookie, "s2") is None
    payload, mac = cookie.split(".")
    forged = auth.sign_session({"user": "lee", "csrf": "t"}, "other").split(".")[0] + "." + mac
    assert auth.read_session(forged, "s1") is None
    assert auth.read_session(cookie, "s1", max_age_s=-1) is None


def test_login_logout_and_pages_need_an_account(store):
    c = client(store)
    assert c.get("/", follow_redirects=False).headers["location"] == "/login"
    page = c.get("/login")
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert page.headers["content-security-policy"] == CSP
    bad = c.post("/login", data={"name": "ann", "password": "nope", "csrf_token": csrf(page.text)})
    assert bad.status_code == 401 and "Wrong name or password" in bad.text
    ok = c.post("/login", data={"name": "ann", "password": PASSWORD, "csrf_token": csrf(page.text)}, follow_redirects=False)
    assert ok.status_code == 303
    home = c.get("/")
    assert "ann (reviewer)" in home.text
    c.post("/logout", data={"csrf_token": csrf(home.text)})
    assert c.get("/", follow_redirects=False).headers["location"] == "/login"


def test_every_post_needs_the_sessions_csrf_token(store):
    c = client(store, "ann")
    assert c.post("/queues/q/next", data={}).status_code == 403
    assert c.post("/queues/q/next", data={"csrf_token": "guess"}).status_code == 403
    other = client(store, "bob")  # a token from another session is no good either
    assert c.post("/queues/q/next", data={"csrf_token": csrf(other.get("/").text)}).status_code == 403
    assert client(store).post("/login", data={"name": "ann", "password": PASSWORD}).status_code == 403


def test_item_text_is_escaped_and_evidence_highlighted(store):
    c = client(store, "ann")
    claim(c)
    check_id, version, token = claim(c)  # the first is it-000; decide it to reach it-001 (the script item)
    first = store.get(check_id)
    c.post(f"/checks/{check_id}", data={"csrf_token": token, "version": version, "action": "accept"})
    script = next(x for x in store.checks("q") if x.item["id"] == "it-001")
    html = c.get(f"/checks/{script.check_id}").text
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in html
    assert "<script>window" not in html and "<img src=x" not in html
    assert first.item["id"] == "it-000"
    page = c.get(f"/checks/{first.check_id}").text
    assert "<mark>AAA replica</mark>" in page
    assert str(highlight("<b>AAA replica</b> & co", ["aaa REPLICA"])) == "&lt;b&gt;<mark>AAA replica</mark>&lt;/b&gt; &amp; co"


def test_accept_and_correct_are_stored_and_the_next_item_follows(store):
    c = client(store, "ann")
    check_id, version, token = claim(c)
    r = c.post(f"/checks/{check_id}", data={"csrf_token": token, "version": version, "action": "accept"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/checks/")
    nxt = r.headers["location"].rsplit("/", 1)[1]
    page = c.get(r.headers["location"]).text
    version = re.search(r'name="version" value="(\d+)"', page).group(1)
    r = c.post(f"/checks/{nxt}", data={"csrf_token": token, "version": version, "action": "correct",
                                        "decision": "restrict", "policy": ["restricted_item", "missing_required_info"],
                                        "notes": "needs a licence"}, follow_redirects=False)
    assert r.status_code == 303
    assert store.get(check_id).review_decision == "accept"
    corrected = store.get(nxt)
    assert corrected.review_decision == "correct" and corrected.notes == "needs a licence"
    assert [v["policy"] for v in corrected.reviewer_verdict["violations"]] == ["restricted_item", "missing_required_info"]


def test_invalid_correction_and_stale_version_are_reported(store):
    c = client(store, "ann")
    check_id, version, token = claim(c)
    bad = c.post(f"/checks/{check_id}", data={"csrf_token": token, "version": version, "action": "correct", "decision": "remove"})
    assert bad.status_code == 400 and "needs 1 to 3 policies" in bad.text
    stale = c.post(f"/checks/{check_id}", data={"csrf_token": token, "version": str(int(version) - 1), "action": "accept"})
    assert stale.status_code == 409 and "changed since it was opened" in stale.text
    assert store.get(check_id).status == "assigned"


def test_reviewers_see_only_their_work_and_leads_see_everything(store):
    ann, bob, lee = client(store, "ann"), client(store, "bob"), client(store, "lee")
    check_id, version, token = claim(ann)
    assert bob.get(f"/checks/{check_id}").status_code == 403
    assert bob.get("/dashboard").status_code == 403
    assert check_id not in bob.get("/queues/q").text
    assert check_id in lee.get("/queues/q").text
    assert lee.get(f"/checks/{check_id}").status_code == 200
    ann.post(f"/checks/{check_id}", data={"csrf_token": token, "version": version, "action": "escalate"})
    dash = lee.get("/dashboard")
    assert dash.status_code == 200 and dash.text.count("<svg") == 6 and "escalate 1" in dash.text


def test_keyboard_script_and_styles_are_served(store):
    c = client(store)
    js = c.get("/static/review.js")
    assert js.status_code == 200 and "keydown" in js.text
    assert c.get("/static/review.css").status_code == 200


def test_cli_user_add_hashes_the_password_and_checks_it(tmp_path, monkeypatch, capsys):
    from moderation.cli import main

    db = str(tmp_path / "users.sqlite")
    monkeypatch.setenv("NEW_PW", "a-long-password")
    assert main(["review", "user", "add", "kim", "--role", "lead", "--password-env", "NEW_PW", "--db", db]) == 0
    user = Store(db).user("kim")
    assert user["role"] == "lead" and auth.check_password("a-long-password", user["password_hash"])
    monkeypatch.setenv("NEW_PW", "short")
    assert main(["review", "user", "add", "kim", "--password-env", "NEW_PW", "--db", db]) == 2
    assert main(["review", "user", "add", "kim", "--password-env", "UNSET_VAR_XYZ", "--db", db]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert [a["action"] for a in Store(db).audit_log()] == ["user_add"]


def test_cli_user_add_without_a_terminal_says_to_use_password_env(tmp_path, monkeypatch, capsys):
    import io

    from moderation.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # cron, CI, a pipe: nobody to type a password
    assert main(["review", "user", "add", "kim", "--db", str(tmp_path / "u.sqlite")]) == 2
    assert "--password-env" in capsys.readouterr().err


def test_export_and_import_of_a_mistyped_store_path_create_nothing(tmp_path, capsys):
    from moderation.cli import main

    typo = tmp_path / "reveiw.sqlite"
    assert main(["review", "export", str(typo), "-o", str(tmp_path / "checks.jsonl")]) == 2
    assert "no review store" in capsys.readouterr().err
    (tmp_path / "ls.json").write_text("[]")
    assert main(["review", "import", str(typo), str(tmp_path / "ls.json")]) == 2
    assert main(["review", "serve", "--db", str(typo)]) == 2
    assert not typo.exists() and not (tmp_path / "checks.jsonl").exists()


# -- sessions that end (issue 16) -------------------------------------------------------------
def session_cookie(c) -> str:
    return c.cookies.get("moderation_review")


def replay(store, cookie: str):
    """A new browser that holds a copy of someone's session cookie."""
    from fastapi.testclient import TestClient

    c = TestClient(create_app(store))
    c.cookies.set("moderation_review", cookie)
    return c


def logged_in(c) -> bool:
    return c.get("/", follow_redirects=False).status_code == 200


def test_logout_ends_the_session_even_for_a_copied_cookie(store):
    ann = client(store, "ann")
    copied = session_cookie(ann)
    ann.post("/logout", data={"csrf_token": csrf(ann.get("/").text)})
    assert not logged_in(ann) and not logged_in(replay(store, copied))


@pytest.mark.parametrize("change", ["password", "role", "disable"])
def test_a_password_change_role_change_or_disabled_account_ends_its_sessions(store, change):
    ann = client(store, "ann")
    assert logged_in(ann)
    if change == "password":
        store.add_user("ann", "reviewer", auth.hash_password("a new password 1"))
    elif change == "role":
        store.add_user("ann", "lead", store.user("ann")["password_hash"])
    else:
        store.disable_user("ann")
    assert not logged_in(ann)
    if change == "disable":  # and a disabled account cannot log in again
        page = ann.get("/login")
        r = ann.post("/login", data={"name": "ann", "password": PASSWORD, "csrf_token": csrf(page.text)})
        assert r.status_code == 401
    assert logged_in(client(store, "bob"))  # other people's sessions go on


def test_cli_user_disable_ends_the_sessions_and_is_audited(store, store_url):
    from moderation.cli import main

    ann = client(store, "ann")
    assert main(["review", "user", "disable", "ann", "--db", store_url]) == 0
    assert not logged_in(ann)
    assert store.audit_log()[-1]["action"] == "user_disable"
    assert main(["review", "user", "disable", "nobody", "--db", store_url]) == 2


# -- login throttling ---------------------------------------------------------------------------
def try_login(c, name, password):
    page = c.get("/login")
    return c.post("/login", data={"name": name, "password": password, "csrf_token": csrf(page.text)}, follow_redirects=False)


def test_failed_logins_lock_the_account_for_a_while_and_are_audited(store):
    c = client(store)
    statuses = [try_login(c, "ann", f"guess-{i}").status_code for i in range(6)]
    assert statuses == [401] * 5 + [429]
    locked = try_login(c, "ann", PASSWORD)  # even the right password waits out the lock
    assert locked.status_code == 429 and "Too many failed logins" in locked.text and "retry-after" in locked.headers
    assert try_login(c, "bob", PASSWORD).status_code == 303  # another account from the same address is fine
    actions = [a["action"] for a in store.audit_log()]
    assert actions.count("login_failed") == 5 and "login_locked" in actions


def test_failed_logins_from_one_address_are_limited_across_accounts(store):
    from fastapi.testclient import TestClient

    attacker = TestClient(create_app(store), client=("203.0.113.9", 5000))
    statuses = [try_login(attacker, f"user{i}", "guess-123").status_code for i in range(21)]
    assert statuses[:20] == [401] * 20 and statuses[20] == 429
    assert try_login(attacker, "bob", PASSWORD).status_code == 429
    assert try_login(client(store), "bob", PASSWORD).status_code == 303  # from elsewhere bob logs in


# -- cookies behind a TLS proxy ------------------------------------------------------------------
def test_secure_cookies_behind_a_trusted_tls_proxy_or_when_told(store):
    from fastapi.testclient import TestClient

    from moderation.review.app import ReviewSettings

    settings = ReviewSettings(forwarded_allow_ips="10.0.0.2")
    via_proxy = TestClient(create_app(store, settings), client=("10.0.0.2", 4000))
    cookie = via_proxy.get("/login", headers={"X-Forwarded-Proto": "https"}).headers["set-cookie"].lower()
    assert "; secure" in cookie
    spoofed = TestClient(create_app(store, settings), client=("198.51.100.7", 4000))  # not the proxy: header ignored
    assert "; secure" not in spoofed.get("/login", headers={"X-Forwarded-Proto": "https"}).headers["set-cookie"].lower()
    always = TestClient(create_app(store, ReviewSettings(secure_cookies=True)))
    assert "; secure" in always.get("/login").headers["set-cookie"].lower()


# -- smaller things -----------------------------------------------------------------------------
def test_a_lead_re_deciding_a_finished_check_must_confirm_and_the_change_is_audited(store):
    ann, lee = client(store, "ann"), client(store, "lee")
    check_id, version, token = claim(ann)
    ann.post(f"/checks/{check_id}", data={"csrf_token": token, "version": version, "action": "accept"})
    done = store.get(check_id)
    page = lee.get(f"/checks/{check_id}").text
    lee_token = csrf(page)
    assert 'name="redecide"' in page  # the confirmation the form asks for
    r = lee.post(f"/checks/{check_id}", data={"csrf_token": lee_token, "version": str(done.version), "action": "escalate"})
    assert r.status_code == 409 and "finished" in r.text
    assert store.get(check_id).review_decision == "accept"
    r = lee.post(f"/checks/{check_id}", data={"csrf_token": lee_token, "version": str(done.version), "action": "escalate",
                                               "redecide": "yes"}, follow_redirects=False)
    assert r.status_code == 303 and store.get(check_id).review_decision == "escalate"
    entry = store.audit_log(check_id)[-1]
    assert entry["action"] == "redecide" and entry["actor"] == "lee"
    assert entry["detail"]["previous"] == "accept" and entry["detail"]["previous_reviewer"] == "ann"


def test_the_403_page_has_a_way_back(store):
    ann, bob = client(store, "ann"), client(store, "bob")
    check_id, _, _ = claim(ann)
    page = bob.get(f"/checks/{check_id}")
    assert page.status_code == 403 and "not yours" in page.text
    assert 'href="/"' in page.text and "bob (reviewer)" in page.text  # the usual header, and a link home


def test_n_on_the_queue_list_starts_the_first_queue_with_work(store):
    store.create_queue("later", entries(2), {})
    page = client(store, "ann").get("/").text
    # review.js presses the element with id="start" on `n`: the first queue with items left
    start = re.search(r'<form method="post" action="/queues/([^/"]+)/next"[^>]*>\s*<input[^>]*>\s*<button[^>]*id="start"', page)
    assert start and start.group(1) == "q"
