"""Checkpoint manifests: strict parsing of untrusted bytes, one-line reasons, atomic writing."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tasks.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    Checkpoint,
    CheckpointManifest,
    HuggingFaceModel,
    InspectModel,
    ManifestRejected,
    SimulatedModel,
    manifest_bytes,
    new_manifest,
    parse_manifest,
    sha256_digest,
    write_manifest,
)

DIGEST = "sha256:" + "ab" * 32


def valid(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "run_id": "run-a",
        "step": 1000,
        "effective_compute": 3.2e22,
        "created_at": "2026-11-23T10:00:00Z",
        "model": {"kind": "simulated"},
    }
    for name, value in changes.items():
        if value is _DROP:
            data.pop(name)
        else:
            data[name] = value
    return data


_DROP = object()


def raw(data: Any) -> bytes:
    return json.dumps(data).encode()


def rejected(data: bytes | dict[str, Any]) -> str:
    with pytest.raises(ManifestRejected) as info:
        parse_manifest(data if isinstance(data, bytes) else raw(data), "run-a/step-000001000")
    exc = info.value
    assert exc.key == "run-a/step-000001000"
    assert "\n" not in exc.reason and exc.reason
    assert str(exc) == f"run-a/step-000001000: {exc.reason}"
    return exc.reason


def test_valid_manifest_parses_every_model_kind() -> None:
    m = parse_manifest(raw(valid()), "k")
    assert (m.run_id, m.step, m.effective_compute) == ("run-a", 1000, 3.2e22)
    assert m.created_at == dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)
    assert m.model == SimulatedModel() and m.digest is None and m.notes is None

    hf = parse_manifest(
        raw(valid(model={"kind": "huggingface", "path": "hf/model"}, digest=DIGEST, notes="n")), "k"
    )
    assert hf.model == HuggingFaceModel(path="hf/model") and hf.digest == DIGEST and hf.notes == "n"
    assert parse_manifest(raw(valid(model={"kind": "huggingface", "path": "."})), "k").model.path == "."  # type: ignore[union-attr]

    inspect = parse_manifest(raw(valid(model={"kind": "inspect", "model": "vllm/org/model-7b"})), "k")
    assert inspect.model == InspectModel(model="vllm/org/model-7b")
    # An integer FLOP count and an offset time zone are fine.
    m2 = parse_manifest(raw(valid(effective_compute=10**24, created_at="2026-11-23T12:00:00+02:00")), "k")
    assert m2.effective_compute == 1e24 and m2.created_at == m.created_at


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"run_id": ""}, "run_id", "at least 1"),
        ({"run_id": "a/b"}, "run_id", "pattern"),
        ({"run_id": "../up"}, "run_id", "pattern"),
        ({"run_id": "x" * 101}, "run_id", "at most 100"),
        ({"run_id": 7}, "run_id", "valid string"),
        ({"run_id": _DROP}, "run_id", "missing"),
        ({"step": -1}, "step", "greater than or equal to 0"),
        ({"step": "5"}, "step", "valid integer"),
        ({"step": 5.0}, "step", "valid integer"),
        ({"step": True}, "step", "valid integer"),
        ({"step": 10**13}, "step", "less than or equal"),
        ({"effective_compute": 0}, "effective_compute", "greater than 0"),
        ({"effective_compute": -1e20}, "effective_compute", "greater than 0"),
        ({"effective_compute": 1e36}, "effective_compute", "1e+36 FLOP is above the 1e+35 limit"),
        ({"effective_compute": "1e24"}, "effective_compute", "valid number"),
        ({"effective_compute": 1e400}, "effective_compute", "finite"),  # json.dumps writes Infinity...
        ({"created_at": "2026-11-23T10:00:00"}, "created_at", "timezone"),
        ({"created_at": "yesterday"}, "created_at", "ISO 8601"),
        ({"created_at": 1700000000}, "created_at", "ISO 8601"),
        ({"model": {"kind": "pytorch"}}, "model", "does not match"),
        ({"model": {}}, "model", "kind"),
        ({"model": "simulated"}, "model", ""),
        ({"model": {"kind": "huggingface"}}, "model.path", "missing"),
        ({"model": {"kind": "simulated", "path": "x"}}, "model.path", "unknown field"),
        ({"model": {"kind": "inspect", "model": "no-provider"}}, "model.model", "pattern"),
        ({"model": {"kind": "inspect", "model": "openai/gpt 4"}}, "model.model", "pattern"),
        ({"digest": "md5:abc"}, "digest", "pattern"),
        ({"digest": "sha256:" + "AB" * 32}, "digest", "pattern"),
        ({"notes": "x" * 4001}, "notes", "at most 4000"),
        ({"extra": 1}, "extra", "unknown field"),
    ],
)
def test_each_bad_field_is_rejected_with_a_reason_naming_it(
    changes: dict[str, Any], field: str, words: str
) -> None:
    if changes.get("effective_compute") == 1e400:
        reason = rejected(raw(valid(effective_compute=1e308)).replace(b"1e+308", b"1e400"))
    else:
        reason = rejected(valid(**changes))
    assert reason.startswith(f"{field}:"), reason
    assert words in reason, reason


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "../weights",
        "hf/../../x",
        "..",
        "hf\\..\\x",
        "C:/weights",
        "s3://other/bucket",
        "~/x",
        "a\nb",
        "",
    ],
)
def test_model_path_traversal_is_rejected(path: str) -> None:
    reason = rejected(valid(model={"kind": "huggingface", "path": path}))
    assert reason.startswith("model.path:"), reason


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"{", "malformed JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b"null", "expected a JSON object"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"step": NaN}', "non-finite number NaN"),
        (b'{"run_id": "a", "run_id": "b"}', "duplicate field 'run_id'"),
        (b"[" * 60000, "malformed JSON"),
        (b'{"step": ' + b"9" * 5000 + b"}", "malformed JSON"),
    ],
)
def test_malformed_documents_are_rejected(data: bytes, words: str) -> None:
    assert words in rejected(data)


def test_manifest_over_64_kib_is_rejected_before_parsing() -> None:
    padded = raw(valid(notes="x"))
    padded = padded[:-1] + b" " * (MAX_MANIFEST_BYTES - len(padded)) + b"}"
    assert len(padded) == MAX_MANIFEST_BYTES + 0  # exactly at the limit: accepted
    assert parse_manifest(padded, "k").notes == "x"
    reason = rejected(padded + b" ")
    assert reason == f"manifest is {MAX_MANIFEST_BYTES + 1} bytes, over the {MAX_MANIFEST_BYTES}-byte limit"
    # Garbage that would take long to parse is never parsed at all.
    assert "over the" in rejected(b"[" * (10 * MAX_MANIFEST_BYTES))


def test_several_problems_are_reported_on_one_line() -> None:
    reason = rejected(valid(step=-1, extra=True, run_id=_DROP))
    assert "step:" in reason and "extra: unknown field" in reason and "run_id: missing" in reason


def test_round_trip_and_checkpoint_digest() -> None:
    m = new_manifest("run-a", 3, 1e21, HuggingFaceModel(path="hf"), notes="hello")
    data = manifest_bytes(m)
    assert b"digest" not in data  # optional fields left out, not written as null
    assert parse_manifest(data, "k") == m
    ck = Checkpoint.from_manifest(data, key="run-a/step-000000003", uri="file:///x/run-a/step-000000003/")
    assert ck.digest == sha256_digest(data) and (ck.run_id, ck.step, ck.effective_compute) == (
        "run-a",
        3,
        1e21,
    )
    with_digest = manifest_bytes(m.model_copy(update={"digest": DIGEST}))
    assert Checkpoint.from_manifest(with_digest, key="k", uri="u").digest == DIGEST
    # A Checkpoint is plain data: it survives JSON (Prefect parameters, ledger payloads).
    assert Checkpoint.model_validate_json(ck.model_dump_json()) == ck


def test_new_manifest_validates_its_arguments() -> None:
    with pytest.raises(ValueError):
        new_manifest("run a", 1, 1e20)
    with pytest.raises(ValueError):
        new_manifest("run-a", 1, 1e20, created_at=dt.datetime(2026, 1, 1))  # naive
    with pytest.raises(ValueError):
        CheckpointManifest(
            run_id="r",
            step=1,
            effective_compute=float("nan"),
            created_at=dt.datetime.now(dt.UTC),
            model=SimulatedModel(),
        )


def test_write_manifest_is_atomic_and_refuses_to_overwrite(tmp_path: Path) -> None:
    m = new_manifest("run-a", 1, 1e20)
    path = write_manifest(tmp_path / "ck", m)
    assert path == tmp_path / "ck" / MANIFEST_NAME
    assert parse_manifest(path.read_bytes(), "k") == m
    assert os.listdir(tmp_path / "ck") == [MANIFEST_NAME]  # no temp file left behind
    with pytest.raises(FileExistsError, match="already exists"):
        write_manifest(tmp_path / "ck", new_manifest("run-a", 2, 1e20))
    assert parse_manifest(path.read_bytes(), "k") == m
    assert os.listdir(tmp_path / "ck") == [MANIFEST_NAME]
    m3 = new_manifest("run-a", 3, 1e20)
    write_manifest(tmp_path / "ck", m3, overwrite=True)
    assert parse_manifest(path.read_bytes(), "k") == m3
