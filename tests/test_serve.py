"""`moderation serve`: the HTTP API on a real uvicorn server, with the fake backend."""

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import DEMO, read_jsonl

from moderation.backends import BackendConfig
from moderation.backends.fake import FakeBackend, item_text_of, keyword_verdict
from moderation.batch import BatchRunner, RunOptions
from moderation.errors import ConfigError
from moderation.items import read_items
from moderation.model import Adapter
from moderation.pipeline import Moderator
from moderation.serve import Metrics, ModerationService, ServeOptions, build_server


def slow_verdict(delay):
    def respond(request):
        time.sleep(delay)
        return json.dumps(keyword_verdict(item_text_of(request)))
    return respond


class Server:
    """A uvicorn server in a thread on a free loopback port."""

    def __init__(self, policy, template, delay=0.0, adapters=(), thresholds=None, screen=None, store=None, **options):
        backend = FakeBackend(BackendConfig(adapters=adapters), respond=slow_verdict(delay) if delay else None)
        base = Moderator(backend, policy, template, thresholds=thresholds)
        self.backend = backend
        self.metrics = Metrics()
        self.service = ModerationService({None: base, **{a.name: base.with_adapter(a) for a in adapters}},
                                         ServeOptions(**options), self.metrics, screen=screen, store=store)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = build_server(self.service, self.metrics, host="127.0.0.1", port=port)  # as `moderation serve`
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.02)

    def post(self, payload, raw=None, timeout=30):
        data = raw if raw is not None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + "/v1/moderate", data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read()), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return response.status, response.read().decode()

    def moderated_ids(self):
        return [r.messages[-1]["content"] for call in self.backend.calls for r in call]

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=60)


@pytest.fixture
def serve(policy, template):
    servers = []

    def start(**kwargs):
        servers.append(Server(policy, template, **kwargs))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def demo(n):
    return [json.loads(line) for line in DEMO.read_text().splitlines()[:n]]


def test_single_and_batch_requests_give_the_records_run_gives(serve, tmp_path, make_moderator):
    rows = demo(12)
    out = tmp_path / "run.jsonl"
    BatchRunner(make_moderator()).run(read_items(DEMO), out)
    expected = {r["id"]: r for r in read_jsonl(out)}
    server = serve()
    status, single, _ = server.post({"item": rows[0]})
    assert status == 200 and single["id"] == rows[0]["id"], single
    status, batch, _ = server.post({"items": rows[1:]})
    assert status == 200 and [r["id"] for r in batch["results"]] == [r["id"] for r in rows[1:]]
    for record in [single, *batch["results"]]:
        want = expected[record["id"]]
        assert record["verdict"] == want["verdict"] and record["scores"] == want["scores"]
        assert record["content_sha"] == want["content_sha"]
        assert {k: v for k, v in record["provenance"].items() if k not in ("latency_ms",)} == \
               {k: v for k, v in want["provenance"].items() if k not in ("latency_ms",)}


def test_score_first_serve_gives_the_records_run_gives_flagged_policies_included(serve, tmp_path, make_moderator):
    thresholds = {p: 0.5 for p in ("counterfeit_ip", "fraud_scam", "spam", "off_platform_transaction")}
    out = tmp_path / "run.jsonl"
    BatchRunner(make_moderator(thresholds=thresholds), RunOptions(thresholds=thresholds)).run(read_items(DEMO), out)
    expected = {r["id"]: r for r in read_jsonl(out)}
    status, batch, _ = serve(thresholds=thresholds).post({"items": demo(12)})
    assert status == 200 and any(r["flagged"] for r in batch["results"]) and not all(r["flagged"] for r in batch["results"])
    for record in batch["results"]:
        want = expected[record["id"]]
        assert (record["verdict"], record["scores"], record["flagged"]) == (want["verdict"], want["scores"], want["flagged"])
        assert record["provenance"]["decided_by"] == want["provenance"]["decided_by"] == "scores"


