"""The pipeline's deployments, read from their one definition: deployments/prefect.yaml.

`prefect deploy --all --prefect-file deployments/prefect.yaml` registers them for workers in
work pools (the gate's flows on `rsp`, scaling flows on `rsp-scaling`, whose queue a halt
pauses; tests/test_workers.py); `rsp serve` builds the same deployments from the same file and
serves them from one process (served deployments belong to no pool). Names, entrypoints, descriptions, tags, parameters, schedules and event
triggers come from the file; `rsp serve` only overrides what its options name (the policy,
the watch interval and store) and the scaling tag of scaling deployments.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

PREFECT_YAML = Path(__file__).resolve().parent.parent / "deployments" / "prefect.yaml"
# Deployments of this file that are scaling flows: their "scaling" tag becomes the configured scaling tag.
SCALING_TAG_IN_FILE = "scaling"


class DeploymentFileError(ValueError):
    pass


def deployment_specs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The `deployments:` entries of a prefect.yaml, each with at least a name and an entrypoint."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DeploymentFileError(f"{path}: cannot read deployments: {exc}") from None
    specs = (data or {}).get("deployments") if isinstance(data, dict) else None
    if not isinstance(specs, list) or not specs:
        raise DeploymentFileError(f"{path}: no `deployments:` list")
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or not spec.get("name") or ":" not in str(spec.get("entrypoint", "")):
            raise DeploymentFileError(f"{path}: deployment #{i + 1} needs a name and an entrypoint file.py:flow")
    return specs


def _flow(entrypoint: str) -> Any:
    # "flows/watch.py:watch" -> flows.watch.watch (entrypoints are file paths relative to the repository root).
    file, _, attr = entrypoint.partition(":")
    module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    return getattr(module, attr)


def _interval(spec: Mapping[str, Any]) -> float | None:
    for schedule in spec.get("schedules") or []:
        if schedule.get("active", True) and schedule.get("interval") is not None:
            return float(schedule["interval"])
    return None


def _triggers(name: str, spec: Mapping[str, Any], extra_parameters: Mapping[str, Any]) -> list[Any]:
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    specs = []
    for trigger in spec.get("triggers") or []:
        trigger = dict(trigger)
        if trigger.get("type") == "event":
            trigger["parameters"] = {**extra_parameters, **(trigger.get("parameters") or {})}
        specs.append(trigger)
    return _initialize_deployment_triggers(name, specs)


def build_deployments(
    *,
    names: Iterable[str] | None = None,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    interval: float | None = None,
    scaling_tag: str | None = None,
    path: Path = PREFECT_YAML,
) -> list[RunnerDeployment]:
    """RunnerDeployments for `names` (default: every deployment in the file), ready for `serve`.

    `parameters` maps a deployment name to parameter overrides (merged over the file's, and
    passed to its event triggers too); `interval` replaces the file's schedule interval of
    every scheduled deployment.
    """
    wanted = None if names is None else list(names)
    specs = {s["name"]: s for s in deployment_specs(path)}
    unknown = [n for n in wanted or () if n not in specs]
    if unknown:
        raise DeploymentFileError(f"{path}: no deployment named {', '.join(unknown)}; known: {', '.join(specs)}")
    out = []
    for name in wanted if wanted is not None else list(specs):
        spec = specs[name]
        overrides = dict((parameters or {}).get(name) or {})
        tags = [scaling_tag if scaling_tag and t == SCALING_TAG_IN_FILE else t for t in spec.get("tags") or []]
        every = _interval(spec)
        out.append(_flow(spec["entrypoint"]).to_deployment(
            name=name,
            description=" ".join(str(spec.get("description") or "").split()) or None,
            tags=tags,
            parameters={**(spec.get("parameters") or {}), **overrides},
            interval=(interval if interval is not None else every) if every is not None else None,
            triggers=_triggers(name, spec, overrides) or None,
        ))
    return out


def deployment_flows(names: Iterable[str], path: Path = PREFECT_YAML) -> dict[str, Any]:
    """The flow object of each named deployment of the file, by deployment name."""
    specs = {s["name"]: s for s in deployment_specs(path)}
    return {name: _flow(specs[name]["entrypoint"]) for name in names if name in specs}


__all__ = ["PREFECT_YAML", "DeploymentFileError", "build_deployments", "deployment_flows", "deployment_specs"]
