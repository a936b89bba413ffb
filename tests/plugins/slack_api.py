"""A stand-in for Slack's Web API on 127.0.0.1, spoken to over real HTTP by slack-sdk's WebClient.

Fixture
-------
`slack_api` (function scope) -> FakeSlack
    `.base_url` ("http://127.0.0.1:<port>/api/") for `WebClient(base_url=...)` / RSP_SLACK_API_URL,
    `.token` (the bot token it accepts in `Authorization: Bearer ...`), `.requests` (every call,
    recorded), `.posts()` (successful chat.postMessage calls), `.messages` (channel -> messages,
    updated by chat.update), `.fail_next(n, status=429, retry_after=1)` / `.fail_next(n, status=500)`.

Methods: chat.postMessage, chat.update, auth.test. Bodies as form (application/x-www-form-urlencoded)
or JSON; `blocks` may come as a JSON string (form) or a list (JSON). Answers are Slack-shaped:
{"ok": true, "channel": ..., "ts": ..., "message": {...}} or {"ok": false, "error": ...}; an
injected failure answers the HTTP status with {"ok": false, "error": "ratelimited"} (and
Retry-After on 429) the way Slack does.

Helpers: `sign(secret, body, timestamp)` -> headers for a signed interactivity request;
`block_actions_body(user_id, action_id, halt_id)` -> the form body Slack posts for a button.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

TEST_TOKEN = "xoxb-test-0123456789-SECRETTOKEN"


@dataclass
class RecordedCall:
    method: str
    params: dict[str, Any]
    authorized: bool
    status: int
    at: float
    content_type: str


@dataclass
class FakeSlack:
    token: str = TEST_TOKEN
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[RecordedCall] = field(default_factory=list)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _failures: list[tuple[int, int | None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/"

    def fail_next(self, n: int, status: int = 429, retry_after: int | None = 1) -> None:
        """The next `n` calls (any method) answer `status` (429 with Retry-After by default)."""
        with self._lock:
            self._failures.extend([(status, retry_after if status == 429 else None)] * n)

    def posts(self, channel: str | None = None) -> list[dict[str, Any]]:
        return [c.params for c in self.requests
                if c.method == "chat.postMessage" and c.status == 200 and c.authorized
                and (channel is None or c.params.get("channel") == channel)]

    def updates(self) -> list[dict[str, Any]]:
        return [c.params for c in self.requests if c.method == "chat.update" and c.status == 200 and c.authorized]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.messages.clear()
            self._failures.clear()

    # -- request handling (called from the server threads) ----------------------------------------

    def handle(self, method: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        params: dict[str, Any]
        if ctype == "application/json":
            params = json.loads(body or b"{}")
        else:
            params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()}
        for key in ("blocks", "attachments"):
            if isinstance(params.get(key), str):
                try:
                    params[key] = json.loads(params[key])
                except ValueError:
                    pass
        auth = headers.get("Authorization") or ""
        authorized = hmac.compare_digest(auth, f"Bearer {self.token}")
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
            status, extra, answer = self._answer(method, params, authorized, failure)
            self.requests.append(RecordedCall(method, params, authorized, status, time.time(), ctype))
        return status, extra, answer

    def _answer(self, method: str, params: dict[str, Any], authorized: bool,
                failure: tuple[int, int | None] | None) -> tuple[int, dict[str, str], dict[str, Any]]:
        if failure is not None:
            status, retry_after = failure
            extra = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return status, extra, {"ok": False, "error": "ratelimited" if status == 429 else "internal_error"}
        if not authorized:
            return 200, {}, {"ok": False, "error": "invalid_auth"}
        if method == "auth.test":
            return 200, {}, {"ok": True, "url": "https://fake.slack.test/", "team": "rsp", "user": "rsp-bot",
                             "team_id": "T0000001", "user_id": "U0BOT00001", "bot_id": "B0000001"}
        if method == "chat.postMessage":
            channel = params.get("channel")
            if not channel:
                return 200, {}, {"ok": False, "error": "channel_not_found"}
            ts = f"{int(time.time())}.{next(self._ts):06d}"
            msg = {"ts": ts, "text": params.get("text"), "blocks": params.get("blocks"),
                   "thread_ts": params.get("thread_ts")}
            self.messages.setdefault(channel, []).append(msg)
            return 200, {}, {"ok": True, "channel": channel, "ts": ts, "message": msg}
        if method == "chat.update":
            channel, target = str(params.get("channel") or ""), params.get("ts")
            for msg in self.messages.get(channel, []):
                if msg["ts"] == target:
                    msg.update(text=params.get("text"), blocks=params.get("blocks"))
                    return 200, {}, {"ok": True, "channel": channel, "ts": target, "text": params.get("text")}
            return 200, {}, {"ok": False, "error": "message_not_found"}
        return 404, {}, {"ok": False, "error": "unknown_method"}


def _handler(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = urllib.parse.urlsplit(self.path).path
            method = path.rsplit("/", 1)[-1] if path.startswith("/api/") else ""
            status, extra, answer = fake.handle(method, self.headers, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture
def slack_api() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    server = _Server(("127.0.0.1", 0), _handler(fake))
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="fake-slack", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack would send with `body`: X-Slack-Request-Timestamp and X-Slack-Signature."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded"}


def block_actions_body(user_id: str, action_id: str, halt_id: str, *, username: str | None = None,
                       extra: dict[str, Any] | None = None) -> bytes:
    """The form body Slack posts when `user_id` clicks button `action_id` whose value is `halt_id`."""
    payload = {
        "type": "block_actions",
        "user": {"id": user_id, "username": username or user_id.lower(), "team_id": "T0000001"},
        "api_app_id": "A0000001",
        "container": {"type": "message", "message_ts": "1.000001", "channel_id": "C0HALTS01"},
        "trigger_id": "1.2.abc",
        "channel": {"id": "C0HALTS01", "name": "halts"},
        "response_url": "https://hooks.slack.test/actions/T/1/abc",
        "actions": [{"action_id": action_id, "block_id": "rsp_halt_actions", "type": "button", "value": halt_id,
                     "action_ts": f"{time.time():.6f}"}],
        **(extra or {}),
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


# -- the approval test world: home, roster, policy, ledger, Slack settings ------------------------

TEST_SIGNING_SECRET = "test-signing-secret-8f3a1c"
TINY_POLICY = __import__("pathlib").Path(__file__).resolve().parent.parent / "data" / "tiny-policy.yaml"
CHANNEL = "C0HALTS01"
ROSTER_YAML = """\
people:
  alice: {roles: [rso], slack_user_id: U0ALICE001, name: Alice RSO}
  bob: {roles: [ceo], slack_user_id: U0BOB00001, name: Bob CEO}
  erin: {roles: [ceo], slack_user_id: U0ERIN0001, name: Erin CEO}
  carol: {roles: [ciso], slack_user_id: U0CAROL001, name: Carol CISO}
  dave: {roles: [], slack_user_id: U0DAVE0001, name: Dave Nobody}
