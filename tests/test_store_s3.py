"""Checkpoint stores on S3: the same contract as the local folder, over real HTTP to moto's server,
plus what only S3 has: pages, StartAfter request counts, throttling and prefixes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tasks.manifest import MANIFEST_NAME, manifest_bytes, new_manifest
from tasks.settings import Settings
from tasks.stores import ManifestRef, ManifestRejected, StoreError, checkpoint_key, from_uri
from tasks.stores.s3 import S3Store
from tests.test_store_local import StoreContract, WriteRaw, keys, manifest_for

pytestmark = pytest.mark.integration


class TestS3Store(StoreContract):
    @pytest.fixture
    def store(self, s3_endpoint: str, s3_bucket: str) -> S3Store:
        return S3Store(s3_bucket, "checkpoints", endpoint_url=s3_endpoint)

    @pytest.fixture
    def write_raw(self, store: S3Store, s3_client: Any) -> WriteRaw:
        def write(key: str, data: bytes) -> None:
            s3_client.put_object(Bucket=store.bucket, Key=store.prefix + key, Body=data)

        return write

    def write_many(self, write_raw: WriteRaw, items: list[tuple[str, bytes]]) -> None:
        # moto takes about 200 puts a second; a pool keeps the 1,000-checkpoint backlog to seconds.
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda item: write_raw(*item), items))

    def delete_raw(self, store: Any, key: str) -> None:
        store.client.delete_object(Bucket=store.bucket, Key=store.prefix + key)


@pytest.fixture
def store(s3_endpoint: str, s3_bucket: str) -> S3Store:
    return S3Store(s3_bucket, "checkpoints", endpoint_url=s3_endpoint)


class RequestLog:
    """Counts HTTP requests the store's client really sends (retries included)."""

    def __init__(self, client: Any):
        self.sent: list[str] = []
        client.meta.events.register("before-send.s3", self._record)

    def _record(self, request: Any, **_: Any) -> None:
        self.sent.append(f"{request.method} {request.url}")


def put_manifests(store: S3Store, keys_: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(
                lambda k: store.client.put_object(
                    Bucket=store.bucket, Key=f"{store.prefix}{k}/{MANIFEST_NAME}", Body=manifest_for(k)
                ),
                keys_,
            )
        )


def test_tick_with_nothing_new_is_one_request_however_long_the_history(
    s3_endpoint: str, s3_bucket: str
) -> None:
    # Pages of 100 stand in for S3's 1,000 so the history spans several pages without 1,000s of uploads.
    store = S3Store(s3_bucket, "checkpoints", endpoint_url=s3_endpoint, page_size=100)
    history = [checkpoint_key("run-a", s) for s in range(250)]
    put_manifests(store, history)
    log = RequestLog(store.client)
    full = store.scan()
    assert len(full.refs) == 250 and len(log.sent) == 3
    log.sent.clear()
    tick = store.scan(full.next_cursor)
    assert tick.refs == () and not tick.full
    assert len(log.sent) == 1 and "start-after=" in log.sent[0]
    put_manifests(store, ["run-a/step-000000250"])
    log.sent.clear()
    assert keys(store.scan(tick.next_cursor).refs) == ["run-a/step-000000250"] and len(log.sent) == 1


def test_small_pages_are_followed_to_the_end(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3Store(s3_bucket, "p", endpoint_url=s3_endpoint, page_size=7)
    wanted = [checkpoint_key("r", s) for s in range(30)]
    put_manifests(store, wanted)
    for k in wanted[::3]:  # non-manifest keys make pages with few or no manifests
        store.client.put_object(Bucket=s3_bucket, Key=f"p/{k}/weights.bin", Body=b"w")
    log = RequestLog(store.client)
    assert keys(store.list_manifests()) == wanted
    assert len(log.sent) == 6  # 40 keys / 7 per page
    assert keys(store.list_manifests(start_after=f"{wanted[20]}/{MANIFEST_NAME}")) == wanted[21:]


def _inject_slowdowns(client: Any, count: int) -> list[int]:
    """Answer the next `count` ListObjectsV2 requests with 503 SlowDown before they reach the server."""
    from botocore.awsrequest import AWSResponse

    class Raw:
        def __init__(self, body: bytes):
            self.body = body

        def stream(self, **_: Any) -> Iterator[bytes]:
            yield self.body

    injected = [0]
    body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"

    def maybe_throttle(request: Any, **_: Any) -> AWSResponse | None:
        if "list-type=2" in request.url and injected[0] < count:
            injected[0] += 1
            return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, Raw(body))
        return None

    client.meta.events.register_first("before-send.s3", maybe_throttle)
    return injected


