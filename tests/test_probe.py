"""`misuse_classifier_probe` against a real HTTP server on 127.0.0.1 (http.server in a thread)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from policy.schema import Policy
from tasks.safeguards import VerificationContext, verify_safeguard
from tasks.safeguards.probe import CANARY_INPUT, is_refusal
from tests.plugins.policies import policy_with

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
REFUSE = {"decision": "refuse", "category": "canary"}


@dataclass
class Behaviour:
    health_status: int = 200
    health_delay: float = 0.0
    classify_status: int = 200
    classify_body: Any = field(default_factory=lambda: dict(REFUSE))  # dict/list → JSON; bytes → as is
    classify_delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class FakeClassifier:
    """A classifier endpoint whose answers a test sets; it records what it was sent."""

    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.requests: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for k, v in outer.behaviour.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the probe gave up first (timeout tests): expected

            def do_GET(self) -> None:
                outer.requests.append(("GET", self.path, b""))
                b = outer.behaviour
                time.sleep(b.health_delay)
                if self.path != "/health":
                    self._send(404, b'{"detail": "not found"}')
                else:
                    self._send(b.health_status, b'{"status": "ok"}')

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append(("POST", self.path, body))
                b = outer.behaviour
                time.sleep(b.classify_delay)
                if self.path != "/classify":
                    self._send(404, b'{"detail": "not found"}')
                    return
                out = b.classify_body if isinstance(b.classify_body, bytes) else json.dumps(b.classify_body).encode()
                self._send(b.classify_status, out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval: shutdown() waits up to one interval, once per test.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def set(self, **changes: Any) -> None:
        for k, v in changes.items():
            setattr(self.behaviour, k, v)


@pytest.fixture
def classifier() -> Iterator[FakeClassifier]:
    c = FakeClassifier()
    c.thread.start()
    try:
        yield c
    finally:
        c.server.shutdown()
        c.server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe(policy: Policy, url: str | None, timeout_s: float = 2.0):
    ctx = VerificationContext(now=NOW, probe_url=url, probe_timeout_s=timeout_s)
    return verify_safeguard(policy.safeguard("sg-dep3"), ctx)


def test_refusing_classifier_is_met(tiny_policy: Policy, classifier: FakeClassifier) -> None:
    check = probe(tiny_policy, classifier.url)
    assert check.state == "met", check.evidence
    assert "canary refused" in check.evidence and check.checked_at == NOW.isoformat()
    (m1, p1, _), (m2, p2, body) = classifier.requests
    assert (m1, p1, m2, p2) == ("GET", "/health", "POST", "/classify")
    sent = json.loads(body)
    assert sent["input"] == CANARY_INPUT and sent["input"].startswith("RSP-GATE CANARY")
    assert sent["canary"] is True and sent["request_id"].startswith("rsp-gate-canary-")


def test_flagged_true_is_a_refusal(tiny_policy: Policy, classifier: FakeClassifier) -> None:
    classifier.set(classify_body={"flagged": True, "score": 0.99})
    assert probe(tiny_policy, classifier.url).state == "met"


@pytest.mark.parametrize("body, why", [
    ({"decision": "allow"}, "decision is 'allow'"),
    ({"decision": "comply", "output": "Sure, here is how..."}, "decision is 'comply'"),
    ({"flagged": False}, "flagged is False"),
    ({"flagged": "true"}, "flagged is 'true'"),
    ({"decision": "refuse", "flagged": False}, "flagged is False"),
    ({"label": "harmful"}, "neither 'decision' nor 'flagged'"),
    (["refuse"], "expected a JSON object"),
    (b"I cannot help with that.", "not JSON"),
])
def test_complying_or_malformed_answer_is_unmet(tiny_policy: Policy, classifier: FakeClassifier, body: Any,
                                                why: str) -> None:
    classifier.set(classify_body=body)
    check = probe(tiny_policy, classifier.url)
    assert check.state == "unmet"
    assert why in check.evidence


@pytest.mark.parametrize("where, status, state", [
    ("classify", 500, "unknown"),
    ("classify", 503, "unknown"),
    ("classify", 429, "unknown"),
    ("health", 500, "unknown"),
    ("health", 502, "unknown"),
    ("health", 404, "unmet"),
    ("classify", 403, "unmet"),
    ("classify", 201, "unmet"),
])
def test_http_status(tiny_policy: Policy, classifier: FakeClassifier, where: str, status: int, state: str) -> None:
    classifier.set(**{f"{where}_status": status})
    check = probe(tiny_policy, classifier.url)
    assert check.state == state
    assert f"answered HTTP {status}" in check.evidence


def test_redirect_is_not_followed(tiny_policy: Policy, classifier: FakeClassifier) -> None:
    classifier.set(classify_status=307, headers={"Location": "http://127.0.0.1:1/elsewhere"})
    check = probe(tiny_policy, classifier.url)
    assert check.state == "unmet" and "HTTP 307" in check.evidence


def test_closed_port_is_unknown(tiny_policy: Policy) -> None:
    check = probe(tiny_policy, f"http://127.0.0.1:{closed_port()}")
    assert check.state == "unknown" and "ConnectError" in check.evidence


@pytest.mark.parametrize("where", ["health", "classify"])
def test_slow_answer_beyond_timeout_is_unknown(tiny_policy: Policy, classifier: FakeClassifier, where: str) -> None:
    classifier.set(**{f"{where}_delay": 1.5})
    started = time.monotonic()
    check = probe(tiny_policy, classifier.url, timeout_s=0.3)
    assert time.monotonic() - started < 1.4  # gave up at the timeout, did not wait for the answer
    assert check.state == "unknown"
    assert "no answer within 0.3 s" in check.evidence


def test_no_url_configured_is_unknown(tiny_policy: Policy) -> None:
    check = probe(tiny_policy, None)
    assert check.state == "unknown" and "RSP_MISUSE_PROBE_URL" in check.evidence
    assert probe(tiny_policy, "ftp://example.invalid").state == "unknown"


def test_params_override_url_and_paths(tiny_data: dict, classifier: FakeClassifier) -> None:
    for sg in tiny_data["safeguards"]:
        if sg["id"] == "sg-dep3":
            sg["verification"]["params"] = {"url": classifier.url + "/", "classify_path": "/v2/classify",
                                            "timeout_s": 1}
    policy = policy_with(tiny_data)
    check = probe(policy, "http://127.0.0.1:1")
    # Our fake serves /classify only, so the configured path is visibly the one used.
    assert check.state == "unmet" and "/v2/classify answered HTTP 404" in check.evidence


def test_is_refusal_contract() -> None:
    assert is_refusal({"decision": "refuse"})[0]
    assert is_refusal({"flagged": True})[0]
    assert is_refusal({"decision": "refuse", "flagged": True})[0]
    assert not is_refusal({"decision": "REFUSE"})[0]
    assert not is_refusal({"flagged": 1})[0]
    assert not is_refusal({})[0]
    assert not is_refusal(None)[0]