"""


@dataclass
class ApprovalWorld:
    """An isolated RSP home wired for approvals: tiny policy (approvals: rso+ceo, quorum 2,
    must_include rso), a roster, an SQLite ledger, file+slack notifications to the fake Slack."""

    home: Any
    ledger: Any
    policy: Any
    slack: FakeSlack | None
    keys: dict[str, Any] = field(default_factory=dict)  # person -> private key file listed in the roster

    def determination(self, safeguards: tuple[str, ...] = ("sg-base",), *, run_id: str = "run-a", step: int = 100,
                      halts: tuple[str, ...] = ("training", "deployment")) -> Any:
        from policy.determination import (
            CheckpointRef,
            Determination,
            MeasureResult,
            PolicyRef,
            QualityVerdict,
            SafeguardCheck,
            SafeguardRequirement,
            ThresholdResult,
        )
        from policy.identity import policy_sha256

        reqs = tuple(SafeguardRequirement(id=s, name=s, kind="security", halts=halts, required_by=("L2",))
                     for s in safeguards)
        checks = tuple(SafeguardCheck(id=s, state="unmet", evidence=f"no attestation for {s}") for s in safeguards)
        measure = MeasureResult(benchmark="bio", metric="mean", comparison=">=", threshold=0.5, early_warning=0.4,
                                min_samples=20, status="crossed", value=0.62, ci_low=0.55, ci_high=0.69,
                                n_questions=60, reason="0.62 >= 0.5")
        threshold = ThresholdResult(id="CBRN-3", name="CBRN uplift 3", domain="cbrn", gating=True,
                                    triggers_level="L3", combine="any", status="crossed", reason="bio crossed",
                                    measures=(measure,))
        return Determination(
            policy=PolicyRef(id="tiny", name="Tiny", version="1.0", sha256=policy_sha256(self.policy)),
            checkpoint=CheckpointRef(run_id=run_id, step=step, effective_compute=1e24),
            benchmarks=(), thresholds=(threshold,), required_level="L2", required_level_rank=0,
            level_reasons=("test",), required_safeguards=reqs, quality=QualityVerdict(status="passed"),
            safeguards=checks, obligations_met=False, decision="halt", halts=halts,
            decision_reasons=tuple(f"{s} is unmet" for s in safeguards),
        )

    def open_halt(self, safeguards: tuple[str, ...] = ("sg-base",), *, step: int = 100, run_id: str = "run-a",
                  runs: list[str] | None = None) -> Any:
        """Record a determination requiring `safeguards` (unmet) and open the halt it calls for."""
        from tasks.enforcement import open_halt

        det = self.determination(safeguards, step=step, run_id=run_id)
        event = self.ledger.append("determination.recorded", f"det-{run_id}-{step}", det.model_dump(mode="json"))
        halt, _ = open_halt(det, ledger=self.ledger, seq=event.seq, subject=event.subject, policy=self.policy,
                            runs=runs)
        return halt

    def attest(self, safeguard: str = "sg-base", by: str = "carol", role: str = "ciso") -> None:
        from tasks.safeguards import LocalEvidenceStore, new_attestation
        from tasks.trust.keys import load_private_key

        LocalEvidenceStore(self.home / "evidence").write(
            new_attestation(safeguard, by, role, f"{safeguard} checked by {by}", key=load_private_key(self.keys[by])))

    def trusting(self, channels: dict[str, list[str]]) -> None:
        """Switch to a copy of the tiny policy whose approvals trust these unsigned channels per role
        (as RSP_POLICY, so halts opened from now on name it)."""
        import os

        from policy.loading import parse_policy
        from tasks.settings import get_settings

        rule = "  must_include: [rso]\n"
        text = TINY_POLICY.read_text().replace(rule, f"{rule}  trusted_unsigned_channels: {json.dumps(channels)}\n")
        path = self.home / "policy-trusting-unsigned.yaml"
        path.write_text(text)
        os.environ["RSP_POLICY"] = str(path)  # the fixture's monkeypatch restores it
        get_settings.cache_clear()
        self.policy = parse_policy(text, "tiny")

    def signed(self, halt_id: str, person: str, decision: str = "approve", *, role: str | None = None,
               key_of: str | None = None, new_round: bool = False, **statement: Any) -> Any:
        """A cli-signed VoteRequest by `person` in `role` (default: their only role), signed with
        `key_of`'s key (default: their own); `statement` overrides statement fields."""
        from tasks.approvals import VoteRequest
        from tasks.trust.keys import load_private_key
        from tasks.trust.votes import new_nonce, now_iso, sign_vote, vote_statement

        role = role or min(self.roster().roles_of(person))
        body = {**vote_statement(halt_id, decision, person, role, at=now_iso(), nonce=new_nonce()), **statement}
        signature = sign_vote(body, load_private_key(self.keys[key_of or person]))
        return VoteRequest(halt_id=halt_id, decision=decision, person=person, justification="checked",
                           channel="cli-signed", new_round=new_round, statement=body, signature=signature)

    def roster(self) -> Any:
        from tasks.safeguards import load_roster

        return load_roster(self.home / "roster.yaml")


