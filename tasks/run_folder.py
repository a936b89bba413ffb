"""The per-evaluation folder: everything needed to check a determination later, on disk.

<runs_dir>/<run_id>/step-<step>/
    logs/<benchmark>/        Inspect's own logs
    results.jsonl            every sample row the determination used
    quality/                 great-expectations Data Docs
    determination.json       the determination as recorded in the ledger
    report.md                the capability report
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from policy.results import SampleTable
from tasks.storage import write_atomic


def run_folder(runs_dir: Path, run_id: str, step: int) -> Path:
    folder = Path(runs_dir) / run_id / f"step-{step:09d}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_results(folder: Path, table: SampleTable) -> Path:
    path = folder / "results.jsonl"
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in table.rows()).encode())
    return path


def write_json(path: Path, data: Any) -> Path:
    write_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode())
    return path
