"""Checkpoint manifests: the `checkpoint.json` a trainer writes last.

A checkpoint is complete exactly when its manifest exists, so the trainer writes
weights and other files first and the manifest last, atomically (a temp file and a
rename on a local disk; a single PUT on S3). Detection reads nothing else, so a
half-written checkpoint is never picked up.

A manifest is untrusted input (anyone who can write to the bucket can write one),
so parsing is strict and bounded: at most 64 KiB, no unknown fields, no type
coercion, no duplicate keys, finite numbers only, and no model path that could
escape the checkpoint folder. Every rejection is a `ManifestRejected` whose reason
is one line naming the field.

Example manifest::

    {
      "run_id": "demo-run",
      "step": 1000,
      "effective_compute": 3.2e22,
      "created_at": "2026-11-23T10:00:00Z",
      "model": {"kind": "huggingface", "path": "hf"},
      "digest": "sha256:...",            (optional: content digest of the weights)
      "notes": "..."                     (optional)
    }
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from policy.determination import CheckpointRef
from tasks.storage import write_atomic

MANIFEST_NAME = "checkpoint.json"
MAX_MANIFEST_BYTES = 64 * 1024
# Far beyond any planned run (today's frontier is ~1e26 FLOP) yet finite: a value
# above this is a unit mistake or an attack on the cadence arithmetic.
MAX_EFFECTIVE_COMPUTE = 1e35
MAX_STEP = 10**12

RunId = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"),
]
Digest = Annotated[str, StringConstraints(strict=True, pattern=r"^sha256:[0-9a-f]{64}$")]


class ManifestRejected(ValueError):
    """A manifest that is not a valid checkpoint manifest. `reason` is one line."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the exception picklable (Prefect and thread pools carry it across boundaries).
        return (type(self), (self.key, self.reason))


def _iso_datetime(value: Any) -> Any:
    # Only ISO 8601 text: pydantic's lax parsing would also read 1700000000 or
    # "1700000000" as a timestamp, which a trainer bug could produce by accident.
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):
        # ValueError, not TypeError: pydantic turns only ValueError into a validation error.
        raise ValueError(f"expected an ISO 8601 date-time string, got {type(value).__name__}")  # noqa: TRY004
    if len(value) > 64:
        raise ValueError("date-time string is longer than 64 characters")
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date-time: {value!r}") from None


def check_relative_path(path: str) -> str:
    """A path that stays inside the folder it is relative to, written with '/'."""
    if not path:
        raise ValueError("empty path")
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise ValueError("path contains control characters")
    if "\\" in path:
        raise ValueError(f"backslash in path {path!r}; use '/'")
    if path.startswith(("/", "~")):
        raise ValueError(f"absolute path {path!r}; must be relative to the checkpoint folder")
    first = path.split("/", 1)[0]
    if ":" in first:
        # "C:/..." on Windows, or a URL such as "s3://..." or "file:..."
        raise ValueError(
            f"path {path!r} looks like a drive or a URL; must be relative to the checkpoint folder"
        )
    if any(part == ".." for part in path.split("/")):
        raise ValueError(f"path {path!r} contains '..'; must stay inside the checkpoint folder")
    return path


class _Strict(BaseModel):
    # Strict: "5" never becomes 5 and true never becomes 1; a manifest is untrusted input.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SimulatedModel(_Strict):
    """The simulated model that the demo trainer and tests evaluate; nothing to load."""

    kind: Literal["simulated"] = "simulated"


class HuggingFaceModel(_Strict):
    """A Hugging Face model folder inside the checkpoint (e.g. "hf" or "." for the checkpoint itself)."""

    kind: Literal["huggingface"] = "huggingface"
    path: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=1024)]

    @field_validator("path")
    @classmethod
    def _inside_checkpoint(cls, value: str) -> str:
        return check_relative_path(value)


