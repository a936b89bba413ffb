"""`checkpoint_bucket_hardening` against real buckets on moto's HTTP server (tests/plugins/s3.py).

Each test builds its own uniquely named bucket: the server lives for the whole session.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from policy.schema import Policy
from tasks.safeguards import VerificationContext, verify_safeguard
from tasks.safeguards.bucket_hardening import CONTROLS, _covers_objects, _denies_insecure_transport
from tests.plugins.policies import policy_with

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
ALL_CONTROLS = frozenset(CONTROLS)


def tls_only_policy(bucket: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }],
    }


def make_bucket(client: Any, *, skip: frozenset[str] = frozenset(), policy: dict[str, Any] | None = None) -> str:
    """A fresh bucket with every hardening control except those named in `skip`."""
    name = f"ckpt-{uuid.uuid4().hex[:20]}"
    # Object lock can only be switched on when the bucket is created.
    client.create_bucket(Bucket=name, **({} if "object_lock" in skip else {"ObjectLockEnabledForBucket": True}))
    if "public_access_block" not in skip:
        client.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    if "default_encryption" not in skip:
        client.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]})
    if "versioning" not in skip:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    if "object_lock" not in skip:
        client.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 30}}})
    if "access_logging" not in skip:
        logs = f"logs-{uuid.uuid4().hex[:20]}"
        client.create_bucket(Bucket=logs)
        # S3 (and moto) refuse a logging target that does not let the log-delivery group write.
        client.put_bucket_acl(Bucket=logs, ACL="log-delivery-write")
        client.put_bucket_logging(Bucket=name, BucketLoggingStatus={
            "LoggingEnabled": {"TargetBucket": logs, "TargetPrefix": f"{name}/"}})
    if policy is not None:
        client.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))
    elif "tls_only_policy" not in skip:
        # Put last: moto enforces the Deny (ignoring its condition) on object requests over plain HTTP.
        client.put_bucket_policy(Bucket=name, Policy=json.dumps(tls_only_policy(name)))
    return name


def ctx_for(endpoint: str, bucket: str | None) -> VerificationContext:
    return VerificationContext(now=NOW, bucket=bucket, s3_endpoint_url=endpoint, s3_region="us-east-1")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hardened_bucket_is_met(tiny_policy: Policy, s3_endpoint: str, s3_client: Any) -> None:
    bucket = make_bucket(s3_client)
    check = verify_safeguard(tiny_policy.safeguard("sg-sec3"), ctx_for(s3_endpoint, bucket))
    assert check.state == "met", check.evidence
    assert check.id == "sg-sec3" and check.checked_at == NOW.isoformat()
    for control in ALL_CONTROLS:
        assert f"{control}:" in check.evidence
    assert "COMPLIANCE 30 days" in check.evidence and "aws:kms" in check.evidence


def test_unhardened_bucket_names_every_missing_control(tiny_policy: Policy, s3_endpoint: str, s3_bucket: str) -> None:
    check = verify_safeguard(tiny_policy.safeguard("sg-sec3"), ctx_for(s3_endpoint, s3_bucket))
    assert check.state == "unmet"
    for control in ALL_CONTROLS:
        assert control in check.evidence, control
    assert "versioning (status is never enabled)" in check.evidence
    assert "access_logging (server access logging is off)" in check.evidence


@pytest.mark.parametrize("missing", [
    {"public_access_block"}, {"default_encryption"}, {"object_lock"}, {"tls_only_policy"}, {"access_logging"},
    # Object lock turns versioning on for good, so versioning can only be missing without it.
    {"versioning", "object_lock"},
], ids=lambda m: "+".join(sorted(m)))
def test_each_control_alone_fails_the_check(tiny_policy: Policy, s3_endpoint: str, s3_client: Any,
                                            missing: set[str]) -> None:
    bucket = make_bucket(s3_client, skip=frozenset(missing))
    check = verify_safeguard(tiny_policy.safeguard("sg-sec3"), ctx_for(s3_endpoint, bucket))
    assert check.state == "unmet"
    failed = check.evidence.split("failed controls: ", 1)[1]
    assert {c for c in ALL_CONTROLS if c in failed} == missing


def test_partial_public_access_block_and_suspended_versioning(tiny_policy: Policy, s3_endpoint: str,
                                                              s3_client: Any) -> None:
    bucket = make_bucket(s3_client)
    s3_client.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": False})
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    check = verify_safeguard(tiny_policy.safeguard("sg-sec3"), ctx_for(s3_endpoint, bucket))
    assert check.state == "unmet"
    assert "public_access_block (not set: RestrictPublicBuckets)" in check.evidence
    assert "versioning (status is Suspended)" in check.evidence


def test_policy_whose_deny_is_narrowed_does_not_count(tiny_policy: Policy, s3_endpoint: str, s3_client: Any) -> None:
    # Deny only on one folder, and only from one IP range: plain HTTP elsewhere is still allowed.
    name = f"ckpt-{uuid.uuid4().hex[:20]}"
    narrowed = tls_only_policy(name)
    st = narrowed["Statement"][0]
    st["Resource"] = f"arn:aws:s3:::{name}/public/*"
    bucket_policy = {"Version": "2012-10-17", "Statement": [st, {
        **tls_only_policy(name)["Statement"][0], "Sid": "OnlySomeIps",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}, "IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}]}
    s3_client.create_bucket(Bucket=name)
    s3_client.put_bucket_policy(Bucket=name, Policy=json.dumps(bucket_policy))
    check = verify_safeguard(tiny_policy.safeguard("sg-sec3"), ctx_for(s3_endpoint, name))
    assert check.state == "unmet"
    assert "tls_only_policy (no statement denies" in check.evidence


def test_tls_policy_rules() -> None:
    assert _denies_insecure_transport({"Bool": {"aws:SecureTransport": "false"}})
    assert _denies_insecure_transport({"Bool": {"aws:securetransport": ["false"]}})
    assert _denies_insecure_transport({"BoolIfExists": {"aws:SecureTransport": False}})
    assert not _denies_insecure_transport({"Bool": {"aws:SecureTransport": "true"}})
    assert not _denies_insecure_transport({"Bool": {"aws:SecureTransport": ["false", "true"]}})
    assert not _denies_insecure_transport(None)
    assert not _denies_insecure_transport({"Bool": {"aws:SecureTransport": "false", "aws:MultiFactorAuthPresent": "x"}})
    assert _covers_objects(["arn:aws:s3:::b1", "arn:aws:s3:::b1/*"], "b1")
    assert _covers_objects("*", "b1") and _covers_objects("arn:aws:s3:::*", "b1") and _covers_objects("arn:aws:s3:::b1*", "b1")
    assert not _covers_objects("arn:aws:s3:::b1", "b1")
    assert not _covers_objects("arn:aws:s3:::b1/public/*", "b1")
    assert not _covers_objects("arn:aws:s3:::other/*", "b1")
    assert not _covers_objects("arn:aws:s3:::b1/*/x*", "b1")


def test_bucket_from_params_overrides_configuration(tiny_data: dict, s3_endpoint: str, s3_client: Any) -> None:
    bucket = make_bucket(s3_client)
    for sg in tiny_data["safeguards"]:
        if sg["id"] == "sg-sec3":
            sg["verification"]["params"] = {"bucket": bucket}
    policy = policy_with(tiny_data)
    check = verify_safeguard(policy.safeguard("sg-sec3"), ctx_for(s3_endpoint, "some-other-bucket"))
    assert check.state == "met", check.evidence
    assert f"s3://{bucket}" in check.evidence


def test_no_bucket_configured_is_unknown(tiny_policy: Policy) -> None:
    check = verify_safeguard(tiny_policy.safeguard("sg-sec3"), ctx_for("http://127.0.0.1:9", None))
    assert check.state == "unknown" and "no bucket to check" in check.evidence


def test_missing_bucket_is_unknown(tiny_policy: Policy, s3_endpoint: str) -> None:
    check = verify_safeguard(tiny_policy.safeguard("sg-sec3"), ctx_for(s3_endpoint, "no-such-bucket-here"))
    assert check.state == "unknown" and "does not exist" in check.evidence


def test_unreachable_endpoint_is_unknown(tiny_policy: Policy, s3_endpoint: str) -> None:
    # s3_endpoint only for its dummy credentials; the port below has nothing listening. One attempt:
    # the production retry policy (tasks.storage) would spend a minute backing off first.
    from tasks.storage import s3_client

    endpoint = f"http://127.0.0.1:{closed_port()}"
    ctx = VerificationContext(now=NOW, bucket="ckpt-bucket", s3_endpoint_url=endpoint, s3_region="us-east-1",
                              s3_client=s3_client(endpoint_url=endpoint, region="us-east-1", max_attempts=1))
    check = verify_safeguard(tiny_policy.safeguard("sg-sec3"), ctx)
    assert check.state == "unknown"
    assert "S3 unreachable" in check.evidence and "Could not connect" in check.evidence


class _DenyAll(BaseHTTPRequestHandler):
    """An S3 endpoint that answers every request the way S3 answers a caller without permission."""

    def _deny(self) -> None:
        body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                b"<Message>Access Denied</Message></Error>")
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = _deny

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def deny_all_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DenyAll)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_access_denied_is_unknown(tiny_policy: Policy, s3_endpoint: str, deny_all_endpoint: str) -> None:
    check = verify_safeguard(tiny_policy.safeguard("sg-sec3"), ctx_for(deny_all_endpoint, "ckpt-bucket"))
    assert check.state == "unknown"
    assert "could not read" in check.evidence and "AccessDenied" in check.evidence
    for control in ALL_CONTROLS:
        assert control in check.evidence
