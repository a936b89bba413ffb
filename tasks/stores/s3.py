"""A checkpoint store in an S3 bucket under a prefix (AWS, or any S3-compatible endpoint).

boto3 is imported when a client is first needed, so importing tasks.stores stays
cheap. Listing is `list_objects_v2` (1,000 keys a page) over the store's prefix,
keeping keys that end in "/checkpoint.json"; with a cursor it passes `StartAfter`,
so a tick with nothing new is one request however long the history.

Throttling: the client is `tasks.storage.s3_client`, retrying in botocore's adaptive
mode (exponential backoff plus a client-side rate limiter that slows down on 503
SlowDown). When retries run out the call raises StoreError: a page is never skipped,
and a listing is never returned short.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from tasks.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    Checkpoint,
    CheckpointManifest,
    ManifestRejected,
    manifest_bytes,
    sha256_digest,
)
from tasks.storage import (
    MAX_ATTEMPTS,
    TruncatedListing,
    bucket_problem,
    error_code,
    iter_objects,
    parse_uri,
    s3_client,
)
from tasks.stores.base import STORES, CheckpointStore, ManifestGone, ManifestRef, StoreError, key_problem

if TYPE_CHECKING:
    from tasks.settings import Settings

_MANIFEST_SUFFIX = "/" + MANIFEST_NAME
_CONTENT_RANGE = re.compile(r"^bytes \d+-\d+/(\d+)$")


class S3Store(CheckpointStore):
    """Checkpoints under s3://bucket/prefix/.

    `max_attempts` is botocore's retry setting (retries after the first attempt);
    `client` injects a ready boto3 S3 client instead of building one.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        page_size: int = 1000,
        client: Any = None,
    ):
        problem = bucket_problem(bucket)
        if problem:
            raise ValueError(problem)
        prefix = prefix.strip("/")
        if prefix and key_problem(prefix):
            raise ValueError(f"S3 prefix {prefix!r}: {key_problem(prefix)}")
        self.bucket = bucket
        # Always "" or ending in "/": a prefix "ckpt" must not also match "ckpt-old/...".
        self.prefix = prefix + "/" if prefix else ""
        self.endpoint_url = endpoint_url
        self.region = region
        self.profile = profile
        self.max_attempts = max_attempts
        self.page_size = page_size
        self._client = client
        self._lock = threading.Lock()

    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        **kwargs: Any,
    ) -> S3Store:
        """`s3://bucket` or `s3://bucket/prefix`."""
        location = parse_uri(uri, what="checkpoint store")
        if not location.is_s3:
            raise ValueError(f"checkpoint store {uri!r}: expected s3://bucket/prefix")
        return cls(
            location.bucket, location.key, endpoint_url=endpoint_url, region=region, profile=profile, **kwargs
        )

    @property
    def client(self) -> Any:  # botocore's S3 client; typed stubs are not a dependency
        # boto3 clients are thread-safe; sessions are not, so build one client once, under a lock.
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = s3_client(
                        endpoint_url=self.endpoint_url,
                        region=self.region,
                        profile=self.profile,
                        max_attempts=self.max_attempts,
                    )
        return self._client

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def uri_for(self, key: str) -> str:
        problem = key_problem(key)
        if problem:
            raise ValueError(f"checkpoint key {key!r}: {problem}")
        return f"s3://{self.bucket}/{self.prefix}{key}/"

    def _error(self, what: str, exc: Exception) -> StoreError:
        return StoreError(f"{self.uri}: {what}: {exc}")

    def list_manifests(self, start_after: str | None = None) -> Iterator[ManifestRef]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            # Inside the try: building the client (a missing profile, say) fails like a listing does.
            objects = iter_objects(
                self.client,
                self.bucket,
                self.prefix,
                start_after=self.prefix + start_after if start_after else None,
                page_size=self.page_size,
            )
            for obj in objects:
                full_key: str = obj["Key"]
                # The Prefix parameter already limits this; checked again because a key outside
                # the prefix must never become a checkpoint, whatever the endpoint returns.
                if not full_key.startswith(self.prefix) or not full_key.endswith(_MANIFEST_SUFFIX):
                    continue
                manifest_key = full_key[len(self.prefix) :]
                key = manifest_key[: -len(_MANIFEST_SUFFIX)]
                if not key:
                    continue  # "<prefix>/checkpoint.json" would be a checkpoint with an empty key
                yield _ref(key, obj)
        except (BotoCoreError, ClientError) as exc:
            raise self._error("listing failed", exc) from exc
        except TruncatedListing as exc:
            raise StoreError(f"{self.uri}: {exc}") from None

    def find(self, key: str) -> ManifestRef | None:
        """The manifest at exactly `key` (see CheckpointStore.find): one listing request whose prefix is
        the manifest's own key, which sorts before every other key it prefixes ("checkpoint.json.bak")."""
        from botocore.exceptions import BotoCoreError, ClientError

        problem = key_problem(key)
        if problem:
            raise ManifestRejected(key, f"unsafe checkpoint key: {problem}")
        full_key = self.prefix + key + _MANIFEST_SUFFIX
        try:
            first = next(iter_objects(self.client, self.bucket, full_key, page_size=1), None)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(f"looking up {full_key} failed", exc) from exc
        except TruncatedListing as exc:
            raise StoreError(f"{self.uri}: {exc}") from None
        return _ref(key, first) if first is not None and first["Key"] == full_key else None

    def read_manifest(self, ref: ManifestRef) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        problem = key_problem(ref.key)
        if problem:
            raise ManifestRejected(ref.key, f"unsafe checkpoint key: {problem}")
        too_big = f"over the {MAX_MANIFEST_BYTES}-byte limit"
        if ref.size > MAX_MANIFEST_BYTES:
            raise ManifestRejected(ref.key, f"manifest is {ref.size} bytes, {too_big}")
        if ref.size == 0:
            raise ManifestRejected(ref.key, "manifest is empty")
        full_key = self.prefix + ref.key + _MANIFEST_SUFFIX
        try:
            # The Range caps what we download even if the object grew since it was listed.
            response = self.client.get_object(
                Bucket=self.bucket, Key=full_key, Range=f"bytes=0-{MAX_MANIFEST_BYTES}"
            )
            with response["Body"] as body:
                raw = body.read(MAX_MANIFEST_BYTES + 1)
        except ClientError as exc:
            code = error_code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ManifestGone(f"s3://{self.bucket}/{full_key}: no longer exists") from None
            if code == "InvalidRange":  # replaced by an empty object since listing
                raise ManifestRejected(ref.key, "manifest is empty") from None
            raise self._error(f"reading {full_key} failed", exc) from exc
        except BotoCoreError as exc:
            raise self._error(f"reading {full_key} failed", exc) from exc
        match = _CONTENT_RANGE.match(response.get("ContentRange") or "")
        total = int(match.group(1)) if match else len(raw)
        if total > MAX_MANIFEST_BYTES or len(raw) > MAX_MANIFEST_BYTES:
            raise ManifestRejected(ref.key, f"manifest is {max(total, len(raw))} bytes, {too_big}")
        return raw

    def put_checkpoint(
        self, key: str, files: Mapping[str, bytes], manifest: CheckpointManifest, *, overwrite: bool = False
    ) -> Checkpoint:
        from botocore.exceptions import BotoCoreError, ClientError

        self.check_put(key, files, manifest)
        base = self.prefix + key + "/"
        try:
            for name, data in files.items():
                self.client.put_object(Bucket=self.bucket, Key=base + name, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(f"writing files of {key} failed", exc) from exc
        raw = manifest_bytes(manifest)
        extra: dict[str, Any] = {} if overwrite else {"IfNoneMatch": "*"}
        try:
            # One PUT is atomic: readers see no manifest or all of it. If-None-Match makes a
            # second writer of the same checkpoint fail instead of silently replacing it.
            self.client.put_object(
                Bucket=self.bucket,
                Key=base + MANIFEST_NAME,
                Body=raw,
                ContentType="application/json",
                **extra,
            )
        except ClientError as exc:
            if error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise FileExistsError(
                    f"{self.uri_for(key)}{MANIFEST_NAME}: a checkpoint manifest already exists"
                ) from None
            raise self._error(f"writing the manifest of {key} failed", exc) from exc
        except BotoCoreError as exc:
            raise self._error(f"writing the manifest of {key} failed", exc) from exc
        return Checkpoint(
            manifest=manifest, uri=self.uri_for(key), key=key, digest=manifest.digest or sha256_digest(raw)
        )


def _ref(key: str, obj: Mapping[str, Any]) -> ManifestRef:
    modified = obj["LastModified"]
    return ManifestRef(
        key=key,
        manifest_key=key + _MANIFEST_SUFFIX,
        size=obj["Size"],
        last_modified=modified,
        # A PUT always moves LastModified; the ETag is the content's (MD5 for a single-part upload).
        version=f"{obj.get('ETag', '')}:{modified.isoformat()}",
    )


@STORES.register("s3")
def open_s3_store(uri: str, settings: Settings | None, create: bool) -> S3Store:
    # Buckets are not created here: a mistyped bucket must fail, not appear.
    return S3Store.from_uri(
        uri,
        endpoint_url=settings.s3_endpoint_url if settings else None,
        region=settings.s3_region if settings else None,
        profile=settings.s3_profile if settings else None,
    )
