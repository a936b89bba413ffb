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


class NotASuccess(Exception):
    """A deployment run's Failed state holds this: the reason as its message and the flow's value.

    The engine raises a Failed state's data when the run ends; data that is not an exception made it
    log "Engine execution exited with unexpected exception" and a TypeError traceback under every
    rejected checkpoint and refused lift, in the run's logs that the UI shows."""

    def __init__(self, message: str, value: Any = None) -> None:
        super().__init__(message)
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:  # results are pickled: keep the value across
        return (type(self), (str(self), self.value))


def not_a_success(value: Any, *, name: str, message: str) -> Any:
    """`value` for a direct call; in a deployment run, a Failed state named `name` with `message`
    (cut to 2,000 characters) whose data is a `NotASuccess` holding `value`."""
    if not in_deployment_run():
        return value
    from prefect.states import Failed

    return Failed(name=name, message=message[:2000], data=NotASuccess(message[:2000], value))


__all__ = ["NotASuccess", "in_deployment_run", "not_a_success"]
