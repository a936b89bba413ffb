"""Detection against a hostile or careless checkpoint store (issue 13, findings 1, 3 and 7).

- Rejection, not failure: every key class a store can hold but the gate cannot accept is
  rejected with its reason, recorded once, and the valid checkpoints listed after it are
  evaluated, on that tick and later ones.
- Exact manifest lookup: a checkpoint's manifest is the one at its own key, never a sibling's
  whose name extends it ("step-3-x", "step-3.retry" sort before "step-3/").
- Checkpoint identity: a manifest's run and step agree with a `<run>/step-<n>/` key; a digest
  that changes after its determination is recorded, halts the run and is evaluated again.
- Two checkpoints claiming one (run, step) are both kept, in their own run folders, and flagged.

The store-level tests run on a local folder and on moto's S3 server over HTTP; the flow tests
run the watch and evaluate flows against a real Prefect server, like tests/test_flows.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.checkpoint_uri import CheckpointHistory, evaluation_key, load_checkpoint, split_checkpoint_uri
from tasks.manifest import MANIFEST_NAME, Checkpoint, manifest_bytes, new_manifest, sha256_digest
from tasks.run_folder import run_folder
from tasks.stores import (
    CheckpointStore,
    LocalFolderStore,
    ManifestRejected,
    ScanCursor,
    checkpoint_key,
    key_problem,
)
from tasks.stores.base import StoreError, printable_key

WriteRaw = Callable[[str, bytes], None]

# Over 900 characters, yet under S3's 1,024 bytes with the prefix, and each segment under 255 bytes.
LONG = "run-l/" + "/".join(["d" * 220] * 4) + "/step-000000001"
# Key classes a local folder can hold (a folder cannot be named "", "." or ".."), with the reason's words.
LOCAL_HOSTILE = {
    "run-h/back\\slash": "backslash",
    "run-h/ctl\x01char": "control characters",
    "run-h/c1\x85char": "control characters",
    "run-h/hash#frag": "'#'",
    "run-h/query?x=1": "'?'",
    LONG: "longer than 900",
    "run-h/zz\udcff": "UTF-8",  # a folder name that is not UTF-8 (byte 0xff), as os.scandir returns it
}
S3_HOSTILE = {
    **{k: v for k, v in LOCAL_HOSTILE.items() if v != "UTF-8"},
    "run-h/../escape": "'..'",
    "run-h/./dot": "'.'",
    "run-h//empty": "empty",
}


def raw_manifest(run_id: str, step: int, compute: float = 1e21) -> bytes:
    return manifest_bytes(new_manifest(run_id, step, compute))


# -- the two backends ----------------------------------------------------------------------------


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[CheckpointStore, WriteRaw, dict[str, str]]]:
    if request.param == "local":
        store = LocalFolderStore(tmp_path / "checkpoints", create=True)

        def write_local(key: str, data: bytes) -> None:
            path = store.root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        yield store, write_local, LOCAL_HOSTILE
        return
    s3_endpoint, s3_bucket, s3_client = (request.getfixturevalue(n) for n in ("s3_endpoint", "s3_bucket", "s3_client"))
    from tasks.settings import get_settings
    from tasks.stores.s3 import S3Store

    # load_checkpoint opens the store its URI names, with the settings' endpoint.
    request.getfixturevalue("monkeypatch").setenv("RSP_S3_ENDPOINT_URL", s3_endpoint)
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)

    s3 = S3Store(s3_bucket, "checkpoints", endpoint_url=s3_endpoint)

    def write_s3(key: str, data: bytes) -> None:
        s3_client.put_object(Bucket=s3_bucket, Key=s3.prefix + key, Body=data)

    yield s3, write_s3, S3_HOSTILE


def test_every_hostile_key_class_is_rejected_and_valid_checkpoints_around_it_load(backend: Any) -> None:
    store, write_raw, hostile = backend
    valid = ["run-a/step-000000001", "run-h/step-000000001", "zz-last/step-000000001"]
    for key in [*hostile, *valid]:
        run_id = key.split("/")[0]
        write_raw(f"{key}/{MANIFEST_NAME}", raw_manifest(run_id, 1))
    refs = list(store.list_manifests())
    assert {r.key for r in refs} == {*hostile, *valid}
    loaded = store.load_all(refs, max_workers=4)
    assert [c.key for c in loaded.checkpoints] == valid
    reasons = {r.key: r.reason for r in loaded.rejected}
    assert set(reasons) == set(hostile)
    for key, words in hostile.items():
        assert reasons[key].startswith("unsafe checkpoint key") and words in reasons[key], (key, reasons[key])
    # What the ledger and the logs show of each: printable, short, and one per key.
    shown = {printable_key(k) for k in hostile}
    assert len(shown) == len(hostile) and all(s.isprintable() and len(s) < 400 for s in shown)


def test_keys_that_cannot_be_a_uri_are_refused_when_written_too() -> None:
    for key in ("r/a#b", "r/a?b", "r/\x85", "r/" + "x" * 901):
        assert key_problem(key) is not None
    assert key_problem("run-a/step-000000001") is None and key_problem("r/with space/é%41") is None


def test_a_non_utf8_folder_name_is_rejected_with_a_printable_record(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "checkpoints", create=True)
    folder = os.path.join(os.fsencode(store.root), b"run-a", b"zz\xff")
    os.makedirs(folder)
    with open(os.path.join(folder, MANIFEST_NAME.encode()), "wb") as fh:
        fh.write(raw_manifest("run-a", 1))
    [ref] = store.list_manifests()
    loaded = store.load_all([ref])
    assert loaded.checkpoints == () and "UTF-8" in loaded.rejected[0].reason
    shown = printable_key(ref.key)
    assert shown.isprintable() and shown.encode("utf-8") and "\\xff" in shown
    # Sorting after every valid key, it never becomes the watcher's cursor (which could not be saved).
    store.put_checkpoint(checkpoint_key("run-a", 1), {}, new_manifest("run-a", 1, 1e21))
    scan = store.scan()
    assert len(scan.refs) == 2 and scan.next_cursor.start_after == f"run-a/step-000000001/{MANIFEST_NAME}"
    assert ScanCursor.model_validate_json(scan.next_cursor.model_dump_json()) == scan.next_cursor
    assert [r.key for r in store.scan(scan.next_cursor).refs] == [ref.key]  # listed again, rejected again


def test_a_manifest_is_found_at_its_own_key_never_at_a_sibling(backend: Any) -> None:
    store, write_raw, _ = backend
    key = "run/step-000000003"
    siblings = ["run/step-000000003-x", "run/step-000000003.retry", "run/step-000000003 ", "run/step-0000000030"]
    for sibling in siblings:
        write_raw(f"{sibling}/{MANIFEST_NAME}", raw_manifest("run", 3, 5e21))
    write_raw(f"{key}/{MANIFEST_NAME}.bak", b"{}")
    assert store.find(key) is None
    load_uri = store.uri_for(key)
    with pytest.raises(ManifestRejected, match="incomplete or does not exist"):
        load_checkpoint(load_uri)
    own = raw_manifest("run", 3, 1e21)
    write_raw(f"{key}/{MANIFEST_NAME}", own)
    ref = store.find(key)
    assert ref is not None and ref.key == key and ref.size == len(own) and ref.version
    _, ck = load_checkpoint(load_uri)
    assert (ck.key.rsplit("/", 1)[-1], ck.uri, ck.digest) == ("step-000000003", load_uri, sha256_digest(own))
    for sibling in siblings:
        found = store.find(sibling)
        assert found is not None and found.key == sibling


def test_a_local_checkpoint_uri_names_its_folder_as_written_on_disk(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "check points", create=True)
    key = "run-é/ckpt 3%41"
    store.put_checkpoint(key, {"w": b"1"}, new_manifest("run-e", 3, 1e21))
    uri = store.uri_for(key)
    assert "%20" in uri and split_checkpoint_uri(uri)[1] == "ckpt 3%41"
    assert load_checkpoint(uri)[1].key == "ckpt 3%41"


# -- identity ----------------------------------------------------------------------------------------


def test_a_manifest_that_disagrees_with_its_key_is_rejected(backend: Any) -> None:
    store, write_raw, _ = backend
    cases = {
        "run-a/step-000000005": (raw_manifest("run-a", 6), "step: manifest says 6"),
        "run-a/step-000000007": (raw_manifest("run-b", 7), "run_id: manifest says 'run-b'"),
        "run-a/step-000000008": (raw_manifest("run-a", 10**9), "step: manifest says 1000000000"),
    }
    accepted = {
        "run-a/step-000000009": raw_manifest("run-a", 9),
        "run-a/step-10": raw_manifest("run-a", 10),  # fewer digits than recommended: the number still counts
        "team/run-a/step-000000011": raw_manifest("run-a", 11),
        "run-a/ckpt-12": raw_manifest("run-z", 99),  # not the recommended shape: names no run or step
    }
    for key, (data, _) in cases.items():
        write_raw(f"{key}/{MANIFEST_NAME}", data)
    for key, data in accepted.items():
        write_raw(f"{key}/{MANIFEST_NAME}", data)
    loaded = store.load_all(store.list_manifests())
    assert sorted(c.key for c in loaded.checkpoints) == sorted(accepted)
    reasons = {r.key: r.reason for r in loaded.rejected}
    assert set(reasons) == set(cases)
    for key, (_, words) in cases.items():
        assert words in reasons[key], (key, reasons[key])
    with pytest.raises(ManifestRejected, match="run_id: manifest says 'run-b'"):
        load_checkpoint(store.uri_for("run-a/step-000000007"))
    # A trainer cannot write one either.
    with pytest.raises(ValueError, match="step: manifest says 4"):
        store.put_checkpoint(checkpoint_key("run-a", 3), {}, new_manifest("run-a", 4, 1e21))
    assert store.find(checkpoint_key("run-a", 3)) is None


def _determination(ledger: Any, ck: Checkpoint) -> None:
    from tasks.ledger.events import DeterminationRecorded

    ledger.record(DeterminationRecorded.from_payload({"checkpoint": {"run_id": ck.run_id, "step": ck.step,
                                                                     "uri": ck.uri, "digest": ck.digest},
                                                      "decision": "proceed"}), ck.uri)


def test_every_change_of_digest_gets_its_own_evaluation_key(tmp_path: Path) -> None:
    from tasks.inputs import read_policy
    from tasks.ledger import Ledger

    pol = read_policy(Path(__file__).parent / "data" / "tiny-policy.yaml")
    uri = "file:///ck/run-a/step-000000001/"

    def ck(compute: float) -> Checkpoint:
        return Checkpoint.from_manifest(raw_manifest("run-a", 1, compute), key="run-a/step-000000001", uri=uri)

    a, b = ck(1e21), ck(2e21)
    with Ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        fresh = CheckpointHistory.read(ledger, uri)
        assert fresh.change_to(a) is None and fresh.evaluation_key(a, pol) == evaluation_key(uri, pol)
        _determination(ledger, a)
        assert CheckpointHistory.read(ledger, uri).change_to(a) is None
        keys = [evaluation_key(uri, pol)]
        for now, before in ((b, a), (a, b), (b, a)):  # changed, changed back, changed again
            history = CheckpointHistory.read(ledger, uri)
            change = history.change_to(now)
            assert change is not None and (change.old_digest, change.new_digest) == (before.digest, now.digest)
            assert change.cause == f"checkpoint-changed:{uri}#{now.digest}@{history.changes}"
            ledger.record(change, uri)
            after = CheckpointHistory.read(ledger, uri)
            assert after.change_to(now) is None  # recorded once; the next look sees the new digest
            keys.append(after.evaluation_key(now, pol))
            _determination(ledger, now)
            assert CheckpointHistory.read(ledger, uri).evaluation_key(now, pol) == keys[-1]
        assert len(set(keys)) == 4 and all(k.startswith(evaluation_key(uri, pol)) for k in keys)


# -- run folders -----------------------------------------------------------------------------------


def test_two_checkpoints_of_one_run_and_step_get_their_own_run_folders(tmp_path: Path) -> None:
    legacy = tmp_path / "runs" / "run" / "step-000000003"
    legacy.mkdir(parents=True)  # written before folders named their checkpoint
    first = run_folder(tmp_path / "runs", "run", 3, "file:///ck/run/step-000000003/")
    retry = run_folder(tmp_path / "runs", "run", 3, "file:///ck/run/step-000000003.retry/")
    other_store = run_folder(tmp_path / "runs", "run", 3, "s3://bucket/run/step-000000003/")
    assert first == legacy and len({first, retry, other_store}) == 3
    assert retry.name.startswith("step-000000003~") and retry.parent == first.parent
    assert run_folder(tmp_path / "runs", "run", 3, "file:///ck/run/step-000000003.retry/") == retry
    assert (retry / "checkpoint-uri.txt").read_text() == "file:///ck/run/step-000000003.retry/\n"


# -- the flows -------------------------------------------------------------------------------------


@pytest.fixture
def attested_baseline(rsp_home: Path) -> None:
    """The tiny policy's baseline safeguard, attested by a CISO on the roster (as in test_flows)."""
    from tasks.safeguards import new_attestation, open_evidence_store
    from tasks.trust.keys import generate_key_files, load_private_key

    rsp_home.mkdir(parents=True, exist_ok=True)
    key, line = generate_key_files(rsp_home / "keys", "carol")  # a throwaway key: attestations are signed
    (rsp_home / "roster.yaml").write_text(f"people:\n  carol: {{roles: [ciso], public_keys: ['{line}']}}\n")
    open_evidence_store().write(new_attestation("sg-base", "carol", "ciso", "baseline audit 2026-11",
                                                key=load_private_key(key)))