class InspectModel(_Strict):
    """A model Inspect AI can address by name (a served endpoint), e.g. "vllm/org/model".

    `base_url` is the serving endpoint (vLLM's or SGLang's OpenAI-compatible `/v1`), when the
    trainer's manifest knows it; otherwise settings supply it (`RSP_SERVED_BASE_URL`).
    """

    kind: Literal["inspect"] = "inspect"
    model: Annotated[
        str,
        StringConstraints(strict=True, min_length=3, max_length=300, pattern=r"^[A-Za-z0-9][\w.\-]*/[^\s]+$"),
    ]
    base_url: Annotated[
        str, StringConstraints(strict=True, max_length=2000, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    ] | None = None


ModelSpec = Annotated[SimulatedModel | HuggingFaceModel | InspectModel, Field(discriminator="kind")]


class CheckpointManifest(_Strict):
    run_id: RunId
    step: Annotated[int, Field(ge=0, le=MAX_STEP)]
    effective_compute: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    created_at: Annotated[AwareDatetime, BeforeValidator(_iso_datetime)]
    model: ModelSpec
    digest: Digest | None = None
    notes: Annotated[str, StringConstraints(strict=True, max_length=4000)] | None = None

    @field_validator("effective_compute")
    @classmethod
    def _plausible_compute(cls, value: float) -> float:
        if value > MAX_EFFECTIVE_COMPUTE:
            raise ValueError(f"{value:g} FLOP is above the {MAX_EFFECTIVE_COMPUTE:g} limit (a unit mistake?)")
        return value


class Checkpoint(_Strict):
    """A complete checkpoint as detection sees it.

    `key` is the store-relative prefix ("run-a/step-000001000"), the identity used
    for exactly-once claims; `uri` is where its files are (file:///.../ or
    s3://bucket/prefix/.../, always ending in '/'); `digest` is the manifest's own
    content digest when it gives one, else the sha256 of the manifest bytes, and
    keys caches of benchmark results.
    """

    manifest: CheckpointManifest
    uri: str
    key: str
    digest: Digest

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    @property
    def step(self) -> int:
        return self.manifest.step

    @property
    def effective_compute(self) -> float:
        return self.manifest.effective_compute

    def ref(self) -> CheckpointRef:
        """The checkpoint as a determination names it. What runners get is
        `tasks.checkpoint_uri.checkpoint_info`, which also resolves the model's local path."""
        return CheckpointRef(run_id=self.run_id, step=self.step, effective_compute=self.effective_compute,
                             uri=self.uri, digest=self.digest)

    @classmethod
    def from_manifest(cls, raw: bytes, *, key: str, uri: str) -> Checkpoint:
        """Parse `raw` (read from `key`, whose folder is `uri`) into a Checkpoint; raises ManifestRejected,
        also when the manifest's run or step disagrees with the folder it sits in (`identity_problem`)."""
        manifest = parse_manifest(raw, key)
        problem = identity_problem(manifest, uri)
        if problem:
            raise ManifestRejected(key, problem)
        return cls(manifest=manifest, uri=uri, key=key, digest=manifest.digest or sha256_digest(raw))


# -- identity: the manifest against the place it sits ---------------------------------------------------

_STEP_FOLDER = re.compile(r"step-([0-9]+)")


def location_segments(uri: str) -> list[str]:
    """The path segments of a checkpoint folder's URI, decoded as the store wrote them: a file URI's
    path is percent-decoded once; an S3 URI's bucket is not a segment; a plain path is split as is."""
    if uri.startswith("s3://"):
        parts = uri[len("s3://") :].split("/")[1:]
    elif uri.startswith("file:"):
        parts = unquote(urlsplit(uri).path).split("/")
    else:
        parts = uri.split("/")
    return [p for p in parts if p]


def identity_problem(manifest: CheckpointManifest, uri: str) -> str | None:
    """Why `manifest` cannot be the checkpoint in the folder `uri` names (None if it can).

    A folder named `step-<digits>` (the recommended `<run_id>/step-<9 digits>/`) names its
    step: the manifest's step must be that number, and the folder it sits in must be named
    for the manifest's run id. A folder with any other name names no step and no run; its
    manifest is taken at its word (two checkpoints claiming the same run and step are both
    evaluated, and flagged).
    """
    segments = location_segments(uri)
    match = _STEP_FOLDER.fullmatch(segments[-1]) if segments else None
    if match is None:
        return None
    folder_step = match.group(1).lstrip("0") or "0"  # compared as text: no int() of a huge digit string
    if folder_step != str(manifest.step):
        return f"step: manifest says {manifest.step}, its folder {segments[-1]!r} says {folder_step}"
    if len(segments) >= 2 and segments[-2] != manifest.run_id:
        return f"run_id: manifest says {manifest.run_id!r}, its folder sits in {segments[-2]!r}"
    return None


def manifest_bytes(manifest: CheckpointManifest) -> bytes:
    """The bytes a trainer writes: indented JSON, optional fields left out when unset."""
    return manifest.model_dump_json(indent=2, exclude_none=True).encode("utf-8") + b"\n"


def new_manifest(
    run_id: str,
    step: int,
    effective_compute: float,
    model: SimulatedModel | HuggingFaceModel | InspectModel | None = None,
    *,
    created_at: dt.datetime | None = None,
    digest: str | None = None,
    notes: str | None = None,
) -> CheckpointManifest:
    """A manifest stamped now (UTC), for a simulated model unless `model` says otherwise."""
    return CheckpointManifest(
        run_id=run_id,
        step=step,
        effective_compute=float(effective_compute),
        created_at=created_at or dt.datetime.now(dt.UTC),
        model=model or SimulatedModel(),
        digest=digest,
        notes=notes,
    )


# -- parsing -----------------------------------------------------------------------------------------------


def _short(value: Any) -> str:
    text = value.isoformat() if isinstance(value, dt.datetime) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    # pydantic puts the union tag in the location ("model.huggingface.path"); the author wrote "model.path".
    if len(parts) >= 3 and parts[0] == "model" and parts[1] in {"simulated", "huggingface", "inspect"}:
        parts = [parts[0], *parts[2:]]
    parts = [p for p in parts if not p.startswith(("function-", "constrained-"))]
    return ".".join(parts) or "(manifest)"


def _problems(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        field = _format_loc(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            problems.append(f"{field}: unknown field")
        elif err["type"] == "missing":
            problems.append(f"{field}: missing")
        elif (
            err["type"] in {"value_error", "union_tag_invalid", "union_tag_not_found"}
            or field == "(manifest)"
        ):
            problems.append(f"{field}: {msg}")
        else:
            problems.append(f"{field}: {msg} (got {_short(err.get('input'))})")
    return problems


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            # Two readers could disagree on which one wins; refuse instead.
            raise ValueError(f"duplicate field {name!r}")
        out[name] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not valid JSON")


def parse_manifest(raw: bytes, key: str) -> CheckpointManifest:
    """Validate manifest bytes read from `key`; raise ManifestRejected(key, reason) if they are not one."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestRejected(key, f"manifest is {len(raw)} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
    if not raw.strip():
        raise ManifestRejected(key, "manifest is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestRejected(key, f"manifest is not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise ManifestRejected(
            key, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ManifestRejected(key, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # duplicate keys, NaN/Infinity, integers with thousands of digits
        raise ManifestRejected(key, f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestRejected(key, f"expected a JSON object at the top level, got {type(data).__name__}")
    try:
        return CheckpointManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestRejected(key, "; ".join(_problems(exc))) from None


def sha256_digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


# -- writing (for trainers) --------------------------------------------------------------------------------


def write_manifest(folder: Path | str, manifest: CheckpointManifest, *, overwrite: bool = False) -> Path:
    """Write `folder/checkpoint.json` atomically; call it after every other file of the checkpoint is written.

    The bytes go to a hidden temp file first (which detection never lists), are
    fsynced, then appear under the final name in one step, so a reader sees either
    no manifest or a whole one. Without `overwrite` an existing manifest is an
    error: a checkpoint's identity is its key, and a rewritten manifest would be
    silently skipped by detection that already claimed that key.
    """
    final = Path(folder) / MANIFEST_NAME
    try:
        # Without overwrite the file is published with link(), which fails if the name exists,
        # so two writers cannot both succeed.
        write_atomic(final, manifest_bytes(manifest), overwrite=overwrite)
    except FileExistsError:
        raise FileExistsError(f"{final}: a checkpoint manifest already exists") from None
    return final
