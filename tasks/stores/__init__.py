"""Checkpoint stores: where trainers write checkpoints and detection finds them.

    from tasks.stores import from_uri
    store = from_uri("s3://bucket/checkpoints")      # or file:///path, or a plain path
    result = store.scan(cursor)                       # incremental, with periodic full rescans
    loaded = store.load_all(result.refs)              # Checkpoints, plus rejected manifests set aside

The S3 backend (and boto3) is imported only when an s3:// store is opened.
"""

from tasks.manifest import Checkpoint, CheckpointManifest, ManifestRejected
from tasks.stores.base import (
    DEFAULT_FULL_SCAN_EVERY,
    CheckpointStore,
    LoadResult,
    ManifestGone,
    ManifestRef,
    ScanCursor,
    ScanResult,
    StoreError,
    checkpoint_key,
    from_uri,
    key_problem,
)
from tasks.stores.local import LocalFolderStore

__all__ = [
    "DEFAULT_FULL_SCAN_EVERY",
    "Checkpoint",
    "CheckpointManifest",
    "CheckpointStore",
    "LoadResult",
    "LocalFolderStore",
    "ManifestGone",
    "ManifestRef",
    "ManifestRejected",
    "ScanCursor",
    "ScanResult",
    "StoreError",
    "checkpoint_key",
    "from_uri",
    "key_problem",
]


def __getattr__(name: str) -> object:
    # S3Store on first use, so `import tasks.stores` never imports boto3.
    if name == "S3Store":
        from tasks.stores.s3 import S3Store

        return S3Store
    raise AttributeError(f"module 'tasks.stores' has no attribute {name!r}")
