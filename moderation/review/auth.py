"""Passwords (salted scrypt) and signed session cookies for the review app, stdlib only."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

SCRYPT = {"n": 2**14, "r": 8, "p": 1}
SESSION_MAX_AGE_S = 12 * 3600


def hash_password(password: str) -> str:
    """'scrypt$n$r$p$salt$hash' for a password (a fresh random salt each time)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT, dklen=32)
    return "$".join(["scrypt", str(SCRYPT["n"]), str(SCRYPT["r"]), str(SCRYPT["p"]), salt.hex(), digest.hex()])


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    return hmac.compare_digest(candidate.hex(), digest)


@functools.cache
def dummy_hash() -> str:
    """A hash no password matches: checked for unknown names, so a login takes as long either way."""
    return hash_password(secrets.token_hex(16))


def new_secret() -> str:
    return secrets.token_hex(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_session(data: dict[str, Any], secret: str) -> str:
    """A cookie value: the session as base64 JSON, its issue time, and an HMAC-SHA256 of both."""
    payload = _b64(json.dumps({**data, "iat": int(time.time())}, separators=(",", ":")).encode())
    mac = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def read_session(value: str | None, secret: str, max_age_s: int = SESSION_MAX_AGE_S) -> dict[str, Any] | None:
    """The session in a cookie, or None if it is missing, forged or expired."""
    if not value or "." not in value:
        return None
    payload, mac = value.rsplit(".", 1)
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(mac)):
            return None
        data = json.loads(_unb64(payload))
    except (ValueError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or time.time() - data.get("iat", 0) > max_age_s:
        return None
    return data


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)