@pytest.fixture
def approval_world(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
                   ) -> Iterator[ApprovalWorld]:
    """Needs no Slack; if the test also uses `slack_api`, notifications go there too."""
    from policy.loading import parse_policy
    from tasks.ledger import Ledger
    from tasks.settings import get_settings
    from tasks.trust.keys import generate_key_files

    home = tmp_path / "rsp-home"
    home.mkdir()
    # Throwaway ed25519 keys for everyone who votes or attests, listed in the roster (votes must be signed).
    keys: dict[str, Any] = {}
    roster_text = ROSTER_YAML
    for person in ("alice", "bob", "erin", "carol"):
        keys[person], line = generate_key_files(home / "keys", person)
        roster_text = roster_text.replace(f"  {person}: {{roles:", f"  {person}: {{public_keys: ['{line}'], roles:")
    (home / "roster.yaml").write_text(roster_text)
    slack: FakeSlack | None = request.getfixturevalue("slack_api") if "slack_api" in request.fixturenames else None
    for var in ("RSP_LEDGER_URL", "RSP_CHECKPOINT_STORE", "RSP_RUNS_DIR", "RSP_CONFIG", "PREFECT_UI_URL"):
        monkeypatch.delenv(var, raising=False)
    env = {
        "RSP_HOME": str(home), "RSP_POLICY": str(TINY_POLICY), "RSP_ROSTER": str(home / "roster.yaml"),
        "RSP_EVIDENCE_STORE": str(home / "evidence"), "RSP_NOTIFY": "file,slack" if slack else "file",
        "RSP_SLACK_CHANNEL": CHANNEL, "RSP_SLACK_MIN_INTERVAL_S": "0", "RSP_NOTIFY_RETRY_BASE_S": "0",
        "RSP_SLACK_SIGNING_SECRET": TEST_SIGNING_SECRET,
    }
    if slack is not None:
        env.update({"RSP_SLACK_API_URL": slack.base_url, "RSP_SLACK_BOT_TOKEN": slack.token})
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("RSP_CONFIG", str(tmp_path / "no-config.yaml"))
    get_settings.cache_clear()
    policy = parse_policy(TINY_POLICY.read_text(), "tiny")
    ledger = Ledger(get_settings().resolved_ledger_url)
    try:
        yield ApprovalWorld(home=home, ledger=ledger, policy=policy, slack=slack, keys=keys)
    finally:
        ledger.close()
        get_settings.cache_clear()


__all__ = ["CHANNEL", "TEST_SIGNING_SECRET", "TEST_TOKEN", "ApprovalWorld", "FakeSlack", "RecordedCall",
           "block_actions_body", "sign"]
