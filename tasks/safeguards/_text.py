"""Parsing helpers shared by the roster and the evidence registry: strict YAML, one-line errors."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from policy.loading import validation_problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys: YAML would silently keep the last one, and a roster
    that lists a person twice must not quietly drop one of the two role lists."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str) -> Any:
    """Parse YAML (a superset of JSON) with duplicate keys rejected. Raises ValueError, one line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{where}malformed YAML/JSON: {one_line(problem)}") from None


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def describe_validation(exc: ValidationError) -> str:
    return "; ".join(validation_problems(exc))
