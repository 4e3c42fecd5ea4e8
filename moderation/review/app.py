"""The review web app: server-rendered pages over the case-check store (FastAPI + Jinja2).

Item text is untrusted merchant input: templates autoescape everything, the only markup built
in Python (evidence highlights, charts) escapes its text first, and a Content-Security-Policy
without 'unsafe-inline' stops any script that slipped through. Every POST form carries the
session's CSRF token; the session cookie is HMAC-signed, HttpOnly and SameSite=Strict.
"""


import hmac
import logging
import re
from html import escape
from importlib import resources
from typing import Any

from moderation.errors import InputError
from moderation.review import auth, dashboard
from moderation.review.store import ReviewConflict, Store
from moderation.review.verdicts import REVIEW_DECISIONS
from moderation.schema import DECISIONS, POLICY_IDS

logger = logging.getLogger(__name__)

COOKIE = "moderation_review"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
POLICY_KEYS = "1234567890-="  # keyboard keys that toggle the 12 policies in a correction
DECISION_KEYS = dict(zip(DECISIONS, "uiop"))


def highlight(text: str, quotes: list[str]):
    """Escaped text with each case-insensitive occurrence of a quote wrapped in <mark>."""
    from markupsafe import Markup

    spans = []
    for quote in filter(None, (q.strip() for q in quotes)):
        spans += [(m.start(), m.end()) for m in re.finditer(re.escape(quote), text, re.IGNORECASE)]
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


