"""The review web app: server-rendered pages over the case-check store (FastAPI + Jinja2).

Item text is untrusted merchant input: templates autoescape everything, the only markup built
in Python (evidence highlights, charts) escapes its text first, and a Content-Security-Policy
without 'unsafe-inline' stops any script that slipped through. Every POST form carries the
session's CSRF token; the session cookie is HMAC-signed, HttpOnly and SameSite=Strict (and Secure
over HTTPS, or always with `secure_cookies`), and it is only good while its account's session
version is the one it was issued with: logout, a new password or role, or disabling the account
ends it at once. Failed logins are throttled per account and per address (review/throttle.py).
See docs/security.md.
"""


import hmac
import logging
import math
import os
import re
from dataclasses import dataclass, field
from html import escape
from importlib import resources
from typing import Any
from urllib.parse import quote

from moderation.errors import InputError
from moderation.review import access, auth, dashboard, why
from moderation.review.store import ReviewConflict, Store
from moderation.review.throttle import LoginLimits, LoginThrottle
from moderation.review.verdicts import REVIEW_DECISIONS
from moderation.schema import DECISIONS

logger = logging.getLogger(__name__)

COOKIE = "moderation_review"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
POLICY_KEYS = "1234567890-="  # keyboard keys that toggle the first 12 policies of the queue's taxonomy in a correction
DECISION_KEYS = dict(zip(DECISIONS, "uiop"))


@dataclass(frozen=True)
class ReviewSettings:
    """How the review app treats cookies, proxies and failed logins."""

    secure_cookies: bool = field(default=False, metadata={"help": "Always mark the session cookie Secure (the app is "
                                                                   "reached over HTTPS only). Needed behind a TLS proxy "
                                                                   "that does not send X-Forwarded-Proto."})
    forwarded_allow_ips: str = field(default="127.0.0.1", metadata={
        "help": "Comma-separated addresses or networks of the proxies whose X-Forwarded-Proto and X-Forwarded-For "
                "are believed ('*': any; never on a port the internet reaches)."})
    login: LoginLimits = field(default_factory=LoginLimits, metadata={"help": "Failed-login throttling."})
    trends_json: str = field(default_factory=lambda: os.environ.get("MODERATION_TRENDS_JSON", "runs/trends/trends.json"),
                             metadata={"help": "The trends file `moderation trends` wrote, shown at /dashboard?view=trends "
                                               "(default $MODERATION_TRENDS_JSON, else runs/trends/trends.json)."})


def highlight(text: str, quotes: list[str]):
    """Escaped text with each case-insensitive occurrence of a quote wrapped in <mark>."""
    from markupsafe import Markup

    spans = []
    for q in filter(None, (q.strip() for q in quotes)):
        spans += [(m.start(), m.end()) for m in re.finditer(re.escape(q), text, re.IGNORECASE)]
    out, at = [], 0
    for start, end in sorted(spans):
        if start < at:
            continue  # overlapping quotes: keep the first
        out += [escape(text[at:start]), "<mark>", escape(text[start:end]), "</mark>"]
        at = end
    out.append(escape(text[at:]))
    return Markup("".join(out))


def item_fields(item: dict[str, Any], quotes: list[str]) -> list[tuple[str, Any]]:
    """(label, highlighted text) for each item field, chat messages one per line."""
    rows = []
    for name, value in item.items():
        if name in ("id", "kind"):
            continue
        if name == "messages":
            text = "\n".join(f"{m.get('user') or '?'}: {m['text']}" for m in value)
        elif isinstance(value, dict):
            text = "\n".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, list):
            text = ", ".join(map(str, value))
        else:
            text = str(value)
        rows.append((name, highlight(text, quotes)))
    return rows


def _templates():
    import jinja2
    from fastapi.templating import Jinja2Templates

    folder = resources.files("moderation.review").joinpath("templates")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), autoescape=True)
    return Jinja2Templates(env=env)


