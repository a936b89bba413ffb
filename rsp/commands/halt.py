"""`rsp status`, `rsp halt list|open|reconcile`, `rsp gate check`: halts as an operator sees them.

    rsp status [--json]                     open halts, what lifts each, whether Prefect agrees, last reconcile,
                                            and each run's evaluation lag against the policy's bound
    rsp halt list [--all] [--json]          halts in the ledger (open only, unless --all)
    rsp halt open --reason TEXT [--activities training,deployment] [--runs a,b] [--by NAME] [--no-apply]
    rsp halt reconcile [--json]             make Prefect agree with every open halt now
    rsp gate check RUN_ID [--activity training] [--json]   exit 0 open, 1 halted, 2 error
    rsp gate checkpoint RUN_ID STEP [--uri URI]  a trainer reports a checkpoint it wrote (the lag bound counts it)

The ledger decides what is halted; Prefect (PREFECT_API_URL, or --api-url) is only where it
is applied, and `rsp status` shows where the two disagree instead of hiding it. Prefect
and SQLAlchemy are imported inside the commands.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rsp.commands.ledger import ledger_line, open_ledger
from rsp.console import EXIT_PROBLEM, die

if TYPE_CHECKING:
    from tasks.ledger import Halt, Ledger

LedgerOpt = Annotated[
    str | None,
    typer.Option("--ledger", help="SQLAlchemy URL of the ledger; default: settings (RSP_LEDGER_URL or <home>/ledger.db)."),
]
ApiOpt = Annotated[
    str | None, typer.Option("--api-url", help="Prefect API URL; default: PREFECT_API_URL.", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _ago(ts: str | None) -> str:
    if not ts:
        return ""
    try:
        seconds = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(ts)).total_seconds()
    except ValueError:
        return ""
    return f" ({seconds:.0f} s ago)" if seconds < 600 else f" ({seconds / 60:.0f} min ago)"


def _halt_summary(h: Halt) -> dict[str, Any]:
    from tasks.enforcement import describe_cause, describe_lift, scope_of

    scope = scope_of(h.payload)
    return {
        "halt_id": h.halt_id,
        "status": h.status,
        "opened_at": h.opened_at,
        "opened_seq": h.opened_seq,
        "opened_by": h.payload.get("opened_by"),
        "activities": list(scope.activities),
        "runs": list(scope.runs),
        "cause": describe_cause(h.payload),
        "lifts_when": describe_lift(h.payload),
        "lifts_when_detail": h.payload.get("lifts_when"),
        "lifted_at": h.lifted_at,
    }


def _with_approvals(store: Ledger, halts: list[Halt]) -> list[dict[str, Any]]:
    """Each halt's summary with, for an open halt that lifts by approval, where its approval stands
    (tally per role, the round's votes, the latest refused lift and refused vote)."""
    from policy.halts import lifts_automatically
    from rsp.approval_view import approval_summary, load_roster_or_none
    from tasks.settings import get_settings

    rows = [_halt_summary(h) for h in halts]
    if not any(h.is_open and not lifts_automatically(h.payload) for h in halts):
        return rows
    settings = get_settings()
    roster, roster_problem = load_roster_or_none(settings)
    for h, d in zip(halts, rows, strict=True):
        if h.is_open and not lifts_automatically(h.payload):
            d["approvals"] = approval_summary(store, h, settings=settings, roster=roster)
            d["approvals"]["roster_problem"] = roster_problem
        else:
            d["approvals"] = None
    return rows


def _print_approvals(d: dict[str, Any]) -> None:
    from rsp.approval_view import approval_lines

    a = d.get("approvals")
    if not a:
        return
    if a.get("roster_problem"):
        typer.echo(f"    note: {a['roster_problem']}")
    for line in approval_lines(a):
        typer.echo(line)


def _scope_text(d: dict[str, Any]) -> str:
    runs = "all scaling runs" if d["runs"] == ["*"] else "runs " + ", ".join(d["runs"])
    return f"halts {'+'.join(d['activities'])} of {runs}"


def _enforcement_failures() -> tuple[str, ...]:
    from tasks.ledger.events import HaltApplyFailed, HaltReconcileFailed

    return (HaltApplyFailed.KIND, HaltReconcileFailed.KIND)


def _last_enforcement(ledger: Ledger, halt_id: str) -> dict[str, Any] | None:
    from tasks.ledger.events import HaltApplied, HaltReconciled

    kinds = (HaltApplied.KIND, *_enforcement_failures(), HaltReconciled.KIND)
    last = None
    for ev in ledger.iter_events(subject=halt_id):
        if ev.kind in kinds:
            last = ev
    if last is None:
        return None
    return {"event": last.kind, "seq": last.seq, "at": last.ts, "error": last.payload.get("error")}


def _run_lags(ledger: Ledger, open_halts: list[Halt]) -> dict[str, Any]:
    """Each run's evaluation lag against the policy's bound (settings' policy, as the gate reads it)."""
    import datetime as dt

    from policy.halts import overdue_run
    from policy.lag import format_duration
    from tasks.enforcement.overdue import RunLagTracker, read_bound

    out: dict[str, Any] = {"bound": None, "policy_error": None, "runs": []}
    bound = None
    try:
        _, bound = read_bound(None)
        out["bound"] = {"max_unevaluated_checkpoints": bound.max_unevaluated_checkpoints,
                        "max_evaluation_lag": format_duration(bound.max_evaluation_lag),
                        "stated_by_policy": bound.stated, "text": bound.describe()}
    except Exception as exc:  # noqa: BLE001 - shown: the gate closes on an unreadable policy too
        out["policy_error"] = " ".join(str(exc).split())
    halted = {overdue_run(h.payload): h.halt_id for h in open_halts if overdue_run(h.payload)}
    now = dt.datetime.now(dt.UTC)
    for run_id in ledger.runs():
        tracker = RunLagTracker(run_id)
        tracker.refresh(ledger)
        row: dict[str, Any] = {"run_id": run_id, "newest_step": tracker.newest_step,
                               "last_determined_step": tracker.last_determined_step,
                               "unevaluated": tracker.unevaluated, "overdue_halt": halted.get(run_id)}
        if bound is not None:
            v = tracker.verdict(bound, now)
            row.update(oldest_unevaluated_step=v.oldest_unevaluated_step, lag_s=round(v.lag.total_seconds(), 1),
                       lag=format_duration(v.lag), overdue=v.overdue, reasons=list(v.reasons))
        out["runs"].append(row)
    return out


def _print_lags(lags: dict[str, Any]) -> None:
    echo = typer.echo
    runs = lags["runs"]
    if lags["policy_error"]:
        echo(f"evaluation lag: policy UNREADABLE ({lags['policy_error']}); the scaling gate is closed")
    else:
        echo(f"evaluation lag (bound: {lags['bound']['text']}): {len(runs)} run(s)")
    for r in runs:
        frontier = ("no determination yet" if r["last_determined_step"] is None
                    else f"determined through step {r['last_determined_step']}")
        if r["newest_step"] is None:
            echo(f"  {r['run_id']}  {frontier}; its trainer reports no checkpoints (the lag bound cannot count them)")
            continue
        line = f"  {r['run_id']}  newest checkpoint step {r['newest_step']}, {frontier}: "
        if r["unevaluated"] == 0:
            line += "caught up"
        else:
            line += f"{r['unevaluated']} without a determination"
            if r.get("lag") is not None:
                line += f", oldest (step {r['oldest_unevaluated_step']}) {r['lag']} ago"
            if r.get("overdue"):
                line += "  OVERDUE" + ("" if r["overdue_halt"] else " (the gate closes at its next check)")
        if r["overdue_halt"]:
            line += f"  halted by {r['overdue_halt']} (lifts when caught up)"
        echo(line)


# -- rsp status ---------------------------------------------------------------------------------------------


def status(
    ledger: LedgerOpt = None,
    api_url: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open halts, what lifts them, whether Prefect agrees, when the reconciler last checked.

    Prefect agrees when every scaling deployment a halt covers is paused and none of its runs
    is scheduled, pending, running or paused. Exit 1 when a halt is open and Prefect does not
    agree (or cannot be asked)."""
    from tasks.enforcement import enforcement_settings, last_reconcile
    from tasks.enforcement.enforce import halt_agreement, observe, summarize_deployments, summarize_queues, targets_of
    from tasks.enforcement.prefect_api import prefect_client, resolve_api_url, short_error

    store = open_ledger("status", ledger)
    try:
        open_halts = store.halts("open")
    except Exception as exc:  # noqa: BLE001 - one line, whatever the database said
        die("status", f"cannot read the ledger {store.url}: {exc}")
    cfg = enforcement_settings()
    try:
        halts = _with_approvals(store, open_halts)
    except Exception as exc:  # noqa: BLE001 - one line, whatever the database said
        die("status", f"cannot read the ledger {store.url}: {exc}")
    for d in halts:
        d["enforcement"] = _last_enforcement(store, d["halt_id"])
    prefect: dict[str, Any] = {"api_url": None, "reachable": False, "error": None, "deployments": [], "queues": []}
    observed = None
    try:
        prefect["api_url"] = resolve_api_url(api_url)
        with prefect_client(prefect["api_url"], timeout_s=5.0) as client:
            observed = observe(client, targets_of(open_halts), scaling_tag=cfg.scaling_tag, names=cfg.names,
                               queues=cfg.queues)
        prefect["reachable"] = True
        prefect["deployments"] = summarize_deployments(observed)
        prefect["queues"] = summarize_queues(observed)
    except Exception as exc:  # noqa: BLE001 - shown, not hidden: status must work with Prefect down
        prefect["error"] = short_error(exc)
    for d in halts:
        d["prefect"] = halt_agreement(observed, d["halt_id"]) if observed is not None else None
    reconciled = last_reconcile(cfg.state_path)
    problem = bool(halts) and (observed is None or any(not d["prefect"]["agrees"] for d in halts))
    try:
        ledger_id = store.ledger_id
        lags = _run_lags(store, open_halts)
    except Exception as exc:  # noqa: BLE001 - one line, whatever the database said
        die("status", f"cannot read the ledger {store.url}: {exc}")
    data = {
        "ledger": store.url,
        "ledger_id": ledger_id,
        "evaluation_lag": lags,
        "scaling_tag": cfg.scaling_tag,
        "open_halts": halts,
        "prefect": prefect,
        "reconcile": reconciled,
        "ok": not problem,
    }
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        _print_status(data)
    if problem:
        raise typer.Exit(EXIT_PROBLEM)


def _print_status(data: dict[str, Any]) -> None:
    echo = typer.echo
    echo(ledger_line(data["ledger"], data["ledger_id"]))
    halts = data["open_halts"]
    echo(f"open halts: {len(halts)}" + ("" if halts else " (scaling is not halted)"))
    for d in halts:
        echo(f"  {d['halt_id']}  opened {d['opened_at']} (seq {d['opened_seq']}), {_scope_text(d)}")
        echo(f"    cause: {d['cause']}")
        echo(f"    lifts when: {d['lifts_when']}")
        _print_approvals(d)
        enf = d["enforcement"]
        if enf is None:
            echo("    enforcement: never applied to Prefect (run `rsp halt reconcile`)")
        elif enf["event"] in _enforcement_failures():
            echo(f"    enforcement: NOT APPLIED ({enf['event']} at {enf['at']}: {enf['error']})")
        else:
            echo(f"    enforcement: {enf['event']} at {enf['at']}")
        p = d["prefect"]
        if p is None:
            echo("    prefect: UNKNOWN (cannot reach Prefect; the gate still holds the halt)")
        elif p["agrees"]:
            extra = f", {len(p['cancelling_runs'])} run(s) cancelling" if p["cancelling_runs"] else ""
            echo(f"    prefect: agrees ({p['deployments']} scaling deployment(s) paused, no active runs{extra})")
        else:
            parts = []
            if p["not_paused"]:
                parts.append("not paused: " + ", ".join(p["not_paused"]))
            if p.get("not_paused_queues"):
                parts.append("work queue not paused: " + ", ".join(p["not_paused_queues"]))
            if p["active_runs"]:
                parts.append("active runs: " + ", ".join(p["active_runs"]))
            echo(f"    prefect: DRIFT ({'; '.join(parts)}); run `rsp halt reconcile`")
    pf = data["prefect"]
    if pf["reachable"]:
        deps = pf["deployments"]
        echo(f"prefect: {pf['api_url']} ({len(deps)} scaling deployment(s) tagged {data['scaling_tag']!r})")
        for dep in deps:
            state = "paused" if dep["paused"] else "ACTIVE"
            runs = f", {len(dep['active_runs'])} active run(s)" if dep["active_runs"] else ""
            halted = f"  halted by {', '.join(dep['halts'])}" if dep["halts"] else ""
            drift = f"  DRIFT: {', '.join(dep['drift'])}" if dep["drift"] else ""
            echo(f"  {dep['name']}  {state}  {'+'.join(dep['activities'])}{runs}{halted}{drift}")
        for q in pf.get("queues") or []:
            qstate = ("PROBLEM: " + q["problem"] if q["problem"] else "absent" if not q["exists"]
                      else "paused" if q["paused"] else "ACTIVE")
            halted = f"  halted by {', '.join(q['halts'])}" if q["halts"] else ""
            drift = f"  DRIFT: {', '.join(q['drift'])}" if q["drift"] else ""
            echo(f"  work queue {q['name']}  {qstate}  ({len(q['deployments'])} scaling deployment(s)){halted}{drift}")
    else:
        echo(f"prefect: UNREACHABLE at {pf['api_url']}: {pf['error']}")
    _print_lags(data["evaluation_lag"])
    rec = data["reconcile"]
    if rec is None:
        echo("reconciler: has not run here yet")
    else:
        outcome = "ok" if rec.get("ok") else f"FAILED: {rec.get('error')}"
        changed = "; fixed drift" if rec.get("changed") else ""
        echo(f"reconciler: last check {rec.get('checked_at')}{_ago(rec.get('checked_at'))}: {outcome}{changed}")


# -- rsp halt ... -----------------------------------------------------------------------------------------------


def list_halts(
    ledger: LedgerOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Include lifted halts.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Halts in the ledger, oldest first: open ones, or every one with --all; for each open halt that
    lifts by approval, its tally per role, the round's votes and the latest refusals."""
    store = open_ledger("halt list", ledger)
    try:
        rows = _with_approvals(store, store.halts(None if all_ else "open"))
        ledger_id = store.ledger_id
    except Exception as exc:  # noqa: BLE001
        die("halt list", f"cannot read the ledger {store.url}: {exc}")
    if as_json:
        typer.echo(json.dumps({"ledger": store.url, "ledger_id": ledger_id, "halts": rows}, indent=2, default=str))
        return
    typer.echo(ledger_line(store.url, ledger_id))
    if not rows:
        typer.echo("no halts" if all_ else "no open halts")
    for d in rows:
        lifted = f", lifted {d['lifted_at']}" if d["status"] == "lifted" else ""
        typer.echo(f"{d['halt_id']}  {d['status'].upper()}  opened {d['opened_at']}{lifted}  {_scope_text(d)}")
        typer.echo(f"    cause: {d['cause']}")
        if d["status"] == "open":
            typer.echo(f"    lifts when: {d['lifts_when']}")
            _print_approvals(d)


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def open_cmd(
    reason: Annotated[str, typer.Option("--reason", help="Why scaling must stop (recorded in the ledger).")],
    activities: Annotated[
        str, typer.Option("--activities", help="Comma-separated: training, deployment.")
    ] = "training,deployment",
    runs: Annotated[
        str | None, typer.Option("--runs", help="Comma-separated training run ids; default: every scaling run.")
    ] = None,
    by: Annotated[str, typer.Option("--by", help="Who is halting (recorded).")] = "operator",
    no_apply: Annotated[bool, typer.Option("--no-apply", help="Only record it; apply at the next reconcile.")] = False,
    ledger: LedgerOpt = None,
    api_url: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open a manual halt, apply it to Prefect and notify, like any other halt.

    In force at once: the gate reads the ledger. Then the same composition as the halt flow:
    apply, notify (settings notify: console, file, Slack), start the Prefect UI approval form
    where it is served. Exit 1 when it was recorded but could not be applied to Prefect (the
    next reconcile applies it)."""
    from tasks.enforcement import ACTIVITIES, HaltRequest, open_and_enforce

    acts = _csv(activities) or []
    unknown = [a for a in acts if a not in ACTIVITIES]
    if unknown or not acts:
        die("halt open", f"--activities must name training and/or deployment, got {activities!r}")
    store = open_ledger("halt open", ledger)
    try:
        request = HaltRequest.model_validate({"reason": reason, "activities": acts, "runs": _csv(runs),
                                              "opened_by": by})
        outcome = open_and_enforce(request, ledger=store, api_url=api_url, apply=not no_apply)
    except ValueError as exc:
        die("halt open", exc)
    halt = store.halt(outcome.halt.halt_id)
    if halt is None:  # written a moment ago; only a ledger swapped underneath us gets here
        die("halt open", f"halt {outcome.halt.halt_id} is not in ledger {store.url} after opening it", EXIT_PROBLEM)
    report = outcome.apply
    if as_json:
        typer.echo(json.dumps({"halt": _halt_summary(halt), "created": outcome.halt.created,
                               "apply": None if report is None else report.to_dict(),
                               "notified": outcome.notified}, indent=2, default=str))
    else:
        typer.echo(f"halt {halt.halt_id} opened (seq {halt.opened_seq}): {_scope_text(_halt_summary(halt))}; "
                   "the scaling gate is closed")
        typer.echo("not applied to Prefect (--no-apply); the next reconcile applies it" if report is None
                   else report.summary())
        if outcome.notified:
            typer.echo("notified (settings notify / RSP_NOTIFY)")
    if report is not None and not report.applied:
        raise typer.Exit(EXIT_PROBLEM)


def reconcile_cmd(
    ledger: LedgerOpt = None,
    api_url: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make Prefect agree with every open halt now (pause, cancel).

    Records halt.reconciled only when it fixed something. Exit 1 when Prefect could not be
    brought in line."""
    from tasks.enforcement import reconcile

    store = open_ledger("halt reconcile", ledger)
    report = reconcile(ledger=store, api_url=api_url)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        typer.echo(report.summary())
        for p in report.paused:
            typer.echo(f"  paused {p['name']}")
        for c in report.cancelled:
            typer.echo(f"  cancelled run {c['name']} ({c['id']}, was {c['state_before']})")
    if not report.ok:
        raise typer.Exit(EXIT_PROBLEM)


# -- rsp gate check -----------------------------------------------------------------------------------------


def gate_check(
    run_id: Annotated[str, typer.Argument(help="The training run id.")],
    activity: Annotated[str, typer.Option("--activity", help="training or deployment.")] = "training",
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Is scaling allowed for RUN_ID? Exit 0 open, 1 halted, 2 error (fails closed)."""
    from tasks.enforcement import ACTIVITIES
    from tasks.gate import GateUnavailable, ScalingGate

    if activity not in ACTIVITIES:
        die("gate check", f"--activity must be training or deployment, got {activity!r}")
    gate = ScalingGate(ledger)
    try:
        halt = gate.blocking_halt(run_id, activity)
    except GateUnavailable as exc:
        if as_json:
            typer.echo(json.dumps({"run_id": run_id, "activity": activity, "open": False, "error": str(exc)}))
        die("gate check", exc)
    if as_json:
        typer.echo(json.dumps({"run_id": run_id, "activity": activity, "open": halt is None,
                               "halt_id": None if halt is None else halt.halt_id,
                               "message": None if halt is None else halt.message(run_id, activity)}))
    elif halt is None:
        typer.echo(f"gate OPEN for run {run_id!r} ({activity})")
    else:
        typer.echo(f"gate CLOSED: {halt.message(run_id, activity)}")
    if halt is not None:
        raise typer.Exit(EXIT_PROBLEM)


def gate_checkpoint(
    run_id: Annotated[str, typer.Argument(help="The training run id.")],
    step: Annotated[int, typer.Argument(help="The step of the checkpoint just written.")],
    uri: Annotated[str | None, typer.Option("--uri", help="Where the checkpoint is.")] = None,
    ledger: LedgerOpt = None,
) -> None:
    """A trainer reports a checkpoint it wrote (`checkpoint.written`), for trainers that are not Python:
    the policy's evaluation lag bound counts these at `rsp gate check`. Exit 2 when it cannot be recorded."""
    from tasks.gate import GateUnavailable, ScalingGate

    if step < 0:
        die("gate checkpoint", f"STEP must be >= 0, got {step}")
    try:
        ScalingGate(ledger).checkpoint_written(run_id, step, uri=uri)
    except GateUnavailable as exc:
        die("gate checkpoint", exc)
    typer.echo(f"recorded: run {run_id!r} wrote step {step}")


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    halt_app = typer.Typer(name="halt", help="Halts: list, open by hand, reconcile with Prefect.",
                           no_args_is_help=True, add_completion=False)
    halt_app.command("list")(list_halts)
    halt_app.command("open")(open_cmd)
    halt_app.command("reconcile")(reconcile_cmd)
    app.add_typer(halt_app, name="halt")
    gate_app = typer.Typer(name="gate", help="The scaling gate that training runs check.", no_args_is_help=True,
                           add_completion=False)
    gate_app.command("check")(gate_check)
    gate_app.command("checkpoint")(gate_checkpoint)
    app.add_typer(gate_app, name="gate")
