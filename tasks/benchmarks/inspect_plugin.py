"""Entry point for Inspect (`[project.entry-points.inspect_ai]`): registers our model providers.

Inspect loads `inspect_ai` entry points when it meets a model API name it does not
know, so `inspect eval ... --model rsp-sim/x` works from the command line without
importing anything first. Inside the runner the providers are imported directly.
"""

import tasks.benchmarks.providers  # noqa: F401
