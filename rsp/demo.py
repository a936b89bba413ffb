"""`make demo`: the whole loop on one machine, no accounts.

First half. A real Prefect server starts; a demo training run (a scaling deployment, served by
a real `serve` process) writes checkpoints of growing effective compute; the watch flow detects
each one, runs the policy's benchmarks through Inspect against the simulated model, gates them
with great-expectations, classifies the required safety level, and verifies the required
safeguards: two ASL-3 attestations are seeded, the rest are missing (the misuse classifier is
not deployed yet and the weights bucket does not exist on the local S3). When obligations are
unmet, scaling halts: the ledger records the halt, the deployment is paused, the training run
stops at its next gate check, a notification goes out.

Second half (skipped with --stop-at-halt). The demo does what an operator does: the remaining
attestations, each signed with its attester's key (`rsp evidence attest … --key`); the misuse
classifier deployed and the weights bucket hardened (rsp/demo_standins.py); one approval through
Slack (a signed interaction request posted to the approval service exactly as Slack posts it)
and one signed on the CLI (`rsp approve … --key`). The vote that completes the quorum lifts the
halt after re-verifying every safeguard and resumes the deployment; a new run of the training
deployment with the same run id continues after the last checkpoint until the next level's
thresholds halt it again or it finishes. The summary lists each step with its time, the story
of the halt, and commands that work when copied.

    python -m rsp.demo [--steps 6] [--policy anthropic-rsp] [--home .rsp/demo] [--stop-at-halt] [--no-keep-server]
    python -m rsp.demo --stop          # stop the Prefect server a previous demo left running
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rsp.demo_loop import (
    Done,
    Timeline,
    attest,
    missing_safeguards,
    post_slack_vote,
    rsp_command,
    run_cli,
    shown,
    vote_line,
    votes_on,
    wait_for,
)
from rsp.demo_standins import DEMO_AWS_ENV, LocalS3, MisuseClassifier, harden_bucket

RUN_ID = "demo-run"
DEPLOYMENT = "train-demo/train-demo"
WEIGHTS_BUCKET = "demo-weights"  # the bucket the weights-storage check reads (absent until hardened)
# Slack user ids of the demo roster (any id of Slack's shape; the approval service maps clicks to people).
SLACK_USER_IDS = {"riley": "UDEMORILEY", "casey": "UDEMOCASEY", "sam": "UDEMOSAM"}


def say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def wait_http(url: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f} s")


def stop_pidfile(path: Path) -> bool:
    try:
        pid = int(path.read_text().strip())
        os.killpg(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return False
    finally:
        path.unlink(missing_ok=True)
    return True


def start_prefect_server(home: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    log = open(home / "prefect-server.log", "w")  # noqa: SIM115 - the child process writes it for its lifetime
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    (home / "prefect-server.pid").write_text(str(proc.pid))
    return proc


def seed_evidence(policy: Any) -> tuple[list[str], dict[str, list[str]]]:
    """A roster of three people (a signing key each, a Slack user id each) and attestations for two
    of the policy's ASL-3-style safeguards; the others stay missing so the crossing checkpoint's
    obligations are unmet. Returns (attested safeguard ids, person -> roles)."""
    from tasks.safeguards import new_attestation, open_evidence_store
    from tasks.settings import get_settings
    from tasks.trust.keys import generate_key_files, load_private_key

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    roles = {r.id for r in policy.roles}
    people = {"riley": [r for r in roles if "scaling" in r or r == "rso"] or sorted(roles)[:1],
              "casey": [r for r in roles if r == "ceo"] or sorted(roles)[-1:],
              "sam": sorted(roles)}
    # Throwaway signing keys under the demo's home: votes and attestations count only when signed.
    keys = {p: generate_key_files(demo_keys(), p) for p in people}
    (settings.home / "roster.yaml").write_text("people:\n" + "".join(
        f"  {p}: {{roles: [{', '.join(sorted(rs))}], public_keys: ['{keys[p][1]}'], "
        f"slack_user_id: {SLACK_USER_IDS[p]}}}\n" for p, rs in people.items()))
    store = open_evidence_store()
    attested: list[str] = []
    for sg in policy.safeguards:
        v = sg.verification
        if getattr(v, "method", "") == "attestation" and sg.kind == "security" and len(attested) < 2:
            store.write(new_attestation(sg.id, "sam", v.roles[0], f"demo: {sg.name} reviewed",
                                        key=load_private_key(keys["sam"][0])))
            attested.append(sg.id)
    return attested, people


def demo_keys() -> Path:
    from tasks.settings import get_settings

    return get_settings().home / "keys"


def serve_process(env: dict[str, str], home: Path) -> subprocess.Popen:
    code = ("from flows.train_demo import scaling_deployment\n"
            "from tasks.enforcement import serve_scaling\n"
            "serve_scaling(scaling_deployment(), reconcile_every=5.0)\n")
    log = open(home / "serve.log", "w")  # noqa: SIM115 - the child process writes it for its lifetime
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def approval_service(env: dict[str, str], home: Path, port: int, secret: str) -> subprocess.Popen:
    """The Slack interactivity endpoint, with a throwaway signing secret (no Slack app in the demo)."""
    env = {**env, "RSP_SLACK_SIGNING_SECRET": secret}
    log = open(home / "approval-service.log", "w")  # noqa: SIM115 - the child process writes it for its lifetime
    return subprocess.Popen([sys.executable, "-m", "rsp.cli", "serve-approvals", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def flow_run_state(run_id: Any) -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
        return state.type.value if state is not None else "UNKNOWN"


def deployment_paused() -> bool:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return bool(client.read_deployment_by_name(DEPLOYMENT).paused)


def last_checkpoint_step() -> int:
    from tasks.settings import get_settings

    folder = get_settings().home / "checkpoints" / RUN_ID
    steps = [int(p.name[5:]) for p in folder.glob("step-*") if (p / "checkpoint.json").is_file()]
    return max(steps, default=0)


@dataclass
class Demo:
    """What the demo started, for the second half and the summary."""

    args: argparse.Namespace
    port: int
    policy: Any
    people: dict[str, list[str]]
    approvals_url: str
    slack_secret: str
    classifier: MisuseClassifier
    s3: LocalS3
    timeline: Timeline = field(default_factory=Timeline)
    started: float = field(default_factory=time.monotonic)

    def env_line(self) -> str:
        """The exact environment that points a shell's `rsp` at this demo."""
        env = {"RSP_HOME": os.environ["RSP_HOME"], "RSP_POLICY": os.environ["RSP_POLICY"],
               "PREFECT_API_URL": os.environ["PREFECT_API_URL"]}
        return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rsp.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=".rsp/demo", help="demo state folder (wiped at start)")
    ap.add_argument("--policy", default="anthropic-rsp", help="bundled framework id or policy file")
    ap.add_argument("--steps", type=int, default=6, help="training steps (checkpoints) to attempt in all")
    ap.add_argument("--start-compute", type=float, default=1e23, help="effective compute of step 1 (FLOP)")
    ap.add_argument("--growth", type=float, default=3.0, help="effective compute factor per step")
    ap.add_argument("--port", type=int, default=4200, help="Prefect server port (a free one if taken)")
    ap.add_argument("--timeout", type=float, default=900, help="give up waiting for a halt after this many seconds")
    ap.add_argument("--stop-at-halt", action="store_true",
                    help="stop at the first halt (print how to lift it) instead of lifting it and resuming")
    ap.add_argument("--no-keep-server", action="store_true", help="stop the Prefect server at the end")
    ap.add_argument("--stop", action="store_true", help="stop a Prefect server a previous demo left running")
    args = ap.parse_args(argv)
    home = Path(args.home).resolve()
    if args.stop:
        print("stopped" if stop_pidfile(home / "prefect-server.pid") else "no demo server running")
        return 0

    if home.exists():
        stop_pidfile(home / "prefect-server.pid")
        shutil.rmtree(home)
    home.mkdir(parents=True)
    port = free_port(args.port)
    api = f"http://127.0.0.1:{port}/api"
    # The operator's stand-ins: a local S3 (moto) where the weights bucket does not exist yet, and a port
    # reserved for the misuse classifier with nothing listening. Both checks are configured from the start,
    # so every process verifies against them and the first verification honestly fails (`unknown`).
    began = time.monotonic()
    s3 = LocalS3().start()
    classifier = MisuseClassifier(free_port(0))
    os.environ.update({
        "RSP_HOME": str(home), "PREFECT_HOME": str(home / "prefect"), "PREFECT_API_URL": api,
        "PREFECT_UI_URL": f"http://127.0.0.1:{port}", "DO_NOT_TRACK": "1",
        # The trainer's gate reads the evaluation lag bound from the same policy the watcher applies.
        "RSP_POLICY": str(Path(args.policy).resolve()) if Path(args.policy).is_file() else args.policy,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "RSP_MISUSE_PROBE_URL": classifier.url, "RSP_SAFEGUARD_BUCKET": WEIGHTS_BUCKET,
        "RSP_S3_ENDPOINT_URL": s3.endpoint, "RSP_S3_REGION": "us-east-1", **DEMO_AWS_ENV,
    })
    env = dict(os.environ)
    say(f"starting a Prefect server on 127.0.0.1:{port} (state in {home})")
    server = start_prefect_server(home, port, env)
    serve = approvals = None
    approvals_port = free_port(8080)
    try:
        wait_http(f"{api}/health", 180, "the Prefect server")
        from tasks.inputs import read_policy
        from tasks.settings import get_settings

        get_settings.cache_clear()
        policy = read_policy(args.policy)
        from tasks.ledger import Ledger

        # `rsp init`: only the creating commands make a ledger; the trainer's gate refuses to run without one.
        with Ledger(get_settings().resolved_ledger_url, create=True) as created:
            say(f"ledger {created.url} (id {created.ledger_id})")
        attested, people = seed_evidence(policy)
        say(f"policy {policy.framework.name} v{policy.framework.version}; safeguards attested for the demo: "
            f"{', '.join(attested) or 'none'} (the others are missing)")
        say(f"local S3 (moto) at {s3.endpoint} without the weights bucket {WEIGHTS_BUCKET}; misuse classifier "
            f"expected at {classifier.url}, not deployed yet")
        say("serving the demo training flow as a scaling deployment (tags: scaling, training)")
        serve = serve_process(env, home)
        secret = secrets.token_hex(16)
        approvals = approval_service(env, home, approvals_port, secret)
        approvals_url = f"http://127.0.0.1:{approvals_port}"
        wait_http(f"{approvals_url}/healthz", 60, "the approval service")
        say(f"approval service (Slack interactivity) at {approvals_url}/slack/interactions")
        demo = Demo(args, port, policy, people, approvals_url, secret, classifier, s3, started=began)
        demo.timeline.record("start the Prefect server, ledger, evidence, stand-ins and services",
                             time.monotonic() - demo.started, f"Prefect UI http://127.0.0.1:{port}")
        from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

        # The environment is read once per process; pin this process's Prefect client to the demo server.
        with temporary_settings(updates={PREFECT_API_URL: api, PREFECT_UI_URL: f"http://127.0.0.1:{port}"}):
            first = demo.timeline.run(f"train {args.steps} steps until the gate halts scaling",
                                      lambda: first_half(demo))
            loop: dict[str, Any] = {}
            if first.get("halt") is not None and not args.stop_at_halt:
                try:
                    loop = second_half(demo, first)
                except (RuntimeError, OSError) as exc:  # a step the demo could not complete: say which, fail
                    say(f"could not complete the loop: {exc}")
                    loop = {"error": str(exc)}
            print_summary(demo, first, loop)
        if first.get("halt") is None or loop.get("error"):
            return 1
        return 0
    finally:
        for proc in (serve, approvals):
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        classifier.stop()
        s3.stop()
        if args.no_keep_server:
            stop_pidfile(home / "prefect-server.pid")
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


