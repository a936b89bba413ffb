"""The checkpoint store interface: where trainers write checkpoints and detection finds them.

Layout and identity
-------------------
A store is a root (a folder, or an S3 bucket and prefix). A checkpoint is any
prefix below it that holds a `checkpoint.json`; its *key* is that prefix relative
to the root, without the trailing slash, and it is the identity that the ledger's
exactly-once claims use. The recommended layout is

    <root>/<run_id>/step-<step, 9 digits zero-padded>/checkpoint.json

(see `checkpoint_key`), so that key order is run order, then step order. A prefix
without `checkpoint.json` is an incomplete checkpoint and is not listed at all. A
manifest must agree with that layout where its key has it (`step-<n>` folders name
their step and, by the folder above, their run: `tasks.manifest.identity_problem`);
`load` rejects one that does not, and `put_checkpoint` refuses to write it. One
checkpoint is looked up with `find`, at exactly its key: a listing from the key would
meet "run/step-3-x/" and "run/step-3.retry/" first ('-' and '.' sort before '/').
Listings yield manifests in ascending order of their manifest keys (S3's order:
UTF-8 bytes, which is also Python's `str` order), the same on every backend. For
the recommended layout that is key order; only odd layouts differ (a checkpoint
nested inside another, or "run" next to "run-b": "run-b/checkpoint.json" sorts
before "run/checkpoint.json").

Why a cursor alone is not enough
--------------------------------
Listing with a `start_after` cursor (S3's `StartAfter`) makes a tick with nothing
new cost one request however long the history. But it only sees keys that sort
*after* the cursor. A manifest can land later under a key that sorts *before* it:
a slow upload of `run-a/step-000000100` that finishes after
`run-b/step-000000050` was seen, or a new run whose id sorts early. An
incremental listing never sees that checkpoint. So `scan` alternates: incremental
listings from the cursor on most ticks, and a full listing on the first tick,
every `full_every` ticks, and on demand. A full listing re-lists every old key;
that is safe because detection dedupes through ledger claims on the key, and it
costs one request per 1,000 checkpoints on S3. Choose `full_every` so that a late
manifest is found within an acceptable delay (ticks × tick interval).

A listing that fails part-way raises (`StoreError`); it never returns a partial
result, so a cursor never advances past a key that was not seen.

Errors
------
* `ManifestRejected` (from tasks.manifest): the manifest's *content* (or its key,
  or its kind of file) is unacceptable. Permanent for those bytes; report it.
* `ManifestGone`: the manifest disappeared between listing and reading.
* `StoreError`: anything else (unreachable endpoint, missing bucket or folder,
  permissions, throttling that outlasted the retries). Transient as far as
  detection knows: abort the tick and try again; never read it as "nothing new".
"""

from __future__ import annotations

import abc
import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field

from tasks.manifest import MANIFEST_NAME, Checkpoint, CheckpointManifest, ManifestRejected, identity_problem
from tasks.registry import Registry
from tasks.storage import parse_uri

if TYPE_CHECKING:
    from tasks.settings import Settings

# With a one-minute watch tick: a late manifest that sorts before the cursor is found within an hour.
DEFAULT_FULL_SCAN_EVERY = 60
# C0 and C1 control characters, the backslash, and the two characters a URI reads as the end of its path.
_BAD_KEY_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\\#?]")
MAX_KEY_CHARS = 900  # S3 keys are at most 1,024 bytes, and the store's prefix needs room too
_PRINTABLE_KEY_CHARS = 300


class StoreError(RuntimeError):
    """The store could not be read or written (not a problem with a manifest's content)."""


class ManifestGone(StoreError):
    """A listed manifest no longer exists when read (deleted, or its checkpoint was moved)."""


