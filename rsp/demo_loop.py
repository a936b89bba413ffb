"""The demo's second half: after the halt, do what an operator does until scaling may continue.

    put the missing safeguards in place   attestations signed with each attester's key; the misuse
                                          classifier deployed; the weights bucket hardened
    two approvals arrive                  one through Slack (a signed interaction request posted to the
                                          approval service exactly as Slack posts it), one through the
                                          CLI (`rsp approve … --key …`, a signed vote)
    the halt lifts                        after the gate re-verifies every required safeguard
    training resumes                      a new run of the scaling deployment continues after the last
                                          checkpoint, until the next level's thresholds stop it or it ends

Every step goes through the same public interfaces an operator uses (the `rsp` CLI, the approval
service's HTTP endpoint, Prefect's API), so the demo proves the loop rather than simulating it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Step:
    what: str
    seconds: float
    detail: str = ""
    command: str = ""


@dataclass
class Done:
    """What a step reports: a line for the log and summary, the command an operator would type, a value."""

    detail: str
    command: str = ""
    value: Any = None


@dataclass
class Timeline:
    """Each step of the loop with its wall time, for the summary."""

    steps: list[Step] = field(default_factory=list)

    def run(self, what: str, fn: Callable[[], str | Done], command: str = "") -> Any:
        """Run one step; returns the step's `Done.value` (or its detail when it returned a plain string)."""
        t0 = time.monotonic()
        done = fn()
        done = done if isinstance(done, Done) else Done(done, value=done)
        self.record(what, time.monotonic() - t0, done.detail, done.command or command)
        return done.value

    def record(self, what: str, seconds: float, detail: str, command: str = "") -> None:
        self.steps.append(Step(what, seconds, detail, command))
        print(f"[demo {time.strftime('%H:%M:%S')}] {what} ({seconds:.1f} s): {detail}", flush=True)

    def lines(self) -> list[str]:
        out = []
        for s in self.steps:
            out.append(f"{s.seconds:7.1f} s  {s.what}: {s.detail}")
            if s.command:
                out.append(f"           $ {s.command}")
        return out


def rsp_command() -> list[str]:
    """How to call the CLI: `rsp` when installed on PATH beside this interpreter, else `python -m rsp.cli`."""
    exe = Path(sys.executable).parent / "rsp"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "rsp.cli"]


def shown(argv: list[str]) -> str:
    """A copyable command line: paths inside the current folder shortened, everything quoted."""
    here = os.getcwd() + os.sep
    parts = [os.path.relpath(a) if os.path.isabs(a) and a.startswith(here) else a for a in argv]
    return shlex.join(parts)


def run_cli(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `rsp ARGS` as an operator would; (exit code, output, the command as printed)."""
    argv = [*rsp_command(), *args]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, env=env or dict(os.environ),
                          timeout=300)
    return proc.returncode, (proc.stdout + proc.stderr).strip(), shown(argv)


def slack_interaction(secret: str, user_id: str, halt_id: str, decision: str = "approve",
                      now: float | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers Slack sends when `user_id` clicks Approve/Reject on a halt message.

    Signed exactly as Slack signs it (v0: HMAC-SHA256 of "v0:<timestamp>:<raw body>" with the app's
    signing secret); the approval service verifies it with slack-sdk's SignatureVerifier.
    """
    from tasks.notify.slack import APPROVE_ACTION, REJECT_ACTION

    action = APPROVE_ACTION if decision == "approve" else REJECT_ACTION
    payload = {"type": "block_actions", "user": {"id": user_id, "username": user_id.lower()},
               "actions": [{"action_id": action, "value": halt_id, "type": "button"}],
               "container": {"type": "message"}, "trigger_id": f"demo.{int(time.time())}"}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(now if now is not None else time.time()))
    sig = "v0=" + hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts,
               "X-Slack-Signature": sig}
    return body, headers


def post_slack_vote(service_url: str, secret: str, user_id: str, halt_id: str) -> tuple[int, str]:
    body, headers = slack_interaction(secret, user_id, halt_id)
    req = urllib.request.Request(f"{service_url}/slack/interactions", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"{what}: not within {timeout:.0f} s")


def missing_safeguards(policy: Any, halt_payload: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """(attestation safeguards, automated safeguards) the halt waits for, as policy objects."""
    ids = list(halt_payload.get("lifts_when", {}).get("safeguards", []))
    by_id = {sg.id: sg for sg in policy.safeguards}
    wanted = [by_id[i] for i in ids if i in by_id]
    attest = [sg for sg in wanted if getattr(sg.verification, "method", "") == "attestation"]
    auto = [sg for sg in wanted if getattr(sg.verification, "method", "") == "automated"]
    return attest, auto


def pick_attester(safeguard: Any, people: dict[str, list[str]]) -> tuple[str, str]:
    """(person, role) to attest `safeguard`: the rostered holder of an allowed role with the fewest roles
    (the role's owner rather than the demo's all-roles admin), so each attestation carries its owner's key."""
    allowed = list(getattr(safeguard.verification, "roles", []))
    holders = sorted((len(roles), person, next(r for r in allowed if r in roles))
                     for person, roles in people.items() if any(r in roles for r in allowed))
    if not holders:
        raise RuntimeError(f"nobody on the demo roster holds a role that may attest {safeguard.id} "
                           f"({', '.join(allowed)})")
    _, person, role = holders[0]
    return person, role


def attest(safeguard: Any, people: dict[str, list[str]], keys: Path) -> Done:
    """`rsp evidence attest` the safeguard, signed with its attester's key; (detail, command) or RuntimeError."""
    person, role = pick_attester(safeguard, people)
    code, out, cmd = run_cli(["evidence", "attest", safeguard.id, "--by", person, "--role", role,
                              "--key", str(keys / person), "--evidence", f"demo: {safeguard.name} reviewed"])
    if code != 0:
        raise RuntimeError(f"`{cmd}` exited {code}: {out}")
    return Done(f"{safeguard.id} attested by {person} as {role}, signed with {person}'s key", cmd)


def votes_on(ledger: Any, halt_id: str) -> list[dict[str, Any]]:
    """The votes recorded on a halt, oldest first (what the summary and the test read)."""
    from tasks.ledger.events import VoteRecorded

    return [e.payload for e in ledger.events(kind=VoteRecorded.KIND, subject=halt_id)]


def vote_line(vote: dict[str, Any]) -> str:
    verified = "verified" if vote.get("verified") else "NOT verified"
    return (f"{vote.get('decision')} by {vote.get('person')} ({vote.get('role') or ', '.join(vote.get('roles') or [])})"
            f" via {vote.get('channel')}, {verified}")