def _ledger() -> Any:
    from tasks.ledger import Ledger
    from tasks.settings import get_settings

    return Ledger(get_settings().resolved_ledger_url)


def _watch(policy: Path, store: str, **kw: Any) -> Any:
    from flows.watch import watch

    return watch(store=store, policy=str(policy), **kw)


def _hostile_tick_twice(pipeline_policy: Path, store_uri: str, write_raw: WriteRaw, hostile: dict[str, str]) -> None:
    """Hostile keys around valid checkpoints, and a manifest under another run's key: two ticks."""
    from tasks.stores import from_uri

    store = from_uri(store_uri, create=True)
    for key in hostile:
        write_raw(f"{key}/{MANIFEST_NAME}", raw_manifest("run-h", 1))
    store.put_checkpoint(checkpoint_key("run-h", 100), {"w": b"1"}, new_manifest("run-h", 100, 1e21))
    write_raw(f"{checkpoint_key('run-h', 300)}/{MANIFEST_NAME}", raw_manifest("run-h", 10**9))  # step lie
    write_raw(f"{checkpoint_key('run-h', 400)}/{MANIFEST_NAME}", raw_manifest("run-x", 400))  # run lie
    store.put_checkpoint(checkpoint_key("zz-last", 100), {"w": b"1"}, new_manifest("zz-last", 100, 1e21))
    first = _watch(pipeline_policy, store_uri)
    assert sorted((r.run_id, r.step, r.status) for r in first.evaluated) == [
        ("run-h", 100, "evaluated"), ("zz-last", 100, "evaluated")]
    assert first.newly_rejected == len(hostile) + 2 == len(first.rejected)
    assert {r.key for r in first.rejected} >= {printable_key(k) for k in hostile}
    # A later valid checkpoint, on a later tick; the hostile ones are listed again and not re-recorded.
    store.put_checkpoint(checkpoint_key("zz-last", 200), {"w": b"1"}, new_manifest("zz-last", 200, 1.1e21))
    second = _watch(pipeline_policy, store_uri, full_scan=True)
    assert [(r.run_id, r.step) for r in second.evaluated] == [("zz-last", 200)]
    assert second.newly_rejected == 0 and len(second.rejected) == len(hostile) + 2
    ledger = _ledger()
    assert len(ledger.events(kind="checkpoint.rejected")) == len(hostile) + 2
    # The rejected objects in run-h's prefix never make it look evaluated past step 100, nor run-x at all.
    assert [d["checkpoint"]["step"] for d in ledger.determinations("run-h")] == [100]
    assert ledger.determinations("run-x") == [] and ledger.previous_determination("run-h")["checkpoint"]["step"] == 100
    assert ledger.verify().ok


