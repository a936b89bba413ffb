"""watch: list the checkpoint store, claim each new complete checkpoint, evaluate it — exactly once.

Exactly-once comes from the ledger's claims, not from the listing: two watchers
may list the same checkpoint, only one claim succeeds, and a claim whose
evaluation died is taken again once its lease expires. Checkpoints of one run
are evaluated in step order (cadence and regression checks compare against the
run's earlier steps); different runs proceed in parallel, bounded.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger


def _cursor_path(home: Path, store_uri: str) -> Path:
    return Path(home) / "watch" / f"cursor-{hashlib.sha256(store_uri.encode()).hexdigest()[:16]}.json"


def _load_cursor(path: Path) -> Any:
    from tasks.stores.base import ScanCursor

    try:
        return ScanCursor.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None  # no or unreadable cursor: the next scan is a full listing, which is always safe


def _reject_once(ledger: Any, key: str, reason: str) -> bool:
    """Record a rejected manifest once per (key, reason), so a hostile file does not flood the ledger."""
    for ev in ledger.events(kind="checkpoint.rejected", subject=key):
        if ev.payload.get("reason") == reason:
            return False
    ledger.append("checkpoint.rejected", key, {"key": key, "reason": reason})
    return True


@flow(name="watch", log_prints=True)
def watch(
    store: str | None = None,
    policy: str = "anthropic-rsp",
    max_concurrent: int = 2,
    full_scan: bool = False,
    task_runner: str = "threads",
    limit: int | None = None,
) -> dict[str, Any]:
    """One detection tick: reconcile open halts, list, claim and evaluate new complete checkpoints.

    store: file:///path or s3://bucket/prefix (default: the configured checkpoint store).
    policy: bundled framework id or policy file path.
    max_concurrent: runs evaluated in parallel (checkpoints within a run go in step order).
    full_scan: list the whole store instead of only keys after the last seen one.
    """
    from flows.evaluate import evaluate, evaluation_key
    from tasks.inputs import read_policy
    from rsp.settings import get_settings
    from tasks.ledger import Ledger
    from tasks.run_folder import write_atomic
    from tasks.stores.base import from_uri

    logger = get_run_logger()
    settings = get_settings()
    ledger = Ledger(settings.resolved_ledger_url)
    reconciled = _reconcile(logger)
    _retry_notifications(logger)
    try:
        pol = read_policy(policy)
    except Exception as exc:  # fail closed: no policy means no evaluation can clear anything
        from flows.evaluate import _enforce_unreadable_policy

        logger.error("policy %s unreadable, halting all scaling: %s", policy, exc)
        _enforce_unreadable_policy(f"policy {policy}", f"{type(exc).__name__}: {exc}")
        raise
    st = from_uri(store, settings, create=store is None)
    cursor_file = _cursor_path(settings.home, st.uri)
    scan = st.scan(_load_cursor(cursor_file), full=full_scan)
    todo_refs = [r for r in scan.refs if not ledger.is_done(evaluation_key(st.uri_for(r.key), pol))]
    loaded = st.load_all(todo_refs, max_workers=8)
    rejected = [r for r in loaded.rejected if _reject_once(ledger, r.key, r.reason)]
    for r in loaded.rejected:
        logger.warning("rejected checkpoint %s: %s", r.key, r.reason)
    owner_base = f"watch:{socket.gethostname()}:{os.getpid()}"
    claimed: dict[str, list[Any]] = {}
    for ck in sorted(loaded.checkpoints, key=lambda c: (c.manifest.created_at, c.step, c.key)):
        if ledger.claim(evaluation_key(ck.uri, pol), f"{owner_base}:{ck.key}", settings.claim_lease_s):
            claimed.setdefault(ck.run_id, []).append(ck)
    n = sum(len(v) for v in claimed.values())
    logger.info("%d listed (%s scan), %d new, %d rejected, %d claimed here", len(scan.refs),
                "full" if scan.full else "incremental", len(todo_refs), len(loaded.rejected), n)

    results: list[dict[str, Any]] = []
    done = 0

    def run_chain(checkpoints: list[Any]) -> list[dict[str, Any]]:
        nonlocal done
        out = []
        for ck in sorted(checkpoints, key=lambda c: c.step):
            owner = f"{owner_base}:{ck.key}"
            try:
                res = evaluate(ck.uri, policy=policy, task_runner=task_runner, limit=limit, claim_owner=owner)
                ledger.complete(evaluation_key(ck.uri, pol), owner, {"decision": res.get("decision"),
                                                                     "required_level": res.get("required_level")})
            except Exception as exc:  # evaluate records its own fail-closed outcome; keep the claim retryable
                ledger.fail(evaluation_key(ck.uri, pol), owner, f"{type(exc).__name__}: {exc}")
                res = {"status": "error", "checkpoint": ck.uri, "error": str(exc)}
            done += 1
            logger.info("[%d/%d] %s step %d: %s %s", done, n, ck.run_id, ck.step, res.get("decision"),
                        res.get("required_level"))
            out.append(res)
        return out

    if claimed:
        # Subflows started from worker threads need the parent's context to attach to this run.
        with ThreadPoolExecutor(max_workers=max(1, max_concurrent), thread_name_prefix="evaluate") as pool:
            futures = [pool.submit(contextvars.copy_context().run, run_chain, cks) for cks in claimed.values()]
            for f in futures:
                results.extend(f.result())
    # The cursor moves only after the tick's work is recorded: a crash re-lists, claims dedupe.
    write_atomic(cursor_file, scan.next_cursor.model_dump_json().encode())
    summary = {
        "listed": len(scan.refs),
        "full_scan": scan.full,
        "new": len(todo_refs),
        "rejected": [{"key": r.key, "reason": r.reason} for r in loaded.rejected],
        "newly_rejected": len(rejected),
        "evaluated": results,
        "halted": [r for r in results if r.get("decision") == "halt"],
        "reconciled": reconciled,
    }
    return json.loads(json.dumps(summary, default=str))


def _retry_notifications(logger: Any) -> None:
    """Notifications that failed earlier (Slack down, rate limited) go out now; never lost."""
    try:
        from tasks.notify import retry_pending

        retry_pending()
    except Exception as exc:  # reported, never fatal: the outbox keeps them for the next tick
        logger.warning("notification retry failed: %s", exc)


def _reconcile(logger: Any) -> Any:
    """Make Prefect agree with the ledger's open halts before anything else happens this tick."""
    try:
        from tasks.enforcement import reconcile
    except ImportError:
        return None
    try:
        return reconcile().to_dict()
    except Exception as exc:  # reported, never fatal: the gate still holds while Prefect drifts
        logger.error("halt reconcile failed: %s", exc)
        return {"error": str(exc)}
