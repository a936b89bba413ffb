"""One checkpoint by URI (what `rsp evaluate URI` and UI reruns name), and what runners need of it."""

from __future__ import annotations

from pathlib import Path

from tasks.benchmarks.base import CheckpointInfo
from tasks.manifest import Checkpoint, ManifestRejected
from tasks.storage import parse_uri
from tasks.stores.base import CheckpointStore, from_uri


def split_checkpoint_uri(uri: str) -> tuple[str, str]:
    """(store root URI, key) for a checkpoint folder URI: the key is the folder's last segment."""
    stripped = uri.rstrip("/")
    if not stripped:
        raise ValueError(f"not a checkpoint URI: {uri!r}")
    if "://" not in stripped:
        stripped = Path(stripped).resolve().as_uri()
    head, _, name = stripped.rpartition("/")
    if not name or head.endswith(":/") and not head.startswith("file"):
        raise ValueError(f"{uri!r} names no checkpoint folder (expected <root>/<run>/<step>/)")
    return head, name


def load_checkpoint(uri: str) -> tuple[CheckpointStore, Checkpoint]:
    """Load the checkpoint whose folder `uri` names. Raises ManifestRejected (with the reason) when
    its manifest is missing or invalid: an incomplete checkpoint is never evaluated."""
    root, name = split_checkpoint_uri(uri)
    store = from_uri(root)
    for ref in store.list_manifests(start_after=name):
        if ref.key == name:
            return store, store.load(ref)
        break
    raise ManifestRejected(uri, "no checkpoint.json: the checkpoint is incomplete or does not exist")


def local_path(uri: str) -> Path | None:
    """The folder a file:// checkpoint URI names; None for any other scheme (an S3 checkpoint is not local)."""
    if not uri.startswith("file:"):
        return None
    return parse_uri(uri, what="checkpoint").path


def checkpoint_info(ckpt: Checkpoint) -> CheckpointInfo:
    model = ckpt.manifest.model.model_dump(mode="json")
    if model.get("kind") == "huggingface":
        folder = local_path(ckpt.uri)
        if folder is None:
            # Weights must be local for transformers; S3 checkpoints are synced by the worker first.
            raise ValueError(f"{ckpt.uri}: Hugging Face checkpoints must be on a local or mounted path")
        model["path"] = str((folder / model["path"]).resolve())
    return CheckpointInfo(run_id=ckpt.run_id, step=ckpt.step, effective_compute=ckpt.effective_compute,
                          digest=ckpt.digest, model=model)
