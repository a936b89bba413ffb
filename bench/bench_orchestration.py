"""Orchestration overhead: the gate's wall time against the same Inspect tasks run directly.

The direct side is what a lab would run without the gate: a fresh `python` process that calls
`inspect_ai.eval` on each of the policy's Inspect tasks in turn, with the same model and
arguments (imports and interpreter exit included, as with `inspect eval`). Against it:

1. `rsp evaluate` (a fresh process, as an operator or a cron job starts it) on one simulated
   checkpoint under the bundled Anthropic policy, at 20 and at 100 questions per benchmark;
2. a manual rerun from the Prefect UI: an `evaluate` deployment run under `rsp serve --cold`
   (a fresh interpreter per run, Prefect's default) and under `rsp serve` (warm: forked from a
   process that imported the heavy modules once, flows/warm.py), from the run's creation to its
   final state;
3. checkpoint-to-halt under each: from the `rsp.checkpoint.arrived` event a trainer emits for a
   checkpoint past every threshold without its safeguards, to the scaling gate closed for its run
   (`ScalingGate.blocking_halt`), against the direct run of all questions (the benchmarks alone).

One Prefect server (SQLite) is started first and not counted; each `rsp serve` gets a home of
its own (its first halt is its own) and is started before its clock does. Both sides write
Inspect logs; the direct side turns off the realtime sample buffer as the gate does for
simulated models. The issue's goal: at most 1.15x.

Run: python bench/bench_orchestration.py [--limits 20,100] [--repeats 1] [--modes cli,cold,warm]
"""
from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POLICY = "anthropic-rsp"
HALTING_COMPUTE = 1e27  # far past every threshold of the bundled policy: the determination halts


def direct_child(checkpoint_uri: str, limit: int | None, log_dir: str) -> None:
    """Child process: the policy's Inspect benchmarks on this checkpoint, straight through Inspect."""
    from inspect_ai import eval as inspect_eval

    from tasks.benchmarks import proxies
    from tasks.benchmarks.inspect_runner import inspect_model
    from tasks.checkpoint_uri import checkpoint_info, load_checkpoint
    from tasks.inputs import read_policy

    policy = read_policy(POLICY)
    info = checkpoint_info(load_checkpoint(checkpoint_uri)[1])
    for b in policy.benchmarks:
        if (b.runner or {}).get("type") != "inspect":
            continue
        model, model_args = inspect_model(info, b)
        inspect_eval(proxies.proxy_task(str(b.runner["task"])), model=model, model_args=model_args,
                     epochs=b.attempts, limit=limit, log_dir=str(Path(log_dir) / b.id), display="none",
                     log_realtime=False, score_display=False)


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          check=False)
    return time.perf_counter() - t0, done


def _checkpoint(store: Any, run_id: str, step: int, compute: float) -> str:
    from tasks.manifest import new_manifest
    from tasks.stores.base import checkpoint_key

    return str(store.put_checkpoint(checkpoint_key(run_id, step), {"w": b"x"},
                                    new_manifest(run_id, step, compute)).uri)


def direct(uri: str, limit: int | None, tmp: Path, env: dict[str, str]) -> float:
    logs = tmp / f"direct-{uuid.uuid4().hex[:6]}"
    cmd = [sys.executable, __file__, "--direct-child", uri, "--log-dir", str(logs)]
    seconds, done = _timed(cmd + (["--limit", str(limit)] if limit else []), env)
    if done.returncode != 0:
        raise SystemExit(f"direct Inspect run failed:\n{done.stderr[-3000:]}")
    return seconds


