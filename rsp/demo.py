"""`make demo`: the whole loop on one machine, no accounts.

A real Prefect server starts; a demo training run (a scaling deployment, served by a real
`serve` process) writes checkpoints of growing effective compute; the watch flow detects
each one, runs the policy's benchmarks through Inspect against the simulated model, gates
them with great-expectations, classifies the required safety level, verifies the required
safeguards against the evidence folder (two of the ASL-3 safeguards are attested; the rest
are not), and when obligations are unmet halts scaling: the ledger records the halt, the
deployment is paused, the training run stops at its next gate check, a notification goes
out. The demo ends with a summary, the approval commands, and the Prefect UI address.

    python -m rsp.demo [--steps 6] [--policy anthropic-rsp] [--home .rsp/demo] [--no-keep-server]
    python -m rsp.demo --stop          # stop the Prefect server a previous demo left running
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

RUN_ID = "demo-run"
DEPLOYMENT = "train-demo/train-demo"


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


def seed_evidence(policy: Any) -> list[str]:
    """A roster of three people and attestations for two of the policy's ASL-3-style safeguards;
    the others stay missing so the crossing checkpoint's obligations are unmet."""
    from tasks.safeguards import new_attestation, open_evidence_store
    from tasks.settings import get_settings

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    roles = {r.id for r in policy.roles}
    people = {"riley": [r for r in roles if "scaling" in r or r == "rso"] or sorted(roles)[:1],
              "casey": [r for r in roles if r == "ceo"] or sorted(roles)[-1:],
              "sam": sorted(roles)}
    (settings.home / "roster.yaml").write_text(
        "people:\n" + "".join(f"  {p}: {{roles: [{', '.join(sorted(rs))}]}}\n" for p, rs in people.items()))
    store = open_evidence_store()
    attested: list[str] = []
    for sg in policy.safeguards:
        v = sg.verification
        if getattr(v, "method", "") == "attestation" and sg.kind == "security" and len(attested) < 2:
            store.write(new_attestation(sg.id, "sam", v.roles[0], f"demo: {sg.name} reviewed"))
            attested.append(sg.id)
    return attested


