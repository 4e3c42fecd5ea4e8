"""Any OpenAI-compatible chat-completions server, such as `vllm serve`.

Uses only the standard library. The verdict schema travels as `response_format` json_schema,
which vLLM's server turns into constrained decoding.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from moderation.backends.base import BackendConfig, Generation, GenerationRequest
from moderation.errors import BackendError

logger = logging.getLogger(__name__)
RETRY_STATUS = {429, 500, 502, 503, 504}
REJECT_STATUS = {400, 413, 422}  # this request is bad (too long, invalid): an error record, not a failed run
MAX_TRIES = 4


class RequestRejected(Exception):
    """The server refused one request as invalid."""


def request_body(request: GenerationRequest, config: BackendConfig, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": request.messages,
        "max_tokens": config.max_tokens,
        "temperature": request.temperature,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "verdict", "schema": request.schema, "strict": True},
        },
    }
    if request.temperature > 0:
        body["seed"] = request.seed if request.seed is not None else config.seed
    return body


class OpenAIBackend:
    name = "openai"

    def __init__(self, config: BackendConfig):
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        self.api_key = os.environ.get(config.api_key_env, "EMPTY")
        self.model_id = config.model if config.model != "default" else self._served_model()
        self.model_sha = None

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"},
        )
        for attempt in range(1, MAX_TRIES + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.config.timeout_s) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode(errors="replace")
                if exc.code in REJECT_STATUS:
                    raise RequestRejected(f"the server rejected the request (HTTP {exc.code}): {detail}") from None
                if exc.code not in RETRY_STATUS or attempt == MAX_TRIES:
                    raise BackendError(f"{method} {path} answered HTTP {exc.code}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == MAX_TRIES:
                    raise BackendError(f"{method} {self.base_url}{path} failed: {exc}") from None
            time.sleep(0.5 * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def _served_model(self) -> str:
        models = self._call("GET", "/models").get("data") or []
        if not models:
            raise BackendError(f"{self.base_url} serves no model")
        return models[0]["id"]

    def _one(self, request: GenerationRequest) -> Generation:
        try:
            reply = self._call("POST", "/chat/completions", request_body(request, self.config, self.model_id))
        except RequestRejected as exc:
            return Generation("", error=str(exc))
        try:
            text = reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"unexpected reply from {self.base_url}: {str(reply)[:200]}") from None
        usage = reply.get("usage") or {}
        return Generation(text, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(self._one, requests))

    def close(self) -> None:
        pass