class TitleScreen:
    """A first stage that clears every item whose text mentions a kettle or a blanket."""

    name, sha, threshold = "homeware", "h0me", 0.5

    def clear(self, items):
        return [{"name": self.name, "score": 0.0, "threshold": self.threshold, "sha": self.sha}
                if any(w in item.text().lower() for w in ("kettle", "blanket")) else None for item in items]


def test_serve_has_runs_screen_and_persistent_verdict_cache(serve, tmp_path, make_moderator):
    from moderation.verdict_store import VerdictStore

    rows = demo(24)
    out = tmp_path / "run.jsonl"
    BatchRunner(make_moderator(), screen=TitleScreen()).run(read_items(DEMO), out)
    expected = {r["id"]: r for r in read_jsonl(out)}
    status, batch, _ = serve(screen=TitleScreen()).post({"items": rows})
    assert status == 200 and any("screen" in r for r in batch["results"])
    for record in batch["results"]:
        assert (record["verdict"], record.get("screen")) == (expected[record["id"]]["verdict"], expected[record["id"]].get("screen"))
    store = VerdictStore(tmp_path / "verdicts.sqlite")
    first = serve(store=store)
    first.post({"items": rows})
    second = serve(store=store)  # a restarted server: the store answers, the engine is not called
    status, again, _ = second.post({"items": rows})
    assert status == 200 and second.backend.calls == [] and all(r["provenance"]["cached"] for r in again["results"])


def test_oversized_and_malformed_requests_are_refused_with_reasons(serve):
    server = serve(max_items=5, max_body_bytes=20_000)
    assert server.post(None, raw=b"{not json")[0] == 400
    assert server.post({"items": demo(6)})[0] == 413
    status, body, _ = server.post(None, raw=json.dumps({"item": {"id": "x", "title": "y" * 30_000}}).encode())
    assert status == 413 and "limit" in body["error"]
    assert server.post({"item": {"title": "no id"}}) [0] == 422
    status, body, _ = server.post({"items": [{"id": "a", "title": "ok"}, {"id": "b", "kind": "spaceship", "title": "x"}]})
    assert status == 422 and body["error"].startswith("item 1:")
    assert server.post({"item": {"id": "a", "title": "ok"}, "extra": 1})[0] == 422
    assert server.post({"items": []})[0] == 422
    assert server.post({"item": {"id": "a", "title": "ok"}, "adapter": "nope"})[0] == 422
    assert server.post(["a list"])[0] == 422
    assert server.backend.calls == []  # nothing refused reached the engine
    assert server.get("/healthz")[0] == 200


def test_concurrent_clients_share_engine_batches_and_each_item_is_moderated_once(serve):
    server = serve(delay=0.01, max_wait_ms=50)
    rows = demo(80)
    chunks = [rows[i:i + 4] for i in range(0, 80, 4)]
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda chunk: server.post({"items": chunk}), chunks))
    assert all(status == 200 for status, _, _ in answers)
    got = [r["id"] for _, body, _ in answers for r in body["results"]]
    assert got == [r["id"] for r in rows]
    assert len(server.moderated_ids()) == 80
    assert len(server.backend.calls) < 20  # requests were merged into larger engine batches


def test_a_retried_id_is_answered_once_and_new_content_under_it_is_a_conflict(serve):
    server = serve(delay=0.2)
    row = demo(1)[0]
    with ThreadPoolExecutor(3) as pool:  # a client retrying while the first try is still in flight
        answers = list(pool.map(lambda _: server.post({"item": row}), range(3)))
    assert [a[0] for a in answers] == [200, 200, 200]
    assert answers[0][1] == answers[1][1] == answers[2][1]
    assert server.post({"item": row})[1] == answers[0][1]  # and after it finished
    assert len(server.moderated_ids()) == 1
    status, body, _ = server.post({"item": {**row, "title": "something else"}})
    assert status == 409 and "idempotency" in body["error"]
    status, body, _ = server.post({"items": [row, {**row, "title": "other"}]})
    assert status == 422


