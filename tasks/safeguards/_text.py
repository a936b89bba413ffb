"""Parsing helpers shared by the roster and the evidence registry: strict YAML, one-line errors."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from policy.loading import UniqueKeyLoader, validation_problems, yaml_problem


def load_yaml(text: str) -> Any:
    """Parse YAML (a superset of JSON) with duplicate keys rejected: a roster that lists a person
    twice must not quietly drop one of the two role lists. Raises ValueError, one line."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ValueError(yaml_problem(exc, "malformed YAML/JSON")) from None


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def describe_validation(exc: ValidationError) -> str:
    return "; ".join(validation_problems(exc))
