"""The capability report: markdown for people, a table for the Prefect UI, a file in the run folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from policy.determination import Determination
from tasks.storage import write_atomic


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


# The Prefect UI renders table-artifact cells as markdown, where a cell starting with ">" is a
# quote block (">= 0.7" showed as a quote of "= 0.7"): comparisons are written as symbols instead.
COMPARISON_SYMBOLS = {">=": "≥", ">": "＞", "<=": "≤", "<": "＜"}


def comparison_text(comparison: str, threshold: float) -> str:
    """"≥ 0.7" for ">=" and 0.7: readable, and safe as a markdown table cell."""
    return f"{COMPARISON_SYMBOLS.get(comparison, comparison)} {threshold:g}"


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
            "interval": f"[{_f(m.ci_low)}, {_f(m.ci_high)}]", "threshold_value": comparison_text(m.comparison, m.threshold),
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


# Where the approval service serves the runs folder read-only (`GET /reports/<path>`); a link artifact
# must be one a browser opens from the Prefect UI, which `file://` links are not.
REPORTS_URL_ENV = "RSP_REPORTS_URL"
DEFAULT_REPORTS_URL = "http://127.0.0.1:8080/reports"


def report_url(path: Path, runs_dir: Path | None = None) -> str | None:
    """The http(s) URL of a file under the runs folder, as the approval service serves it; None for a
    file outside that folder (never a `file://` link)."""
    import os
    from urllib.parse import quote

    if runs_dir is None:
        from tasks.settings import get_settings

        runs_dir = get_settings().resolved_runs_dir
    try:
        rel = Path(path).resolve().relative_to(Path(runs_dir).resolve())
    except ValueError:
        return None
    base = (os.environ.get(REPORTS_URL_ENV) or DEFAULT_REPORTS_URL).rstrip("/")
    return f"{base}/{quote(rel.as_posix())}"


def served_report_file(runs_dir: Path, relative: str) -> Path | None:
    """The regular file `relative` names inside `runs_dir`, or None: anything that resolves outside it
    (`..`, an absolute path, a symlink pointing out) or is not a file is not served."""
    if not relative or "\x00" in relative:
        return None
    root = Path(runs_dir).resolve()
    try:
        target = (root / relative).resolve()
        target.relative_to(root)
    except (ValueError, OSError):
        return None
    return target if target.is_file() else None


def report_keys(det: Determination) -> tuple[str, str]:
    """(per-run key, per-checkpoint key) of a determination's capability report artifacts."""
    ck = det.checkpoint
    run = ck.run_id if ck else "adhoc"
    step = f"-step-{ck.step}" if ck else ""
    return artifact_key(f"capability-report-{run}"), artifact_key(f"capability-report-{run}{step}")


def publish_report(det: Determination, folder: Path, *, ledger_seq: int | None = None,
                   latest_step: int | None = None) -> Path:
    """Write report.md and, when running under Prefect, publish it as artifacts: keyed per checkpoint
    always, and per run only when this is the run's latest step (`latest_step`: the highest step the
    run has a determination for), so re-running an earlier step cannot hide a later halt."""
    text = markdown(det, ledger_seq=ledger_seq)
    path = Path(folder) / "report.md"
    write_atomic(path, text.encode())
    try:
        from prefect.artifacts import create_markdown_artifact, create_table_artifact
        from prefect.context import FlowRunContext

        if FlowRunContext.get() is None:
            return path
        ck = det.checkpoint
        per_run, per_checkpoint = report_keys(det)
        is_latest = ck is None or latest_step is None or ck.step >= latest_step
        description = f"Capability report ({det.decision})"
        for key in (per_checkpoint, per_run) if is_latest else (per_checkpoint,):
            create_markdown_artifact(text, key=key, description=description)
        create_table_artifact(threshold_rows(det), key=per_checkpoint.replace("capability-report-", "thresholds-", 1),
                              description="Thresholds: n, mean, interval, limit, status")
    except Exception as exc:  # noqa: BLE001 - the report file is the record; a UI artifact failing must not lose it
        import logging

        logging.getLogger(__name__).warning("could not publish report artifacts: %s", exc)
    return path
