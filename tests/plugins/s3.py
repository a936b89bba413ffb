"""A real S3 endpoint on 127.0.0.1 for tests: moto's standalone server, spoken to over HTTP.

Fixtures
--------
`s3_endpoint` (session scope) -> str
    Starts `moto.server.ThreadedMotoServer` on 127.0.0.1 with a free port, once per
    test session, and yields its URL ("http://127.0.0.1:<port>"). Pass it to boto3
    as `endpoint_url` (or set `RSP_S3_ENDPOINT_URL`). While it runs, dummy AWS
    credentials and region us-east-1 are set in os.environ (restored afterwards),
    and any AWS profile or config file of the machine is masked, so nothing can
    reach a real AWS account. The server keeps state for the whole session: use a
    fresh bucket per test (below) rather than resetting it.

`s3_bucket` (function scope) -> str
    Creates a new, uniquely named bucket on that endpoint and returns its name.

`s3_client` (function scope) -> botocore S3 client for the endpoint, for arranging
    and inspecting test data directly.

Never use moto's in-process decorators or any other patching: code under test must go
through real HTTP, as it will against S3.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Never pick up the machine's own AWS setup or ask EC2 metadata for credentials.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    # One line per request otherwise; thousands of puts would drown the test output.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in _ENV.items():
            mp.setenv(name, value)
        for name in _UNSET:
            mp.delenv(name, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def _client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def s3_client(s3_endpoint: str) -> Any:
    return _client(s3_endpoint)


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    name = f"test-{uuid.uuid4().hex[:20]}"
    _client(s3_endpoint).create_bucket(Bucket=name)
    return name
