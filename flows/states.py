"""How a flow run that did not succeed shows in the Prefect UI: a Failed state with its own name
and the reason, never a green Completed.

Only runs of a deployment (the UI, a schedule, an event trigger, an automation) end that way. A
direct call from Python (the CLI, a test, a parent flow) gets the value itself, which says what
happened (`status`, `outcome`), because a flow that returns a Failed state raises in its caller.
"""

from __future__ import annotations

from typing import Any


def in_deployment_run() -> bool:
    """Whether this is a deployment's own run (a subflow it calls is not, even inside one)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx is not None and ctx.flow_run is not None and ctx.flow_run.deployment_id is not None


def not_a_success(value: Any, *, name: str, message: str) -> Any:
    """`value` for a direct call; in a deployment run, a Failed state named `name` with `message`
    (cut to 2,000 characters) that holds `value` as its data."""
    if not in_deployment_run():
        return value
    from prefect.states import Failed

    return Failed(name=name, message=message[:2000], data=value)


__all__ = ["in_deployment_run", "not_a_success"]
