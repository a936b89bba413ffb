"""Reading policies and result files from disk, with limits and one-line errors.

The core parses text; this adapter finds and reads it. Bundled frameworks are
addressed by id (`anthropic-rsp`), anything else by path.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from policy.errors import PolicyError, ResultsError
from policy.loading import parse_policy
from policy.results import SampleTable
from policy.schema import Policy

FRAMEWORKS_DIR = Path(__file__).resolve().parent.parent / "policy" / "frameworks"
MAX_POLICY_BYTES = 2 * 1024 * 1024
# A million sample rows as JSON Lines is about 80 MB; beyond this, split the file or raise the limit.
DEFAULT_MAX_RESULTS_BYTES = 96 * 1024 * 1024


class InputError(ValueError):
    """A file that cannot be used as given; the message is one line naming the file."""


def bundled_frameworks() -> dict[str, Path]:
    return {p.stem: p for p in sorted(FRAMEWORKS_DIR.glob("*.yaml"))}


def resolve_policy_path(ref: str | Path) -> Path:
    ref_s = str(ref)
    bundled = bundled_frameworks()
    if ref_s in bundled and not Path(ref_s).exists():
        return bundled[ref_s]
    return Path(ref_s)


def _read_limited(path: Path, limit: int, what: str) -> bytes:
    try:
        if path.is_dir():
            raise InputError(f"{path}: is a folder, expected a {what} file")
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    if size > limit:
        raise InputError(f"{path}: {size / 2**20:.1f} MiB is over the {limit / 2**20:.0f} MiB limit for a {what} file")
    if size == 0:
        raise InputError(f"{path}: empty file")
    return path.read_bytes()


def read_policy(ref: str | Path) -> Policy:
    return read_policy_text(ref)[1]


def read_policy_text(ref: str | Path) -> tuple[str, Policy]:
    """The policy file's text and the policy it validates as (the text is what a ledger keeps of a
    version in force, tasks/policy_versions.py)."""
    path = resolve_policy_path(ref)
    raw = _read_limited(path, MAX_POLICY_BYTES, "policy")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(str(path), [f"not UTF-8 text (byte {exc.start})"]) from None
    return text, parse_policy(text, str(path))


def parse_results_bytes(raw: bytes, source: str) -> SampleTable:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise ResultsError(f"{source}: empty file")
    suffix = Path(source).suffix.lower()
    if suffix == ".csv":
        return SampleTable.from_rows(_csv_rows(text, source), source)
    stripped = text.lstrip()
    if suffix == ".json" or (suffix != ".jsonl" and stripped.startswith("[")):
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            raise ResultsError(f"{source}: malformed JSON: {exc}") from None
        if isinstance(data, dict) and "rows" in data:
            data = data["rows"]
        if not isinstance(data, list):
            raise ResultsError(f"{source}: expected a list of rows or an object with 'rows'")
        return SampleTable.from_rows(data, source)
    return SampleTable.from_rows(_jsonl_rows(text, source), source)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid score; use null with an 'error' for a failed attempt")


def _jsonl_rows(text: str, source: str):
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line, parse_constant=_reject_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            raise ResultsError(f"{source}: line {lineno}: malformed JSON: {exc}") from None


def _csv_rows(text: str, source: str):
    reader = csv.DictReader(io.StringIO(text))
    for lineno, rec in enumerate(reader, start=2):
        row: dict[str, object] = {k: v for k, v in rec.items() if k is not None}
        try:
            score = row.get("score")
            row["score"] = None if score in ("", None) else float(score)  # type: ignore[arg-type]
            if row.get("attempt") not in (None, ""):
                row["attempt"] = int(row["attempt"])  # type: ignore[call-overload]
            else:
                row.pop("attempt", None)
        except ValueError as exc:
            raise ResultsError(f"{source}: line {lineno}: {exc}") from None
        if row.get("score") is not None and row["score"] != row["score"]:
            raise ResultsError(f"{source}: line {lineno}: 'score' is NaN")
        for key in ("error", "version"):
            if row.get(key) == "":
                row[key] = None
        yield row


def read_results(path: str | Path, max_bytes: int = DEFAULT_MAX_RESULTS_BYTES) -> SampleTable:
    p = Path(path)
    return parse_results_bytes(_read_limited(p, max_bytes, "results"), str(p))
