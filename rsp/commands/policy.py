"""`rsp policy validate | show | diff`: the policy file as the safety team writes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rsp.console import EXIT_PROBLEM, EXIT_USAGE, fail, print_json

policy_app = typer.Typer(help="Validate, inspect and compare policy files.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")


def _load(ref: str):
    from policy.errors import PolicyError
    from tasks.inputs import InputError, read_policy

    try:
        return read_policy(ref)
    except (PolicyError, InputError) as exc:
        fail(str(exc))


@policy_app.command("validate")
def validate(
    files: list[str] = typer.Argument(..., help="Policy files, or bundled framework ids (anthropic-rsp, ...)."),
    json_out: bool = typer.Option(False, "--json", help="Print results as JSON."),
) -> None:
    """Check policy files against the schema. Exit 0 if all are valid, 1 if any is invalid, 2 if any
    cannot be read (missing, a folder, permission denied, empty, too large): a typo in a path is bad
    input, not a policy that failed review."""
    from policy.errors import PolicyError
    from policy.identity import policy_sha256
    from tasks.inputs import InputError, read_policy, resolve_policy_path

    results: list[dict[str, Any]] = []
    for ref in files:
        path = str(resolve_policy_path(ref))
        try:
            p = read_policy(ref)
        except PolicyError as exc:
            results.append({"file": path, "valid": False, "problems": exc.problems})
        except InputError as exc:
            results.append({"file": path, "valid": False, "readable": False, "problems": [str(exc)]})
        else:
            results.append({"file": path, "valid": True, "id": p.framework.id, "version": p.framework.version,
                            "sha256": policy_sha256(p), "thresholds": len(p.thresholds),
                            "safeguards": len(p.safeguards)})
    if json_out:
        print_json(results)
    else:
        for r in results:
            if r["valid"]:
                typer.echo(f"ok       {r['file']}: {r['id']} v{r['version']}, {r['thresholds']} thresholds, "
                           f"{r['safeguards']} safeguards, sha256 {r['sha256'][:16]}")
            else:
                label = "invalid " if r.get("readable", True) else "unread  "
                for problem in r["problems"]:
                    where = "" if problem.startswith(r["file"]) else f"{r['file']}: "
                    typer.echo(f"{label} {where}{problem}")
    if not all(r.get("readable", True) for r in results):
        raise typer.Exit(EXIT_USAGE)
    if not all(r["valid"] for r in results):
        raise typer.Exit(EXIT_PROBLEM)


@policy_app.command("show")
def show(
    file: str = typer.Argument(..., help="Policy file or bundled framework id."),
    json_out: bool = typer.Option(False, "--json", help="Print the canonical policy as JSON."),
) -> None:
    """Print a policy as readable tables: levels, thresholds, safeguards, cadence, approvals."""
    p = _load(file)
    if json_out:
        from policy.identity import canonical_data, policy_sha256

        print_json({"sha256": policy_sha256(p), "policy": canonical_data(p)})
        return
    from rsp.render import render_policy

    render_policy(p)


@policy_app.command("diff")
def diff(
    old: str = typer.Argument(..., help="The policy in force."),
    new: str = typer.Argument(..., help="The proposed policy."),
    fail_on_loosening: bool = typer.Option(
        False, "--fail-on-loosening", help="Exit 1 if any change loosens the policy (for CI on policy repos)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print changes as JSON."),
) -> None:
    """List every change between two policies and flag each one that loosens it."""
    from policy.diff import diff_policies, summarize
    from policy.identity import policy_sha256

    a, b = _load(old), _load(new)
    changes = diff_policies(a, b)
    loosening = [c for c in changes if c.loosens]
    if json_out:
        print_json({
            "old": {"file": old, "sha256": policy_sha256(a)},
            "new": {"file": new, "sha256": policy_sha256(b)},
            "changes": [
                {"path": c.path, "kind": c.kind, "old": c.old, "new": c.new, "loosens": c.loosens, "why": c.why}
                for c in changes
            ],
            "loosening": len(loosening),
        })
    else:
        typer.echo(f"{Path(old).name} ({policy_sha256(a)[:12]}) → {Path(new).name} ({policy_sha256(b)[:12]})")
        typer.echo(summarize(changes) if changes else "no changes")
        typer.echo(f"{len(changes)} change(s), {len(loosening)} loosen the policy")
    if fail_on_loosening and loosening:
        raise typer.Exit(EXIT_PROBLEM)
