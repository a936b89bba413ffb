"""A checkpoint store in a local folder (the embedded default, and shared file systems).

Manifests are found by walking the folder without following symbolic links, and
read with O_NOFOLLOW, so nothing outside the root is ever read through a link
planted inside it. A listing walks the whole tree once (a local folder has no
sorted index), but with a cursor it skips every directory whose keys all sort at
or before the cursor, so a tick with nothing new reads only the directories on
the path to the newest key.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    Checkpoint,
    CheckpointManifest,
    ManifestRejected,
    manifest_bytes,
    sha256_digest,
    write_manifest,
)
from tasks.storage import parse_uri
from tasks.stores.base import (
    STORES,
    CheckpointStore,
    ManifestGone,
    ManifestRef,
    StoreError,
    key_problem,
)

if TYPE_CHECKING:
    from tasks.settings import Settings

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class LocalFolderStore(CheckpointStore):
    def __init__(self, root: Path | str, *, create: bool = False):
        # Resolved once, so the containment check below compares real paths.
        self.root = Path(root).expanduser().resolve()
        self._root = str(self.root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_uri(cls, uri: str, *, create: bool = False) -> LocalFolderStore:
        """`file:///abs/path` (host empty or localhost) or a plain path."""
        location = parse_uri(uri, what="checkpoint store")
        if location.path is None:
            raise ValueError(f"checkpoint store {uri!r}: an s3 URI names an S3Store, not a local folder")
        return cls(location.path, create=create)

    @property
    def uri(self) -> str:
        return self.root.as_uri() + "/"

    def path_for(self, key: str) -> Path:
        """The checkpoint's folder on disk."""
        problem = key_problem(key)
        if problem:
            raise ValueError(f"checkpoint key {key!r}: {problem}")
        return self.root / key

    def uri_for(self, key: str) -> str:
        return self.path_for(key).as_uri() + "/"

    def list_manifests(self, start_after: str | None = None) -> Iterator[ManifestRef]:
        if not self.root.is_dir():
            raise StoreError(f"{self.uri}: checkpoint folder does not exist (or is not a folder)")
        found: list[tuple[str, os.DirEntry[str]]] = []
        stack: list[tuple[str, str]] = [("", str(self.root))]
        while stack:
            rel, path = stack.pop()
            try:
                entries = os.scandir(path)
            except FileNotFoundError:
                continue  # removed while we walked: it holds nothing now
            except OSError as exc:
                raise StoreError(f"{self.uri}: cannot list {path}: {exc.strerror}") from exc
            with entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        child = rel + entry.name
                        # Every key under child starts with child + "/", and "/" < "0": all of them
                        # sort before child + "0", so none can come after the cursor.
                        if start_after is not None and start_after >= child + "0":
                            continue
                        stack.append((child + "/", entry.path))
                    elif entry.name == MANIFEST_NAME and rel:
                        manifest_key = rel + MANIFEST_NAME
                        if start_after is None or manifest_key > start_after:
                            # Symlinks and other non-files are listed too, so read_manifest can report them.
                            found.append((manifest_key, entry))
        found.sort(key=lambda item: item[0])
        for manifest_key, entry in found:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield _ref(manifest_key[: -len(MANIFEST_NAME) - 1], st)

    def find(self, key: str) -> ManifestRef | None:
        """The manifest at exactly `key` (see CheckpointStore.find), by one lstat, not a walk."""
        problem = key_problem(key)
        if problem:
            raise ManifestRejected(key, f"unsafe checkpoint key: {problem}")
        path = os.path.join(self._root, key, MANIFEST_NAME)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(f"{path}: cannot look up: {exc.strerror}") from exc
        # As a listing: anything but a folder is listed (read_manifest reports links and other
        # non-files, and a folder on the way that is a link).
        return None if stat.S_ISDIR(st.st_mode) else _ref(key, st)

    def read_manifest(self, ref: ManifestRef) -> bytes:
        problem = key_problem(ref.key)
        if problem:
            raise ManifestRejected(ref.key, f"unsafe checkpoint key: {problem}")
        folder = os.path.join(self._root, ref.key)
        path = os.path.join(folder, MANIFEST_NAME)
        # Listing never follows a linked folder, so the real path equals the plain one unless a folder on
        # the way was swapped for a link since (or the ref was made up): never read through it.
        if os.path.realpath(folder) != folder:
            raise ManifestRejected(
                ref.key, "checkpoint folder is reached through a symbolic link; refusing to follow it"
            )
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            raise ManifestGone(f"{self.uri_for(ref.key)}{MANIFEST_NAME}: no longer exists") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ManifestRejected(
                    ref.key, "manifest is a symbolic link; refusing to follow it"
                ) from None
            raise StoreError(f"{path}: cannot open: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ManifestRejected(ref.key, "manifest is not a regular file")
            if st.st_size > MAX_MANIFEST_BYTES:
                raise ManifestRejected(
                    ref.key, f"manifest is {st.st_size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit"
                )
            chunks: list[bytes] = []
            remaining = MAX_MANIFEST_BYTES + 1  # one byte more tells a file that grew since fstat
            while remaining > 0:
                chunk = os.read(fd, remaining)
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        except OSError as exc:
            raise StoreError(f"{path}: cannot read: {exc.strerror}") from exc
        finally:
            os.close(fd)
        raw = b"".join(chunks)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ManifestRejected(ref.key, f"manifest is over the {MAX_MANIFEST_BYTES}-byte limit")
        return raw

    def put_checkpoint(
        self, key: str, files: Mapping[str, bytes], manifest: CheckpointManifest, *, overwrite: bool = False
    ) -> Checkpoint:
        self.check_put(key, files, manifest)
        folder = self.root / key
        if not overwrite and os.path.lexists(folder / MANIFEST_NAME):
            raise FileExistsError(f"{self.uri_for(key)}{MANIFEST_NAME}: a checkpoint manifest already exists")
        for name, data in files.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as fh:
                fh.write(data)
                fh.flush()
                # On disk before the manifest says the checkpoint is complete.
                os.fsync(fh.fileno())
        write_manifest(folder, manifest, overwrite=overwrite)
        raw = manifest_bytes(manifest)
        return Checkpoint(
            manifest=manifest, uri=self.uri_for(key), key=key, digest=manifest.digest or sha256_digest(raw)
        )


def _ref(key: str, st: os.stat_result) -> ManifestRef:
    return ManifestRef(
        key=key,
        manifest_key=f"{key}/{MANIFEST_NAME}",
        size=st.st_size,
        last_modified=dt.datetime.fromtimestamp(st.st_mtime, dt.UTC),
        # A rewrite changes the change time (which no user can set back) or, when replaced, the inode.
        version=f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}",
    )


@STORES.register("file")
def open_local_store(uri: str, settings: Settings | None, create: bool) -> LocalFolderStore:
    return LocalFolderStore.from_uri(uri, create=create)