def test_a_full_queue_answers_429_with_retry_after(serve):
    server = serve(delay=0.3, max_queue=4, max_batch=2, max_wait_ms=0)
    rows = demo(12)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: server.post({"items": rows[2 * i:2 * i + 2]}), range(6)))
    statuses = [a[0] for a in answers]
    assert 429 in statuses and 200 in statuses
    refused = next(a for a in answers if a[0] == 429)
    assert refused[2].get("retry-after") == "1" or refused[2].get("Retry-After") == "1"
    # Refused items were not remembered: resending them once the queue has room works.
    for i, answer in enumerate(answers):
        if answer[0] == 429:
            assert server.post({"items": rows[2 * i:2 * i + 2]})[0] == 200
    assert len(server.moderated_ids()) == 12


def test_timeout_answers_504_and_the_retry_gets_the_finished_verdict(serve):
    server = serve(delay=1.0, timeout_s=0.2)
    row = demo(1)[0]
    status, body, _ = server.post({"item": row})
    assert status == 504 and "retry" in body["error"]
    time.sleep(1.2)
    status, record, _ = server.post({"item": row})
    assert status == 200 and record["id"] == row["id"]
    assert len(server.moderated_ids()) == 1


def test_graceful_shutdown_finishes_requests_in_flight_and_journals_them(serve, tmp_path, policy, template):
    journal = tmp_path / "journal.jsonl"
    server = serve(delay=0.5, journal=journal)
    rows = demo(3)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(server.post, {"items": rows})
        time.sleep(0.2)  # the request is in the engine now
        server.stop()  # what SIGTERM does
        status, body, _ = pending.result(timeout=30)
    assert status == 200 and len(body["results"]) == 3
    assert [r["id"] for r in read_jsonl(journal)] == [r["id"] for r in rows]
    # A new server (same model) on the same journal answers retries from it, without the engine.
    again = serve(delay=0.01, journal=journal)
    status, record, _ = again.post({"item": rows[1]})
    assert status == 200 and record == body["results"][1]
    assert again.backend.calls == []
    again.stop()
    with pytest.raises(ConfigError, match=r"model\.model: 'fake-scripted' then, 'fake-keywords' now"):
        serve(journal=journal)  # another model would answer retries with verdicts it did not make


def test_adapters_are_picked_per_request(serve, tmp_path):
    eu = Adapter("eu", tmp_path, 8, "e" * 64)
    server = serve(adapters=(eu,))
    status, record, _ = server.post({"item": {"id": "a", "title": "Lamp"}, "adapter": "eu"})
    assert status == 200 and record["provenance"]["adapter"] == "eu"
    assert server.backend.calls[0][0].adapter == "eu"
    status, body, _ = server.post({"item": {"id": "a", "title": "Lamp"}})  # same id, other adapter
    assert status == 409


def test_health_and_prometheus_metrics(serve):
    server = serve()
    server.post({"items": demo(5)})
    server.post(None, raw=b"nope")
    status, health = server.get("/healthz")
    assert status == 200 and json.loads(health)["status"] == "ok"
    status, text = server.get("/metrics")
    assert 'moderation_items_total{outcome="verdict"} 5.0' in text
    assert 'moderation_requests_total{status="400"} 1.0' in text
    assert "moderation_batch_items_bucket" in text and "moderation_cached_prompt_tokens_total" in text


def test_the_cli_server_stops_cleanly_on_sigterm(tmp_path):
    import signal
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    journal = tmp_path / "journal.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "moderation.cli", "serve", "--backend", "fake", "--port", str(port),
                             "--journal", str(journal)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                assert time.time() < deadline and proc.poll() is None, "server did not come up"
                time.sleep(0.2)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/moderate", data=json.dumps({"items": demo(3)}).encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            assert len(json.loads(response.read())["results"]) == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        proc.kill()
    assert len(read_jsonl(journal)) == 3