def checkpoint_key(run_id: str, step: int) -> str:
    """The recommended key for a checkpoint: "<run_id>/step-<9-digit step>".

    Steps of a billion or more get more digits and then sort out of step order.
    """
    problem = key_problem(run_id)
    if problem or "/" in run_id:
        raise ValueError(f"run id {run_id!r} cannot be a key segment: {problem or 'contains /'}")
    if step < 0:
        raise ValueError(f"step {step} is negative")
    return f"{run_id}/step-{step:09d}"


def key_problem(key: str) -> str | None:
    """Why `key` is not a safe store-relative key (None if it is).

    Safe means it names the same place on every backend and cannot climb out of
    the root when a consumer maps it onto a local folder, and that its URI reads
    back as the same key: '/'-separated, no empty, '.' or '..' segments, no
    backslashes, control characters, '#' or '?', valid UTF-8, at most 900 characters.
    """
    if not key:
        return "empty key"
    if len(key) > MAX_KEY_CHARS:
        return f"key is longer than {MAX_KEY_CHARS} characters"
    bad = _BAD_KEY_CHARS.search(key)
    if bad:
        if bad.group() == "\\":
            return "key contains a backslash"
        if bad.group() in "#?":
            return f"key contains {bad.group()!r}, which a checkpoint URI cannot carry"
        return "key contains control characters"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "key is not valid UTF-8"
    wrapped = f"/{key}/"
    if "//" in wrapped or "/./" in wrapped or "/../" in wrapped:
        return "key has an empty, '.' or '..' segment"
    return None


def printable_key(key: str) -> str:
    """`key` as the ledger, logs and reports may show it: the key itself when it is short and
    printable; otherwise escaped, clipped, and tagged with the sha256 of its bytes, so that two
    different keys never print the same (a rejection is recorded once per printed key)."""
    if len(key) <= _PRINTABLE_KEY_CHARS and key.isprintable():
        return key
    raw = key.encode("utf-8", "surrogateescape")
    shown = raw.decode("utf-8", "backslashreplace").encode("unicode_escape").decode("ascii")
    if len(shown) > _PRINTABLE_KEY_CHARS:
        shown = f"{shown[:_PRINTABLE_KEY_CHARS]}...({len(key)} characters)"
    return f"{shown} [sha256:{hashlib.sha256(raw).hexdigest()[:16]}]"


def _check_key(key: str) -> None:
    problem = key_problem(key)
    if problem:
        raise ValueError(f"checkpoint key {key!r}: {problem}")


def check_put(key: str, files: Mapping[str, bytes]) -> None:
    """Validate the arguments of `put_checkpoint` before anything is written."""
    _check_key(key)
    for name in files:
        problem = key_problem(name)
        if problem:
            raise ValueError(f"file {name!r} of checkpoint {key!r}: {problem}")
        if name.split("/")[-1] == MANIFEST_NAME or name.split("/")[-1].startswith(f".{MANIFEST_NAME}."):
            raise ValueError(
                f"file {name!r} of checkpoint {key!r}: the manifest is written by put_checkpoint, last"
            )


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ManifestRef(_Value):
    """A listed manifest, before it is read."""

    key: str = Field(
        description="The checkpoint's key: its prefix relative to the store root, no trailing '/'."
    )
    manifest_key: str = Field(
        description="The manifest's key relative to the root: key + '/checkpoint.json'."
    )
    size: int
    last_modified: dt.datetime
    version: str | None = Field(
        default=None,
        description="Changes whenever the manifest object is written again (S3: ETag and time; local: inode, "
        "size and change times); None when the backend cannot tell. Lets a full scan skip manifests it read before.",
    )


class ScanCursor(_Value):
    """Where the previous scan stopped. Plain data: persist it between ticks (JSON via model_dump)."""

    start_after: Annotated[str | None, Field(description="Greatest manifest key seen so far.")] = None
    incremental_scans: Annotated[
        int, Field(ge=0, description="Incremental scans since the last full one.")
    ] = 0


class ScanResult(_Value):
    refs: tuple[ManifestRef, ...]
    next_cursor: ScanCursor
    full: bool = Field(description="Whether this was a full listing (old keys are re-listed; dedupe by key).")


