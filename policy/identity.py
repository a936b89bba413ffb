"""A policy's identity: a canonical form and its sha256.

The hash covers meaning, not formatting: comments, key order and quoting do not
change it; any change to a value does.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from policy.schema import Policy


def canonical_data(policy: Policy) -> dict[str, Any]:
    return policy.model_dump(mode="json")


def canonical_json(value: BaseModel | dict[str, Any]) -> str:
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def policy_sha256(policy: Policy) -> str:
    return hashlib.sha256(canonical_json(policy).encode("utf-8")).hexdigest()
