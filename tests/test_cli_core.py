"""The pure-core commands as a person runs them: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rsp.cli import app
from tests.plugins.policies import TINY_POLICY, make_table

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def results_file(tmp_path):
    rows = make_table({"bio": (0.75, 100, 1), "chem": (0.2, 100, 1), "swe": (0.1, 50, 3),
                       "ctf": (0.1, 50, 1)}).rows()
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_validate_ok_and_invalid(tmp_path):
    r = run("policy", "validate", str(TINY_POLICY))
    assert r.exit_code == 0 and r.output.startswith("ok ")
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_POLICY.read_text().replace("early_warning: 0.5}", "early_warning: 0.9}"))
    r = run("policy", "validate", str(TINY_POLICY), str(bad))
    assert r.exit_code == 1
    assert f"invalid  {bad}: thresholds[2].measures[0]: early_warning (0.9) must be below threshold (0.7)" \
        in r.output


def test_validate_json(tmp_path):
    r = run("policy", "validate", "--json", str(TINY_POLICY))
    data = json.loads(r.output)
    assert data[0]["valid"] is True and len(data[0]["sha256"]) == 64


def test_show_prints_tables():
    r = run("policy", "show", str(TINY_POLICY))
    assert r.exit_code == 0
    assert "Capability thresholds" in r.output and "CBRN-3" in r.output and "2 distinct approvers" in r.output


def test_classify_human_and_json(results_file):
    r = run("classify", "--policy", str(TINY_POLICY), "--results", str(results_file))
    assert r.exit_code == 0
    assert "Required level: L3" in r.output and "CBRN-3 crossed → L3" in r.output
    assert "Decision: HALT" in r.output
    r = run("classify", "--policy", str(TINY_POLICY), "--results", str(results_file), "--json")
    det = json.loads(r.output)
    assert det["required_level"] == "L3"
    assert {t["id"]: t["status"] for t in det["thresholds"]}["CBRN-3"] == "crossed"


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "empty file"),
        ('{"benchmark": "bio", "sample_id": "a", "score": 1.5}\n', "row 1: 'score' 1.5 is outside [0, 1]"),
        ('{"benchmark": "bio", "sample_id": "a", "score": NaN}\n', "NaN is not a valid score"),
        ('{"benchmark": "bio", "sample_id": "a", "score": 1}\n{"benchmark": "bio", "sample_id": "a", "score": 0}\n',
         "row 2: duplicate (benchmark, sample_id, attempt) = (bio, a, 0); first seen at row 1"),
        ('{"benchmark": "zzz", "sample_id": "a", "score": 1}\n', "benchmarks the policy does not define: zzz"),
        ('{"benchmark": "bio", "sample_id": "a"\n', "line 1: malformed JSON"),
        ('{"benchmark": "bio", "sample_id": "a", "score": "high"}\n', "'score' must be a number"),
    ],
)
def test_classify_bad_results_one_line_exit_2(tmp_path, content, expected):
    path = tmp_path / "r.jsonl"
    path.write_text(content)
    r = runner.invoke(app, ["classify", "-p", str(TINY_POLICY), "-r", str(path)])
    assert r.exit_code == 2
    assert expected in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_classify_refuses_oversized_file(tmp_path):
    path = tmp_path / "big.jsonl"
    with path.open("wb") as f:
        f.truncate(100 * 1024 * 1024)  # a sparse 100 MB file: the size check must fire before reading
    r = runner.invoke(app, ["classify", "-p", str(TINY_POLICY), "-r", str(path)])
    assert r.exit_code == 2 and "100.0 MiB is over the 96 MiB limit" in r.output


def test_missing_and_malformed_policy(tmp_path):
    r = runner.invoke(app, ["policy", "show", str(tmp_path / "none.yaml")])
    assert r.exit_code == 2 and "no such file" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("framework: {id: [}\n")
    r = runner.invoke(app, ["policy", "validate", str(bad)])
    assert r.exit_code == 1 and "malformed YAML" in r.output


def test_core_commands_do_not_import_prefect_or_gx(tmp_path):
    code = (
        "import sys; from rsp.cli import app\n"
        f"try:\n    app(['policy', 'validate', {str(TINY_POLICY)!r}])\nexcept SystemExit: pass\n"
        "heavy = [m for m in ('prefect', 'great_expectations', 'inspect_ai', 'boto3', 'sqlalchemy') "
        "if m in sys.modules]\nprint('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
