"""The demo scaling flow: a training run that writes checkpoints of growing effective compute.

It is what a halt stops. Every step it asks the scaling gate first; the very first thing
it does is `guard_flow_start`, so a run started while halted (by hand, by an automation,
after a serve restart, or by calling this function directly) records who started it in
the ledger and ends before its first step.

A step is: gate check, `step_seconds` of "training", then the step's checkpoint (files,
then the manifest last), then its report to the gate (`checkpoint.written`). A halt that
lands mid-step lets that step's checkpoint be written (the compute is already spent) and
stops the run at the next check.

The reports are what the policy's evaluation lag bound counts: with no watcher running
(or evaluation failing), the run stops at its gate once it holds
`cadence.max_unevaluated_checkpoints` checkpoints without a determination, or once the
oldest of them is older than `cadence.max_evaluation_lag` (an `evaluation_overdue` halt,
lifted by itself when the determinations catch up). The gate never creates a ledger: run
`rsp init` first (or start `rsp watch` / `rsp serve`); `ledger_id` (or RSP_LEDGER_ID) pins
the ledger the run must use.

    python -m flows.train_demo             # serve it as a scaling deployment (see serve_scaling)

`model="simulated"` (default) writes a placeholder weight file and a manifest with model
{"kind": "simulated"}. `model="tiny-torch"` (needs the `torch` extra: torch and
transformers) trains a ~3,000-parameter GPT-2 on CPU and saves a Hugging Face folder per
checkpoint (model {"kind": "huggingface", "path": "hf"}).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect import flow

from tasks.gate import ScalingGate, guard_flow_start

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

    from tasks.stores import CheckpointStore

FLOW_NAME = "train-demo"
ACTIVITY = "training"


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("rsp.train_demo")


def effective_compute(start_compute: float, growth: float, step: int) -> float:
    """FLOP at `step` (1-based): start_compute at step 1, times `growth` per step."""
    return float(start_compute) * float(growth) ** (step - 1)


def _last_step(store: CheckpointStore, run_id: str) -> int:
    prefix = f"{run_id}/"
    last = 0
    for ref in store.list_manifests(start_after=prefix):
        if not ref.key.startswith(prefix):
            break
        tail = ref.key[len(prefix):]
        if tail.startswith("step-") and tail[5:].isdigit():
            last = max(last, int(tail[5:]))
    return last


class _TinyTorchTrainer:
    """A GPT-2 of a few thousand parameters learning to count mod 32, on CPU."""

    def __init__(self, seed: int) -> None:
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(seed)
        self.torch = torch
        config = GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2, n_inner=32)
        self.model = GPT2LMHeadModel(config)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=3e-3)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def train(self, iterations: int) -> float:
        torch = self.torch
        self.model.train()
        loss_value = float("nan")
        for _ in range(iterations):
            start = torch.randint(0, 32, (8, 1))
            batch = (start + torch.arange(16)) % 32
            out = self.model(input_ids=batch, labels=batch)
            self.optimizer.zero_grad()
            out.loss.backward()
            self.optimizer.step()
            loss_value = float(out.loss.detach())
        return loss_value

    def files(self) -> dict[str, bytes]:
        with tempfile.TemporaryDirectory(prefix="tiny-torch-") as tmp:
            self.model.save_pretrained(tmp, safe_serialization=True)
            return {f"hf/{p.name}": p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def _await_determination(gate: ScalingGate, run_id: str, step: int, timeout_s: float) -> None:
    ledger = gate.ledger  # the run's one ledger, opened by its gate
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        gate.check(run_id, ACTIVITY)  # a halt that lands while waiting stops the run at once
        if any(d["checkpoint"]["step"] == step for d in ledger.determinations(run_id)):
            return
        time.sleep(0.5)
    raise TimeoutError(f"no determination for {run_id} step {step} within {timeout_s:g} s; not training further")


def _simulated_files(run_id: str, step: int, compute: float) -> dict[str, bytes]:
    # Deterministic bytes: the same run and step always produce the same "weights".
    seed = hashlib.sha256(f"{run_id}:{step}:{compute!r}".encode()).digest()
    return {"weights.bin": seed * 32}


@flow(name=FLOW_NAME, retries=0)
def train_demo(
    run_id: str = "demo-run",
    steps: int = 5,
    start_compute: float = 1e21,
    compute_growth: float = 2.0,
    checkpoint_store: str | None = None,
    step_seconds: float = 1.0,
    model: Literal["simulated", "tiny-torch"] = "simulated",
    ledger_url: str | None = None,
    await_evaluation_s: float = 0.0,
    ledger_id: str | None = None,
) -> dict[str, Any]:
    """Train `steps` more steps of `run_id`, one checkpoint per step, checking the gate first.

    Resumes after the run's last checkpoint in the store. Raises `ScalingHalted` when a
    halt covers the run, at start (recorded as `scaling.run_blocked`) or before a step.
    With `await_evaluation_s` > 0 each step first waits (up to that long) for the previous
    checkpoint's determination, as a lab does that gates every training stage on its
    evaluation; no determination in time stops the run (no evaluation, no more scaling).
    `ledger_url` / `ledger_id`: the ledger the run must use (default: settings); no ledger
    there, or one with another identity, stops the run (`GateUnavailable`)."""
    from tasks.manifest import HuggingFaceModel, new_manifest
    from tasks.stores import checkpoint_key, from_uri

    if steps < 0 or step_seconds < 0 or start_compute <= 0 or compute_growth <= 0:
        raise ValueError("steps and step_seconds must be >= 0; start_compute and compute_growth > 0")
    log = _logger()
    gate = ScalingGate(ledger_url, ledger_id=ledger_id)
    guard_flow_start(run_id, ACTIVITY, gate=gate)
    store = from_uri(checkpoint_store, create=True)
    first = _last_step(store, run_id) + 1
    trainer = _TinyTorchTrainer(seed=first) if model == "tiny-torch" else None
    written: list[str] = []
    for step in range(first, first + steps):
        if await_evaluation_s > 0 and written:
            _await_determination(gate, run_id, step - 1, await_evaluation_s)
        gate.check(run_id, ACTIVITY)
        started = time.monotonic()
        compute = effective_compute(start_compute, compute_growth, step)
        if trainer is not None:
            loss = trainer.train(iterations=20)
            files, spec = trainer.files(), HuggingFaceModel(path="hf")
            notes = f"tiny-torch: {trainer.n_params} parameters, loss {loss:.4f}"
        else:
            files, spec, notes = _simulated_files(run_id, step, compute), None, None
        left = step_seconds - (time.monotonic() - started)
        if left > 0:
            time.sleep(left)
        key = checkpoint_key(run_id, step)
        checkpoint = store.put_checkpoint(key, files, new_manifest(run_id, step, compute, spec, notes=notes))
        gate.checkpoint_written(run_id, step, uri=checkpoint.uri, effective_compute=compute)
        written.append(key)
        log.info("checkpoint %s written (%.3g FLOP)", key, compute)
    return {"run_id": run_id, "first_step": first, "written": written, "store": store.uri}


def scaling_deployment(
    name: str = FLOW_NAME,
    *,
    parameters: dict[str, Any] | None = None,
    scaling_tag: str | None = None,
    extra_tags: tuple[str, ...] = (),
    **kwargs: Any,
) -> RunnerDeployment:
    """train_demo as a deployment tagged as a scaling flow (the scaling tag, plus "training")."""
    if scaling_tag is None:
        from tasks.settings import get_settings

        scaling_tag = get_settings().scaling_tag
    deployment: RunnerDeployment = train_demo.to_deployment(  # type: ignore[assignment]  # sync call
        name=name, tags=[scaling_tag, ACTIVITY, *extra_tags], parameters=parameters or {}, **kwargs
    )
    return deployment


if __name__ == "__main__":
    from tasks.enforcement import serve_scaling

    serve_scaling(scaling_deployment())
