"""tasks.storage: locations, the S3 client factory, listings and the atomic writer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tasks.storage import (
    MAX_ATTEMPTS,
    Location,
    TruncatedListing,
    atomic_writer,
    fsspec_local_path,
    iter_objects,
    parse_uri,
    s3_client,
    s3_client_for,
    write_atomic,
)

# -- parse_uri -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket", Location("s3://bucket", "s3", bucket="bucket")),
        ("s3://bucket/", Location("s3://bucket/", "s3", bucket="bucket")),
        ("s3://my.bucket-1/a/b/", Location("s3://my.bucket-1/a/b/", "s3", bucket="my.bucket-1", key="a/b/")),
        ("file:///abs/path", Location("file:///abs/path", "file", path=Path("/abs/path"))),
        ("file://localhost/abs", Location("file://localhost/abs", "file", path=Path("/abs"))),
        ("file:/abs", Location("file:/abs", "file", path=Path("/abs"))),
        ("/plain/path", Location("/plain/path", "file", path=Path("/plain/path"))),
        ("relative dir", Location("relative dir", "file", path=Path("relative dir"))),
        ("~/home", Location("~/home", "file", path=Path("~/home"))),  # not expanded: the caller decides
    ],
)
def test_accepted_forms(uri: str, expected: Location) -> None:
    assert parse_uri(uri) == expected


def test_file_uris_are_decoded_once_so_paths_round_trip(tmp_path: Path) -> None:
    for name in ("with space", "per%41cent", "at@sign"):
        folder = tmp_path / name
        assert parse_uri(folder.as_uri()).path == folder


def test_an_object_key_is_required_when_asked() -> None:
    assert parse_uri("s3://b-1/a/k.jsonl", object_key=True).key == "a/k.jsonl"
    for bad in ("s3://b-1", "s3://b-1/", "s3://b-1/folder/", "s3://b"):
        with pytest.raises(ValueError, match="expected s3://bucket/key"):
            parse_uri(bad, what="ledger export", object_key=True)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "evidence store '': empty; use file:///path, a plain path or s3://bucket/prefix"),
        ("s3://", "evidence store 's3://': expected s3://bucket/prefix"),
        ("s3:///key", "evidence store 's3:///key': expected s3://bucket/prefix"),
        ("s3://b-1/p?x=1", "evidence store 's3://b-1/p?x=1': an s3 URI takes no query or fragment"),
        ("s3://b-1/p#f", "evidence store 's3://b-1/p#f': an s3 URI takes no query or fragment"),
        ("s3://Bad_Bucket/x", "evidence store 's3://Bad_Bucket/x': S3 bucket name 'Bad_Bucket' is not valid"),
        ("file://otherhost/x",
         "evidence store 'file://otherhost/x': file URIs on another host (otherhost) are not supported"),
        ("file:///x?y", "evidence store 'file:///x?y': a file URI takes no query or fragment"),
        ("file:relative", "evidence store 'file:relative': a file URI needs an absolute path"),
        ("gs://bucket/x",
         "evidence store 'gs://bucket/x': unknown scheme; use file:///path, a plain path or s3://bucket/prefix"),
        ("S3://bucket/x",
         "evidence store 'S3://bucket/x': unknown scheme; use file:///path, a plain path or s3://bucket/prefix"),
    ],
)
def test_each_problem_has_one_error_naming_the_use_and_the_uri(uri: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_uri(uri, what="evidence store")
    assert str(info.value) == message


def test_fsspec_locations_are_not_percent_decoded() -> None:
    # Inspect reports logs as "file://" + the raw path: "%41" is three characters of the name.
    assert fsspec_local_path("file:///logs/a%41.eval") == "/logs/a%41.eval"
    assert fsspec_local_path("s3://b/logs/x.eval") == "s3://b/logs/x.eval"
    assert fsspec_local_path("/logs/x.eval") == "/logs/x.eval"


# -- the atomic writer ---------------------------------------------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_atomic_creates_folders_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "report.md"
    assert write_atomic(target, b"one") == target
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert _leftovers(target.parent) == []


def test_a_failed_write_leaves_the_previous_version_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"previous")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_writer(target) as fh:
        fh.write(b"half of the new ver")
        raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == []


def test_a_failed_first_write_leaves_no_file_at_all(tmp_path: Path) -> None:
    target = tmp_path / "new.json"
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_without_overwrite_an_existing_file_is_kept_and_named(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    write_atomic(target, b"first", overwrite=False)
    with pytest.raises(FileExistsError, match=f"{target}: already exists"):
        write_atomic(target, b"second", overwrite=False)
    assert target.read_bytes() == b"first"
    assert _leftovers(tmp_path) == []


def test_new_files_are_private_unless_the_caller_shares_them(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        private = write_atomic(tmp_path / "private", b"x")
        shared = write_atomic(tmp_path / "shared", b"x", mode=0o666)
    finally:
        os.umask(umask)
    assert private.stat().st_mode & 0o777 == 0o600
    assert shared.stat().st_mode & 0o777 == 0o644


# -- S3 clients ----------------------------------------------------------------------------------------------


def test_importing_the_module_does_not_import_boto3() -> None:
    code = "import sys, tasks.storage; sys.exit(1 if 'boto3' in sys.modules or 'botocore' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_every_client_shares_one_retry_policy() -> None:
    config = s3_client(region="us-east-1").meta.config
    # Adaptive: exponential backoff plus a client-side rate limiter that slows down on 503 SlowDown.
    # botocore stores max_attempts (retries) as total attempts, the first one included.
    assert config.retries == {"mode": "adaptive", "total_max_attempts": MAX_ATTEMPTS + 1}
    assert (config.connect_timeout, config.read_timeout, config.max_pool_connections) == (10, 60, 32)
    assert s3_client(region="us-east-1", max_attempts=1).meta.config.retries["total_max_attempts"] == 2


@pytest.mark.integration
def test_put_list_get_through_a_real_endpoint(s3_endpoint: str, s3_bucket: str) -> None:
    settings: Any = SimpleNamespace(s3_endpoint_url=s3_endpoint, s3_region="us-east-1", s3_profile=None)
    client = s3_client_for(settings)
    assert client.meta.endpoint_url == s3_endpoint
    keys = [f"p/{i:02d}" for i in range(7)]
    for key in [*keys, "other/x", "p-old/x"]:
        client.put_object(Bucket=s3_bucket, Key=key, Body=key.encode())
    listed = [o["Key"] for o in iter_objects(client, s3_bucket, "p/", page_size=3)]
    assert listed == keys  # three pages, followed to the end; nothing outside the prefix
    assert [o["Key"] for o in iter_objects(client, s3_bucket, "p/", start_after="p/04")] == keys[5:]
    assert client.get_object(Bucket=s3_bucket, Key="p/03")["Body"].read() == b"p/03"


def test_a_truncated_page_without_a_token_is_an_error_not_the_end() -> None:
    class Endpoint:  # answers like a broken S3-compatible server: "more to come", but no way to get it
        def list_objects_v2(self, **request: Any) -> dict[str, Any]:
            return {"Contents": [{"Key": "p/1"}], "IsTruncated": True}

    seen: list[str] = []
    with pytest.raises(TruncatedListing, match="without a continuation token"):
        seen.extend(o["Key"] for o in iter_objects(Endpoint(), "b-1", "p/"))
    assert seen == ["p/1"]  # the first page came through; the listing then failed rather than ending there
