"""The per-evaluation folder: everything needed to check a determination later, on disk.

<runs_dir>/<run_id>/step-<step>/
    checkpoint-uri.txt       the checkpoint this folder belongs to
    logs/<benchmark>/        Inspect's own logs
    results.jsonl            every sample row the determination used
    quality/                 great-expectations Data Docs
    determination.json       the determination as recorded in the ledger
    report.md                the capability report

A folder belongs to one checkpoint URI. `step-<step>/` goes to the first checkpoint evaluated
into it whose own folder is the recommended `<run_id>/step-<9 digits>/`; any other checkpoint
claiming the same run and step (a trainer's retry folder, a second store) gets
`step-<step>~<sha256 of its URI, 12 hex>/`, so neither overwrites the other's evidence.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from policy.results import SampleTable
from tasks.manifest import location_segments
from tasks.storage import write_atomic

OWNER_FILE = "checkpoint-uri.txt"


def run_folder(runs_dir: Path, run_id: str, step: int, checkpoint_uri: str | None = None) -> Path:
    """The folder of (run, step); with `checkpoint_uri`, the one that belongs to that checkpoint (see
    the module docstring). Claiming a folder is atomic, so two evaluations racing for it get one each."""
    folder = Path(runs_dir) / run_id / f"step-{step:09d}"
    if checkpoint_uri is None:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    tag = hashlib.sha256(checkpoint_uri.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    own = folder.with_name(f"{folder.name}~{tag}")
    recommended = location_segments(checkpoint_uri)[-2:] == [run_id, folder.name]
    for candidate in (folder, own) if recommended else (own,):
        candidate.mkdir(parents=True, exist_ok=True)
        owner = candidate / OWNER_FILE
        try:
            write_atomic(owner, checkpoint_uri.encode("utf-8", "surrogateescape") + b"\n", overwrite=False,
                         mode=0o644)
        except FileExistsError:
            pass
        if owner.read_bytes().decode("utf-8", "surrogateescape").rstrip("\n") == checkpoint_uri:
            return candidate
    raise FileExistsError(f"{folder}~{tag}: belongs to another checkpoint than {checkpoint_uri}")


def write_results(folder: Path, table: SampleTable) -> Path:
    path = folder / "results.jsonl"
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in table.rows()).encode())
    return path


def write_json(path: Path, data: Any) -> Path:
    write_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode())
    return path