def create_app(store: Store):
    """The FastAPI app over a store; the session secret lives in the store's settings."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, RedirectResponse
    from fastapi.staticfiles import StaticFiles

    secret = store.setting("session_secret", auth.new_secret)
    templates = _templates()
    app = FastAPI(title="moderation review", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(resources.files("moderation.review").joinpath("static"))), name="static")

    @app.middleware("http")
    async def security_headers(request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    def session(request: Request) -> dict[str, Any]:
        data = auth.read_session(request.cookies.get(COOKIE), secret)
        if data and data.get("user") and not store.user(data["user"]):
            data = None  # the account is gone
        return data or {"user": None, "csrf": auth.new_csrf_token()}

    def respond(request, response, sess):
        response.set_cookie(COOKIE, auth.sign_session({k: v for k, v in sess.items() if k != "iat"}, secret),
                            max_age=auth.SESSION_MAX_AGE_S, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    def page(request, name: str, sess, status: int = 200, **context):
        user = store.user(sess["user"]) if sess.get("user") else None
        context = {"user": user, "csrf": sess["csrf"], **context}
        return respond(request, templates.TemplateResponse(request, name, context, status_code=status), sess)

    def redirect(request, url: str, sess):
        return respond(request, RedirectResponse(url, status_code=303), sess)

    async def form_of(request: Request, sess) -> Any:
        form = await request.form()
        token = str(form.get("csrf_token", ""))
        if not token or not hmac.compare_digest(token, sess["csrf"]):
            raise PermissionError("bad or missing CSRF token: reload the page")
        return form

    def current_user(sess) -> dict[str, Any] | None:
        return store.user(sess["user"]) if sess.get("user") else None

    @app.exception_handler(PermissionError)
    async def forbidden(request: Request, exc: PermissionError):
        return HTMLResponse(f"<h1>Forbidden</h1><p>{escape(str(exc))}</p>", status_code=403)

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request):
        return page(request, "login.html", session(request))

    @app.post("/login")
    async def login(request: Request):
        sess = session(request)
        form = await form_of(request, sess)
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        user = store.user(name)
        if not user or not auth.check_password(password, user["password_hash"]):
            logger.info("failed login for %r", name)
            return page(request, "login.html", sess, status=401, error="Wrong name or password.")
        return redirect(request, "/", {"user": name, "csrf": auth.new_csrf_token()})  # fresh token per login

    @app.post("/logout")
    async def logout(request: Request):
        sess = session(request)
        await form_of(request, sess)
        return redirect(request, "/login", {"user": None, "csrf": auth.new_csrf_token()})

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request):
        sess = session(request)
        user = current_user(sess)
        if not user:
            return redirect(request, "/login", sess)
        queues = [{**q, **store.progress(q["name"], user["name"])} for q in store.queues()]
        return page(request, "queues.html", sess, queues=queues)

    @app.get("/queues/{queue}", response_class=HTMLResponse)
    def queue_page(request: Request, queue: str):
        sess = session(request)
        user = current_user(sess)
        if not user:
            return redirect(request, "/login", sess)
        lead = user["role"] == "lead"
        checks = store.checks(queue) if lead else store.checks(queue, reviewer=user["name"])
        return page(request, "queue.html", sess, queue=queue, checks=checks, lead=lead,
                    progress=store.progress(queue, user["name"]))

    @app.post("/queues/{queue}/next")
    async def next_item(request: Request, queue: str):
        sess = session(request)
        user = current_user(sess)
        if not user:
            return redirect(request, "/login", sess)
        await form_of(request, sess)
        return _to_next(request, sess, queue, user["name"])

    def _to_next(request, sess, queue: str, reviewer: str):
        check = store.claim_next(queue, reviewer)
        if check is None:
            return redirect(request, f"/queues/{queue}?finished=1", sess)
        return redirect(request, f"/checks/{check.check_id}", sess)

    def visible_check(user, check_id: str):
        try:
            check = store.get(check_id)
        except InputError:
            raise PermissionError("no such case check") from None
        if user["role"] != "lead" and user["name"] not in (check.assigned_to, check.reviewer):
            raise PermissionError("this case check is not yours")
        return check

    def check_page(request, sess, user, check, status=200, error=None):
        quotes = [v["evidence"] for v in (check.model_verdict or {}).get("violations", [])]
        editable = user["role"] == "lead" or (check.status == "assigned" and check.assigned_to == user["name"])
        return page(request, "check.html", sess, status=status, check=check, fields=item_fields(check.item, quotes),
                    editable=editable, error=error, progress=store.progress(check.queue, user["name"]),
                    policies=list(zip(POLICY_IDS, POLICY_KEYS)), decisions=DECISION_KEYS,
                    model_policies={v["policy"] for v in (check.model_verdict or {}).get("violations", [])})

    @app.get("/checks/{check_id}", response_class=HTMLResponse)
    def show_check(request: Request, check_id: str):
        sess = session(request)
        user = current_user(sess)
        if not user:
            return redirect(request, "/login", sess)
        return check_page(request, sess, user, visible_check(user, check_id))

    @app.post("/checks/{check_id}")
    async def decide(request: Request, check_id: str):
        sess = session(request)
        user = current_user(sess)
        if not user:
            return redirect(request, "/login", sess)
        form = await form_of(request, sess)
        check = visible_check(user, check_id)
        action = str(form.get("action", ""))
        if action not in REVIEW_DECISIONS:
            return check_page(request, sess, user, check, 400, f"unknown action {action!r}")
        correction = None
        if action == "correct":
            correction = {"decision": str(form.get("decision", "")), "policies": [str(p) for p in form.getlist("policy")],
                          "rationale": str(form.get("rationale", ""))}
        try:
            version = int(form.get("version", "-1"))
            store.decide(check_id, user["name"], version, action, notes=str(form.get("notes", "")),
                         correction=correction, lead=user["role"] == "lead" and check.assigned_to != user["name"])
        except ReviewConflict as exc:
            return check_page(request, sess, user, store.get(check_id), 409, str(exc))
        except (InputError, ValueError) as exc:
            return check_page(request, sess, user, check, 400, str(exc))
        return _to_next(request, sess, check.queue, user["name"])

    @app.get("/dashboard", response_class=HTMLResponse)
    def dashboard_page(request: Request, queue: str | None = None):
        sess = session(request)
        user = current_user(sess)
        if not user:
            return redirect(request, "/login", sess)
        if user["role"] != "lead":
            raise PermissionError("the dashboard is for leads")
        from markupsafe import Markup

        stats = dashboard.summary(store.checks(queue))
        charts = [Markup(svg) for svg in dashboard.charts(stats)]  # built from escaped labels
        return page(request, "dashboard.html", sess, stats=stats, charts=charts, queue=queue,
                    queues=[q["name"] for q in store.queues()])

    return app
