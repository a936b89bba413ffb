"""Where the gate's files live: URIs, S3 clients, S3 listings and atomic local writes, each written once.

* `parse_uri` reads a store or target location: `s3://bucket/prefix`, `file:///abs/path`
  (host empty or localhost) or a plain path. Each problem has one error text, naming
  what the location is for (`what`) and the location itself.
* `s3_client` builds every boto3 S3 client the gate uses, with one retry policy
  (`retry_config`). boto3 is imported only when a client is built, so importing this
  module (and the CLI that imports it) stays cheap.
* `iter_objects` lists a prefix page by page and never returns a listing short.
* `write_atomic` / `atomic_writer` replace a local file so readers see the previous
  version or the new one, never part of one.
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from tasks.settings import Settings

# -- locations ----------------------------------------------------------------------------------------------

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Location:
    """A parsed location: an S3 bucket and key (or prefix), or a local path.

    `key` is what follows the bucket without its leading '/' (a trailing '/' is kept: for
    a prefix it does not matter, for an object key it is an error). `path` is the local
    path as written (not resolved: callers decide whether "~" or a relative path is welcome).
    """

    uri: str
    scheme: Literal["file", "s3"]
    bucket: str = ""
    key: str = ""
    path: Path | None = None

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"


def bucket_problem(bucket: str) -> str | None:
    """Why `bucket` is not a valid S3 bucket name (None if it is)."""
    return None if _BUCKET.match(bucket) else f"S3 bucket name {bucket!r} is not valid"


def parse_uri(uri: str, *, what: str = "checkpoint store", object_key: bool = False) -> Location:
    """Parse `s3://bucket[/prefix]`, `file:///abs/path` or a plain path; raise ValueError otherwise.

    `what` names the location's use in the error ("evidence store 's3://': expected ...").
    With `object_key` an S3 location must name one object (`s3://bucket/key`, not a prefix).
    Scheme names are matched as written (lower case), as every store has always done: "S3://x"
    is an unknown scheme, not a bucket.
    """
    shape = "s3://bucket/key" if object_key else "s3://bucket/prefix"

    def bad(problem: str) -> ValueError:
        return ValueError(f"{what} {uri!r}: {problem}")

    if not uri:
        raise bad("empty; use file:///path, a plain path or s3://bucket/prefix")
    if uri.startswith("s3://"):
        parts = urlsplit(uri)
        if not parts.netloc:
            raise bad(f"expected {shape}")
        if parts.query or parts.fragment:
            raise bad("an s3 URI takes no query or fragment")
        key = parts.path.lstrip("/")
        if object_key and (not key or key.endswith("/")):
            raise bad(f"expected {shape}")
        # The name is checked after the shape: "s3://b" is first of all missing its key.
        problem = bucket_problem(parts.netloc)
        if problem:
            raise bad(problem)
        return Location(uri=uri, scheme="s3", bucket=parts.netloc, key=key)
    if uri.startswith("file:"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise bad(f"file URIs on another host ({parts.netloc}) are not supported")
        if parts.query or parts.fragment:
            raise bad("a file URI takes no query or fragment")
        # One unquote: Path.as_uri() encodes once ("%" → "%25"), so decoding twice would misread such names.
        path = unquote(parts.path)
        if not os.path.isabs(path):
            raise bad("a file URI needs an absolute path")
        return Location(uri=uri, scheme="file", path=Path(path))
    if "://" in uri:
        raise bad("unknown scheme; use file:///path, a plain path or s3://bucket/prefix")
    return Location(uri=uri, scheme="file", path=Path(uri))


def fsspec_local_path(location: str) -> str:
    """The local path in an fsspec-style location, as Inspect reports its logs; other locations unchanged.

    fsspec writes "file://" + the path as it is, not percent-encoded, so this is not an RFC
    file URI: decoding it with `parse_uri` would misread a path containing "%".
    """
    return location.removeprefix("file://")


# -- S3 clients ---------------------------------------------------------------------------------------------

# One retry policy for every S3 call. Adaptive mode backs off exponentially and adds a
# client-side rate limiter that slows down on 503 SlowDown; ten retries ride out throttling
# of a busy bucket. When they run out the call raises: callers turn that into an error (or an
# `unknown` verdict), never into a skipped page or a "nothing there".
MAX_ATTEMPTS = 10  # botocore's `max_attempts`: retries after the first attempt
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60
MAX_POOL_CONNECTIONS = 32  # stores read manifests from several threads through one client


def retry_config(max_attempts: int = MAX_ATTEMPTS) -> Any:
    """The botocore `Config` of every client `s3_client` builds."""
    from botocore.config import Config

    return Config(
        retries={"mode": "adaptive", "max_attempts": max_attempts},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        max_pool_connections=MAX_POOL_CONNECTIONS,
    )


def s3_client(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> Any:  # botocore's S3 client; typed stubs are not a dependency
    """A boto3 S3 client for AWS or any S3-compatible endpoint, with the retry policy above.

    Each call builds its own session (sessions are not thread-safe; clients are), so build
    a client once and share it. `max_attempts` below the default is for tests that want an
    outcome without botocore's backoff.
    """
    import boto3

    session = boto3.session.Session(profile_name=profile, region_name=region)
    return session.client("s3", endpoint_url=endpoint_url, config=retry_config(max_attempts))


def s3_client_for(settings: Settings, *, max_attempts: int = MAX_ATTEMPTS) -> Any:
    """`s3_client` with the settings' endpoint, region and profile (RSP_S3_*)."""
    return s3_client(
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        profile=settings.s3_profile,
        max_attempts=max_attempts,
    )


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError (e.g. 'AccessDenied', 'NoSuchKey'), else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