@dataclass(frozen=True)
class LoadResult:
    """Manifests loaded in listing order, with the ones that failed set aside."""

    checkpoints: tuple[Checkpoint, ...]
    rejected: tuple[ManifestRejected, ...] = ()
    vanished: tuple[str, ...] = ()  # keys whose manifest disappeared after listing


class CheckpointStore(abc.ABC):
    """A place holding checkpoints. Implementations: LocalFolderStore, S3Store."""

    @property
    @abc.abstractmethod
    def uri(self) -> str:
        """The store's root as a URI (file:///... or s3://bucket/prefix/)."""

    @abc.abstractmethod
    def list_manifests(self, start_after: str | None = None) -> Iterator[ManifestRef]:
        """Manifests in ascending manifest-key order; with `start_after` (a manifest key), only those after it.

        Incomplete checkpoints (no checkpoint.json) are not listed. Keys are not
        checked here; `load` rejects unsafe ones, so they are reported, not hidden.
        """

    @abc.abstractmethod
    def read_manifest(self, ref: ManifestRef) -> bytes:
        """The manifest's bytes. Raises ManifestRejected for one over 64 KiB (before reading it all),
        an unsafe key or a file that is not a regular file; ManifestGone if it no longer exists."""

    @abc.abstractmethod
    def uri_for(self, key: str) -> str:
        """The URI of a checkpoint's folder (ending in '/'), where its model files are."""

    def find(self, key: str) -> ManifestRef | None:
        """The manifest at exactly `key`, or None when there is none (an incomplete or missing checkpoint).

        Never a sibling whose name extends the key: "run/step-3-x/" and "run/step-3.retry/" sort
        before "run/step-3/" ('-' and '.' come before '/'), so a listing from `key` meets them first.
        Raises ManifestRejected for an unsafe key. Backends override this with a direct lookup.
        """
        problem = key_problem(key)
        if problem:
            raise ManifestRejected(key, f"unsafe checkpoint key: {problem}")
        wanted = f"{key}/{MANIFEST_NAME}"
        for ref in self.list_manifests(start_after=wanted[:-1]):
            if ref.manifest_key == wanted:
                return ref
            if ref.manifest_key > wanted:
                break
        return None

    def check_put(self, key: str, files: Mapping[str, bytes], manifest: CheckpointManifest) -> None:
        """`check_put`, and the manifest's run and step agree with the key (see tasks.manifest.identity_problem):
        a trainer is never allowed to write a checkpoint that detection would reject."""
        check_put(key, files)
        problem = identity_problem(manifest, self.uri_for(key))
        if problem:
            raise ValueError(f"checkpoint {key!r}: {problem}")

    @abc.abstractmethod
    def put_checkpoint(
        self, key: str, files: Mapping[str, bytes], manifest: CheckpointManifest, *, overwrite: bool = False
    ) -> Checkpoint:
        """Write `files` (names relative to the checkpoint), then the manifest last.

        Without `overwrite` an existing manifest at `key` is a FileExistsError:
        checkpoints are immutable once complete.
        """

    # -- shared behaviour --------------------------------------------------------------------------------

    def load(self, ref: ManifestRef) -> Checkpoint:
        """Read and validate one manifest. Raises ManifestRejected, ManifestGone or StoreError."""
        problem = key_problem(ref.key)
        if problem:
            raise ManifestRejected(ref.key, f"unsafe checkpoint key: {problem}")
        raw = self.read_manifest(ref)
        return Checkpoint.from_manifest(raw, key=ref.key, uri=self.uri_for(ref.key))

    def load_all(self, refs: Iterable[ManifestRef], *, max_workers: int = 1) -> LoadResult:
        """Load every ref, keeping listing order; rejected and vanished manifests are set aside
        so one hostile manifest never blocks the others. One object that cannot be read (access
        denied, archived, a disk error) is rejected with the reason like a bad manifest, and the
        others load; when every read fails, the store itself is down: StoreError propagates and
        the tick aborts (nothing is recorded as rejected for an outage)."""

        def one(ref: ManifestRef) -> Checkpoint | ManifestRejected | ManifestGone | StoreError:
            try:
                return self.load(ref)
            except (ManifestRejected, ManifestGone, StoreError) as exc:
                return exc

        refs = list(refs)
        if max_workers > 1 and len(refs) > 1:
            with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="manifest-read") as pool:
                outcomes = list(pool.map(one, refs))
        else:
            outcomes = [one(ref) for ref in refs]
        # ManifestGone is a StoreError too, and not a failure to read: it stays "vanished".
        failed = [o for o in outcomes if isinstance(o, StoreError) and not isinstance(o, ManifestGone)]
        if failed and len(failed) == len(outcomes):
            raise failed[0]
        outcomes = [ManifestRejected(r.key, f"manifest unreadable: {o}") if o in failed else o
                    for r, o in zip(refs, outcomes, strict=True)]
        return LoadResult(
            checkpoints=tuple(o for o in outcomes if isinstance(o, Checkpoint)),
            rejected=tuple(o for o in outcomes if isinstance(o, ManifestRejected)),
            vanished=tuple(r.key for r, o in zip(refs, outcomes) if isinstance(o, ManifestGone)),
        )

    def scan(
        self,
        cursor: ScanCursor | None = None,
        *,
        full: bool = False,
        full_every: int = DEFAULT_FULL_SCAN_EVERY,
    ) -> ScanResult:
        """One detection tick's listing. See the module docstring for why full listings are needed.

        Full when `full` is set, when there is no cursor yet, or when the cursor has
        had `full_every` incremental scans since the last full one (0: always full);
        otherwise incremental from `cursor.start_after`. The listing is complete
        before anything is returned, so an error never advances the cursor.
        """
        if full_every < 0:
            raise ValueError(f"full_every must be >= 0, got {full_every}")
        start_after = cursor.start_after if cursor else None
        do_full = full or start_after is None or cursor is None or cursor.incremental_scans >= full_every
        refs = tuple(self.list_manifests(None if do_full else start_after))
        # Only over keys detection can accept: an unsafe one (say, not UTF-8) cannot even be saved as a
        # cursor; listed again after it, it is rejected again without being read.
        safe = [r.manifest_key for r in refs if key_problem(r.key) is None]
        greatest = max([k for k in (start_after, safe[-1] if safe else None) if k], default=None)
        scans = 0 if do_full else cursor.incremental_scans + 1  # type: ignore[union-attr]
        return ScanResult(
            refs=refs, next_cursor=ScanCursor(start_after=greatest, incremental_scans=scans), full=do_full
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


# A backend opens itself from (uri, settings, create). Built-ins by URI scheme, imported when first
# asked for, so a local-only setup never imports boto3.
StoreOpener = Callable[[str, "Settings | None", bool], CheckpointStore]
STORES: Registry[StoreOpener] = Registry(
    "store", entry_point_group="rsp_gate.stores", builtins={"file": "tasks.stores.local", "s3": "tasks.stores.s3"}
)


def from_uri(
    uri: str | None = None, settings: Settings | None = None, *, create: bool = False
) -> CheckpointStore:
    """The store a URI names: `s3://bucket/prefix` → S3Store; `file:///abs/path` or a plain path → LocalFolderStore.

    With no URI, the settings' checkpoint store (default: <home>/checkpoints).
    S3 endpoint, region and profile come from the settings (RSP_S3_*). `create`
    makes a missing local folder; otherwise a missing folder is a StoreError at
    the first listing, so a mistyped path is never read as "no checkpoints".
    """
    if uri is None or (uri.startswith("s3://") and settings is None):
        from tasks.settings import get_settings

        settings = settings or get_settings()
        uri = uri or settings.resolved_checkpoint_store
    return STORES.get(parse_uri(uri, what="checkpoint store").scheme)(uri, settings, create)