def evaluate_cli(uri: str, limit: int | None, env: dict[str, str]) -> float:
    rsp = str(Path(sys.executable).parent / "rsp")
    seconds, done = _timed([rsp, "evaluate", uri, "--policy", POLICY, "--json",
                            *(["--limit", str(limit)] if limit else [])], env)
    if done.returncode not in (0, 1):  # 0 proceed, 1 halt: both are evaluations
        raise SystemExit(f"rsp evaluate exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds


class Served:
    """`rsp serve` (warm or cold runs) with a home of its own, so its first halt is its own."""

    def __init__(self, tmp: Path, env: dict[str, str], warm: bool) -> None:
        from tasks.ledger import Ledger
        from tasks.stores.base import from_uri

        mode = "warm" if warm else "cold"
        self.home = tmp / f"serve-{mode}"
        self.home.mkdir(parents=True)
        self.env = {**env, "RSP_HOME": str(self.home), "RSP_LEDGER_URL": f"sqlite:///{self.home / 'ledger.db'}",
                    "RSP_SCALING_TAG": f"scaling-{uuid.uuid4().hex[:8]}"}
        Ledger(self.env["RSP_LEDGER_URL"]).close()
        self.store = from_uri(str(self.home / "checkpoints"), create=True)
        self.log_path = tmp / f"serve-{mode}.log"
        rsp = str(Path(sys.executable).parent / "rsp")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([rsp, "serve", "--policy", POLICY, "--interval", "3600", f"--{mode}"],
                                         env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        ready = "rsp serve: runs start warm" if warm else "rsp serve: Prefect UI"
        self._wait(lambda: ready in self.log(), 600, "rsp serve to be ready")
        time.sleep(3)  # the runner settles into its poll loop

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def checkpoint_to_halt(self) -> float:
        """Write a halting checkpoint, emit the trainer's event, and time until the gate blocks its run."""
        from prefect.events import emit_event

        from tasks.gate import ScalingGate

        run_id = f"served-{uuid.uuid4().hex[:6]}"
        uri = _checkpoint(self.store, run_id, 1, HALTING_COMPUTE)
        gate = ScalingGate(self.env["RSP_LEDGER_URL"])
        assert gate.blocking_halt(run_id) is None, "a fresh serve home has no halt yet"
        t0 = time.perf_counter()
        emit_event("rsp.checkpoint.arrived", resource={"prefect.resource.id": f"rsp.checkpoint.{run_id}"},
                   payload={"uri": uri})
        self._wait(lambda: gate.blocking_halt(run_id) is not None, 900, f"the halt of {uri}")
        return time.perf_counter() - t0

    def evaluate_run(self, limit: int) -> float:
        """A manual rerun from the Prefect UI: an evaluate deployment run, until its final state."""
        from prefect import get_client
        from prefect.deployments import run_deployment

        uri = _checkpoint(self.store, f"rerun-{uuid.uuid4().hex[:6]}", 1, 1e22)
        t0 = time.perf_counter()
        run = run_deployment("evaluate/evaluate", parameters={"checkpoint_uri": uri, "limit": limit}, timeout=0,
                             as_subflow=False)

        def final() -> bool:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(run.id).state
            return state is not None and state.is_final()

        self._wait(final, 900, f"evaluate run {run.id}")
        return time.perf_counter() - t0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limits", default="20,100", help="questions per benchmark, comma-separated (100 = all)")
    ap.add_argument("--repeats", type=int, default=1, help="measurements per cell (the table shows the median)")
    ap.add_argument("--modes", default="cli,cold,warm",
                    help="what to time against direct Inspect: cli (rsp evaluate, a fresh process), cold / warm "
                         "(rsp serve --cold / --warm: a UI rerun, and checkpoint-to-halt)")
    ap.add_argument("--direct-child", help=argparse.SUPPRESS)
    ap.add_argument("--log-dir", help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.direct_child:
        direct_child(args.direct_child, args.limit, args.log_dir)
        return

    from statistics import median

    from tasks.ledger import Ledger
    from tasks.stores.base import from_uri
    from tests.plugins.prefect_server import PrefectServerProcess

    limits = [int(x) for x in args.limits.split(",")]
    modes = args.modes.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="rsp-bench-orch-"))
    server = PrefectServerProcess(tmp / "prefect")
    print("starting a Prefect server (not counted)…", file=sys.stderr)
    server.start(timeout=300)
    home = tmp / "home"
    ledger_url = f"sqlite:///{home / 'ledger.db'}"
    env = {**os.environ, **server.env(), "RSP_HOME": str(home), "RSP_LEDGER_URL": ledger_url,
           "RSP_SCALING_TAG": f"scaling-{uuid.uuid4().hex[:8]}", "PYTHONPATH": str(ROOT),
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    os.environ.update(env)
    home.mkdir(parents=True)
    Ledger(ledger_url).close()
    store = from_uri(str(home / "checkpoints"), create=True)
    times: dict[str, list[float]] = {}

    def note(key: str, seconds: float) -> None:
        times.setdefault(key, []).append(seconds)
        print(f"  {key}: {seconds:.2f} s", file=sys.stderr)

    steps = itertools.count(1)
    try:
        for i in range(args.repeats):
            for limit in [*limits, None]:
                if limit is not None or any(m != "cli" for m in modes):  # None: the benchmarks alone, for halts
                    note(f"direct {limit or 'all'}", direct(_checkpoint(store, "direct", next(steps), 1e22), limit,
                                                            tmp, env))
            if "cli" in modes:
                for limit in limits:
                    note(f"cli {limit}", evaluate_cli(_checkpoint(store, "cli", next(steps), 1e22), limit, env))
            for mode in (m for m in ("cold", "warm") if m in modes):
                served = Served(tmp / f"r{i}", env, warm=mode == "warm")
                try:
                    note(f"{mode} halt", served.checkpoint_to_halt())
                    for limit in limits:
                        note(f"{mode} {limit}", served.evaluate_run(limit))
                finally:
                    served.stop()
    finally:
        server.stop()
    what = {"cli": "rsp evaluate (a fresh process)", "cold": "UI rerun under rsp serve --cold",
            "warm": "UI rerun under rsp serve (warm)"}
    rows = [(f"{what[m]}, {limit} questions", f"{m} {limit}", f"direct {limit}") for m in modes for limit in limits]
    rows += [(f"checkpoint-to-halt under rsp serve --{m} (all questions)", f"{m} halt", "direct all")
             for m in modes if m != "cli"]
    print(f"\n{'against direct Inspect (a fresh process), median of ' + str(args.repeats):<58} {'gate s':>8} "
          f"{'direct s':>9} {'ratio':>6}")
    for label, gate_key, direct_key in rows:
        g, d = median(times[gate_key]), median(times[direct_key])
        print(f"{label:<58} {g:>8.2f} {d:>9.2f} {g / d:>6.2f}")


if __name__ == "__main__":
    main()