@pytest.mark.integration
def test_watch_on_a_local_folder_rejects_hostile_keys_and_goes_on(prefect_server, rsp_home, pipeline_policy,
                                                                  attested_baseline) -> None:
    root = rsp_home / "checkpoints"

    def write_local(key: str, data: bytes) -> None:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)

    _hostile_tick_twice(pipeline_policy, str(root), write_local, LOCAL_HOSTILE)


@pytest.mark.integration
def test_watch_on_s3_rejects_hostile_keys_and_finds_a_rewrite_on_its_periodic_full_scan(
        prefect_server, rsp_home, pipeline_policy, attested_baseline, s3_endpoint, s3_bucket, s3_client,
        monkeypatch) -> None:
    from tasks.gate import ScalingGate
    from tasks.settings import get_settings
    from tasks.stores import DEFAULT_FULL_SCAN_EVERY, ScanCursor, from_uri

    monkeypatch.setenv("RSP_S3_ENDPOINT_URL", s3_endpoint)
    get_settings.cache_clear()
    uri = f"s3://{s3_bucket}/ckpts"

    def write_s3(key: str, data: bytes) -> None:
        s3_client.put_object(Bucket=s3_bucket, Key=f"ckpts/{key}", Body=data)

    _hostile_tick_twice(pipeline_policy, uri, write_s3, S3_HOSTILE)
    # Deleted and uploaded again with other weights: invisible to incremental ticks (its key is behind
    # the cursor), found by the full scan every DEFAULT_FULL_SCAN_EVERY ticks, which is due now.
    key = checkpoint_key("run-h", 100)
    s3_client.delete_object(Bucket=s3_bucket, Key=f"ckpts/{key}/{MANIFEST_NAME}")
    from_uri(uri).put_checkpoint(key, {"w": b"2"}, new_manifest("run-h", 100, 1e21, notes="retrained"))
    assert _watch(pipeline_policy, uri).evaluated == []
    cursor = next((rsp_home / "watch").glob("cursor-*.json"))
    due = ScanCursor.model_validate_json(cursor.read_text()).model_copy(
        update={"incremental_scans": DEFAULT_FULL_SCAN_EVERY})
    cursor.write_text(due.model_dump_json())
    tick = _watch(pipeline_policy, uri)
    assert tick.full_scan and [(r.run_id, r.step) for r in tick.evaluated] == [("run-h", 100)]
    (changed,) = _ledger().events(kind="checkpoint.changed")
    assert changed.payload["old_digest"] != changed.payload["new_digest"]
    assert not ScalingGate().is_open("run-h", "training") and ScalingGate().is_open("zz-last", "training")


