"""One place that builds S3 clients for safeguard work; boto3 is imported only when a client is built."""

from __future__ import annotations

from typing import Any


def s3_client(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    max_attempts: int = 3,
    connect_timeout: float = 5.0,
    read_timeout: float = 20.0,
) -> Any:
    """A botocore S3 client. Few retries and short timeouts: a verifier that cannot reach S3 should
    say `unknown` within seconds, not hang a gate decision for minutes."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(profile_name=profile, region_name=region)
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        config=Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        ),
    )


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError (e.g. 'AccessDenied'), else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None