def first_half(demo: Demo) -> Any:
    """Start the training run and evaluate its checkpoints until a halt stops it (or it finishes)."""
    args = demo.args
    run = start_training(args, args.steps)
    say(f"training run started: {args.steps} steps from {args.start_compute:.1e} FLOP, x{args.growth:g} per step")
    result = watch_until_halted(args, run, time.monotonic())
    h = result["halt"]
    return Done(f"halt {h.halt.halt_id} at step {h.step} ({h.required_level})" if h is not None
                else f"no halt; training run {result['training_state']}", value=result)


def second_half(demo: Demo, first: dict[str, Any]) -> dict[str, Any]:
    """What an operator does after the halt, through the same interfaces, until the run goes on."""
    from tasks.ledger import Ledger
    from tasks.settings import get_settings

    ledger = Ledger(get_settings().resolved_ledger_url)
    halt_id = first["halt"].halt.halt_id
    halt = ledger.halt(halt_id)
    assert halt is not None  # the watch just opened it
    attest_sgs, auto_sgs = missing_safeguards(demo.policy, halt.payload)
    timeline, keys = demo.timeline, demo_keys()
    checks_now = verify_now(demo.policy, halt.payload)
    say(f"halt {halt_id} lifts when its safeguards verify and the approvers approve; missing now: "
        + ", ".join(f"{k} ({v})" for k, v in checks_now.items() if v != "met")
        + ". Putting them in place as an operator would")
    for sg in attest_sgs:
        if checks_now.get(sg.id) != "met":
            timeline.run(f"attest {sg.id}", partial(attest, sg, demo.people, keys))
    for sg in auto_sgs:
        timeline.run(f"put {sg.id} in place", partial(deploy_standin, demo, sg))
    # Two approvals from two channels: the CEO clicks Approve in Slack, the RSO signs a vote on the CLI.
    slack_person, cli_person = "casey", "riley"
    timeline.run(f"{slack_person} approves in Slack",
                 lambda: slack_vote(demo, slack_person, halt_id),
                 f"POST {demo.approvals_url}/slack/interactions (signed as Slack signs it)")
    timeline.run(f"{cli_person} approves on the CLI, signed (completes the quorum, lift re-verifies)",
                 lambda: cli_vote(cli_person, halt_id, keys))
    timeline.run("the ledger records the lift", lambda: wait_lifted(ledger, halt_id))
    resumed_from = last_checkpoint_step()
    others = [h for h in ledger.open_halts() if h["halt_id"] != halt_id]
    if others:
        # A later checkpoint was written and halted before the first halt was opened (the trainer's gate
        # check raced the halt flow): that halt still covers the run, so nothing resumes. Say so.
        say(f"halt(s) {', '.join(h['halt_id'] for h in others)} opened for a later checkpoint still cover the run;"
            " training stays halted")
        timeline.run("report the halts still open", report_now)
        return {"halt_id": halt_id, "ledger": ledger, "resumed_from": resumed_from, "second": {}}
    timeline.run("the lift resumes the train-demo deployment", wait_resumed)
    left = demo.args.steps - resumed_from
    second: dict[str, Any] = {}
    if left > 0:
        second = timeline.run(f"resume training from step {resumed_from + 1} (same run id) until the next halt "
                              "or the end", lambda: resume_training(demo, left))
    else:
        say(f"the halted run had reached its last step ({resumed_from}); nothing left to train")
    timeline.run("regenerate the run report", report_now)
    return {"halt_id": halt_id, "ledger": ledger, "resumed_from": resumed_from, "second": second}


