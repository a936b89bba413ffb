"""Text → validated `Policy`, with errors that name the file and the path inside it.

Pure: the caller reads the file; this module only parses text.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from policy.errors import PolicyError
from policy.schema import Policy


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys: YAML would silently keep the last one."""


def _construct_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def yaml_problem(exc: yaml.YAMLError, what: str = "malformed YAML") -> str:
    """'line L, column C: malformed YAML: problem' for a YAML error, on one line."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}{what}: {' '.join(str(problem).split())}"


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-after", "function-before", "function-wrap")):
            continue  # pydantic's validator frames say nothing to a policy author
        else:
            out += ("." if out else "") + str(part)
    return out or "(document)"


def validation_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        msg = err["msg"]
        msg = msg.removeprefix("Value error, ")
        loc = format_loc(tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        # Cross-reference errors already name their own paths.
        if loc == "(document)" and ": " in msg:
            problems.extend(msg.split("; "))
        else:
            problems.append(f"{loc}: {msg}")
    return problems


def parse_document(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise PolicyError(source, [yaml_problem(exc)]) from None


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    if not text.strip():
        raise PolicyError(source, ["empty document"])
    data = parse_document(text, source)
    return policy_from_data(data, source)


def policy_from_data(data: Any, source: str = "<policy>") -> Policy:
    if not isinstance(data, dict):
        raise PolicyError(source, [f"(document): expected a mapping at the top level, got {type(data).__name__}"])
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(source, validation_problems(exc)) from None
