"""`checkpoint_bucket_hardening`: the bucket that holds the weights is locked down, read from S3 itself.

Controls, each read with one S3 API call:

| control              | passes when                                                                  |
| -------------------- | ---------------------------------------------------------------------------- |
| public_access_block  | all four flags of the bucket's public access block are true                   |
| default_encryption   | a default server-side encryption rule (AES256, aws:kms or aws:kms:dsse)       |
| versioning           | versioning status is Enabled                                                  |
| object_lock          | object lock is Enabled (it can only be turned on at bucket creation)          |
| tls_only_policy      | the bucket policy Denies every principal every s3 action on the bucket's      |
|                      | objects when aws:SecureTransport is false, with no other condition narrowing it |
| access_logging       | server access logging is enabled (a target bucket is set)                     |

The TLS rule is judged by reading the policy document, not by sending a plain-HTTP
request: S3-compatible test servers ignore policy conditions, and a probe request
would only show what one request saw.

Outcome: every control passes → `met`; any control fails → `unmet`, naming each
failed control (and any that could not be read); no control fails but one could
not be read (AccessDenied, throttling, an unexpected error) → `unknown`; the
endpoint is unreachable or the bucket does not exist → `unknown`.

Params (policy `verification.params`, all optional): `bucket` (overrides the
configured bucket).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from policy.schema import Safeguard
from tasks.safeguards._text import one_line
from tasks.safeguards.context import VerificationContext
from tasks.safeguards.verifiers import Verdict, register_verifier
from tasks.storage import error_code, s3_client

CHECK = "checkpoint_bucket_hardening"
_PAB_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
_SSE = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})

# Error codes that mean "this control is not configured": a definite failure, not a failed read.
_NOT_CONFIGURED = {
    "public_access_block": {"NoSuchPublicAccessBlockConfiguration"},
    "default_encryption": {"ServerSideEncryptionConfigurationNotFoundError"},
    "object_lock": {"ObjectLockConfigurationNotFoundError"},
    "tls_only_policy": {"NoSuchBucketPolicy"},
}
# The bucket is missing: the check cannot speak about the bucket the policy means.
_NO_BUCKET = {"NoSuchBucket"}


class _Fail(Exception):
    """A control that is definitely not in place; the message says what is wrong."""


def _public_access_block(client: Any, bucket: str) -> str:
    cfg = client.get_public_access_block(Bucket=bucket).get("PublicAccessBlockConfiguration", {})
    off = [f for f in _PAB_FLAGS if cfg.get(f) is not True]
    if off:
        raise _Fail(f"not set: {', '.join(off)}")
    return "all four flags on"


def _default_encryption(client: Any, bucket: str) -> str:
    rules = client.get_bucket_encryption(Bucket=bucket).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    algos = [r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules]
    good = [a for a in algos if a in _SSE]
    if not good:
        raise _Fail(f"no default encryption rule (found {algos or 'none'})")
    return good[0]


def _versioning(client: Any, bucket: str) -> str:
    status = client.get_bucket_versioning(Bucket=bucket).get("Status")
    if status != "Enabled":
        raise _Fail(f"status is {status or 'never enabled'}")
    return "Enabled"


def _object_lock(client: Any, bucket: str) -> str:
    cfg = client.get_object_lock_configuration(Bucket=bucket).get("ObjectLockConfiguration", {})
    if cfg.get("ObjectLockEnabled") != "Enabled":
        raise _Fail(f"ObjectLockEnabled is {cfg.get('ObjectLockEnabled') or 'absent'}")
    retention = cfg.get("Rule", {}).get("DefaultRetention")
    if retention:
        span = ", ".join(f"{v} {k.lower()}" for k, v in retention.items() if k in ("Days", "Years") and v)
        return f"Enabled, default retention {retention.get('Mode')} {span}".rstrip()
    return "Enabled, no default retention"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _is_everyone(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict) and set(principal) == {"AWS"}:
        return "*" in _as_list(principal["AWS"])
    return False


def _covers_all_actions(action: Any) -> bool:
    return any(isinstance(a, str) and a.lower() in ("*", "s3:*") for a in _as_list(action))


def _covers_objects(resource: Any, bucket: str) -> bool:
    """Does some resource pattern match every object key of the bucket? Only a trailing '*' counts:
    'arn:aws:s3:::b/*', 'arn:aws:s3:::b*', 'arn:aws:s3:::*' and '*' do; 'arn:aws:s3:::b/public/*' does not."""
    target = f"arn:aws:s3:::{bucket}/"
    for r in _as_list(resource):
        if not isinstance(r, str) or not r.endswith("*"):
            continue
        stem = r[:-1]
        if "*" in stem or "?" in stem:
            continue  # inner wildcards could exclude keys; not worth proving they do not
        if target.startswith(stem):
            return True
    return False


def _denies_insecure_transport(condition: Any) -> bool:
    """Exactly one condition: Bool (or BoolIfExists) aws:SecureTransport = false. Anything more narrows
    the Deny to some requests, so it no longer guarantees TLS for all of them."""
    if not isinstance(condition, dict) or len(condition) != 1:
        return False
    (operator, clause), = condition.items()
    if operator not in ("Bool", "BoolIfExists") or not isinstance(clause, dict) or len(clause) != 1:
        return False
    (key, value), = clause.items()
    if key.lower() != "aws:securetransport":
        return False
    values = _as_list(value)
    return bool(values) and all(v is False or (isinstance(v, str) and v.lower() == "false") for v in values)


def _tls_only_policy(client: Any, bucket: str) -> str:
    raw = client.get_bucket_policy(Bucket=bucket).get("Policy")
    try:
        doc = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError as exc:
        raise _Fail(f"bucket policy is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _Fail("bucket policy is not a JSON object")
    for i, st in enumerate(_as_list(doc.get("Statement", []))):
        if not isinstance(st, dict) or st.get("Effect") != "Deny":
            continue
        # NotPrincipal / NotAction / NotResource carve out exceptions; such a statement does not count.
        if any(k in st for k in ("NotPrincipal", "NotAction", "NotResource")):
            continue
        if (_is_everyone(st.get("Principal")) and _covers_all_actions(st.get("Action"))
                and _covers_objects(st.get("Resource"), bucket) and _denies_insecure_transport(st.get("Condition"))):
            return f"statement {st.get('Sid') or i} denies aws:SecureTransport=false"
    raise _Fail("no statement denies all s3 actions on the bucket's objects to everyone when "
                "aws:SecureTransport is false")


def _access_logging(client: Any, bucket: str) -> str:
    enabled = client.get_bucket_logging(Bucket=bucket).get("LoggingEnabled")
    if not enabled or not enabled.get("TargetBucket"):
        raise _Fail("server access logging is off")
    return f"to s3://{enabled['TargetBucket']}/{enabled.get('TargetPrefix', '')}"


CONTROLS: dict[str, Callable[[Any, str], str]] = {
    "public_access_block": _public_access_block,
    "default_encryption": _default_encryption,
    "versioning": _versioning,
    "object_lock": _object_lock,
    "tls_only_policy": _tls_only_policy,
    "access_logging": _access_logging,
}


def _bucket(safeguard: Safeguard, ctx: VerificationContext) -> str | None:
    params = getattr(safeguard.verification, "params", {}) or {}
    value = params.get("bucket")
    if isinstance(value, str) and value:
        return value
    return ctx.bucket


@register_verifier(CHECK)
def verify_bucket_hardening(safeguard: Safeguard, ctx: VerificationContext) -> Verdict:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket = _bucket(safeguard, ctx)
    if not bucket:
        return Verdict.unknown("no bucket to check: set params.bucket in the policy, RSP_SAFEGUARD_BUCKET, "
                               "or an s3:// checkpoint_store")
    client = ctx.s3_client or s3_client(endpoint_url=ctx.s3_endpoint_url, region=ctx.s3_region,
                                        profile=ctx.s3_profile)
    passed: list[str] = []
    failed: list[str] = []
    unreadable: list[str] = []
    where = f"s3://{bucket}"
    for name, control in CONTROLS.items():
        try:
            passed.append(f"{name}: {control(client, bucket)}")
        except _Fail as exc:
            failed.append(f"{name} ({exc})")
        except ClientError as exc:
            code = error_code(exc)
            if code in _NOT_CONFIGURED.get(name, set()):
                failed.append(f"{name} (not configured)")
            elif code in _NO_BUCKET:
                return Verdict.unknown(f"{where}: bucket does not exist ({code})")
            else:
                unreadable.append(f"{name} ({one_line(exc)})")
        except BotoCoreError as exc:
            # Connection-level: every further call would fail the same way after its retries.
            return Verdict.unknown(f"{where}: S3 unreachable: {one_line(exc)}")
    if failed:
        extra = f"; could not read: {'; '.join(unreadable)}" if unreadable else ""
        return Verdict.unmet(f"{where}: failed controls: {'; '.join(failed)}{extra}")
    if unreadable:
        return Verdict.unknown(f"{where}: could not read: {'; '.join(unreadable)}")
    return Verdict.met(f"{where}: all {len(CONTROLS)} controls pass: {'; '.join(passed)}")