def serve_process(env: dict[str, str], home: Path) -> subprocess.Popen:
    code = ("from flows.train_demo import scaling_deployment\n"
            "from tasks.enforcement import serve_scaling\n"
            "serve_scaling(scaling_deployment(), reconcile_every=5.0)\n")
    log = open(home / "serve.log", "w")  # noqa: SIM115 - the child process writes it for its lifetime
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def approval_service(env: dict[str, str], home: Path, port: int) -> subprocess.Popen:
    """The Slack interactivity endpoint, with a throwaway signing secret (no Slack app in the demo)."""
    import secrets

    env = {**env, "RSP_SLACK_SIGNING_SECRET": env.get("RSP_SLACK_SIGNING_SECRET") or secrets.token_hex(16)}
    log = open(home / "approval-service.log", "w")  # noqa: SIM115 - the child process writes it for its lifetime
    return subprocess.Popen([sys.executable, "-m", "rsp.cli", "serve-approvals", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def flow_run_state(run_id: Any) -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
        return state.type.value if state is not None else "UNKNOWN"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rsp.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=".rsp/demo", help="demo state folder (wiped at start)")
    ap.add_argument("--policy", default="anthropic-rsp", help="bundled framework id or policy file")
    ap.add_argument("--steps", type=int, default=6, help="training steps (checkpoints) to attempt")
    ap.add_argument("--start-compute", type=float, default=1e23, help="effective compute of step 1 (FLOP)")
    ap.add_argument("--growth", type=float, default=3.0, help="effective compute factor per step")
    ap.add_argument("--port", type=int, default=4200, help="Prefect server port (a free one if taken)")
    ap.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
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
    os.environ.update({
        "RSP_HOME": str(home), "PREFECT_HOME": str(home / "prefect"), "PREFECT_API_URL": api,
        "PREFECT_UI_URL": f"http://127.0.0.1:{port}", "DO_NOT_TRACK": "1",
        # The trainer's gate reads the evaluation lag bound from the same policy the watcher applies.
        "RSP_POLICY": str(Path(args.policy).resolve()) if Path(args.policy).is_file() else args.policy,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    })
    env = dict(os.environ)
    started = time.monotonic()
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
        attested = seed_evidence(policy)
        say(f"policy {policy.framework.name} v{policy.framework.version}; safeguards attested for the demo: "
            f"{', '.join(attested) or 'none'} (the others are missing)")
        say("serving the demo training flow as a scaling deployment (tags: scaling, training)")
        serve = serve_process(env, home)
        approvals = approval_service(env, home, approvals_port)
        wait_http(f"http://127.0.0.1:{approvals_port}/healthz", 60, "the approval service")
        say(f"approval service (Slack interactivity) at http://127.0.0.1:{approvals_port}/slack/interactions")
        from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

        # The environment is read once per process; pin this process's Prefect client to the demo server.
        with temporary_settings(updates={PREFECT_API_URL: api, PREFECT_UI_URL: f"http://127.0.0.1:{port}"}):
            run = start_training(args)
            say(f"training run started: {args.steps} steps from {args.start_compute:.1e} FLOP, "
                f"x{args.growth:g} per step")
            summary = watch_until_halted(args, run, started)
            print_summary(summary, port, args)
        return 0 if summary.get("halt") else 1
    finally:
        for proc in (serve, approvals):
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.no_keep_server:
            stop_pidfile(home / "prefect-server.pid")
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


def start_training(args: argparse.Namespace) -> Any:
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
        params = {"run_id": RUN_ID, "steps": args.steps, "start_compute": args.start_compute,
                  "compute_growth": args.growth, "step_seconds": 1.0, "await_evaluation_s": 600.0}
        return client.create_flow_run_from_deployment(dep.id, parameters=params).id


def watch_until_halted(args: argparse.Namespace, run_id: Any, started: float) -> dict[str, Any]:
    from flows.watch import watch
    from tasks.ledger import Ledger
    from tasks.settings import get_settings

    ledger = Ledger(get_settings().resolved_ledger_url)
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
    return {"evaluated": seen, "halt": halt_at, "training_state": flow_run_state(run_id),
            "open_halts": ledger.open_halts(), "ledger": ledger}


def print_summary(s: dict[str, Any], port: int, args: argparse.Namespace) -> None:
    from tasks.enforcement.prefect_api import list_scaling_deployments, prefect_client
    from tasks.settings import get_settings

    ledger = s["ledger"]
    verify = ledger.verify()
    written = sorted(d["checkpoint"]["step"] for d in ledger.determinations(RUN_ID))
    print("\n" + "=" * 78)
    print("SUMMARY")
    print("=" * 78)
    print(f"{'step':>5} {'effective compute':>18} {'assessment':>14} {'level':>7}  decision")
    for d in sorted(ledger.determinations(RUN_ID), key=lambda d: d["checkpoint"]["step"]):
        print(f"{d['checkpoint']['step']:>5} {d['checkpoint']['effective_compute']:>18.3e} {d['assessment']:>14} "
              f"{d['required_level']:>7}  {d['decision'].upper()}")
    h = s["halt"]
    if h is None:
        print("\nNo halt: every checkpoint's obligations were met (or the demo timed out).")
        return
    halt = ledger.halt(h.halt.halt_id)
    det = next(d for d in ledger.determinations(RUN_ID) if d["checkpoint"]["step"] == h.step)
    print(f"\nCrossing checkpoint: step {h.step} → {det['required_level']}: {'; '.join(det['level_reasons'])}")
    print(f"Halt {halt.halt_id} ({'open' if halt.is_open else 'lifted'}), halting "
          f"{', '.join(halt.payload['what']['activities'])}; obligations unmet:")
    for r in det["decision_reasons"]:
        print(f"  - {r}")
    with prefect_client() as client:
        deps = list_scaling_deployments(client, get_settings().scaling_tag)
    for dep in deps:
        print(f"Deployment {dep.name}: {'PAUSED' if dep.paused else 'not paused'}")
    print(f"Training run: {s['training_state']}; checkpoints written: {len(written)} (last step {max(written)}), "
          f"none after the halted step {h.step}" if max(written) == h.step else
          f"Training run: {s['training_state']}; last checkpoint step {max(written)} (halt at step {h.step})")
    print(f"Ledger: {'verifies' if verify.ok else 'BROKEN: ' + str(verify.reason)} ({verify.checked} events) — "
          f"rsp audit verify")
    runs = get_settings().resolved_runs_dir
    print(f"Report: {runs / RUN_ID / 'report.html'}  (rsp report {RUN_ID} regenerates it)")
    lifts = halt.payload.get("lifts_when", {})
    appr = lifts.get("approvals") or {}
    rsp = "rsp" if shutil.which("rsp") else os.path.relpath(Path(sys.executable).parent / "rsp")
    print("\nTo lift the halt: put the missing safeguards in place (attest them with `rsp evidence attest`),")
    print(f"then {appr.get('quorum', 2)} distinct approvers ({', '.join(appr.get('roles', []))}) approve:")
    print(f"  export RSP_HOME={os.environ['RSP_HOME']} PREFECT_API_URL=http://127.0.0.1:{port}/api")
    print(f"  {rsp} approve {halt.halt_id} --as riley --justification '...'")
    print(f"  {rsp} approve {halt.halt_id} --as casey --justification '...'")
    print(f"  {rsp} status")
    print(f"Notifications went to {get_settings().home / 'notifications.jsonl'} (set RSP_NOTIFY=slack,file and "
          "RSP_SLACK_BOT_TOKEN for Slack, where the message carries Approve / Reject buttons).")
    if not args.no_keep_server:
        print(f"\nPrefect UI: http://127.0.0.1:{port}  (server left running; stop it with "
              f"`python -m rsp.demo --stop --home {args.home}`)")
    print(json.dumps({"halt_id": halt.halt_id, "crossing_step": h.step}))


if __name__ == "__main__":
    sys.exit(main())
