"""Preloaded by the warm forkserver in tests/test_warm.py: records which process imported it."""

import os

IMPORTED_IN = os.getpid()