def verify_now(policy: Any, halt_payload: dict[str, Any]) -> dict[str, str]:
    """Each safeguard the halt needs → its state right now (nothing recorded)."""
    from tasks.approvals.lift import verify

    ids = list(halt_payload.get("lifts_when", {}).get("safeguards", []))
    return {k: v["state"] for k, v in verify(policy, ids).items()}


def deploy_standin(demo: Demo, sg: Any) -> str:
    check = getattr(sg.verification, "check", "")
    if check == "misuse_classifier_probe":
        demo.classifier.start()
        return f"misuse classifier deployed at {demo.classifier.url} (refuses the gate's canary)"
    if check == "checkpoint_bucket_hardening":
        controls = harden_bucket(demo.s3.client(), WEIGHTS_BUCKET)
        return f"bucket {WEIGHTS_BUCKET} created on {demo.s3.endpoint} with {', '.join(controls)}"
    raise RuntimeError(f"the demo has no stand-in for the automated check {check!r} of {sg.id}")


def slack_vote(demo: Demo, person: str, halt_id: str) -> str:
    status, body = post_slack_vote(demo.approvals_url, demo.slack_secret, SLACK_USER_IDS[person], halt_id)
    if status != 200:
        raise RuntimeError(f"the approval service refused {person}'s Slack vote (HTTP {status}): {body}")
    answer = json.loads(body)
    return f"HTTP 200, {answer.get('message')}"


