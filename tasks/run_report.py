"""The run report: every determination of one training run, read back from the ledger.

A plot per benchmark of its score (with the confidence interval) against effective
compute across the run's checkpoints, with the policy's threshold and early-warning
lines and the first checkpoint that required more than the baseline marked, and the forecast
(`policy/forecast.py`): the fitted curve, its bootstrap band and, per threshold, the forecast
crossing with its band (drawn when the policy the run was decided under can be read); then the
latest determination's thresholds and safeguards, and the forecasts. Written as one standalone HTML file
(the plot embedded, no network needed to view it) in the run's folder, and published
as Prefect artifacts when running under Prefect. `rsp report RUN` regenerates it.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policy.determination import Determination
from tasks.storage import write_atomic

if TYPE_CHECKING:
    from policy.forecast import MeasureForecast
    from policy.schema import Policy


def _series(dets: list[dict[str, Any]]) -> dict[tuple[str, str], list[tuple[float, int, float, float, float]]]:
    out: dict[tuple[str, str], list[tuple[float, int, float, float, float]]] = {}
    for d in dets:
        ck = d.get("checkpoint") or {}
        for s in d.get("benchmarks", []):
            if s.get("mean") is None:
                continue
            out.setdefault((s["benchmark"], s["metric"]), []).append(
                (float(ck["effective_compute"]), int(ck["step"]), s["mean"], s["ci_low"], s["ci_high"]))
    return {k: sorted(v) for k, v in out.items()}


def _limits(dets: list[dict[str, Any]]) -> dict[tuple[str, str], list[tuple[str, float, float]]]:
    """(benchmark, metric) → [(threshold id, threshold, early warning)] from the latest determination."""
    out: dict[tuple[str, str], list[tuple[str, float, float]]] = {}
    for t in dets[-1].get("thresholds", []) if dets else []:
        for m in t.get("measures", []):
            out.setdefault((m["benchmark"], m["metric"]), []).append((t["id"], m["threshold"], m["early_warning"]))
    return out


def first_escalation(dets: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first determination that required more than the baseline level."""
    for d in sorted(dets, key=lambda d: d["checkpoint"]["step"]):
        if d.get("required_level_rank", 0) > 0:
            return d
    return None


def plot_png(dets: list[dict[str, Any]], title: str, forecasts: list[MeasureForecast] | None = None) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, limits = _series(dets), _limits(dets)
    keys = sorted(series)
    cols = 3 if len(keys) > 4 else max(1, len(keys))
    rows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    crossing = first_escalation(dets)
    by_key: dict[tuple[str, str], list[MeasureForecast]] = {}
    for f in forecasts or ():
        by_key.setdefault((f.benchmark, f.metric), []).append(f)
    for ax, key in zip(axes.flat, keys):
        pts = series[key]
        _plot_forecast(ax, by_key.get(key, []), pts[0][0], pts[-1][0])
        x = [p[0] for p in pts]
        y = [p[2] for p in pts]
        err = [[p[2] - p[3] for p in pts], [p[4] - p[2] for p in pts]]
        ax.errorbar(x, y, yerr=err, fmt="o-", color="#1f4e79", ms=4, capsize=3, lw=1.2, label="mean, 95% CI")
        for tid, thr, ew in limits.get(key, []):
            ax.axhline(thr, color="#c0392b", lw=1, ls="-")
            ax.axhline(ew, color="#e69f00", lw=1, ls="--")
            ax.annotate(tid, (1.0, thr), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                        fontsize=7, color="#c0392b")
        if crossing is not None:
            ax.axvline(crossing["checkpoint"]["effective_compute"], color="#7f8c8d", lw=1, ls=":")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{key[0]} ({key[1]})", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("effective compute (FLOP)", fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    legend = "red: threshold, orange dashed: early warning, dotted: first escalation"
    if forecasts:
        legend += ", grey band: forecast, ◆: forecast crossing (bar: its band)"
    fig.suptitle(f"{title}  —  {legend}", fontsize=9)
    # Fixed margins in inches, not tight_layout: measuring every tick label's box took half the
    # plot's time (0.8 s of 1.6 s for 9 panels), and the panels and labels are the same every time.
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.45 / width, right=1 - 0.2 / width, bottom=0.45 / height, top=1 - 0.55 / height,
                        wspace=0.2, hspace=0.45)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _plot_forecast(ax: Any, forecasts: list[MeasureForecast], first: float, last: float) -> None:
    """The fitted curve and its band (once per benchmark and metric), up to 30x the latest compute,
    and each threshold's forecast crossing (a diamond at the threshold, its band as a bar)."""
    import numpy as np

    fitted = [f for f in forecasts if f.curve.ok]
    if not fitted:
        return
    right = last * 30.0
    xs = np.geomspace(first, right, 120)
    curve = fitted[0].curve
    low, high = curve.band_at(xs)
    ax.fill_between(xs, low, high, color="#7f8c8d", alpha=0.18, lw=0, label=f"forecast, {curve.band:.0%} band")
    ax.plot(xs, curve.predict(xs), color="#7f8c8d", lw=1, ls="--")
    for f in fitted:
        c = f.curve
        if c.crossing is None or c.crossing > right:
            continue
        lo_x = c.earliest if c.earliest is not None else c.crossing
        hi_x = min(c.latest if c.latest is not None else right, right)
        ax.errorbar([c.crossing], [f.threshold], xerr=[[max(c.crossing - lo_x, 0.0)], [max(hi_x - c.crossing, 0.0)]],
                    fmt="D", color="#8e44ad", ms=4, capsize=3, lw=1)


