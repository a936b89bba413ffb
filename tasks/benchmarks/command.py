"""Runner `command`: any program that prints sample rows as JSON Lines on stdout.

Config: {type: command, command: "python my_eval.py --fast", [cwd: /path]}

The command is split with shlex and run without a shell (no injection through
policy text). It learns the checkpoint from the environment:

  RSP_RUN_ID, RSP_STEP, RSP_EFFECTIVE_COMPUTE, RSP_CHECKPOINT_DIGEST,
  RSP_MODEL_JSON (the checkpoint's model dict), RSP_BENCHMARK_ID,
  RSP_BENCHMARK_VERSION, RSP_ATTEMPTS, RSP_LOG_DIR, and RSP_LIMIT when a limit is set.

Each stdout line is one row: {"sample_id": ..., "attempt": 0, "score": 0.0..1.0} or
{"sample_id": ..., "score": null, "error": "..."}; "benchmark" and "version" may be
left out (they default to this benchmark's), and if given must match. Blank lines
are ignored. stdout and stderr are kept in `log_dir/<benchmark>/`.

A non-zero exit, a line that is not a valid row, or running past
`benchmark.timeout_s` raises `RunnerError`; on timeout the command's whole
process group is killed, so children it spawned do not linger.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from policy.errors import ResultsError
from policy.results import SampleTable
from policy.schema import Benchmark
from tasks.benchmarks.base import (
    CheckpointInfo,
    RunnerError,
    RunnerTimeout,
    check_rows,
    register_runner,
    rows_for,
    runner_config,
)

_TAIL = 800


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _TAIL else "..." + text[-_TAIL:]


def command_env(checkpoint: CheckpointInfo, benchmark: Benchmark, log_dir: Path, limit: int | None) -> dict[str, str]:
    env = {
        "RSP_RUN_ID": checkpoint.run_id,
        "RSP_STEP": str(checkpoint.step),
        "RSP_EFFECTIVE_COMPUTE": repr(float(checkpoint.effective_compute)),
        "RSP_CHECKPOINT_DIGEST": checkpoint.digest,
        "RSP_MODEL_JSON": json.dumps(dict(checkpoint.model), sort_keys=True),
        "RSP_BENCHMARK_ID": benchmark.id,
        "RSP_BENCHMARK_VERSION": benchmark.version,
        "RSP_ATTEMPTS": str(benchmark.attempts),
        "RSP_LOG_DIR": str(log_dir),
    }
    if limit is not None:
        env["RSP_LIMIT"] = str(limit)
    return env


def parse_rows(stdout: str, benchmark: Benchmark, *, source: str) -> SampleTable:
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(stdout.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunnerError(f"{source}: stdout line {lineno} is not JSON ({exc.msg}): {line[:120]!r}") from exc
        if not isinstance(row, dict):
            raise RunnerError(f"{source}: stdout line {lineno} is not a JSON object: {line[:120]!r}")
        rows.append(row)
    try:
        table = rows_for(benchmark, rows, source=f"{source}: stdout")
    except ResultsError as exc:
        raise RunnerError(str(exc)) from exc
    return check_rows(table, benchmark, source=source)


@register_runner("command")
class CommandRunner:
    def run(self, checkpoint: CheckpointInfo, benchmark: Benchmark, *, log_dir: Path,
            limit: int | None = None) -> SampleTable:
        cfg = runner_config(benchmark)
        command = cfg.get("command")
        if not isinstance(command, str) or not command.strip():
            raise RunnerError(f"{benchmark.id}: runner 'command' needs a non-empty 'command'")
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise RunnerError(f"{benchmark.id}: cannot split command {command!r}: {exc}") from exc
        out_dir = Path(log_dir) / benchmark.id
        out_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **command_env(checkpoint, benchmark, out_dir, limit)}
        source = f"{benchmark.id}: command {argv[0]!r}"
        started = time.monotonic()
        try:
            # Own session: on timeout we can kill the command and everything it started.
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    env=env, cwd=cfg.get("cwd"), text=True, start_new_session=True)
        except OSError as exc:
            raise RunnerError(f"{source} could not start: {exc}") from exc
        try:
            stdout, stderr = proc.communicate(timeout=benchmark.timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            stdout, stderr = proc.communicate()
            self._keep(out_dir, stdout, stderr)
            raise RunnerTimeout(f"{source} timed out after {benchmark.timeout_s:g} s (timeout_s); killed. "
                              f"stderr: {_tail(stderr) or '(empty)'}") from None
        self._keep(out_dir, stdout, stderr)
        if proc.returncode != 0:
            raise RunnerError(f"{source} exited with status {proc.returncode} after "
                              f"{time.monotonic() - started:.1f} s. stderr: {_tail(stderr) or '(empty)'}")
        return parse_rows(stdout, benchmark, source=source)

    @staticmethod
    def _keep(out_dir: Path, stdout: str, stderr: str) -> None:
        (out_dir / "command.stdout.jsonl").write_text(stdout or "")
        (out_dir / "command.stderr.txt").write_text(stderr or "")