def cli_vote(person: str, halt_id: str, keys: Path) -> Done:
    code, out, cmd = run_cli(["approve", halt_id, "--as", person, "--key", str(keys / person),
                              "--justification", "demo: every required safeguard is in place"])
    if code != 0:
        raise RuntimeError(f"`{cmd}` exited {code}: {out}")
    return Done(out.splitlines()[-1], cmd)


def wait_lifted(ledger: Any, halt_id: str) -> str:
    wait_for(lambda: not ledger.halt(halt_id).is_open, 120, f"halt {halt_id} lifted")
    lift = ledger.halt(halt_id).lift()
    met = [k for k, v in (lift.verification or {}).items() if v.get("state") == "met"]
    return f"lifted by {', '.join(lift.approvers or [])}; re-verified {len(met)} safeguards met"


def wait_resumed() -> str:
    wait_for(lambda: not deployment_paused(), 120, f"deployment {DEPLOYMENT} resumed")
    return f"{DEPLOYMENT} no longer paused"


def resume_training(demo: Demo, steps: int) -> Done:
    run = start_training(demo.args, steps)
    result = watch_until_halted(demo.args, run, time.monotonic())
    h = result["halt"]
    last = last_checkpoint_step()
    return Done(f"halted again at step {h.step} ({h.required_level}), halt {h.halt.halt_id}" if h is not None
                else f"training run {result['training_state']} at step {last}", value=result)


