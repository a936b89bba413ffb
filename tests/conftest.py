"""Shared fixtures live in tests/plugins/*.py, one module per real backend, loaded here."""

import os
import pkgutil
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

pytest_plugins = [
    f"tests.plugins.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent / "plugins")])
]