class LoginRequired(Exception):
    """The request has no logged-in account: answered with a redirect to /login."""


class ReviewSite:
    """What the routes share: the store, the session secret, templates, and page helpers."""

    def __init__(self, store: Store, settings: ReviewSettings | None = None):
        self.store = store
        self.settings = settings or ReviewSettings()
        self.secret = store.setting("session_secret", auth.new_secret)
        self.templates = _templates()
        self.throttle = LoginThrottle(store, self.settings.login)

    def session(self, request) -> dict[str, Any]:
        data = auth.read_session(request.cookies.get(COOKIE), self.secret)
        if data and data.get("user") and not self.current(data):
            data = None
        return data or {"user": None, "csrf": auth.new_csrf_token()}

    def current(self, data: dict[str, Any]) -> bool:
        """Whether a signed session still holds: its account exists, is enabled, and has not ended its
        sessions since (logout, a new password or role, disabling all bump the session version)."""
        user = self.store.user(data["user"])
        return bool(user) and not user["disabled"] and data.get("sv") == user["session_version"]

    def login_required(self, request) -> tuple[dict[str, Any], dict[str, Any]]:
        """(session, account) of a logged-in request.

        Raises:
            LoginRequired: nobody is logged in.
        """
        sess = self.session(request)
        user = self.store.user(sess["user"]) if sess.get("user") else None
        if not user:
            raise LoginRequired()
        return sess, user

    def respond(self, request, response, sess):
        value = auth.sign_session({k: v for k, v in sess.items() if k != "iat"}, self.secret)
        response.set_cookie(COOKIE, value, max_age=auth.SESSION_MAX_AGE_S, httponly=True, samesite="strict",
                            secure=self.settings.secure_cookies or request.url.scheme == "https")
        return response

    def page(self, request, name: str, sess, status: int = 200, headers: dict[str, str] | None = None, **context):
        user = self.store.user(sess["user"]) if sess.get("user") else None
        context = {"user": user, "csrf": sess["csrf"], **context}
        response = self.templates.TemplateResponse(request, name, context, status_code=status, headers=headers)
        return self.respond(request, response, sess)

    def redirect(self, request, url: str, sess):
        from fastapi.responses import RedirectResponse

        return self.respond(request, RedirectResponse(url, status_code=303), sess)

    async def form(self, request, sess):
        """The POSTed form, once its CSRF token matches the session's."""
        form = await request.form()
        token = str(form.get("csrf_token", ""))
        if not token or not hmac.compare_digest(token, sess["csrf"]):
            raise PermissionError("bad or missing CSRF token: reload the page")
        return form

    def to_next(self, request, sess, queue: str, reviewer: str):
        """Claim the reviewer's next item and show it (or the queue page when nothing is left)."""
        check = self.store.claim_next(queue, reviewer)
        if check is None:
            return self.redirect(request, f"/queues/{quote(queue)}?finished=1", sess)
        return self.redirect(request, f"/checks/{check.check_id}", sess)

    def visible_check(self, user, check_id: str):
        """The case check, once the table lets this account see it.

        Raises:
            PermissionError: there is no such check, or it is not the account's to see.
        """
        try:
            check = self.store.get(check_id)
        except InputError:
            raise PermissionError("no such case check") from None
        access.require(user, "see_check", check)
        return check

    def check_page(self, request, sess, user, check, status=200, error=None):
        flagged = (check.model_verdict or {}).get("violations", [])
        editable = access.allowed(user, access.check_action(check), check)
        # A finished check changes only with the lead's explicit confirmation (the form's `redecide` box).
        taxonomy = self.store.taxonomy(check.queue)
        return self.page(request, "check.html", sess, status=status, check=check, error=error, editable=editable,
                         fields=item_fields(check.item, [v["evidence"] for v in flagged]),
                         progress=self.store.progress(check.queue, user["name"]),
                         policies=policy_choices(taxonomy), decisions=DECISION_KEYS,
                         model_policies={v["policy"] for v in flagged},
                         reasons=why.reasons(check.model_verdict, check.sample, taxonomy),
                         rationale_source=why.rationale_source(check.sample))