def report_now() -> Done:
    code, out, cmd = run_cli(["report", RUN_ID])
    if code != 0:
        raise RuntimeError(f"`{cmd}` exited {code}: {out}")
    return Done(out.splitlines()[-1], cmd)


def start_training(args: argparse.Namespace, steps: int) -> Any:
    """A run of the train-demo deployment for `steps` more steps of RUN_ID (it resumes after the last
    checkpoint in the store), with the demo's compute schedule."""
    from prefect import get_client

    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while True:
            try:
                dep = client.read_deployment_by_name(DEPLOYMENT)
                break
            except Exception:  # noqa: BLE001 - not registered yet (404) or server still starting: retry until the deadline
                if time.monotonic() > deadline:
                    raise RuntimeError("the serve process did not register the train-demo deployment") from None
                time.sleep(0.5)
        params = {"run_id": RUN_ID, "steps": steps, "start_compute": args.start_compute,
                  "compute_growth": args.growth, "step_seconds": 1.0, "await_evaluation_s": 600.0}
        return client.create_flow_run_from_deployment(dep.id, parameters=params).id


def watch_until_halted(args: argparse.Namespace, run_id: Any, started: float) -> dict[str, Any]:
    """Run the watch flow until training run `run_id` ends; `halt` is the first halting evaluation seen."""
    from flows.watch import watch

    seen: list[Any] = []  # tasks.outcomes.EvaluationOutcome
    halt_at = None
    while time.monotonic() - started < args.timeout:
        res = watch(policy=args.policy)
        for r in res.evaluated:
            seen.append(r)
            extra = f" — HALT {r.halt.halt_id}" if r.halt else ""
            say(f"checkpoint step {r.step}: {r.assessment} assessment → level {r.required_level}, "
                f"{(r.decision or '').upper()}{extra}")
            if r.decision == "halt" and halt_at is None:
                halt_at = r
        state = flow_run_state(run_id)
        if state in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED"):
            if halt_at is not None or state == "COMPLETED":
                res = watch(policy=args.policy)  # evaluate anything written in the last step
                seen.extend(res.evaluated)
                halt_at = halt_at or next((r for r in res.evaluated if r.decision == "halt"), None)
                break
            if state in ("FAILED", "CRASHED"):
                say(f"training run ended {state} without a halt; see {Path(os.environ['RSP_HOME']) / 'serve.log'}")
                break
        time.sleep(1.0)
    else:
        say(f"timed out after {args.timeout:.0f} s")
    return {"evaluated": seen, "halt": halt_at, "training_state": flow_run_state(run_id), "flow_run": str(run_id)}


