"""One checkpoint by URI (what `rsp evaluate URI` and UI reruns name), what runners need of it, and
what the ledger knows of its identity.

Identity: a checkpoint is its URI *and* its digest. The ledger holds the digest each determination
of a URI was made for, and a `checkpoint.changed` event whenever the digest found at a URI differs
from the one it last knew there (weights overwritten, or deleted and uploaded again). The evaluation
key of a URI is `<uri>@policy:<16 hex of the policy sha256>` until its first change; after one it
also names the digest and the change (`#<16 hex of the digest>@<seq of the latest change>`), so
every change is evaluated once, even a change back to content evaluated before. Keys of checkpoints
that never changed are what they always were, so existing claims keep holding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from policy.identity import policy_sha256
from tasks.benchmarks.base import CheckpointInfo
from tasks.ledger.events import CheckpointChanged, DeterminationRecorded
from tasks.manifest import Checkpoint, ManifestRejected
from tasks.storage import parse_uri
from tasks.stores.base import CheckpointStore, from_uri

if TYPE_CHECKING:
    from policy.schema import Policy
    from tasks.ledger import Ledger


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
    # A file URI is percent-encoded (Path.as_uri): the key is the folder's name as it is on disk.
    return head, unquote(name) if stripped.startswith("file:") else name


def load_checkpoint(uri: str) -> tuple[CheckpointStore, Checkpoint]:
    """Load the checkpoint whose folder `uri` names: its own manifest, never a sibling's. Raises
    ManifestRejected (with the reason) when it is missing or invalid: an incomplete checkpoint is never
    evaluated."""
    root, name = split_checkpoint_uri(uri)
    store = from_uri(root)
    ref = store.find(name)
    if ref is None:
        raise ManifestRejected(uri, "no checkpoint.json: the checkpoint is incomplete or does not exist")
    return store, store.load(ref)


def evaluation_key(checkpoint_uri: str, policy: Policy, digest: str | None = None,
                   change_seq: int | None = None) -> str:
    """Exactly once per (checkpoint, policy): a changed policy re-decides a checkpoint, and its
    benchmark results come from the cache unless `force`. After the checkpoint changed (its latest
    `checkpoint.changed` at `change_seq`), once per (checkpoint, policy, digest, change)."""
    base = f"{checkpoint_uri}@policy:{policy_sha256(policy)[:16]}"
    if digest is None or change_seq is None:
        return base
    return f"{base}#{digest.removeprefix('sha256:')[:16]}@{change_seq}"


@dataclass(frozen=True)
class CheckpointHistory:
    """What the ledger knows of one checkpoint URI: the digest it last saw there (a determination's,
    or a change's new one), how many changes it recorded, and the seq of the latest."""

    uri: str
    last_digest: str | None = None
    changes: int = 0
    last_change_seq: int | None = None

    @classmethod
    def read(cls, ledger: Ledger, uri: str) -> CheckpointHistory:
        seen: list[tuple[int, str | None]] = []
        for ev in ledger.iter_events(kind=DeterminationRecorded.KIND, subject=uri):
            checkpoint = ev.payload.get("checkpoint")
            seen.append((ev.seq, checkpoint.get("digest") if isinstance(checkpoint, dict) else None))
        changes = [(ev.seq, ev.payload.get("new_digest")) for ev in
                   ledger.iter_events(kind=CheckpointChanged.KIND, subject=uri)]
        seen.sort(key=lambda item: item[0])
        last = max([*seen[-1:], *changes[-1:]], key=lambda item: item[0], default=(None, None))
        return cls(uri=uri, last_digest=last[1], changes=len(changes),
                   last_change_seq=changes[-1][0] if changes else None)

    def change_to(self, ckpt: Checkpoint) -> CheckpointChanged | None:
        """The change to record when `ckpt` (read at this URI now) is not what the ledger last saw here."""
        if self.last_digest is None or self.last_digest == ckpt.digest:
            return None
        return CheckpointChanged(uri=ckpt.uri, run_id=ckpt.run_id, step=ckpt.step, old_digest=self.last_digest,
                                 new_digest=ckpt.digest,
                                 cause=f"checkpoint-changed:{ckpt.uri}#{ckpt.digest}@{self.changes}")

    def evaluation_key(self, ckpt: Checkpoint, policy: Policy) -> str:
        """The evaluation key of `ckpt`'s content now (see the module docstring)."""
        return evaluation_key(ckpt.uri, policy, ckpt.digest, self.last_change_seq)


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
