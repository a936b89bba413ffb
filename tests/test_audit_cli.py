"""`rsp audit verify|export` through the real CLI app, against SQLite files and a real S3 endpoint."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rsp.cli import app
from tasks.ledger import Ledger
from tasks.settings import get_settings

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("RSP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RSP_CONFIG", str(tmp_path / "no-config.yaml"))
    for name in ("RSP_LEDGER_URL", "RSP_S3_ENDPOINT_URL", "RSP_S3_REGION", "RSP_S3_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as store:
        for i in range(12):
            store.append("test.event", f"s{i}", {"i": i})
        store.open_halt({"halt_id": "h1", "cause_key": "c1"})
    return url


def _one_line_error(result: Any) -> str:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), "no traceback: a clean exit"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_verify_ok(ledger_url: str) -> None:
    head = Ledger(ledger_url).head()[1]
    result = runner.invoke(app, ["audit", "verify", "--ledger", ledger_url])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"ledger ok: 13 events, head {head[:12]}"


def test_verify_json(ledger_url: str) -> None:
    result = runner.invoke(app, ["audit", "verify", "--ledger", ledger_url, "--json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["checked"] == 13 and report["first_bad_seq"] is None


def test_verify_uses_the_configured_ledger(tmp_path: Path) -> None:
    with Ledger() as store:  # RSP_HOME from the fixture
        store.append("test.event", "s", {})
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 0 and "ledger ok: 1 events" in result.stdout


def test_verify_tampered_names_the_seq(ledger_url: str, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "ledger.db")
    conn.execute("UPDATE ledger_events SET payload = '{\"i\":70}' WHERE seq = 7")
    conn.commit()
    conn.close()
    result = runner.invoke(app, ["audit", "verify", "--ledger", ledger_url])
    assert result.exit_code == 1
    assert "seq 7" in result.stdout and "hash mismatch" in result.stdout
    as_json = runner.invoke(app, ["audit", "verify", "--ledger", ledger_url, "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["first_bad_seq"] == 7


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("sqlite:///{tmp}/absent.db", "no ledger at"),
        ("not a url", "bad ledger URL"),
        ("nonsense://h/db", "no driver"),
        ("sqlite:///{tmp}/junk.db", "cannot open ledger"),  # a file that is not a database
    ],
)
def test_verify_errors_are_one_line_exit_2(url: str, fragment: str, tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    line = _one_line_error(runner.invoke(app, ["audit", "verify", "--ledger", url.format(tmp=tmp_path)]))
    assert line.startswith("rsp audit verify: ") and fragment in line
    assert not (tmp_path / "absent.db").exists()


def test_unreachable_postgres_is_one_line_exit_2(tmp_path: Path) -> None:
    # Port 1 on loopback refuses at once; without the driver installed the message says so instead.
    url = "postgresql://rsp:secret@127.0.0.1:1/ledger"
    line = _one_line_error(runner.invoke(app, ["audit", "verify", "--ledger", url]))
    assert "secret" not in line and "127.0.0.1" in line


def test_export_to_file_and_verify_it(ledger_url: str, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "ledger.jsonl"
    result = runner.invoke(app, ["audit", "export", "--ledger", ledger_url, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 13 events" in result.stdout
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 14))
    checked = runner.invoke(app, ["audit", "verify", "--file", str(out)])
    assert checked.exit_code == 0 and "ledger ok: 13 events" in checked.stdout
    out.write_text(out.read_text(encoding="utf-8").replace('"i":3}', '"i":4}'), encoding="utf-8")
    tampered = runner.invoke(app, ["audit", "verify", "--file", str(out)])
    assert tampered.exit_code == 1 and "seq 4" in tampered.stdout


def test_export_to_s3(
    ledger_url: str, s3_endpoint: str, s3_bucket: str, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RSP_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("RSP_S3_REGION", "us-east-1")
    get_settings.cache_clear()
    target = f"s3://{s3_bucket}/audit/2026/ledger.jsonl"
    result = runner.invoke(app, ["audit", "export", "--ledger", ledger_url, "--out", target])
    assert result.exit_code == 0, result.output
    assert f"exported 13 events to {target}" in result.stdout
    body = (
        s3_client.get_object(Bucket=s3_bucket, Key="audit/2026/ledger.jsonl")["Body"].read().decode("utf-8")
    )
    events = [json.loads(line) for line in body.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, 14))
    assert events[-1]["hash"] == Ledger(ledger_url).head()[1]


def test_export_errors_are_one_line_exit_2(
    ledger_url: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RSP_S3_ENDPOINT_URL", s3_endpoint)
    get_settings.cache_clear()
    missing_bucket = _one_line_error(
        runner.invoke(
            app, ["audit", "export", "--ledger", ledger_url, "--out", "s3://no-such-bucket-x/k.jsonl"]
        )
    )
    assert "s3://no-such-bucket-x/k.jsonl" in missing_bucket
    bad_target = _one_line_error(
        runner.invoke(app, ["audit", "export", "--ledger", ledger_url, "--out", "s3://b"])
    )
    assert "expected s3://bucket/key" in bad_target