class TruncatedListing(RuntimeError):
    """S3 said a listing has more pages but gave no token to fetch them."""


def iter_objects(
    client: Any, bucket: str, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
) -> Iterator[dict[str, Any]]:
    """Every object under `prefix` (after the full key `start_after`, if given), in key order.

    One `list_objects_v2` request per page of `page_size` keys. botocore errors propagate
    (callers name the store); a truncated page without a continuation token raises
    TruncatedListing rather than ending the listing early, which botocore's own paginator
    would do silently.
    """
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
    if start_after:
        request["StartAfter"] = start_after
    while True:
        page = client.list_objects_v2(**request)
        yield from page.get("Contents", ())
        if not page.get("IsTruncated"):
            return
        token = page.get("NextContinuationToken")
        if not token:
            raise TruncatedListing("truncated listing without a continuation token")
        request["ContinuationToken"] = token


# -- atomic local writes ------------------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable. Some file systems cannot sync a directory; the
    # file's own bytes are already synced there, which is the best they offer.
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: Path | str, *, overwrite: bool = True, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A binary file that becomes `path` in one step when the block ends without an error.

    The bytes go to a hidden temp file in the same folder (".<name>.<random>.tmp", which no
    listing of ours reads), are fsynced, then replace `path` (os.replace). If anything fails
    the temp file is removed and `path` keeps its previous version. Without `overwrite` the
    file is published with a hard link, which fails if `path` exists (FileExistsError naming
    it), so two writers can never both succeed. `mode` is the new file's permission bits
    before the umask (0o600, private, unless the caller says otherwise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    published = False
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
            published = True
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path}: already exists") from None
        _fsync_dir(path.parent)
    finally:
        if not published:
            tmp.unlink(missing_ok=True)


def write_atomic(path: Path | str, data: bytes, *, overwrite: bool = True, mode: int = 0o600) -> Path:
    """Write `data` to `path` atomically (see `atomic_writer`); returns the path."""
    with atomic_writer(path, overwrite=overwrite, mode=mode) as fh:
        fh.write(data)
    return Path(path)


__all__ = [
    "Location",
    "TruncatedListing",
    "atomic_writer",
    "bucket_problem",
    "error_code",
    "fsspec_local_path",
    "iter_objects",
    "parse_uri",
    "retry_config",
    "s3_client",
    "s3_client_for",
    "write_atomic",
]
