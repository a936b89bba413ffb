"""watch: list the checkpoint store, claim each new complete checkpoint, evaluate it — exactly once.

Exactly-once comes from the ledger's claims, not from the listing: two watchers
may list the same checkpoint, only one claim succeeds, and a claim whose
evaluation died is taken again once its lease expires. Checkpoints of one run
are evaluated in step order (cadence and regression checks compare against the
run's earlier steps); different runs proceed in parallel, bounded.

Nothing in the store stops a tick: a key or manifest that cannot be accepted is
recorded once (`checkpoint.rejected`) and skipped. A checkpoint whose digest
changed since the ledger last saw it halts its run and is evaluated again
(`flows.evaluate.observe`); full scans find such rewrites, and skip re-reading
manifests whose listing version is the one last evaluated (a cache under
<home>/watch/, never the record: lose it and the next full scan reads them all).

The tick builds its ledger and reads its policy once; the evaluate subflows it starts reuse
them and the checkpoints it loaded (`flows.evaluate.handing_down`).
"""

from __future__ import annotations

import contextvars
import hashlib
import itertools
import json
import logging
import os
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.evaluate import HandedDown, enforce_unreadable_policy, evaluate, handing_down, observe
from flows.forms import PolicyRef, TaskRunnerSpec
from flows.states import not_a_success
from policy.identity import policy_sha256
from policy.schema import Policy
from tasks.ledger import Ledger
from tasks.ledger.events import CheckpointRejected
from tasks.manifest import Checkpoint, ManifestRejected
from tasks.outcomes import EvaluationOutcome, RejectedCheckpoint, WatchSummary
from tasks.policy_versions import policy_in_force
from tasks.settings import get_settings
from tasks.storage import write_atomic
from tasks.stores.base import ManifestRef, ScanCursor, from_uri, printable_key

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


@flow(name="watch", log_prints=True)
def watch(
    store: str | None = None,
    policy: PolicyRef = "anthropic-rsp",
    max_concurrent: int = 2,
    full_scan: bool = False,
    task_runner: TaskRunnerSpec = "threads",
    limit: int | None = None,
) -> WatchSummary:
    """One detection tick: reconcile open halts, list, claim and evaluate new complete checkpoints.

    A tick that rejected a checkpoint for the first time, or whose evaluation of one crashed, ends
    Failed with the reasons (the summary is the state's data); the other checkpoints are still done.

    Args:
        store: The checkpoint store, file:///path or s3://bucket/prefix (empty: the configured one).
        policy: A bundled framework (pick one) or the path of a policy YAML file.
        max_concurrent: Training runs evaluated in parallel (checkpoints within a run go in step order).
        full_scan: List the whole store instead of only the keys after the last one seen.
        task_runner: threads (default) or dask; also threads:N, or dask://scheduler:8786 for a cluster.
        limit: Run at most this many samples per benchmark (smoke tests; thresholds may become undetermined).
    """
    logger: Logger = get_run_logger()
    settings = get_settings()
    ledger = Ledger(settings.resolved_ledger_url)
    reconciled = _reconcile(ledger, logger)
    _retry_notifications(ledger, logger)
    # The version in force (tasks/policy_versions.py) and the reference its determinations record.
    pol, policy = _read_policy(ledger, policy, logger)
    st = from_uri(store, settings, create=store is None)
    cursor_file = _cursor_path(settings.home, st.uri)
    scan = st.scan(_load_cursor(cursor_file), full=full_scan)
    seen = _Seen.load(_cursor_path(settings.home, st.uri, "seen"), policy_sha256(pol)[:16])
    todo_refs = [r for r in scan.refs if not seen.settled(r, ledger)]
    loaded = st.load_all(todo_refs, max_workers=8)
    newly_rejected = _record_rejections(ledger, loaded.rejected, logger)
    claims = _claim_all(ledger, loaded.checkpoints, pol, policy, settings.claim_lease_s)
    new = len(todo_refs) - claims.settled
    logger.info("%d listed (%s scan), %d new, %d rejected, %d claimed here", len(scan.refs),
                "full" if scan.full else "incremental", new, len(loaded.rejected), claims.count)
    with handing_down(HandedDown(ledger=ledger, policy_ref=policy, policy=pol, checkpoints=claims.by_uri(),
                                 claims=claims.owners())):
        results = _evaluate_claimed(claims, ledger, pol, policy, max_concurrent=max_concurrent,
                                    task_runner=task_runner, limit=limit, logger=logger)
    # The cursor moves only after the tick's work is recorded: a crash re-lists, claims dedupe.
    write_atomic(cursor_file, scan.next_cursor.model_dump_json().encode())
    seen.save({r.key: r for r in todo_refs}, claims.keys, listed=scan.refs if scan.full else None)
    summary = WatchSummary(
        listed=len(scan.refs), full_scan=scan.full, new=new,
        rejected=[RejectedCheckpoint(key=printable_key(r.key), reason=r.reason) for r in loaded.rejected],
        newly_rejected=newly_rejected, evaluated=results, halted=[r for r in results if r.decision == "halt"],
        # Plain JSON values (dates as text), as the reconcile report has always been returned.
        reconciled=json.loads(json.dumps(reconciled, default=str)),
    )
    return _final_state(summary)  # type: ignore[return-value]


