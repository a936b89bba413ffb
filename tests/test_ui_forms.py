"""What the Prefect UI shows: deployment forms (parameter schemas), report artifacts, report links."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.deployments import build_deployments


@pytest.fixture(scope="module")
def schemas() -> dict[str, dict[str, Any]]:
    from rsp.commands.serve import SERVED  # the pipeline's own deployments (train-demo is a demo trainer)

    return {d.name: d._parameter_openapi_schema.model_dump() for d in build_deployments(names=SERVED)}


def test_every_form_field_has_a_title_and_a_description(schemas: dict[str, dict[str, Any]]) -> None:
    for name, schema in schemas.items():
        for field, prop in schema["properties"].items():
            assert prop.get("title"), f"{name}.{field} has no title"
            assert len(prop.get("description") or "") > 10, f"{name}.{field} has no description"
        for model, definition in (schema.get("definitions") or {}).items():
            for field, prop in definition["properties"].items():
                assert prop.get("title") and prop.get("description"), f"{name}: {model}.{field}"


def test_choices_are_dropdowns_and_internal_parameters_are_hidden(schemas: dict[str, dict[str, Any]]) -> None:
    from tasks.inputs import bundled_frameworks

    evaluate = schemas["evaluate"]["properties"]
    assert list(evaluate) == ["checkpoint_uri", "policy", "force", "task_runner", "limit"]  # no claim_owner
    policy_enum = next(branch["enum"] for branch in evaluate["policy"]["anyOf"] if "enum" in branch)
    assert sorted(policy_enum) == sorted(bundled_frameworks())  # the dropdown lists every bundled framework
    runner_enum = next(branch["enum"] for branch in evaluate["task_runner"]["anyOf"] if "enum" in branch)
    assert runner_enum == ["threads", "dask"]
    # The UI labels a union's switch by its branches' titles: untitled, both read "str".
    assert [b["title"] for b in evaluate["policy"]["anyOf"]] == ["bundled framework", "policy file"]
    assert [b["title"] for b in evaluate["task_runner"]["anyOf"]] == ["runner", "address or threads:N"]
    assert list(schemas["watch"]["properties"]) == ["store", "policy", "max_concurrent", "full_scan",
                                                    "task_runner", "limit"]
    assert list(schemas["resume"]["properties"]) == ["halt_id"]


def test_the_halt_form_is_a_small_typed_model(schemas: dict[str, dict[str, Any]]) -> None:
    halt = schemas["halt"]
    assert list(halt["properties"]) == ["request"] and halt["required"] == ["request"]
    form = halt["definitions"]["HaltForm"]
    assert list(form["properties"]) == ["reason", "activities", "runs"] and form["required"] == ["reason"]
    assert form["properties"]["activities"]["items"]["enum"] == ["training", "deployment"]
    assert form["properties"]["activities"]["default"] == ["training", "deployment"]  # shown pre-selected
    assert [form["properties"][f]["title"] for f in form["properties"]] == ["Reason", "Activities", "Training runs"]


def test_the_halt_form_refuses_an_empty_reason_or_no_activities() -> None:
    from pydantic import ValidationError

    from flows.halt import HaltForm

    assert HaltForm(reason="incident").activities == ["training", "deployment"]
    for bad in ({"reason": ""}, {"reason": "x", "activities": []}, {"reason": "x", "activities": ["sleeping"]}):
        with pytest.raises(ValidationError):
            HaltForm.model_validate(bad)


def test_threshold_cells_never_start_a_markdown_quote() -> None:
    from policy.engine import fail_closed_determination
    from tasks.inputs import read_policy
    from tasks.report import comparison_text, markdown, threshold_rows

    det = fail_closed_determination(read_policy("anthropic-rsp"), "every threshold undetermined")
    rows = threshold_rows(det)
    assert rows and all(not str(v).lstrip().startswith(">") for r in rows for v in r.values())
    assert {r["threshold_value"].split()[0] for r in rows} <= {"≥", "＞", "≤", "＜"}
    assert comparison_text(">=", 0.7) == "≥ 0.7" and comparison_text("<", 0.25) == "＜ 0.25"
    table = [line for line in markdown(det).splitlines() if line.startswith("| ") and "≥" in line]
    assert table and all("| >" not in line for line in table)


def test_report_links_are_http_and_the_route_serves_only_the_runs_folder(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.report import REPORTS_URL_ENV, report_url, served_report_file

    runs = tmp_path / "runs"
    (runs / "run a").mkdir(parents=True)
    report = runs / "run a" / "report.html"
    report.write_text("<h1>run a</h1>")
    (tmp_path / "secret.txt").write_text("ledger")
    (runs / "escape").symlink_to(tmp_path / "secret.txt")
    monkeypatch.setenv(REPORTS_URL_ENV, "https://gate.example/reports/")
    assert report_url(report, runs) == "https://gate.example/reports/run%20a/report.html"
    assert report_url(tmp_path / "secret.txt", runs) is None  # outside: no link rather than file://
    assert served_report_file(runs, "run a/report.html") == report.resolve()
    for bad in ("../secret.txt", "/etc/passwd", "escape", "run a", "", "run a/../../secret.txt", "x\x00y"):
        assert served_report_file(runs, bad) is None, bad


def test_the_approval_service_serves_reports_read_only(rsp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from tasks.approval_service import ServiceConfig, create_app
    from tasks.ledger import Ledger
    from tasks.notify.config import SIGNING_SECRET_ENV
    from tasks.settings import get_settings

    monkeypatch.setenv(SIGNING_SECRET_ENV, "test-secret")
    Ledger(get_settings().resolved_ledger_url).close()
    runs = get_settings().resolved_runs_dir
    (runs / "run-a").mkdir(parents=True)
    (runs / "run-a" / "report.html").write_text("<h1>run-a</h1>")
    (rsp_home / "outside.txt").write_text("not a report")
    with TestClient(create_app(ServiceConfig.from_settings(notify=False))) as client:
        ok = client.get("/reports/run-a/report.html")
        assert ok.status_code == 200 and ok.text == "<h1>run-a</h1>"
        assert ok.headers["content-type"].startswith("text/html")
        for bad in ("/reports/../outside.txt", "/reports/%2e%2e/outside.txt", "/reports/run-a", "/reports/nope.html"):
            response = client.get(bad)
            assert response.status_code == 404 and "not a report" not in response.text, bad
        assert client.post("/reports/run-a/report.html").status_code == 405  # read-only
