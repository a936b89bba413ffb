"""Errors the core raises; each carries a one-line, human message."""


class PolicyError(ValueError):
    """A policy file or document that does not validate. `problems` are 'path: message' lines."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class ResultsError(ValueError):
    """Benchmark results that cannot be classified as given."""