def test_slowdown_backs_off_and_never_skips(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3Store(s3_bucket, "p", endpoint_url=s3_endpoint, page_size=10)
    wanted = [checkpoint_key("r", s) for s in range(25)]
    put_manifests(store, wanted)
    injected = _inject_slowdowns(store.client, 2)
    assert keys(store.scan().refs) == wanted
    assert injected[0] == 2


def test_throttling_that_outlasts_the_retries_is_an_error_not_a_short_listing(
    s3_endpoint: str, s3_bucket: str
) -> None:
    store = S3Store(s3_bucket, "p", endpoint_url=s3_endpoint, page_size=10, max_attempts=2)
    put_manifests(store, [checkpoint_key("r", s) for s in range(25)])
    first = store.scan()
    injected = _inject_slowdowns(store.client, 1000)
    with pytest.raises(StoreError, match="SlowDown"):
        store.scan(first.next_cursor, full=True)
    # botocore's max_attempts counts retries: the first attempt and 2 retries were all throttled.
    assert injected[0] == 3


def test_keys_outside_the_prefix_are_never_listed(store: S3Store, s3_client: Any) -> None:
    for key in ("checkpoints-old/r/step-000000001", "other/r/step-000000001", "r/step-000000001"):
        s3_client.put_object(Bucket=store.bucket, Key=f"{key}/{MANIFEST_NAME}", Body=manifest_for(key))
    s3_client.put_object(Bucket=store.bucket, Key=f"checkpoints/{MANIFEST_NAME}", Body=manifest_for("r"))
    s3_client.put_object(
        Bucket=store.bucket, Key=f"checkpoints/r/step-000000002/{MANIFEST_NAME}.bak", Body=b"{}"
    )
    put_manifests(store, ["r/step-000000003"])
    assert keys(store.list_manifests()) == ["r/step-000000003"]
    # With no prefix the whole bucket is the store.
    whole = S3Store(store.bucket, endpoint_url=store.endpoint_url)
    assert keys(whole.list_manifests()) == [
        "checkpoints-old/r/step-000000001",
        "checkpoints",
        "checkpoints/r/step-000000003",
        "other/r/step-000000001",
        "r/step-000000001",
    ]


def test_unsafe_keys_are_listed_then_rejected(store: S3Store, s3_client: Any) -> None:
    for key in ("../escape/step-1", "a//b", "./x", "back\\slash"):
        s3_client.put_object(
            Bucket=store.bucket, Key=f"checkpoints/{key}/{MANIFEST_NAME}", Body=manifest_for("r")
        )
    put_manifests(store, ["r/step-000000001"])
    result = store.load_all(store.list_manifests())
    assert keys(result.checkpoints) == ["r/step-000000001"]
    assert len(result.rejected) == 4
    assert all(r.reason.startswith("unsafe checkpoint key") for r in result.rejected)


def test_a_manifest_that_grew_after_listing_is_capped_by_the_range_read(
    store: S3Store, s3_client: Any
) -> None:
    key = "r/step-000000001"
    s3_client.put_object(
        Bucket=store.bucket, Key=f"checkpoints/{key}/{MANIFEST_NAME}", Body=b"{" + b" " * 200_000
    )
    stale = ManifestRef(
        key=key,
        manifest_key=f"{key}/{MANIFEST_NAME}",
        size=100,
        last_modified=next(store.list_manifests()).last_modified,
    )
    log = RequestLog(store.client)
    with pytest.raises(ManifestRejected, match="200001 bytes, over the 65536-byte limit"):
        store.read_manifest(stale)
    assert len(log.sent) == 1


def test_put_checkpoint_writes_the_manifest_last(store: S3Store) -> None:
    log = RequestLog(store.client)
    store.put_checkpoint(
        "r/step-000000001", {"a.bin": b"1", "hf/config.json": b"{}"}, new_manifest("r", 1, 1e20)
    )
    puts = [line for line in log.sent if line.startswith("PUT")]
    assert len(puts) == 3 and puts[-1].endswith(f"/r/step-000000001/{MANIFEST_NAME}")
    body = store.client.get_object(Bucket=store.bucket, Key=f"checkpoints/r/step-000000001/{MANIFEST_NAME}")
    assert body["ContentType"] == "application/json"


def test_missing_bucket_is_an_error(s3_endpoint: str) -> None:
    store = S3Store("no-such-bucket-here", endpoint_url=s3_endpoint)
    with pytest.raises(StoreError, match="NoSuchBucket"):
        store.scan()


def test_from_uri_uses_the_settings_endpoint(s3_endpoint: str, s3_bucket: str, tmp_path: Any) -> None:
    settings = Settings(
        home=tmp_path,
        s3_endpoint_url=s3_endpoint,
        s3_region="us-east-1",
        checkpoint_store=f"s3://{s3_bucket}/ck/",
    )
    store = from_uri(None, settings)
    assert isinstance(store, S3Store) and (store.bucket, store.prefix) == (s3_bucket, "ck/")
    assert store.uri == f"s3://{s3_bucket}/ck/" and store.uri_for("r/s") == f"s3://{s3_bucket}/ck/r/s/"
    store.put_checkpoint("r/step-000000001", {}, new_manifest("r", 1, 1e20))
    assert keys(from_uri(f"s3://{s3_bucket}/ck", settings).list_manifests()) == ["r/step-000000001"]
    loaded = store.load(next(store.list_manifests()))
    assert loaded.digest.startswith("sha256:") and loaded.uri == f"s3://{s3_bucket}/ck/r/step-000000001/"
    assert manifest_bytes(loaded.manifest)


def test_importing_the_stores_does_not_import_boto3() -> None:
    code = "import sys, tasks.stores; assert 'boto3' not in sys.modules and 'botocore' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
