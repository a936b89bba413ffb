"""Verifying an audit bundle (`rsp audit export --bundle`) with nothing but the bundle and trusted keys.

No ledger, no settings, no network. In order, stopping at nothing (every problem is listed,
the first one named):

1. the chain: every hash and link of `events.jsonl`;
2. the signed heads: each signed by a trusted key, for this ledger, and consistent with the
   chain (the chain has, at the head's sequence number, the hash the head records): a
   history rewritten under a published head fails here even though its chain verifies;
3. every determination: signed by a trusted key (DSSE, in-toto statement), about the checkpoint
   it is recorded for, stating exactly the recorded determination, citing policy and row files
   present in the bundle with the signed sha256; then REPLAYED from those files with the pure
   engine (`policy/replay.py`) and compared with what was recorded;
4. every vote that counted toward a lift: signed by a key the roster lists for its voter, in the
   role the lift counted it for (`tasks.trust.votes.verify_vote`).

The trusted keys are the auditor's own (`--trust`): a file of OpenSSH `ssh-ed25519` lines or a
folder of `*.pub` files. The bundle's copies of the keys are never trusted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tasks.ledger.chain import GENESIS_HASH, Event, verify_events
from tasks.ledger.errors import InvalidEvent
from tasks.ledger.events import DeterminationRecorded
from tasks.ledger.export import read_jsonl
from tasks.ledger.heads import HeadProblem, verify_head
from tasks.trust.attest import PREDICATE_TYPE, digest_set
from tasks.trust.dsse import EnvelopeProblem, open_statement
from tasks.trust.keys import KeyProblem, fingerprint, parse_public_key

if TYPE_CHECKING:
    from tasks.safeguards.roster import Roster


class BundleError(ValueError):
    """A bundle or trust file that cannot be read at all; one line."""


@dataclass
class BundleReport:
    events: int = 0
    head_seq: int = 0
    heads: int = 0
    determinations: int = 0
    replayed: int = 0
    ledger_id: str | None = None
    trusted: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    votes_checked: bool = False
    # Unsigned votes the auditor chose to accept by channel (--accept-channel): listed, not problems.
    accepted_unsigned: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "first_problem": self.problems[0] if self.problems else None,
                "problems": self.problems, "events": self.events, "head_seq": self.head_seq, "heads": self.heads,
                "determinations": self.determinations, "replayed": self.replayed, "ledger_id": self.ledger_id,
                "trusted_keys": self.trusted, "votes_checked": self.votes_checked,
                "accepted_unsigned": self.accepted_unsigned}


def load_trusted_keys(path: Path) -> list[Ed25519PublicKey]:
    """Public keys from a file of OpenSSH lines (blank lines and `#` comments skipped) or a folder of
    `*.pub` files. BundleError when there is none or a line is not an ed25519 key."""
    files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
    keys: list[Ed25519PublicKey] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BundleError(f"{file}: cannot read trusted keys ({exc})") from None
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    keys.append(parse_public_key(line))
                except KeyProblem as exc:
                    raise BundleError(f"{file}:{number}: {exc}") from None
    if not keys:
        raise BundleError(f"{path}: no trusted public keys")
    return keys


def load_roster_for(folder: Path, trust: Path | None = None) -> Roster | None:
    """The roster votes are checked against: `roster.yaml` in the auditor's trust folder when there is
    one, else the bundle's copy (`keys/roster.yaml`); None when neither exists."""
    from tasks.safeguards.roster import load_roster

    for path in ([trust / "roster.yaml"] if trust is not None and trust.is_dir() else []) + [
            folder / "keys" / "roster.yaml"]:
        if path.is_file():
            try:
                return load_roster(path)
            except (OSError, ValueError) as exc:
                raise BundleError(f"{path}: {' '.join(str(exc).split())}") from None
    return None


def verify_bundle(folder: Path, trusted: list[Ed25519PublicKey], roster: Roster | None = None,
                  accept_channels: frozenset[str] = frozenset()) -> BundleReport:
    """Check `folder` against the `trusted` gate keys; votes against `roster` (load_roster_for).

    `accept_channels`: unsigned votes through these channels (e.g. `slack`, verified by the gate with
    Slack's signing secret, which a third party does not hold) are listed as accepted on the auditor's
    own say-so instead of reported; the default accepts none."""
    report = BundleReport(trusted=[fingerprint(k) for k in trusted])
    events = _read_events(folder)
    chain = verify_events(events)
    report.events, report.head_seq = len(events), chain.head_seq
    if not chain.ok:
        report.problems.append(f"chain broken at seq {chain.first_bad_seq}: {chain.reason}")
    hashes = {e.seq: e.hash for e in events}
    hashes[0] = GENESIS_HASH
    _check_heads(folder, trusted, hashes, report)
    _check_determinations(folder, trusted, events, report)
    _check_lifts(events, roster, report, accept_channels)
    return report


