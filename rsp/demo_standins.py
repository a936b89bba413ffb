"""What an operator puts in place after the demo's halt, run locally: a misuse classifier and a hardened bucket.

The demo's policy names two automated safeguards that no attestation can satisfy:

- `misuse_classifier_probe` needs a deployed classifier that answers `/health` and refuses the gate's
  labelled canary on `/classify` (contract in tasks/safeguards/probe.py). `MisuseClassifier` is a
  keyword stand-in for a constitutional-classifier deployment: it refuses the canary and anything that
  names restricted uplift, and allows the rest. It is not a safety system; it is the smallest thing that
  honestly passes the probe's contract.
- `checkpoint_bucket_hardening` reads six controls from S3 itself (tasks/safeguards/bucket_hardening.py).
  `LocalS3` runs moto's standalone server on 127.0.0.1 (the same server the tests use; no AWS account)
  and `harden_bucket` creates the weights bucket with every control the check reads.

Both are started only after the halt, as an operator would deploy them, so the first verification
really fails and the re-verification on lift really passes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Inputs the stand-in refuses: the probe's canary marker and a few phrases of restricted uplift.
REFUSE_MARKERS = ("rsp-gate canary", "restricted uplift", "synthesis route", "enhance transmissibility")
# Credentials for moto only: the demo must never reach, or need, a real AWS account.
DEMO_AWS_ENV = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _ClassifierHandler(BaseHTTPRequestHandler):
    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path != "/classify":
            self._send(404, {"error": "not found"})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            text = str(body["input"]).lower()
        except (ValueError, KeyError, TypeError):
            self._send(400, {"error": "expected a JSON object with 'input'"})
            return
        refuse = any(marker in text for marker in REFUSE_MARKERS)
        self._send(200, {"decision": "refuse" if refuse else "allow", "flagged": refuse})

    def log_message(self, *args: Any) -> None:  # the demo's own log says what matters
        pass


class MisuseClassifier:
    """A keyword misuse classifier on 127.0.0.1:`port`, answering the probe's contract, in a thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MisuseClassifier:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _ClassifierHandler)
        threading.Thread(target=self._server.serve_forever, name="misuse-classifier", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class LocalS3:
    """moto's standalone S3 server on 127.0.0.1, in a thread; `endpoint` is its URL."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalS3:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            raise RuntimeError("the demo's local S3 needs moto's server: pip install 'moto[server]' "
                               "(installed by `make demo`)") from None
        os.environ.update(DEMO_AWS_ENV)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="demo", aws_secret_access_key="demo")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def tls_only_policy(bucket: str) -> dict[str, Any]:
    """Deny every principal every object action over plain HTTP: the rule the hardening check reads."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}


def harden_bucket(client: Any, bucket: str) -> list[str]:
    """Create `bucket` with every control `checkpoint_bucket_hardening` checks; return the controls set.

    Object Lock can only be enabled when a bucket is created, which is why this creates the bucket
    rather than fixing an existing one.
    """
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    client.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    logs = f"{bucket}-access-logs"
    client.create_bucket(Bucket=logs)
    client.put_bucket_acl(Bucket=logs, ACL="log-delivery-write")
    client.put_bucket_logging(Bucket=bucket, BucketLoggingStatus={
        "LoggingEnabled": {"TargetBucket": logs, "TargetPrefix": f"{bucket}/"}})
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(tls_only_policy(bucket)))
    return ["public_access_block", "default_encryption", "versioning", "object_lock", "tls_only_policy",
            "access_logging"]