@pytest.mark.integration
def test_siblings_duplicates_and_a_reuploaded_checkpoint(prefect_server, rsp_home, pipeline_policy,
                                                         attested_baseline) -> None:
    from flows.evaluate import evaluate
    from tasks.gate import ScalingGate
    from tasks.stores import from_uri

    root = rsp_home / "checkpoints"
    store = from_uri(str(root), create=True)
    key = checkpoint_key("run", 3)
    # A trainer's retry and a sibling that extends the name, both claiming (run, 3), sort before it.
    for name, compute in ((f"{key}-x", 2e21), (f"{key}.retry", 3e21), (key, 1e21)):
        store.put_checkpoint(name, {"w": name.encode()}, new_manifest("run", 3, compute))
    first = _watch(pipeline_policy, str(root))
    assert sorted(r.checkpoint for r in first.evaluated) == sorted(
        store.uri_for(k) for k in (key, f"{key}-x", f"{key}.retry"))
    folders = sorted(p.name for p in (rsp_home / "runs" / "run").iterdir() if p.is_dir())
    assert len(folders) == 3 and "step-000000003" in folders
    assert (rsp_home / "runs" / "run" / "step-000000003" / "checkpoint-uri.txt").read_text() == store.uri_for(key) + "\n"
    for folder in folders:
        assert json.loads((rsp_home / "runs" / "run" / folder / "determination.json").read_text())["checkpoint"][
            "uri"] == (rsp_home / "runs" / "run" / folder / "checkpoint-uri.txt").read_text().strip()
    ledger = _ledger()
    flagged = ledger.events(kind="checkpoint.duplicate")
    assert len(flagged) >= 2 and all(e.payload["step"] == 3 for e in flagged)
    # `rsp evaluate --force` finds the checkpoint itself, not a sibling.
    forced = evaluate(store.uri_for(key), policy=str(pipeline_policy), force=True)
    assert forced.status == "evaluated" and forced.checkpoint == store.uri_for(key)
    # Claimed and evaluated; deleted; uploaded again with other weights: recorded, halted, evaluated again.
    ref = store.find(key)
    assert ref is not None
    old_digest = store.load(ref).digest
    os.remove(root / key / MANIFEST_NAME)
    new = store.put_checkpoint(key, {"w": b"retrained"}, new_manifest("run", 3, 1e21, notes="retrained"))
    res = _watch(pipeline_policy, str(root), full_scan=True)
    assert [(r.checkpoint, r.status) for r in res.evaluated] == [(new.uri, "evaluated")]
    (changed,) = ledger.events(kind="checkpoint.changed")
    assert (changed.subject, changed.payload["old_digest"], changed.payload["new_digest"]) == (
        new.uri, old_digest, new.digest)
    (halt,) = ledger.open_halts()
    assert halt["cause_key"].startswith(f"manual:checkpoint-changed:{new.uri}#{new.digest}")
    assert not ScalingGate().is_open("run", "training")
    latest = ledger.events(kind="determination.recorded", subject=new.uri)[-1]
    assert latest.payload["checkpoint"]["digest"] == new.digest
    # Nothing more to do: the new content is decided and the change recorded once.
    again = _watch(pipeline_policy, str(root), full_scan=True)
    assert again.evaluated == [] and len(ledger.events(kind="checkpoint.changed")) == 1


