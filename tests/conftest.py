"""Shared fixtures live in tests/plugins/*.py, one module per real backend, loaded here.

`make test` runs the suite on two pytest-xdist workers (`-n 2 --dist loadfile`): each worker is
its own test session, with its own Prefect server, S3 endpoint and PostgreSQL server, started on
first use and shared by every test of that worker (a halt's guard automation or paused
deployments in one test must never meet another test's runs on a shared server). A file runs
whole on one worker, so module-scoped worlds are built once.
"""

import os
import pkgutil
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

pytest_plugins = [
    f"tests.plugins.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent / "plugins")])
]

# The longest files start first, so that neither worker is left with one of them at the end
# (measured with --durations; the demo alone is about 5 minutes on two cores).
SLOW_FIRST = ("test_demo.py", "test_flows.py", "test_cli_exit_codes.py", "test_workers.py",
              "test_detection_hostile.py", "test_halt_holds.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: file order kept
