"""The openai backend against a real HTTP server on loopback that speaks the chat API."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import read_jsonl, write_jsonl

from moderation.backends import BackendConfig, load_backend
from moderation.backends.base import GenerationRequest
from moderation.backends.fake import item_text_of, keyword_verdict
from moderation.batch import BatchRunner
from moderation.errors import BackendError
from moderation.items import read_items
from moderation.pipeline import Moderator


class ChatServer(BaseHTTPRequestHandler):
    bodies: list = []
    fail_first: int = 0

    def log_message(self, *args):
        pass

    def _send(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"data": [{"id": "served-model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        if "REJECT-ME" in body["messages"][-1]["content"]:
            return self._send(400, {"error": "prompt too long"})
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            return self._send(429, {"error": "busy"})
        request = GenerationRequest(messages=body["messages"], schema=body["response_format"]["json_schema"]["schema"])
        verdict = keyword_verdict(item_text_of(request))
        self._send(200, {"choices": [{"message": {"content": json.dumps(verdict)}}],
                         "usage": {"prompt_tokens": 100, "completion_tokens": 20}})


@pytest.fixture
def server():
    ChatServer.bodies, ChatServer.fail_first = [], 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ChatServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_openai_backend_moderates_through_the_chat_api(server, tmp_path, policy, template):
    ChatServer.fail_first = 1  # one 429: the backend backs off and retries
    backend = load_backend("openai", BackendConfig(base_url=server, concurrency=2))
    assert backend.model_id == "served-model"
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "title": "Rolex replica"}, {"id": "b", "title": "Oak chair"}])
    stats = BatchRunner(Moderator(backend, policy, template)).run(read_items(src), tmp_path / "out.jsonl")
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [r["verdict"]["decision"] for r in out] == ["remove", "allow"]
    assert stats.prompt_tokens == 200 and out[0]["provenance"]["backend"] == "openai"
    body = ChatServer.bodies[-1]
    assert body["model"] == "served-model" and body["temperature"] == 0.0
    assert body["response_format"]["type"] == "json_schema" and "anyOf" in body["response_format"]["json_schema"]["schema"]


def test_a_rejected_request_becomes_that_items_error_record(server, tmp_path, policy, template):
    backend = load_backend("openai", BackendConfig(base_url=server))
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "title": "REJECT-ME"}, {"id": "b", "title": "Oak chair"}])
    BatchRunner(Moderator(backend, policy, template)).run(read_items(src), tmp_path / "out.jsonl")
    a, b = read_jsonl(tmp_path / "out.jsonl")
    assert "HTTP 400" in a["error"]["reason"] and a["error"]["attempts"] == 1
    assert b["verdict"]["decision"] == "allow"


def test_unreachable_server_is_a_backend_error():
    with pytest.raises(BackendError, match="failed"):
        load_backend("openai", BackendConfig(base_url="http://127.0.0.1:9/v1", timeout_s=0.5))