def _read_events(folder: Path) -> list[Event]:
    path = folder / "events.jsonl"
    try:
        with path.open(encoding="utf-8") as fp:
            return list(read_jsonl(fp))
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the bundle's events ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise BundleError(f"{path}: {exc}") from None


def _check_heads(folder: Path, trusted: list[Ed25519PublicKey], hashes: Mapping[int, str],
                 report: BundleReport) -> None:
    notes = sorted((folder / "heads").glob("*.note")) if (folder / "heads").is_dir() else []
    if not notes:
        report.problems.append("no signed head in the bundle: nothing pins the chain against a rewrite")
        return
    last = max(hashes)
    for path in notes:
        try:
            head = verify_head(path.read_text(encoding="utf-8"), trusted)
        except (HeadProblem, OSError, UnicodeDecodeError) as exc:
            report.problems.append(f"head {path.name}: {exc}")
            continue
        report.heads += 1
        if report.ledger_id is None:
            report.ledger_id = head.ledger_id
        elif head.ledger_id != report.ledger_id:
            report.problems.append(f"head {path.name} is for ledger {head.ledger_id}, not {report.ledger_id}")
        if head.seq > last:
            report.problems.append(f"head signed {head.time} records seq {head.seq} but the chain ends at seq {last}: "
                                   "events deleted")
        elif hashes[head.seq] != head.hash:
            report.problems.append(f"history rewritten under a signed head: head signed {head.time} records hash "
                                   f"{head.hash[:12]} at seq {head.seq}, the chain has {hashes[head.seq][:12]}")


def _check_determinations(folder: Path, trusted: list[Ed25519PublicKey], events: list[Event],
                          report: BundleReport) -> None:
    earlier: list[tuple[Event, DeterminationRecorded]] = []
    for event in events:
        if event.kind != DeterminationRecorded.KIND:
            continue
        report.determinations += 1
        try:
            typed = event.typed()
            assert isinstance(typed, DeterminationRecorded)
        except InvalidEvent as exc:
            report.problems.append(f"determination at seq {event.seq}: {exc}")
            continue
        problem = _check_one(folder, trusted, event, typed, earlier, report)
        if problem:
            report.problems.append(f"determination at seq {event.seq} ({event.subject}): {problem}")
        else:
            report.replayed += 1
        earlier.append((event, typed))


def _check_one(folder: Path, trusted: list[Ed25519PublicKey], event: Event, typed: DeterminationRecorded,
               earlier: list[tuple[Event, DeterminationRecorded]], report: BundleReport) -> str | None:
    from policy.errors import PolicyError, ResultsError
    from policy.identity import policy_sha256
    from policy.loading import parse_policy
    from policy.replay import first_difference, replay
    from policy.results import SampleTable
    from tasks.inputs import parse_results_bytes

    if typed.attestation is None:
        why = f" ({typed.attestation_error})" if typed.attestation_error else ""
        return f"not signed{why}"
    try:
        stmt, _signer = open_statement(typed.attestation, trusted, PREDICATE_TYPE)
    except EnvelopeProblem as exc:
        return f"signature: {exc}"
    recorded = typed.determination()
    predicate = stmt["predicate"]
    ck = recorded.checkpoint
    uri = ck.uri if ck is not None and ck.uri else "(no checkpoint)"
    want = digest_set(ck.digest if ck is not None else None, uri)
    if [(s.get("name"), s.get("digest")) for s in stmt["subject"]] != [(uri, want)]:
        return f"the signed statement is about another checkpoint than {uri} ({want})"
    if report.ledger_id is not None and predicate.get("ledger_id") != report.ledger_id:
        return f"signed for ledger {predicate.get('ledger_id')}, not {report.ledger_id}"
    diff = first_difference(predicate.get("determination"), recorded.model_dump(mode="json"))
    if diff:
        return f"the recorded determination is not the one signed: {diff}"
    try:
        pol_in, rows_in = predicate["policy"], predicate.get("rows")
        policy_text = _blob(folder, pol_in["sha256"], "policy file").decode("utf-8")
        policy = parse_policy(policy_text, f"policy {pol_in.get('name', '')} ({pol_in['sha256'][:12]})")
        if policy_sha256(policy) != recorded.policy.sha256:
            return "the cited policy file is not the policy the determination names"
        if rows_in is None:
            if predicate.get("stage_error") is None:
                return "cites no sample rows but records no failed stage"
            rows = SampleTable.empty()
        else:
            rows = parse_results_bytes(_blob(folder, rows_in["sha256"], "sample-row file"), "results.jsonl")
    except _Missing as exc:
        return str(exc)
    except (KeyError, TypeError, UnicodeDecodeError) as exc:
        return f"the signed statement does not cite its inputs ({type(exc).__name__}: {exc})"
    except (PolicyError, ResultsError) as exc:
        return f"inputs unreadable: {' '.join(str(exc).split())}"
    prior = _prior_comprehensive(recorded, earlier)
    try:
        replayed = replay(policy, rows, recorded, prior)
    except (PolicyError, ResultsError, ValueError) as exc:
        return f"replay failed: {' '.join(str(exc).split())}"
    diff = first_difference(recorded.model_dump(mode="json"), replayed.model_dump(mode="json"))
    return None if diff is None else f"replay differs from the record at {diff}"


