"""The flow tests/test_warm.py runs: it reports its process and which process imported warm_marker."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from prefect import flow


@flow(name="warm-probe")
def report(path: str) -> None:
    marker = importlib.import_module("tests.data.warm_marker")  # at run time: the flow may be pickled by value
    Path(path).write_text(json.dumps({"pid": os.getpid(), "imported_in": marker.IMPORTED_IN,
                                      "env": os.environ.get("RSP_WARM_PROBE")}))