def print_summary(demo: Demo, first: dict[str, Any], loop: dict[str, Any]) -> None:
    from tasks.ledger import Ledger
    from tasks.settings import get_settings

    ledger = Ledger(get_settings().resolved_ledger_url)
    dets = sorted(ledger.determinations(RUN_ID), key=lambda d: d["checkpoint"]["step"])
    print("\n" + "=" * 78)
    print("SUMMARY")
    print("=" * 78)
    print(f"{'step':>5} {'effective compute':>18} {'assessment':>14} {'level':>7}  decision")
    for d in dets:
        print(f"{d['checkpoint']['step']:>5} {d['checkpoint']['effective_compute']:>18.3e} {d['assessment']:>14} "
              f"{d['required_level']:>7}  {d['decision'].upper()}")
    h = first.get("halt")
    if h is None:
        print("\nNo halt: every checkpoint's obligations were met (or the demo timed out).")
        return
    halt = ledger.halt(h.halt.halt_id)
    assert halt is not None
    det = next(d for d in dets if d["checkpoint"]["step"] == h.step)
    print(f"\nCrossing checkpoint: step {h.step} → {det['required_level']}: {'; '.join(det['level_reasons'])}")
    print(f"Halt {halt.halt_id} opened, halting {', '.join(halt.payload['what']['activities'])}; obligations unmet:")
    for r in det["decision_reasons"]:
        print(f"  - {r}")
    before = loop.get("resumed_from") or last_checkpoint_step()  # what the first run had written
    print(f"The first training run ended {first['training_state']} at its gate; last checkpoint step {before}"
          + (f", none after the halted step {h.step}" if before == h.step else
             f": steps {h.step + 1}..{before} were written after step {h.step}'s HALT determination was recorded "
             "but before the halt flow opened the halt (the trainer's gate check raced it)"))
    print("\nTIMELINE (wall time of each step)")
    for line in demo.timeline.lines():
        print(line)
    if loop.get("error"):
        print(f"\nThe loop stopped: {loop['error']}")
    if not halt.is_open:
        lift = halt.lift()
        assert lift is not None
        print(f"\nHalt {halt.halt_id} LIFTED at {halt.lifted_at} by {', '.join(lift.approvers or [])} "
              f"(trigger: {lift.trigger}); votes:")
        for v in votes_on(ledger, halt.halt_id):
            print(f"  - {vote_line(v)}")
        print("  safeguards re-verified at the lift: " + ", ".join(
            f"{k} {v.get('state')}" for k, v in (lift.verification or {}).items()))
    second = loop.get("second") or {}
    if second:
        steps = sorted(d["checkpoint"]["step"] for d in dets if d["checkpoint"]["step"] > loop["resumed_from"])
        h2 = second.get("halt")
        print(f"Training resumed (flow run {second['flow_run']}, same run id {RUN_ID}) after step "
              f"{loop['resumed_from']}: checkpoints {', '.join(map(str, steps)) or 'none'} evaluated; "
              + (f"halted again at step {h2.step} ({h2.required_level}): halt {h2.halt.halt_id}" if h2 is not None
                 else f"run {second['training_state']}"))
    print_status_lines(demo, ledger)
    h2 = second.get("halt")
    print(json.dumps({"halt_id": halt.halt_id, "crossing_step": h.step, "lifted": not halt.is_open,
                      "resumed_from_step": loop.get("resumed_from"),
                      "last_step": max(d["checkpoint"]["step"] for d in dets),
                      "next_halt_id": h2.halt.halt_id if h2 is not None else None,
                      "next_halt_step": h2.step if h2 is not None else None,
                      "resumed_run_state": second.get("training_state")}))


