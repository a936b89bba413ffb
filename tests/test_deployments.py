"""One source of deployments: `rsp serve` builds exactly what deployments/prefect.yaml defines."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.deployments import PREFECT_YAML, DeploymentFileError, build_deployments, deployment_specs


def test_every_deployment_in_the_file_builds_with_its_definition() -> None:
    specs = {s["name"]: s for s in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}
    built = {d.name: d for d in build_deployments()}
    assert set(built) == set(specs)
    for name, spec in specs.items():
        d = built[name]
        assert d.entrypoint == spec["entrypoint"]
        assert d.tags == spec.get("tags", [])
        assert d.parameters == (spec.get("parameters") or {})
        assert d.description == " ".join(spec["description"].split())
    watch = built["watch"]
    assert [s.schedule.interval.total_seconds() for s in watch.schedules] == [60.0]
    (trigger,) = watch.triggers
    assert trigger.expect == {"rsp.checkpoint.arrived"} and trigger.parameters == {"full_scan": False}
    assert built["evaluate"].schedules in (None, [])


def test_serve_overrides_policy_interval_store_and_scaling_tag() -> None:
    from rsp.commands.serve import build_deployments as serve_deployments

    built = {d.name: d for d in serve_deployments("openai-preparedness", 15.0, "s3://b/ck", with_demo=True)}
    assert set(built) == {"watch", "evaluate", "halt", "approval", "resume", "train-demo"}
    watch = built["watch"]
    assert watch.parameters == {"policy": "openai-preparedness", "max_concurrent": 2, "store": "s3://b/ck"}
    assert [s.schedule.interval.total_seconds() for s in watch.schedules] == [15.0]
    assert watch.triggers[0].parameters == {"policy": "openai-preparedness", "store": "s3://b/ck", "full_scan": False}
    assert built["evaluate"].parameters["policy"] == "openai-preparedness"
    assert built["train-demo"].tags == ["scaling", "training"]
    assert "train-demo" not in {d.name for d in serve_deployments("anthropic-rsp", 60.0, None, with_demo=False)}


def test_scaling_tag_is_the_configured_one() -> None:
    (demo,) = build_deployments(names=["train-demo"], scaling_tag="scaling-prod")
    assert demo.tags == ["scaling-prod", "training"]


def test_bad_files_and_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DeploymentFileError, match="no deployment named nope"):
        build_deployments(names=["nope"])
    bad = tmp_path / "prefect.yaml"
    bad.write_text("deployments:\n  - name: x\n")
    with pytest.raises(DeploymentFileError, match="needs a name and an entrypoint"):
        deployment_specs(bad)
    bad.write_text("name: nothing\n")
    with pytest.raises(DeploymentFileError, match="no `deployments:` list"):
        deployment_specs(bad)


def test_scaling_runs_from_their_own_queue_and_the_gate_from_another() -> None:
    """A halt pauses the scaling queue (settings' default = this file's); the gate's own flows
    must never wait in it, or a halt would stop the gate that lifts it."""
    from tasks.enforcement.settings import DEFAULT_SCALING_QUEUES

    def queue(spec: dict[str, object]) -> str:
        pool = spec["work_pool"]
        assert isinstance(pool, dict)
        return f"{pool['name']}/{pool['work_queue_name']}"

    specs = deployment_specs()
    scaling = {s["name"]: queue(s) for s in specs if "scaling" in (s.get("tags") or [])}
    gate = {s["name"]: queue(s) for s in specs if "scaling" not in (s.get("tags") or [])}
    assert scaling == {"train-demo": "rsp-scaling/scaling"}
    assert set(scaling.values()) == set(DEFAULT_SCALING_QUEUES)
    assert set(gate) == {"watch", "evaluate", "halt", "approval", "resume"}
    assert not set(gate.values()) & set(DEFAULT_SCALING_QUEUES), gate
    # Not even the same pool: a worker for the gate never polls the scaling queue, nor the reverse.
    assert {q.split("/")[0] for q in gate.values()}.isdisjoint({q.split("/")[0] for q in scaling.values()})


def test_serve_polls_for_runs_every_two_seconds_unless_told_otherwise() -> None:
    """Prefect's runner polls every 10 s; `rsp serve` starts an event-triggered watch run within 2 s."""
    from rsp.commands.serve import DEFAULT_POLL_S, runner_poll_seconds

    assert DEFAULT_POLL_S == 2.0 and runner_poll_seconds(None, {}) == 2.0
    assert runner_poll_seconds(None, {"PREFECT_RUNNER_POLL_FREQUENCY": "7"}) == 7.0
    assert runner_poll_seconds(0.5, {"PREFECT_RUNNER_POLL_FREQUENCY": "7"}) == 0.5
    assert runner_poll_seconds(None, {"PREFECT_RUNNER_POLL_FREQUENCY": ""}) == 2.0