def test_a_hostile_body_is_a_400_and_the_server_goes_on(serve):
    server = serve()
    deep = '{"a": ' * 5000 + "1" + "}" * 5000  # 30 KB
    status, body, _ = server.post(None, raw=('{"item": {"id": "x", "title": "t", "attributes": ' + deep + "}}").encode())
    assert status == 400 and "nested" in body["error"]
    status, body, _ = server.post(None, raw=('{"item": {"id": "y", "title": "t", "attributes": ' + '{"a": ' * 100 + "1"
                                             + "}" * 100 + "}}").encode())
    assert status == 400 and "nested" in body["error"]
    status, body, _ = server.post({"item": {"id": "z", "title": "t", "price": 10 ** 400}})
    assert status == 422 and body["error"].startswith("item 0: field 'price'")
    assert server.post({"item": {"id": "ok", "title": "Lamp"}})[0] == 200
    assert server.backend.calls and all(r.messages for call in server.backend.calls for r in call)


def test_an_unexpected_failure_is_a_500_without_traceback_and_is_counted(serve, monkeypatch):
    server = serve()

    def broken(*args, **kwargs):
        raise RuntimeError("bug in the queue")

    monkeypatch.setattr(server.service, "submit", broken)
    status, body, _ = server.post({"item": {"id": "a", "title": "Lamp"}})
    assert status == 500 and "Traceback" not in json.dumps(body) and "internal error" in body["error"]
    _, text = server.get("/metrics")
    assert 'moderation_requests_total{status="500"} 1.0' in text


def test_a_request_larger_than_the_whole_queue_is_413_not_429_forever(serve):
    server = serve(max_queue=4, max_items=10)
    status, body, headers = server.post({"items": demo(6)})
    assert status == 413 and "--max-queue" in body["error"] and "4" in body["error"]
    assert "retry-after" not in {k.lower() for k in headers}  # retrying the same request can never work
    assert server.post({"items": demo(4)})[0] == 200


def test_unknown_fields_inside_an_item_are_refused_with_422(serve):
    server = serve()
    status, body, _ = server.post({"item": {"id": "a", "title": "Lamp", "colour": "red"}})
    assert status == 422 and body["error"].startswith("item 0:") and "'colour'" in body["error"]
    status, body, _ = server.post({"items": [{"id": "a", "title": "Lamp"}, {"id": "b", "title": "Vlog", "caption": "x"}]})
    assert status == 422 and body["error"].startswith("item 1:") and "'caption'" in body["error"]
    assert server.backend.calls == []


def raw_request(url, payload) -> socket.socket:
    """A connection with a whole POST /v1/moderate sent on it, its answer not read yet."""
    body = json.dumps(payload).encode()
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(b"POST /v1/moderate HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return sock


def status_of(sock: socket.socket) -> str:
    """The HTTP status the server answered on a raw connection, or what went wrong instead."""
    data = b""
    try:
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
    except ConnectionResetError:
        return "connection reset"
    finally:
        sock.close()
    return data.split(b" ", 2)[1].decode() if data else "closed without an answer"


def test_on_sigterm_connections_waiting_to_be_accepted_get_an_answer_not_a_reset(serve):
    server = serve(delay=0.3)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(server.post, {"items": demo(3)})
        time.sleep(0.1)
        # Keep the server's event loop busy for a moment, as under load, so that new connections
        # wait in the kernel's accept backlog; SIGTERM arrives meanwhile.
        loop = server.server.servers[0].get_loop()
        loop.call_soon_threadsafe(time.sleep, 1.0)
        time.sleep(0.1)
        waiting = [raw_request(server.url, {"item": {"id": f"late-{i}", "title": "Lamp"}}) for i in range(8)]
        server.server.should_exit = True  # what SIGTERM does
        answers = [status_of(sock) for sock in waiting]
        assert in_flight.result(timeout=30)[0] == 200
    assert set(answers) <= {"200", "503"}, answers