def _check_lifts(events: list[Event], roster: Roster | None, report: BundleReport,
                 accept_channels: frozenset[str] = frozenset()) -> None:
    """Every vote that counted toward a lift (the lift's approvers) must be a statement signed by a key the
    roster lists for that person, naming the role the lift needed from them (tasks.trust.votes.verify_vote).
    An unsigned vote (Slack, a typed name) cannot be checked by a third party and is reported."""
    from tasks.ledger.events import HaltLifted
    from tasks.trust.votes import VoteRefusal, verify_vote

    report.votes_checked = True
    by_seq = {e.seq: e for e in events}
    for event in events:
        if event.kind != HaltLifted.KIND or event.payload.get("trigger") == "evaluation caught up":
            continue
        lift = event.payload
        halt_id = str(lift.get("halt_id"))
        assignment = {str(p): r for r, p in (lift.get("assignment") or {}).items()}
        roles = set((lift.get("rules") or {}).get("roles") or [])
        for person in lift.get("approvers") or []:
            where = f"halt {halt_id} lifted at seq {event.seq}: vote of {person}"
            cast = [v for v in lift.get("votes") or [] if v.get("person") == person and v.get("decision") == "approve"]
            vote = by_seq.get(cast[-1].get("seq", -1)) if cast else None
            if vote is None:
                report.problems.append(f"{where} is not in the chain")
                continue
            statement, signature = vote.payload.get("statement"), vote.payload.get("signature")
            if not isinstance(statement, dict) or not isinstance(signature, str):
                if vote.payload.get("channel") in accept_channels:
                    report.accepted_unsigned.append(f"{where} (seq {vote.seq}, channel {vote.payload.get('channel')})")
                    continue
                report.problems.append(f"{where} (seq {vote.seq}, channel {vote.payload.get('channel')}) is not "
                                       "signed: a third party cannot verify it")
                continue
            if roster is None:
                report.problems.append(f"{where}: no roster to check its signature against")
                continue
            checked = verify_vote(statement, signature, roster, halt_id, expected_ledger_id=report.ledger_id,
                                  now=dt.datetime.fromisoformat(vote.ts))
            if isinstance(checked, VoteRefusal):
                report.problems.append(f"{where} (seq {vote.seq}) does not verify: {checked.code}: {checked.reason}")
                continue
            needed = assignment.get(person)
            if (needed is not None and checked.role != needed) or (needed is None and roles and
                                                                   checked.role not in roles):
                report.problems.append(f"{where} was signed as {checked.role}, not the role {needed or sorted(roles)} "
                                       "the lift counted it for")


class _Missing(Exception):
    pass


def _blob(folder: Path, sha: str, what: str) -> bytes:
    path = folder / "blobs" / "sha256" / str(sha)
    try:
        data = path.read_bytes()
    except OSError:
        raise _Missing(f"{what} sha256 {str(sha)[:12]} is not in the bundle") from None
    if hashlib.sha256(data).hexdigest() != sha:
        raise _Missing(f"{what} {path.name[:12]}… in the bundle does not match its signed sha256 (swapped)")
    return data


def _prior_comprehensive(recorded: Any, earlier: list[tuple[Event, DeterminationRecorded]]
                         ) -> dict[str, Any] | None:
    """The run's comprehensive determination at the highest step below this one, latest recorded first,
    among those recorded before it: what the pipeline carried forward (Ledger.last_comprehensive)."""
    ck = recorded.checkpoint
    if ck is None:
        return None
    best: tuple[int, int, dict[str, Any]] | None = None
    for event, typed in earlier:
        other = typed.checkpoint
        if (other is None or other.run_id != ck.run_id or typed.assessment != "comprehensive"
                or other.step is None or other.step >= ck.step):
            continue
        if best is None or (other.step, event.seq) > best[:2]:
            best = (other.step, event.seq, event.payload)
    return None if best is None else json.loads(json.dumps(best[2]))