def _final_state(summary: WatchSummary) -> Any:
    """The summary; in a deployment run, a Failed state holding it when this tick rejected a new
    checkpoint or an evaluation crashed: what went wrong must show in the Prefect UI, not as green."""
    # Every rejected key is named once any is new (which ones were new is in the ledger).
    problems = [f"rejected {r.key}: {r.reason}" for r in summary.rejected] if summary.newly_rejected else []
    problems += [f"evaluation of {r.checkpoint} crashed: {r.error}" for r in summary.evaluated if r.status == "error"]
    if not problems:
        return summary
    return not_a_success(summary, name="Rejected" if summary.newly_rejected else "Failed",
                         message=f"{len(problems)} problem(s): " + "; ".join(problems))


def _cursor_path(home: Path, store_uri: str, name: str = "cursor") -> Path:
    return Path(home) / "watch" / f"{name}-{hashlib.sha256(store_uri.encode()).hexdigest()[:16]}.json"


def _load_cursor(path: Path) -> ScanCursor | None:
    try:
        return ScanCursor.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None  # no or unreadable cursor: the next scan is a full listing, which is always safe


def _read_policy(ledger: Ledger, policy_ref: str, logger: Logger) -> tuple[Policy, str]:
    """The policy version in force and its reference: a loosening held for approval is not used."""
    try:
        in_force = policy_in_force(ledger, policy_ref)
        if in_force.held:
            logger.warning("%s", in_force.message())
        return in_force.policy, in_force.ref
    except Exception as exc:  # fail closed: no policy means no evaluation can clear anything
        logger.error("policy %s unreadable, halting all scaling: %s", policy_ref, exc)
        enforce_unreadable_policy(f"policy {policy_ref}", f"{type(exc).__name__}: {exc}")
        raise


def _record_rejections(ledger: Ledger, rejected: Iterable[ManifestRejected], logger: Logger) -> int:
    """Record each rejected key or manifest once (by its printable key: a hostile key may hold control
    characters or be very long); returns how many were new this tick. Logged every tick."""
    rejected = list(rejected)
    newly = [r for r in rejected if _reject_once(ledger, printable_key(r.key), r.reason)]
    for r in rejected:
        logger.warning("rejected checkpoint %s: %s", printable_key(r.key), r.reason)
    return len(newly)


def _reject_once(ledger: Ledger, key: str, reason: str) -> bool:
    """Record a rejected manifest once per (key, reason), so a hostile file does not flood the ledger."""
    for ev in ledger.events(kind=CheckpointRejected.KIND, subject=key):
        if ev.payload.get("reason") == reason:
            return False
    ledger.record(CheckpointRejected(key=key, reason=reason), key)
    return True


@dataclass
class _Seen:
    """Which evaluation key each manifest version was last found under: {key: [version, policy, claim key]}.

    A cache for full scans, never the record: a ref is settled only when its listing version, the
    policy and a completed claim in the ledger all agree; anything else is read again."""

    path: Path
    policy: str
    entries: dict[str, list[str]]

    @classmethod
    def load(cls, path: Path, policy: str) -> _Seen:
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            entries = {}
        return cls(path, policy, entries if isinstance(entries, dict) else {})

    def settled(self, ref: ManifestRef, ledger: Ledger) -> bool:
        entry = self.entries.get(ref.key)
        return (ref.version is not None and isinstance(entry, list) and len(entry) == 3
                and entry[:2] == [ref.version, self.policy] and ledger.is_done(str(entry[2])))

    def save(self, read: dict[str, ManifestRef], keys: dict[str, str], listed: Iterable[ManifestRef] | None) -> None:
        """Remember the versions read this tick; a full listing also forgets keys no longer there."""
        entries = dict(self.entries)
        for key, ref in read.items():
            entries.pop(key, None)
            if key in keys and ref.version is not None:
                entries[key] = [ref.version, self.policy, keys[key]]
        if listed is not None:
            present = {r.key for r in listed}
            entries = {k: v for k, v in entries.items() if k in present}
        if entries != self.entries:
            write_atomic(self.path, json.dumps(entries).encode())