def _version(form) -> int:
    """The version the form was made from; anything but a plain number the store can compare (a huge one
    overflows SQLite's and PostgreSQL's integers) matches no version, so the save answers 409."""
    text = str(form.get("version", ""))
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else -1


def policy_choices(taxonomy) -> list[tuple[str, str, str]]:
    """(id, key, title) per policy of a queue's taxonomy, for the correction form; policies past the 12th get no key."""
    keys = list(POLICY_KEYS) + [""] * max(0, len(taxonomy.ids) - len(POLICY_KEYS))
    return [(i, key, title) for (i, title, _), key in zip(taxonomy.policies, keys)]


def create_app(store: Store, settings: ReviewSettings | None = None):
    """The FastAPI app over a store; the session secret lives in the store's settings."""
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse
    from fastapi.staticfiles import StaticFiles
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    site = ReviewSite(store, settings)
    app = FastAPI(title="moderation review", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(resources.files("moderation.review").joinpath("static"))), name="static")
    # The scheme (for Secure cookies) and client address (for login throttling) come from
    # X-Forwarded-Proto / X-Forwarded-For only when the connection is from a trusted proxy.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=site.settings.forwarded_allow_ips)

    @app.middleware("http")
    async def security_headers(request, call_next):
        response = await call_next(request)
        response.headers.update({"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                 "Referrer-Policy": "same-origin", "Cache-Control": "no-store"})
        return response

    @app.exception_handler(PermissionError)
    async def forbidden(request, exc: PermissionError):
        return site.page(request, "forbidden.html", site.session(request), status=403, message=str(exc))

    @app.exception_handler(LoginRequired)
    async def to_login(request, exc: LoginRequired):
        return RedirectResponse("/login", status_code=303)

    _account_routes(app, site)
    _queue_routes(app, site)
    _check_routes(app, site)
    _dashboard_routes(app, site)
    return app


def _account_routes(app, site: ReviewSite) -> None:
    from fastapi import Request

    @app.get("/login")
    def login_form(request: Request):
        return site.page(request, "login.html", site.session(request))

    @app.post("/login")
    async def login(request: Request):
        sess = site.session(request)
        form = await site.form(request, sess)
        name, password = str(form.get("name", ""))[:64], str(form.get("password", ""))
        address = request.client.host if request.client else "unknown"
        wait = site.throttle.refuse_for(name, address)
        if wait:
            return site.page(request, "login.html", sess, status=429, headers={"Retry-After": str(math.ceil(wait))},
                             error=f"Too many failed logins: try again in {math.ceil(wait / 60)} minutes.")
        user = site.store.user(name)
        right = auth.check_password(password, user["password_hash"] if user else auth.dummy_hash())  # same time for any name
        if not (user and right and not user["disabled"]):
            logger.info("failed login for %r from %s", name, address)
            site.throttle.failed(name, address)
            return site.page(request, "login.html", sess, status=401, error="Wrong name or password.")
        site.throttle.succeeded(name)
        # A fresh CSRF token per login; the session holds while the account's session version stays.
        return site.redirect(request, "/", {"user": name, "sv": user["session_version"], "csrf": auth.new_csrf_token()})

    @app.post("/logout")
    async def logout(request: Request):
        sess = site.session(request)
        await site.form(request, sess)
        if sess.get("user"):
            site.store.end_sessions(sess["user"], "logout")  # every copy of the cookie, on every device
        return site.redirect(request, "/login", {"user": None, "csrf": auth.new_csrf_token()})


def _queue_routes(app, site: ReviewSite) -> None:
    from fastapi import Request

    @app.get("/")
    def home(request: Request):
        sess, user = site.login_required(request)
        access.require(user, "see_queues")
        queues = [{**q, **site.store.progress(q["name"], user["name"])} for q in site.store.queues()]
        start = next((q["name"] for q in queues if q["done"] < q["total"]), None)  # what `n` starts
        return site.page(request, "queues.html", sess, queues=queues, start=start)

    @app.get("/queues/{queue}")
    def queue_page(request: Request, queue: str):
        sess, user = site.login_required(request)
        access.require(user, "see_queue")
        lead = access.scope(user, "see_queue") == access.ANY
        checks = site.store.checks(queue) if lead else site.store.checks(queue, reviewer=user["name"])
        return site.page(request, "queue.html", sess, queue=queue, checks=checks, lead=lead,
                         progress=site.store.progress(queue, user["name"]))

    @app.post("/queues/{queue}/next")
    async def next_item(request: Request, queue: str):
        sess, user = site.login_required(request)
        await site.form(request, sess)
        access.require(user, "claim")  # always for the session's own account, whatever the form says
        return site.to_next(request, sess, queue, user["name"])


def _check_routes(app, site: ReviewSite) -> None:
    from fastapi import Request

    @app.get("/checks/{check_id}")
    def show_check(request: Request, check_id: str):
        sess, user = site.login_required(request)
        return site.check_page(request, sess, user, site.visible_check(user, check_id))

    @app.post("/checks/{check_id}")
    async def decide(request: Request, check_id: str):
        sess, user = site.login_required(request)
        form = await site.form(request, sess)
        check = site.visible_check(user, check_id)
        access.require(user, access.check_action(check), check)
        action = str(form.get("action", ""))
        if action not in REVIEW_DECISIONS:
            return site.check_page(request, sess, user, check, 400, f"unknown action {action!r}")
        correction = None
        if action == "correct":
            correction = {"decision": str(form.get("decision", "")), "policies": [str(p) for p in form.getlist("policy")],
                          "rationale": str(form.get("rationale", ""))}
        # Anyone's check (a lead's scope) is saved without the store's holder test; an own one only while
        # it is still open and held by this account, which the store tests in the same write.
        anyones = access.scope(user, access.check_action(check)) == access.ANY
        try:
            site.store.decide(check_id, user["name"], _version(form), action,
                              notes=str(form.get("notes", "")), correction=correction, lead=anyones,
                              redecide=form.get("redecide") == "yes")
        except ReviewConflict as exc:  # the page shows the check as it is now, if this account may still see it
            return site.check_page(request, sess, user, site.visible_check(user, check_id), 409, str(exc))
        except (InputError, ValueError) as exc:
            return site.check_page(request, sess, user, check, 400, str(exc))
        return site.to_next(request, sess, check.queue, user["name"])


def _dashboard_routes(app, site: ReviewSite) -> None:
    from fastapi import Request
    from markupsafe import Markup

    @app.get("/dashboard")
    def dashboard_page(request: Request, queue: str | None = None, view: str | None = None):
        sess, user = site.login_required(request)
        access.require(user, "see_dashboard")
        if view == "trends":  # the same rule and route as the dashboard: a view of it, not a page of its own
            return trends_page(request, sess)
        stats = dashboard.summary(site.store.checks(queue or None))
        charts = [Markup(svg) for svg in dashboard.charts(stats)]  # built from escaped labels
        return site.page(request, "dashboard.html", sess, stats=stats, charts=charts, queue=queue,
                         queues=[q["name"] for q in site.store.queues()], kappa_note=dashboard.kappa_note(stats["agreement"]),
                         rate_basis=dashboard.rate_basis(stats["violation_rates"]))

    def trends_page(request, sess):
        from moderation.trends import read_json
        from moderation.trends_report import blocks, svg_figures

        path = site.settings.trends_json
        try:
            result = read_json(path)
        except InputError as exc:
            return site.page(request, "trends.html", sess, result=None, path=path, error=str(exc))
        return site.page(request, "trends.html", sess, result=result, path=path, error=None,
                         charts=[Markup(svg) for svg in svg_figures(result)], blocks=blocks(result))