def print_status_lines(demo: Demo, ledger: Any) -> None:
    from tasks.enforcement.prefect_api import list_scaling_deployments, prefect_client
    from tasks.settings import get_settings

    args, settings = demo.args, get_settings()
    with prefect_client() as client:
        for dep in list_scaling_deployments(client, settings.scaling_tag):
            print(f"Deployment {dep.name}: {'PAUSED' if dep.paused else 'not paused'}")
    verify = ledger.verify()
    print(f"Ledger: {'verifies' if verify.ok else 'BROKEN: ' + str(verify.reason)} ({verify.checked} events)")
    runs = settings.resolved_runs_dir
    print(f"Report: {runs / RUN_ID / 'report.html'} (the halt's story: opened, votes, lift, resumed run)")
    rsp = shown(rsp_command())
    print("\nEvery command below works when copied into a shell in this folder (first the environment line):")
    print(f"  {demo.env_line()}")
    print(f"  {rsp} status                 # open halts, what lifts them, whether Prefect agrees")
    print(f"  {rsp} report {RUN_ID}        # regenerate the report")
    print(f"  {rsp} audit verify           # recompute the ledger's hash chain")
    print(f"  {rsp} audit export --bundle {shlex.quote(shown([str(settings.home / 'bundle')]))}"
          "   # what a third party verifies")
    keys = demo_keys()
    for open_halt in ledger.open_halts():
        hid = open_halt["halt_id"]
        lifts = open_halt.get("lifts_when") or {}
        appr = lifts.get("approvals") or {}
        print(f"\nHalt {hid} is open. To lift it, put these safeguards in place: "
              f"{', '.join(lifts.get('safeguards', [])) or 'none'}")
        print(f"  attestations: {rsp} evidence attest SAFEGUARD --by PERSON --role ROLE --key KEY --evidence TEXT "
              f"(who holds which role: {shown([str(settings.home / 'roster.yaml')])}; keys: "
              f"{shown([str(keys)])}/PERSON)")
        print("  automated checks: a misuse classifier at RSP_MISUSE_PROBE_URL, the weights bucket "
              "RSP_SAFEGUARD_BUCKET hardened (this demo's stand-ins, rsp/demo_standins.py, stop with it)")
        print(f"then {appr.get('quorum', 2)} distinct approvers ({', '.join(appr.get('roles', []))}) approve:")
        print(f"  {rsp} approve {hid} --as riley --key {shown([str(keys / 'riley')])} "
              "--justification '...'")
        print(f"  {rsp} approve {hid} --as casey --key {shown([str(keys / 'casey')])} "
              "--justification '...'")
    print(f"\nNotifications went to {shown([str(settings.home / 'notifications.jsonl')])} (set "
          "RSP_NOTIFY=slack,file and RSP_SLACK_BOT_TOKEN for Slack, where the message carries Approve / Reject buttons).")
    port = demo.port
    if demo.args.no_keep_server:
        print("\nThe Prefect server was stopped (--no-keep-server); run the demo without it to browse the UI.")
    else:
        print(f"\nPrefect UI: http://127.0.0.1:{port}  (server left running; stop it with "
              f"`python -m rsp.demo --stop --home {shlex.quote(args.home)}`)")
        print("To see the pipeline's own deployments (watch, evaluate, halt, approval, resume, train-demo) in the UI "
              "and run them from there, serve them in another terminal:")
        print(f"  {demo.env_line()} && {rsp} serve --demo")


if __name__ == "__main__":
    sys.exit(main())