class _OneUnreadable(LocalFolderStore):
    """A folder where reading one manifest fails the way S3 AccessDenied, an archived object or a disk
    error does (the store raises StoreError). Root ignores file modes, so the failure is injected."""

    def __init__(self, root: Path, unreadable: set[str]) -> None:
        super().__init__(root)
        self.unreadable = unreadable

    def read_manifest(self, ref: Any) -> bytes:
        if ref.key in self.unreadable:
            raise StoreError(f"{ref.key}: access denied")
        return super().read_manifest(ref)


def test_one_unreadable_manifest_is_rejected_and_the_others_load(tmp_path: Path) -> None:
    root = tmp_path / "ck"
    for step in (1, 2, 3):
        folder = root / "run-a" / f"step-{step:09d}"
        folder.mkdir(parents=True)
        (folder / MANIFEST_NAME).write_bytes(raw_manifest("run-a", step))
    store = _OneUnreadable(root, {"run-a/step-000000002"})
    loaded = store.load_all(store.list_manifests())
    assert [c.step for c in loaded.checkpoints] == [1, 3]
    (rejected,) = loaded.rejected
    assert rejected.key == "run-a/step-000000002" and "unreadable" in rejected.reason
    everything = _OneUnreadable(root, {f"run-a/step-{s:09d}" for s in (1, 2, 3)})
    with pytest.raises(StoreError, match="access denied"):  # the store is down, not one object: abort
        everything.load_all(everything.list_manifests())