def _forecast_rows(forecasts: list[MeasureForecast], next_step: float | None) -> list[list[Any]]:
    def flop(v: float | None) -> str:
        return "never" if v is None else f"{v:.2e}"

    return [[f.measure, f.status + (" — WARNING" if f.warns(next_step) else ""), f.curve.checkpoints,
             flop(f.curve.crossing) if f.curve.ok else "—",
             f"{flop(f.curve.earliest)} – {flop(f.curve.latest)}" if f.curve.ok else "—",
             f.describe() if not f.curve.ok else f.curve.reason] for f in forecasts]


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(run_id: str, dets: list[dict[str, Any]], png: bytes, forecasts: list[MeasureForecast] | None = None,
                next_step: float | None = None, recorded_warnings: list[dict[str, Any]] | None = None,
                forecast_note: str | None = None, halts: list[dict[str, Any]] | None = None) -> str:
    from tasks.report import threshold_rows

    latest = Determination.model_validate({k: v for k, v in dets[-1].items()
                                           if k in Determination.model_fields})
    crossing = first_escalation(dets)
    per_ckpt = [[d["checkpoint"]["step"], f"{d['checkpoint']['effective_compute']:.2e}", d.get("assessment"),
                 d["required_level"], d["decision"], ", ".join(d.get("halts", [])) or "—"] for d in dets]
    thr = [[r["threshold"], r["status"], r["benchmark"], r["n"], f"{r['mean']} {r['interval']}",
            r["threshold_value"], r["early_warning"], r["triggers"]] for r in threshold_rows(latest)]
    checks = {c.id: c for c in latest.safeguards or ()}
    sg = [[r.id, r.kind, ", ".join(r.required_by), checks[r.id].state if r.id in checks else "not verified",
           checks[r.id].evidence if r.id in checks else ""] for r in latest.required_safeguards]
    cross = (f"first escalation: step {crossing['checkpoint']['step']} → {crossing['required_level']} "
             f"({'; '.join(crossing.get('level_reasons', []))})" if crossing else "no escalation above baseline")
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left}"
             "th{background:#f4f4f4}.halt{color:#b00;font-weight:bold}.ok{color:#070;font-weight:bold}")
    verdict = (f"<span class='halt'>HALT ({', '.join(latest.halts)})</span>" if latest.decision == "halt"
               else "<span class='ok'>PROCEED</span>")
    latest_halt = next((h for h in halts or () if h["step"] == dets[-1]["checkpoint"]["step"]), None)
    if latest.decision == "halt" and latest_halt and latest_halt["lifted_at"]:  # decided HALT, since lifted
        verdict += (f" · <span class='ok'>halt lifted {html.escape(latest_halt['lifted_at'])} by "
                    f"{html.escape(', '.join(latest_halt['approvers']))}</span>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>rsp-gate report: {html.escape(run_id)}</title>
<style>{style}</style></head><body>
<h1>Run {html.escape(run_id)}</h1>
<p>Policy {html.escape(latest.policy.name)} v{html.escape(latest.policy.version)} (sha256
<code>{latest.policy.sha256[:16]}</code>) · {len(dets)} determinations · {html.escape(cross)}</p>
<p>Latest decision: {verdict} · required level <b>{html.escape(latest.required_level)}</b></p>
{_halts_html(halts)}
<img alt="scores against effective compute" src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Checkpoints</h2>{_table(["step", "effective compute", "assessment", "level", "decision", "halts"], per_ckpt)}
<h2>Thresholds (latest checkpoint)</h2>
{_table(["threshold", "status", "benchmark", "n", "mean [CI]", "limit", "early warning", "triggers"], thr)}
<h2>Safeguards (latest checkpoint)</h2>
{_table(["safeguard", "kind", "required by", "state", "evidence"], sg) if sg else "<p>None required.</p>"}
<h2>Forecast</h2>{_forecast_html(forecasts, next_step, recorded_warnings, forecast_note)}
<h2>Decision</h2><ul>{"".join(f"<li>{html.escape(r)}</li>" for r in latest.decision_reasons)}</ul>
<p><small>Every row above is read from the hash-chained ledger; verify it with <code>rsp audit verify</code>.</small></p>
</body></html>
"""


def halt_story(ledger: Any, run_id: str) -> list[dict[str, Any]]:
    """Each halt a determination of this run opened: why, the votes (channel, verified), the refusals,
    and the lift (when, by whom, what was re-verified), from the ledger."""
    from tasks.ledger.events import VoteRecorded, VoteRefused

    story = []
    for halt in ledger.halts():
        cause = (halt.payload.get("why") or {}).get("determination") or {}
        if cause.get("run_id") != run_id:
            continue
        lift = halt.lift_payload or {}
        story.append({
            "halt_id": halt.halt_id, "opened_at": halt.opened_at, "step": cause.get("step"),
            "level": cause.get("required_level"), "unmet": list(cause.get("unmet_safeguards") or ()),
            "reasons": list((halt.payload.get("why") or {}).get("reasons") or ()),
            "votes": [{"at": e.ts, **e.payload} for e in ledger.events(kind=VoteRecorded.KIND, subject=halt.halt_id)],
            "refused": [{"at": e.ts, **e.payload} for e in ledger.events(kind=VoteRefused.KIND, subject=halt.halt_id)],
            "lifted_at": halt.lifted_at, "approvers": list(lift.get("approvers") or ()), "trigger": lift.get("trigger"),
            "verification": {k: (v or {}).get("state") for k, v in (lift.get("verification") or {}).items()},
        })
    return story


def _halts_html(halts: list[dict[str, Any]] | None) -> str:
    if not halts:
        return ""
    parts = ["<h2>Halts</h2>"]
    for h in halts:
        state = (f"<span class='ok'>lifted {html.escape(h['lifted_at'])}</span> by "
                 f"{html.escape(', '.join(h['approvers']))} (trigger: {html.escape(str(h['trigger']))})"
                 if h["lifted_at"] else "<span class='halt'>open</span>")
        parts.append(f"<h3>{html.escape(h['halt_id'])}: opened {html.escape(h['opened_at'])} at step {h['step']} "
                     f"({html.escape(str(h['level']))}), {state}</h3>")
        parts.append("<p>Why: " + html.escape("; ".join(h["reasons"]) or "—") + "</p>")
        votes = [[v["at"], v.get("person"), v.get("role") or ", ".join(v.get("roles") or ()), v.get("decision"),
                  v.get("channel"), "verified" if v.get("verified") else "not verified", v.get("justification")]
                 for v in h["votes"]]
        votes += [[v["at"], v.get("person"), "", f"REFUSED ({v.get('code')})", v.get("channel"), "",
                   v.get("reason")] for v in h["refused"]]
        parts.append(_table(["at", "person", "role", "vote", "channel", "signature", "justification"], sorted(
            votes, key=lambda r: str(r[0]))) if votes else "<p>No votes yet.</p>")
        if h["verification"]:
            parts.append("<p>Safeguards re-verified at the lift: " + html.escape(", ".join(
                f"{k} {v}" for k, v in h["verification"].items())) + "</p>")
    return "\n".join(parts)


def _forecast_html(forecasts: list[MeasureForecast] | None, next_step: float | None,
                   recorded: list[dict[str, Any]] | None, note: str | None) -> str:
    if not forecasts:
        return f"<p>No forecast: {html.escape(note or 'no policy to forecast against')}.</p>"
    head = ("<p>Each measure's scores fitted against log effective compute (a logistic from the benchmark's "
            "chance score, bootstrapped over checkpoints). A warning: the band's earliest crossing comes before "
            f"the next comprehensive step, at {'—' if next_step is None else f'{next_step:.2e}'} FLOP.</p>")
    table = _table(["measure", "status", "checkpoints", "forecast crossing (FLOP)", "band (FLOP)", "fit"],
                   _forecast_rows(forecasts, next_step))
    rec = "".join(f"<li>step {html.escape(str(w.get('step')))}: {html.escape(str(w.get('message')))}</li>"
                  for w in recorded or ())
    return head + table + (f"<p>Forecast warnings recorded:</p><ul>{rec}</ul>" if rec else "")


def run_forecasts(dets: list[dict[str, Any]], policy: Policy | None = None
                  ) -> tuple[list[MeasureForecast], float | None, str | None]:
    """(forecasts, next comprehensive compute, why there are none) for the run's determinations, under
    `policy` or else the policy the latest determination names (if it still has that sha256)."""
    from policy.forecast import forecast_measures, last_comprehensive_compute, next_comprehensive_compute
    from policy.identity import policy_sha256

    if policy is None:
        from tasks.inputs import read_policy

        ref = dets[-1].get("policy_ref")
        if not ref:
            return [], None, "the determinations do not name their policy"
        try:
            policy = read_policy(ref)
        except Exception as exc:  # noqa: BLE001 - no forecast, said why; the report is still written
            return [], None, f"policy {ref} unreadable: {exc}"
        if policy_sha256(policy) != (dets[-1].get("policy") or {}).get("sha256"):
            return [], None, f"policy {ref} changed since the latest determination"
    next_step = next_comprehensive_compute(policy.cadence, last_comprehensive_compute(dets))
    return forecast_measures(policy, dets), next_step, None


def write_run_report(ledger: Any, runs_dir: Path, run_id: str, policy: Policy | None = None) -> Path | None:
    """Regenerate <runs_dir>/<run_id>/report.html (+ scores.png) from the ledger; None if no determinations.
    The forecast uses `policy`, else the policy the determinations name (none if it cannot be read)."""
    from tasks.ledger.events import ForecastWarning

    dets = sorted(ledger.determinations(run_id), key=lambda d: (d["checkpoint"]["step"]))
    if not dets:
        return None
    folder = Path(runs_dir) / run_id
    forecasts, next_step, note = run_forecasts(dets, policy)
    recorded = [e.payload for e in ledger.events(kind=ForecastWarning.KIND, subject=run_id)]
    png = plot_png(dets, f"run {run_id}", forecasts)
    write_atomic(folder / "scores.png", png)
    path = folder / "report.html"
    write_atomic(path, render_html(run_id, dets, png, forecasts, next_step, recorded, note,
                                   halts=halt_story(ledger, run_id)).encode())
    _publish(run_id, path, dets, Path(runs_dir))
    return path


def _publish(run_id: str, path: Path, dets: list[dict[str, Any]], runs_dir: Path) -> None:
    try:
        from prefect.artifacts import create_link_artifact
        from prefect.context import FlowRunContext

        from tasks.report import artifact_key, report_url

        if FlowRunContext.get() is None:
            return
        latest = dets[-1]
        url = report_url(path, runs_dir)
        if url is None:  # outside the served runs folder: no link a browser could open
            return
        create_link_artifact(url, link_text=f"Run report: {run_id}",
                             key=artifact_key(f"run-report-{run_id}"),
                             description=f"{len(dets)} determinations; latest: {latest['required_level']}, "
                                         f"{latest['decision']}")
    except Exception as exc:  # noqa: BLE001 - the file is the record; a UI link failing must not lose it
        import logging

        logging.getLogger(__name__).warning("could not publish the run report link: %s", exc)
