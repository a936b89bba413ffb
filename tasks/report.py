"""The capability report: markdown for people, a table for the Prefect UI, a file in the run folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from policy.determination import Determination
from tasks.storage import write_atomic


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def artifact_key(text: str) -> str:
    # Prefect artifact keys: lowercase letters, digits and dashes only.
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:100]


def threshold_rows(det: Determination) -> list[dict[str, Any]]:
    rows = []
    for t in det.thresholds:
        m = next((m for m in t.measures if m.status == t.status), t.measures[0])
        rows.append({
            "threshold": t.id, "domain": t.domain, "status": t.status + ("" if t.gating else " (monitored)"),
            "benchmark": f"{m.benchmark} ({m.metric})", "n": m.n_questions, "mean": _f(m.value),
            "interval": f"[{_f(m.ci_low)}, {_f(m.ci_high)}]", "threshold_value": f"{m.comparison} {m.threshold:g}",
            "early_warning": f"{m.early_warning:g}", "triggers": t.triggers_level or "—",
        })
    return rows


def markdown(det: Determination, *, ledger_seq: int | None = None) -> str:
    ck = det.checkpoint
    title = f"{ck.run_id} step {ck.step}" if ck else "results"
    verdict = "PROCEED" if det.decision == "proceed" else f"HALT ({', '.join(det.halts)})"
    lines = [
        f"# Capability report: {title}",
        "",
        (f"**Decision: {verdict}** · required level **{det.required_level}** · "
         f"{det.assessment or 'ad hoc'} assessment"),
        "",
        f"- Policy: {det.policy.name} v{det.policy.version} (`{det.policy.id}`, sha256 `{det.policy.sha256[:16]}`)",
    ]
    if ck:
        lines.append(f"- Checkpoint: `{ck.uri}` — {ck.effective_compute:.3e} FLOP, digest `{(ck.digest or '')[:23]}`")
    if det.assessment_reason:
        lines.append(f"- Assessment: {det.assessment_reason}")
    if ledger_seq is not None:
        lines.append(f"- Ledger: determination recorded at seq {ledger_seq} (`rsp audit verify` checks the chain)")
    lines += ["", "## Why this level", ""] + [f"- {r}" for r in det.level_reasons]
    lines += ["", "## Thresholds", "", "| threshold | status | benchmark | n | mean [95% CI] | limit | early warning |",
              "|---|---|---|---|---|---|---|"]
    for r in threshold_rows(det):
        lines.append(f"| {r['threshold']} | {r['status']} | {r['benchmark']} | {r['n']} | {r['mean']} "
                     f"{r['interval']} | {r['threshold_value']} | {r['early_warning']} |")
    notable = [t for t in det.thresholds if t.status != "below"]
    if notable:
        lines += ["", "### Reasons", ""] + [f"- **{t.id}** ({t.status}): {t.reason}" for t in notable]
    lines += ["", "## Safeguards", ""]
    if not det.required_safeguards:
        lines.append("No safeguards required.")
    else:
        checks = {c.id: c for c in det.safeguards or ()}
        lines += ["| safeguard | kind | required by | state | evidence |", "|---|---|---|---|---|"]
        for req in det.required_safeguards:
            c = checks.get(req.id)
            lines.append(f"| {req.id} | {req.kind} | {', '.join(req.required_by)} | "
                         f"{c.state if c else 'not verified'} | {(c.evidence if c else '').replace('|', '/')} |")
    lines += ["", "## Data quality and integrity", "", f"- Quality gate: {det.quality.status}. {det.quality.summary}"]
    for bid, msgs in det.quality.failed_benchmarks.items():
        lines.append(f"  - {bid}: {'; '.join(msgs)}")
    for a in det.anomalies:
        lines.append(f"- Anomaly ({a.kind}) on {a.benchmark}: {a.message} — needs human review")
    for f in det.run_failures:
        lines.append(f"- Benchmark {f.benchmark} {f.kind}: {f.message}")
    lines += ["", "## Decision", ""] + [f"- {r}" for r in det.decision_reasons]
    return "\n".join(lines) + "\n"


def publish_report(det: Determination, folder: Path, *, ledger_seq: int | None = None) -> Path:
    """Write report.md and, when running under Prefect, publish it as artifacts."""
    text = markdown(det, ledger_seq=ledger_seq)
    path = Path(folder) / "report.md"
    write_atomic(path, text.encode())
    try:
        from prefect.artifacts import create_markdown_artifact, create_table_artifact
        from prefect.context import FlowRunContext

        if FlowRunContext.get() is None:
            return path
        run = det.checkpoint.run_id if det.checkpoint else "adhoc"
        create_markdown_artifact(text, key=artifact_key(f"capability-report-{run}"),
                                 description=f"Capability report ({det.decision})")
        create_table_artifact(threshold_rows(det), key=artifact_key(f"thresholds-{run}"),
                              description="Thresholds: n, mean, interval, limit, status")
    except Exception as exc:  # noqa: BLE001 - the report file is the record; a UI artifact failing must not lose it
        import logging

        logging.getLogger(__name__).warning("could not publish report artifacts: %s", exc)
    return path
