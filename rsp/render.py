"""Human-readable tables for policies and determinations (rich, plain when not a terminal)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from policy.determination import Determination
from policy.schema import AttestationVerification, Policy

_STATUS_STYLE = {"below": "green", "early_warning": "yellow", "undetermined": "magenta", "crossed": "red"}


def _console() -> Console:
    return Console(width=160, soft_wrap=False)


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def decisive_measure(th):
    """The measure whose status became the threshold's status (the one a reader should look at)."""
    return next((m for m in th.measures if m.status == th.status), th.measures[0])


def render_policy(p: Policy) -> None:
    from policy.identity import policy_sha256

    c = _console()
    f = p.framework
    c.print(f"[bold]{f.name}[/bold] ({f.id}) v{f.version}, effective {f.effective_date}")
    c.print(f"source: {f.source}")
    c.print(f"sha256: {policy_sha256(p)}")
    c.print(f"[italic]{f.operationalisation}[/italic]\n")
    t = Table(title="Safety levels (lowest first)")
    for col in ("level", "name", "requires"):
        t.add_column(col)
    for lv in p.levels:
        t.add_row(lv.id, lv.name, ", ".join(lv.requires) or "—")
    c.print(t)
    domains = {d.id: d.status for d in p.domains}
    t = Table(title="Capability thresholds (if-then rules)")
    for col in ("id", "domain", "if", "early warning", "then level", "+ safeguards"):
        t.add_column(col)
    for th in p.thresholds:
        cond = f" {th.combine.upper()} ".join(f"{m.metric}({m.benchmark}) {m.comparison} {m.threshold:g}"
                                              for m in th.measures)
        ew = ", ".join(f"{m.early_warning:g}" for m in th.measures)
        then = th.triggers_level or f"({domains[th.domain]}: report only)"
        t.add_row(th.id, th.domain, cond, ew, then, ", ".join(th.additional_safeguards) or "—")
    c.print(t)
    t = Table(title="Safeguards")
    for col in ("id", "kind", "verified by", "halts if unmet"):
        t.add_column(col)
    for s in p.safeguards:
        v = s.verification
        how = (f"attestation by {'/'.join(v.roles)}, max {v.max_age_days} d"
               if isinstance(v, AttestationVerification) else f"automated check '{v.check}'")
        t.add_row(s.id, s.kind, how, ", ".join(s.halts))
    c.print(t)
    cad, ap, fc = p.cadence, p.approvals, p.fail_closed
    c.print(f"Cadence: comprehensive at {cad.comprehensive_compute_factor:g}x effective compute or every "
            f"{cad.comprehensive_max_interval_days} days; preliminary otherwise "
            f"({', '.join(cad.preliminary_benchmarks) or 'all benchmarks'}); escalate on early warning: "
            f"{cad.escalate_on_early_warning}")
    c.print(f"Approvals to lift a halt: {ap.quorum} distinct approvers from {', '.join(ap.roles)}"
            + (f", including {', '.join(ap.must_include)}" if ap.must_include else ""))
    c.print(f"Fail closed: undetermined counts as crossed; rule out by {fc.rule_out} at {fc.confidence:.0%} "
            "(exact Clopper-Pearson bound on the question sum); "
            f"max error rate {fc.max_error_rate:.0%}")


def render_determination(d: Determination) -> None:
    c = _console()
    head = f"Policy {d.policy.id} v{d.policy.version} (sha256 {d.policy.sha256[:12]})"
    if d.checkpoint:
        head += f" · checkpoint {d.checkpoint.run_id} step {d.checkpoint.step} " \
                f"({d.checkpoint.effective_compute:.2e} FLOP)"
    if d.assessment:
        head += f" · {d.assessment} assessment"
    c.print(head)
    t = Table(title="Thresholds")
    for col in ("threshold", "domain", "status", "decided by", "value [CI]", "n", "limit (early warning)"):
        t.add_column(col, overflow="fold")
    for th in d.thresholds:
        m = decisive_measure(th)
        val = f"{_fmt(m.value)} [{_fmt(m.ci_low)}, {_fmt(m.ci_high)}]"
        limit = f"{m.comparison} {m.threshold:g} ({m.early_warning:g})"
        status = th.status if th.gating else f"{th.status} (monitored)"
        if th.carried_from:
            status += " (carried)"
        t.add_row(th.id, th.domain, f"[{_STATUS_STYLE[th.status]}]{status}[/]", f"{m.benchmark} ({m.metric})",
                  val, str(m.n_questions), limit)
    c.print(t)
    for th in d.thresholds:
        if th.status != "below":
            c.print(f"  {th.id}: {th.reason}")
    c.print(f"[bold]Required level: {d.required_level}[/bold] — " + "; ".join(d.level_reasons))
    if d.required_safeguards:
        c.print("Safeguards required: " + ", ".join(
            f"{r.id} ({'/'.join(r.halts)})" for r in d.required_safeguards))
    if d.quality.status != "not_run":
        c.print(f"Data quality: {d.quality.status} {d.quality.summary}")
    for a in d.anomalies:
        c.print(f"[yellow]Anomaly[/yellow] {a.benchmark}: {a.kind}: {a.message}")
    for f in d.run_failures:
        c.print(f"[red]Run failure[/red] {f.benchmark}: {f.kind}: {f.message}")
    verdict = "PROCEED" if d.decision == "proceed" else f"HALT ({', '.join(d.halts)})"
    c.print(f"[bold]Decision: {verdict}[/bold]")
    for r in d.decision_reasons:
        c.print(f"  - {r}")
