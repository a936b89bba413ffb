"""Checkpoint stores on a real local folder.

`StoreContract` holds the behaviour every backend must have; tests/test_store_s3.py
runs the same class against a moto S3 endpoint over HTTP.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.manifest import MANIFEST_NAME, HuggingFaceModel, manifest_bytes, new_manifest, parse_manifest
from tasks.stores import (
    CheckpointStore,
    LocalFolderStore,
    ManifestRejected,
    ScanCursor,
    StoreError,
    checkpoint_key,
    from_uri,
)

WriteRaw = Callable[[str, bytes], None]  # (key relative to the store root, bytes): bypasses all validation


def manifest_for(key: str) -> bytes:
    run_id, last = key.split("/")[0], key.split("/")[-1]
    run_id = run_id if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", run_id) else "run"
    step = int(last[5:]) if re.fullmatch(r"step-\d+", last) else 0
    return manifest_bytes(new_manifest(run_id, step, 1e20 * (step + 1)))


def keys(refs: object) -> list[str]:
    return [r.key for r in refs]  # type: ignore[attr-defined]


class StoreContract:
    """Subclasses provide fixtures `store` (a fresh, empty store) and `write_raw`."""

    def put_raw_checkpoint(self, write_raw: WriteRaw, key: str) -> None:
        write_raw(f"{key}/{MANIFEST_NAME}", manifest_for(key))

    def test_put_checkpoint_then_list_and_load(self, store: CheckpointStore) -> None:
        key = checkpoint_key("run-a", 100)
        assert key == "run-a/step-000000100"
        m = new_manifest("run-a", 100, 1e22, HuggingFaceModel(path="hf"))
        put = store.put_checkpoint(key, {"hf/config.json": b"{}", "hf/model.safetensors": b"\0" * 10}, m)
        assert put.uri == store.uri_for(key) and put.uri.endswith("/run-a/step-000000100/")
        [ref] = store.list_manifests()
        assert (ref.key, ref.manifest_key) == (key, f"{key}/{MANIFEST_NAME}")
        assert ref.size == len(manifest_bytes(m)) and ref.last_modified.tzinfo is not None
        loaded = store.load(ref)
        assert loaded == put and loaded.manifest == m
        with pytest.raises(FileExistsError, match="already exists"):
            store.put_checkpoint(key, {}, new_manifest("run-a", 100, 2e22))
        assert store.load(ref).manifest == m
        store.put_checkpoint(key, {}, new_manifest("run-a", 100, 2e22), overwrite=True)
        assert store.load(ref).manifest.effective_compute == 2e22

    @pytest.mark.parametrize(
        ("key", "files"),
        [
            ("../escape", {}),
            ("/abs", {}),
            ("a//b", {}),
            ("a\\b", {}),
            ("", {}),
            ("ok", {"../x": b""}),
            ("ok", {MANIFEST_NAME: b"{}"}),
            ("ok", {"sub/checkpoint.json": b"{}"}),
        ],
    )
    def test_put_checkpoint_rejects_unsafe_names(
        self, store: CheckpointStore, key: str, files: dict[str, bytes]
    ) -> None:
        with pytest.raises(ValueError):
            store.put_checkpoint(key, files, new_manifest("r", 1, 1e20))
        assert list(store.list_manifests()) == []

    def test_half_written_checkpoint_is_not_listed_until_its_manifest_lands(
        self, store: CheckpointStore, write_raw: WriteRaw
    ) -> None:
        write_raw("run-a/step-000000001/weights.bin", b"\0" * 100)
        write_raw("run-a/step-000000001/hf/config.json", b"{}")
        assert list(store.list_manifests()) == []
        assert store.scan().refs == ()
        self.put_raw_checkpoint(write_raw, "run-a/step-000000001")
        assert keys(store.list_manifests()) == ["run-a/step-000000001"]

    def test_listing_is_in_ascending_key_order(self, store: CheckpointStore, write_raw: WriteRaw) -> None:
        # '-' and '.' sort before '/', so a walk of sorted folders would put "run/" first; S3 does not.
        wanted = [
            "run/step-000000001",
            "run-b/step-000000001",
            "run.x/step-000000002",
            "run/step-000000010",
            "Zed/step-000000005",
            "run/step-000000002",
            "a/b/c/step-000000003",
            "a/step-000000004",
            "a-b/step-000000001",
        ]
        shuffled = wanted[:]
        random.Random(7).shuffle(shuffled)
        for key in shuffled:
            self.put_raw_checkpoint(write_raw, key)
        assert keys(store.list_manifests()) == sorted(wanted)

    def test_start_after_returns_only_newer_keys(self, store: CheckpointStore, write_raw: WriteRaw) -> None:
        all_keys = sorted(f"run-{r}/step-{s:09d}" for r in "abc" for s in (0, 5, 10))
        for key in all_keys:
            self.put_raw_checkpoint(write_raw, key)
        refs = list(store.list_manifests())
        for i, ref in enumerate(refs):
            assert keys(store.list_manifests(start_after=ref.manifest_key)) == all_keys[i + 1 :]
        assert keys(store.list_manifests(start_after="run-b")) == all_keys[3:]
        assert list(store.list_manifests(start_after="\U0010ffff")) == []

    def test_scan_resumes_from_its_cursor(self, store: CheckpointStore, write_raw: WriteRaw) -> None:
        self.put_raw_checkpoint(write_raw, "run-a/step-000000001")
        first = store.scan()
        assert first.full and keys(first.refs) == ["run-a/step-000000001"]
        assert first.next_cursor == ScanCursor(start_after=f"run-a/step-000000001/{MANIFEST_NAME}")
        nothing = store.scan(first.next_cursor)
        assert not nothing.full and nothing.refs == ()
        assert nothing.next_cursor.start_after == first.next_cursor.start_after
        self.put_raw_checkpoint(write_raw, "run-a/step-000000002")
        more = store.scan(nothing.next_cursor)
        assert keys(more.refs) == ["run-a/step-000000002"] and more.next_cursor.incremental_scans == 2
        # The cursor is plain data and survives a restart of the watcher.
        restored = ScanCursor.model_validate_json(more.next_cursor.model_dump_json())
        assert store.scan(restored).refs == ()

    def test_late_manifest_before_the_cursor_is_found_by_a_full_rescan(
        self, store: CheckpointStore, write_raw: WriteRaw
    ) -> None:
        # run-a/step-100 is still uploading when run-b/step-050 is seen.
        write_raw("run-a/step-000000100/weights.bin", b"\0" * 10)
        self.put_raw_checkpoint(write_raw, "run-b/step-000000050")
        cursor = store.scan(full_every=3).next_cursor
        assert cursor.start_after == f"run-b/step-000000050/{MANIFEST_NAME}"
        self.put_raw_checkpoint(write_raw, "run-a/step-000000100")  # the slow upload finishes
        incremental = store.scan(cursor, full_every=3)
        assert not incremental.full and incremental.refs == ()  # the cursor alone misses it
        forced = store.scan(incremental.next_cursor, full=True, full_every=3)
        assert forced.full and keys(forced.refs) == ["run-a/step-000000100", "run-b/step-000000050"]
        assert forced.next_cursor == ScanCursor(start_after=cursor.start_after, incremental_scans=0)
        # Without asking: after `full_every` incremental scans the next one is full.
        c = cursor
        seen = []
        for _ in range(4):
            result = store.scan(c, full_every=3)
            seen.append((result.full, keys(result.refs)))
            c = result.next_cursor
        assert seen == [
            (False, []),
            (False, []),
            (False, []),
            (True, ["run-a/step-000000100", "run-b/step-000000050"]),
        ]
        assert all(store.scan(c, full_every=0).full for _ in range(2))

    def test_backlog_of_1000_checkpoints_is_listed_and_loaded_completely(
        self, store: CheckpointStore, write_raw: WriteRaw
    ) -> None:
        wanted = [checkpoint_key(f"run-{r}", s * 1000) for r in range(4) for s in range(250)]
        self.write_many(
            write_raw,
            [(f"{k}/{MANIFEST_NAME}", manifest_for(k)) for k in wanted]
            + [(f"run-{r}/step-000000000/weights.bin", b"w") for r in range(4)],
        )
        result = store.scan()
        assert keys(result.refs) == sorted(wanted)
        assert result.next_cursor.start_after == f"{max(wanted)}/{MANIFEST_NAME}"
        loaded = store.load_all(result.refs, max_workers=8)
        assert [c.key for c in loaded.checkpoints] == sorted(wanted)
        assert loaded.rejected == () and loaded.vanished == ()
        assert {(c.run_id, c.step) for c in loaded.checkpoints} == {
            (f"run-{r}", s * 1000) for r in range(4) for s in range(250)
        }
        assert store.scan(result.next_cursor).refs == ()

    def write_many(self, write_raw: WriteRaw, items: list[tuple[str, bytes]]) -> None:
        for key, data in items:
            write_raw(key, data)

    def test_hostile_manifests_are_rejected_and_the_rest_still_load(
        self, store: CheckpointStore, write_raw: WriteRaw
    ) -> None:
        good = ["run-a/step-000000001", "run-a/step-000000003", "run-z/step-000000001"]
        for key in good:
            self.put_raw_checkpoint(write_raw, key)
        ok = manifest_for("run-a/step-000000002").decode()
        hostile = {
            "run-a/step-000000002": b"{not json",
            "run-a/step-000000004": ok[:-2].encode() + b', "extra": 1}',
            "run-a/step-000000005": ok.replace('"simulated"', '"huggingface", "path": "../../etc"').encode(),
            "run-b/step-000000001": b"x" * (64 * 1024 + 1),
            "run-c/step-000000001": b"",
            "run-d/step-000000001": b"[" * 50000,
        }
        for key, data in hostile.items():
            write_raw(f"{key}/{MANIFEST_NAME}", data)
        refs = list(store.list_manifests())
        assert keys(refs) == sorted([*good, *hostile])
        result = store.load_all(refs)
        assert [c.key for c in result.checkpoints] == good
        reasons = {r.key: r.reason for r in result.rejected}
        assert list(reasons) == sorted(hostile)
        assert reasons["run-a/step-000000002"].startswith("malformed JSON")
        assert reasons["run-a/step-000000004"] == "extra: unknown field"
        assert reasons["run-a/step-000000005"].startswith("model.path:")
        assert "over the 65536-byte limit" in reasons["run-b/step-000000001"]
        assert reasons["run-c/step-000000001"] == "manifest is empty"
        with pytest.raises(ManifestRejected, match="run-b/step-000000001: manifest is 65537 bytes"):
            store.read_manifest(next(r for r in refs if r.key == "run-b/step-000000001"))
        # The same with a thread pool, in the same order.
        pooled = store.load_all(refs, max_workers=4)
        assert pooled.checkpoints == result.checkpoints and pooled.vanished == result.vanished == ()
        assert [str(r) for r in pooled.rejected] == [str(r) for r in result.rejected]

    def test_manifest_removed_after_listing_is_reported_as_vanished(
        self, store: CheckpointStore, write_raw: WriteRaw
    ) -> None:
        for key in ("r/step-000000001", "r/step-000000002"):
            self.put_raw_checkpoint(write_raw, key)
        refs = list(store.list_manifests())
        self.delete_raw(store, f"r/step-000000001/{MANIFEST_NAME}")
        result = store.load_all(refs)
        assert keys(result.checkpoints) == ["r/step-000000002"] and result.vanished == ("r/step-000000001",)

    def delete_raw(self, store: CheckpointStore, key: str) -> None:
        raise NotImplementedError


class TestLocalFolderStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalFolderStore:
        return LocalFolderStore(tmp_path / "checkpoints", create=True)

    @pytest.fixture
    def write_raw(self, store: LocalFolderStore) -> WriteRaw:
        def write(key: str, data: bytes) -> None:
            path = store.root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        return write

    def delete_raw(self, store: CheckpointStore, key: str) -> None:
        assert isinstance(store, LocalFolderStore)
        (store.root / key).unlink()

    def test_cursor_pruning_agrees_with_filtering_a_full_listing(
        self, store: LocalFolderStore, write_raw: WriteRaw
    ) -> None:
        rng = random.Random(11)
        segments = ["a", "a-b", "a.b", "a0", "b", "run", "run-1", "run/x", "Z", "step-000000001", "é"]
        wanted = set()
        for _ in range(120):
            key = "/".join(rng.choice(segments) for _ in range(rng.randint(1, 3)))
            wanted.add(key)
            self.put_raw_checkpoint(write_raw, key)
        full = list(store.list_manifests())
        # Nested checkpoints ("Z" and "Z/a-b") make manifest-key order differ from key order; S3 lists the former.
        assert [r.manifest_key for r in full] == sorted(f"{k}/{MANIFEST_NAME}" for k in wanted)
        assert keys(full) != sorted(wanted)
        probes = (
            [r.manifest_key for r in full]
            + [r.key for r in full]
            + ["a", "a/", "a0", "run-", "run/", "zz", "\x00"]
        )
        for probe in probes:
            assert list(store.list_manifests(start_after=probe)) == [
                r for r in full if r.manifest_key > probe
            ], probe

    def test_temp_manifests_and_manifests_at_the_root_are_not_listed(
        self, store: LocalFolderStore, write_raw: WriteRaw
    ) -> None:
        write_raw(f".{MANIFEST_NAME}.abc.tmp", b"{}")
        write_raw(f"r/step-000000001/.{MANIFEST_NAME}.abc.tmp", manifest_for("r/step-000000001"))
        write_raw(MANIFEST_NAME, manifest_for("r/step-000000002"))
        assert list(store.list_manifests()) == []

    def test_symbolic_links_are_never_followed(
        self, store: LocalFolderStore, write_raw: WriteRaw, tmp_path: Path
    ) -> None:
        outside = tmp_path / "outside"
        (outside / "step-000000001").mkdir(parents=True)
        (outside / "step-000000001" / MANIFEST_NAME).write_bytes(manifest_for("evil/step-000000001"))
        (outside / "secret.json").write_bytes(manifest_for("evil/step-000000002"))
        os.symlink(outside, store.root / "linked-run")  # a linked folder is not walked
        (store.root / "run-a" / "step-000000001").mkdir(parents=True)
        os.symlink(outside / "secret.json", store.root / "run-a" / "step-000000001" / MANIFEST_NAME)
        refs = list(store.list_manifests())
        assert keys(refs) == ["run-a/step-000000001"]
        result = store.load_all(refs)
        assert (
            result.checkpoints == ()
            and result.rejected[0].reason == "manifest is a symbolic link; refusing to follow it"
        )
        # A ref that leads through a linked folder (swapped in after listing, or made up) is refused too.
        through_link = refs[0].model_copy(
            update={
                "key": "linked-run/step-000000001",
                "manifest_key": f"linked-run/step-000000001/{MANIFEST_NAME}",
            }
        )
        with pytest.raises(ManifestRejected, match="symbolic link"):
            store.load(through_link)

    def test_a_fifo_named_checkpoint_json_is_rejected_without_blocking(self, store: LocalFolderStore) -> None:
        (store.root / "r" / "step-000000001").mkdir(parents=True)
        os.mkfifo(store.root / "r" / "step-000000001" / MANIFEST_NAME)
        [ref] = store.list_manifests()
        with pytest.raises(ManifestRejected, match="not a regular file"):
            store.load(ref)

    def test_missing_folder_is_an_error_not_an_empty_store(self, tmp_path: Path) -> None:
        store = LocalFolderStore(tmp_path / "typo")
        with pytest.raises(StoreError, match="does not exist"):
            list(store.list_manifests())
        with pytest.raises(StoreError):
            store.scan()
        store.put_checkpoint(
            "r/step-000000001", {"w": b"1"}, new_manifest("r", 1, 1e20)
        )  # a trainer creates it
        assert keys(store.list_manifests()) == ["r/step-000000001"]

    def test_put_checkpoint_writes_files_then_the_manifest(self, store: LocalFolderStore) -> None:
        store.put_checkpoint(
            "r/step-000000001", {"hf/config.json": b"{}", "w.bin": b"12"}, new_manifest("r", 1, 1e20)
        )
        folder = store.path_for("r/step-000000001")
        assert sorted(os.listdir(folder)) == [MANIFEST_NAME, "hf", "w.bin"]
        assert (folder / "w.bin").read_bytes() == b"12"
        assert parse_manifest((folder / MANIFEST_NAME).read_bytes(), "k").step == 1

    def test_from_uri(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        root = tmp_path / "with space"
        store = from_uri(root.as_uri(), create=True)
        assert isinstance(store, LocalFolderStore) and store.root == root.resolve() and root.is_dir()
        assert store.uri == root.resolve().as_uri() + "/"
        assert store.uri_for("r/step-000000001") == (root.resolve() / "r/step-000000001").as_uri() + "/"
        assert from_uri(str(root)).root == root.resolve()  # type: ignore[attr-defined]
        assert from_uri(f"file://localhost{root}").root == root.resolve()  # type: ignore[attr-defined]
        monkeypatch.chdir(tmp_path)
        assert from_uri("with space").root == root.resolve()  # type: ignore[attr-defined]
        for bad in ("file://otherhost/x", "gs://bucket/x", "file:relative", "s3://", "s3://Bad_Bucket/x"):
            with pytest.raises(ValueError, match="bucket|file|scheme|s3"):
                from_uri(bad)
        # With no URI: the settings' store (default <home>/checkpoints).
        from tasks.settings import Settings

        default = from_uri(None, Settings(home=tmp_path / "home"))
        assert default.uri == (tmp_path / "home" / "checkpoints").resolve().as_uri() + "/"