@dataclass
class _Claims:
    """The checkpoints this tick claimed, by run, each with the claim's key and owner; the evaluation
    key of every checkpoint looked at (by store key), and how many were already evaluated."""

    by_run: dict[str, list[tuple[Checkpoint, str, str]]]
    keys: dict[str, str]
    settled: int = 0

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.by_run.values())

    def by_uri(self) -> dict[str, Checkpoint]:
        return {ck.uri: ck for chain in self.by_run.values() for ck, _key, _owner in chain}

    def owners(self) -> dict[str, str]:
        return {ck.uri: owner for chain in self.by_run.values() for ck, _key, owner in chain}


def _claim_all(ledger: Ledger, checkpoints: Iterable[Checkpoint], pol: Policy, policy_ref: str,
               lease_s: float) -> _Claims:
    """Claim oldest first; a checkpoint another watcher claimed is theirs to evaluate. A changed
    checkpoint halts its run before it is claimed (`observe`)."""
    owner_base = f"watch:{socket.gethostname()}:{os.getpid()}"
    claims = _Claims(by_run={}, keys={})
    for ck in sorted(checkpoints, key=lambda c: (c.manifest.created_at, c.step, c.key)):
        key, owner = observe(ledger, ck, pol, policy_ref, opened_by="watch"), f"{owner_base}:{ck.key}"
        claims.keys[ck.key] = key
        if ledger.is_done(key):
            claims.settled += 1
        elif ledger.claim(key, owner, lease_s):
            claims.by_run.setdefault(ck.run_id, []).append((ck, key, owner))
    return claims


def _evaluate_claimed(claims: _Claims, ledger: Ledger, pol: Policy, policy_ref: str, *, max_concurrent: int,
                      task_runner: str, limit: int | None, logger: Logger) -> list[EvaluationOutcome]:
    """Each run's checkpoints in step order, different runs in parallel (at most `max_concurrent`)."""
    if not claims.by_run:
        return []
    done, total = itertools.count(1), claims.count

    def run_chain(chain: list[tuple[Checkpoint, str, str]]) -> list[EvaluationOutcome]:
        out = []
        for ck, key, owner in sorted(chain, key=lambda c: c[0].step):
            res = _evaluate_one(ck, key, owner, ledger, policy_ref, task_runner=task_runner, limit=limit)
            logger.info("[%d/%d] %s step %d: %s %s", next(done), total, ck.run_id, ck.step, res.decision,
                        res.required_level)
            out.append(res)
        return out

    # Subflows started from worker threads need the parent's context to attach to this run.
    with ThreadPoolExecutor(max_workers=max(1, max_concurrent), thread_name_prefix="evaluate") as pool:
        futures = [pool.submit(contextvars.copy_context().run, run_chain, chain) for chain in claims.by_run.values()]
        return [res for f in futures for res in f.result()]


def _evaluate_one(ck: Checkpoint, key: str, owner: str, ledger: Ledger, policy_ref: str, *, task_runner: str,
                  limit: int | None) -> EvaluationOutcome:
    """Evaluate one claimed checkpoint and complete its claim; a subflow that raised fails the claim,
    which stays retryable (evaluate records its own fail-closed outcome for what it can catch)."""
    try:
        res = evaluate(ck.uri, policy=policy_ref, task_runner=task_runner, limit=limit)
        ledger.complete(key, owner, {"decision": res.decision, "required_level": res.required_level,
                                     "digest": ck.digest})
    except Exception as exc:  # noqa: BLE001 - one checkpoint's failure must not stop the others
        ledger.fail(key, owner, f"{type(exc).__name__}: {exc}")
        res = EvaluationOutcome(status="error", checkpoint=ck.uri, error=str(exc))
    return res


def _retry_notifications(ledger: Ledger, logger: Logger) -> None:
    """Notifications that failed earlier (Slack down, rate limited) go out now; never lost."""
    try:
        from tasks.notify import retry_pending

        retry_pending(ledger=ledger)
    except Exception as exc:  # noqa: BLE001 - reported, never fatal: the outbox keeps them for the next tick
        logger.warning("notification retry failed: %s", exc)


def _reconcile(ledger: Ledger, logger: Logger) -> dict[str, Any] | None:
    """Make Prefect agree with the ledger's open halts before anything else happens this tick."""
    try:
        from tasks.enforcement import reconcile
    except ImportError:
        return None
    try:
        return reconcile(ledger=ledger).to_dict()
    except Exception as exc:  # noqa: BLE001 - reported, never fatal: the gate still holds while Prefect drifts
        logger.error("halt reconcile failed: %s", exc)
        return {"error": str(exc)}
