"""The approval service: Slack interactivity (Approve / Reject buttons) into ledger votes.

    POST /slack/interactions   Slack's interactivity request URL
    GET  /healthz              liveness, and whether the ledger and roster can be read
    GET  /reports/<path>       read-only files of the runs folder (report links in the Prefect UI)

Each request, in order (every refusal leaves the ledger as it was, except the audit
record of a refused vote by a verified Slack user):

    413  body over the limit (64 KiB; checked before reading it all)
    401  missing / malformed / stale (over 5 minutes) timestamp, or a signature that does not
         verify (HMAC-SHA256 over the raw body bytes, as Slack signs them; never decoded first,
         so a body that is not UTF-8 is refused as unsigned or as malformed, never with a 500).
         Not written to the ledger: an unauthenticated caller must not be able to fill the
         audit log.
    409  replay: this (timestamp, signature) was accepted before (remembered in a table that
         survives restarts)
    400  not a form with a `payload` field holding a block_actions JSON object with one of our
         actions (rsp_approve / rsp_reject) and a user id: a body that is not UTF-8, not
         form-encoded, whose payload is not JSON (or nests too deeply, or holds text that is
         not Unicode, such as a lone surrogate escape) is one of these
    403  the Slack user maps to nobody on the roster, or to someone without an approver role
         (recorded as vote.refused)
    404  no such halt (recorded) · 409 halt already lifted, or the round was rejected (recorded)
    200  vote recorded; the answer goes back at once (Slack wants one within 3 s) and the rest
         (threaded reply, message refresh, lift attempt with safeguard verification and
         Prefect resume) runs afterwards on one worker thread, in order.

Run it with `rsp serve-approvals --host 127.0.0.1 --port 8080` (uvicorn). The signing secret
comes from RSP_SLACK_SIGNING_SECRET only and is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from tasks.approvals.config import ApprovalConfig, RosterCache
from tasks.approvals.replay import SeenRequests
from tasks.notify.config import SIGNING_SECRET_ENV, safe_logger
from tasks.notify.slack import APPROVE_ACTION, REJECT_ACTION

if TYPE_CHECKING:
    from tasks.ledger import Ledger

log = safe_logger("rsp.approval_service")
ACTIONS = {APPROVE_ACTION: "approve", REJECT_ACTION: "reject"}


@dataclass
class ServiceConfig:
    """Everything the service needs; `from_settings()` fills what is not given."""

    approvals: ApprovalConfig
    ledger: Ledger | None = None  # None: the configured ledger
    settings: Any = None
    policy: Any = None  # a Policy to take approver rules / safeguard definitions from (else the settings')
    lift: bool = True  # run the lift attempt after a vote completes a quorum
    notify: bool = True
    api_url: str | None = None  # Prefect API for resuming deployments (default PREFECT_API_URL)
    scaling_tag: str | None = None
    clock: Callable[[], float] = time.time
    dispatcher: Any = None  # a tasks.notify.Dispatcher to reuse (tests); built from settings otherwise
    lift_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any = None, **overrides: Any) -> ServiceConfig:
        approvals = overrides.pop("approvals", None) or ApprovalConfig.from_settings(settings)
        return cls(approvals=approvals, settings=settings, **overrides)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": code, "message": message}, status_code=status)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _TooLarge
        except ValueError:
            pass  # a malformed length is the server's problem; the streamed size still counts
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


MAX_TIMESTAMP_DIGITS = 12  # Unix seconds until the year 33658; more is not a timestamp


def parse_timestamp(value: str) -> int | None:
    """X-Slack-Request-Timestamp as an int, or None: ASCII digits only (int() would also take
    spaces, `_`, a sign or non-ASCII digits), and short enough to subtract from a float."""
    if not value or len(value) > MAX_TIMESTAMP_DIGITS or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def signature_matches(secret: str, body: bytes, timestamp: str, signature: str) -> bool:
    """Slack's v0 signature over the RAW body bytes: `v0=` + HMAC-SHA256(secret, b"v0:<ts>:" + body).

    slack-sdk's verifier decodes the body as UTF-8 first and raises on anything else, and
    `hmac.compare_digest` raises on a non-ASCII str; both would be a 500 for an unsigned
    caller. Here any undecodable input simply does not match."""
    try:
        given = signature.encode("ascii")
        base = b"v0:" + timestamp.encode("ascii") + b":" + body
    except UnicodeEncodeError:
        return False
    expected = b"v0=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest().encode("ascii")
    return hmac.compare_digest(expected, given)


def parse_block_actions(body: bytes) -> tuple[str, str, str, dict[str, Any]]:
    """(slack user id, decision, halt id, payload) from an interactivity POST. Raises ValueError
    for anything that is not one well-formed block_actions click, however it is malformed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"body is not UTF-8 (byte {exc.start})") from None
    try:
        form = parse_qs(text, keep_blank_values=True, strict_parsing=True, max_num_fields=20, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"body is not a URL-encoded form: {str(exc)[:200]}") from None
    raw = form.get("payload")
    if not raw or len(raw) != 1:
        raise ValueError("form field 'payload' is missing (or given twice)")
    try:
        payload = json.loads(raw[0])
        # A lone surrogate escape (`"\\ud800"`) parses but cannot be written anywhere as UTF-8.
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise ValueError("form field 'payload' nests too deeply") from None
    except UnicodeEncodeError:
        raise ValueError("form field 'payload' holds text that is not valid Unicode") from None
    except ValueError as exc:
        raise ValueError(f"form field 'payload' is not JSON: {str(exc)[:200]}") from None
    if not isinstance(payload, dict):
        raise ValueError("payload must be a JSON object")  # noqa: TRY004 - every malformed request is one 400
    if payload.get("type") != "block_actions":
        raise ValueError(f"payload type {str(payload.get('type'))[:40]!r} is not handled; expected block_actions")
    user = payload.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    if not isinstance(user_id, str) or not user_id or len(user_id) > 64:
        raise ValueError("payload.user.id is missing")
    actions = payload.get("actions")
    if not isinstance(actions, list):
        raise ValueError("payload.actions must be a list")  # noqa: TRY004 - every malformed request is one 400
    ours = [a for a in actions if isinstance(a, dict) and a.get("action_id") in ACTIONS]
    if len(ours) != 1:
        raise ValueError(f"expected exactly one of {sorted(ACTIONS)} in payload.actions, found {len(ours)}")
    halt_id = ours[0].get("value")
    if not isinstance(halt_id, str) or not halt_id or len(halt_id) > 200:
        raise ValueError("the action's value must be the halt id")
    return user_id, ACTIONS[ours[0]["action_id"]], halt_id, payload


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    cfg = config or ServiceConfig.from_settings()
    secret = cfg.approvals.signing_secret
    if not secret:
        raise ValueError(f"the approval service needs the Slack signing secret in {SIGNING_SECRET_ENV}")
    from slack_sdk.signature import SignatureVerifier

    from tasks.ledger import ledger_or_configured

    class _Clock:
        def now(self) -> float:
            return cfg.clock()

    verifier = SignatureVerifier(secret, clock=_Clock())  # type: ignore[arg-type]
    del secret  # only the verifier holds it from here on (checked over raw bytes: `signature_matches`)
    ledger = ledger_or_configured(cfg.ledger)
    roster = RosterCache(cfg.approvals.roster_path)
    seen = SeenRequests(cfg.approvals.state_url, window_s=cfg.approvals.replay_window_s, clock=cfg.clock)
    dispatcher = cfg.dispatcher
    if dispatcher is None and cfg.notify:
        from tasks.notify.dispatch import Dispatcher

        dispatcher = Dispatcher(ledger=ledger, settings=cfg.settings)  # one outbox connection for the service
    limit = cfg.approvals.max_body_bytes
    window = cfg.approvals.replay_window_s

    # Votes are recorded one at a time in this process: SQLite takes one writer anyway, and a
    # lock queues waiters fairly where SQLite's busy handler would make them sleep and retry.
    vote_lock = threading.Lock()

    def after_vote(outcome: Any) -> None:
        from tasks.approvals.lift import handle_recorded_vote

        try:
            handle_recorded_vote(outcome, ledger=ledger, settings=cfg.settings, policy=cfg.policy,
                                 roster=roster.get(), dispatcher=dispatcher, lift=cfg.lift, notify=cfg.notify,
                                 api_url=cfg.api_url, scaling_tag=cfg.scaling_tag, **cfg.lift_kwargs)
        except Exception:
            log.exception("after recording vote %s on %s", outcome.seq, outcome.halt_id)

    # The heavy half runs on ONE worker thread, in the order votes were recorded: follow-ups reach
    # Slack in order (and within its ~1 message/s pacing), and a burst of clicks does not fill the
    # request thread pool with notification and lift work competing for the ledger.
    work: queue.Queue[Any] = queue.Queue()

    def worker() -> None:
        while True:
            outcome = work.get()
            if outcome is None:
                return
            after_vote(outcome)
            work.task_done()

    threading.Thread(target=worker, name="rsp-approvals-after-vote", daemon=True).start()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # Shutting down: let queued follow-ups and lift attempts finish (bounded), then stop the worker.
        await run_in_threadpool(_drain, work, 30.0)
        if dispatcher is not None and dispatcher is not cfg.dispatcher:
            dispatcher.close()
        seen.close()

    app = FastAPI(title="rsp-gate approvals", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.ledger = ledger
    app.state.config = cfg
    app.state.pending = work

    def vote(user_id: str, decision: str, halt_id: str, payload: dict[str, Any]) -> Any:
        from tasks.approvals.votes import VoteRequest, record_vote
        from tasks.safeguards.roster import RosterError

        try:
            people = roster.get()
        except RosterError as exc:
            return None, str(exc)
        person = people.by_slack_user_id(user_id)
        username = (payload.get("user") or {}).get("username") or (payload.get("user") or {}).get("name")
        req = VoteRequest(halt_id=halt_id, decision=decision, person=person,
                          justification=f"Slack button by {username or user_id}", channel="slack",
                          channel_ref=user_id)
        with vote_lock:
            return record_vote(req, ledger=ledger, roster=people, settings=cfg.settings, policy=cfg.policy), None

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        problems = []
        try:
            ledger.head()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"ledger: {exc}")
        try:
            roster.get()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"roster: {exc}")
        return JSONResponse({"ok": not problems, "problems": problems}, status_code=200 if not problems else 503)

    @app.get("/reports/{relative:path}", response_model=None)
    def reports(relative: str) -> FileResponse | JSONResponse:
        # Read-only view of the runs folder, so report links in the Prefect UI open in a browser.
        from tasks.report import served_report_file
        from tasks.settings import get_settings

        found = served_report_file((cfg.settings or get_settings()).resolved_runs_dir, relative)
        if found is None:
            return _error(404, "not_found", "no such report")
        return FileResponse(found)

    @app.post("/slack/interactions")
    async def interactions(request: Request) -> JSONResponse:
        try:
            body = await _read_body(request, limit)
        except _TooLarge:
            return _error(413, "too_large", f"request body over {limit} bytes")
        ts = request.headers.get("x-slack-request-timestamp")
        sig = request.headers.get("x-slack-signature")
        if not ts or not sig:
            return _error(401, "unsigned", "X-Slack-Request-Timestamp and X-Slack-Signature are required")
        ts_value = parse_timestamp(ts)
        if ts_value is None:
            return _error(401, "bad_timestamp", "X-Slack-Request-Timestamp is not a Unix time in seconds")
        if abs(cfg.clock() - ts_value) > window:
            log.warning("refused a Slack request with a stale timestamp (%s s off)", int(cfg.clock() - ts_value))
            return _error(401, "stale", f"timestamp is more than {window} s from now")
        if not signature_matches(verifier.signing_secret, body, ts, sig):
            log.warning("refused a Slack request whose signature does not verify")
            return _error(401, "bad_signature", "signature does not verify")
        if not await run_in_threadpool(seen.remember, ts, sig):
            log.warning("refused a replayed Slack request (timestamp %s)", ts)
            return _error(409, "replay", "this signed request was already received")
        try:
            user_id, decision, halt_id, payload = parse_block_actions(body)
        except ValueError as exc:
            return _error(400, "bad_request", str(exc))
        outcome, problem = await run_in_threadpool(vote, user_id, decision, halt_id, payload)
        if outcome is None:
            return _error(503, "roster_unavailable", f"cannot map Slack users to people: {problem}")
        if not outcome.ok:
            return _error(outcome.http_status, outcome.code, outcome.message)
        work.put(outcome)
        return JSONResponse({"ok": True, "status": outcome.code, "message": outcome.message,
                             "halt_id": outcome.halt_id, "round": outcome.round, "seq": outcome.seq,
                             "tally": outcome.tally.to_dict() if outcome.tally else None})

    return app


def _drain(work: queue.Queue[Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while work.unfinished_tasks and time.monotonic() < deadline:
        time.sleep(0.05)
    work.put(None)


def serve(host: str = "127.0.0.1", port: int = 8080, config: ServiceConfig | None = None) -> None:
    import uvicorn

    app = create_app(config)
    logging.getLogger("rsp").setLevel(logging.INFO)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)


__all__ = ["ServiceConfig", "create_app", "parse_block_actions", "parse_timestamp", "serve", "signature_matches"]
