"""The demo's stand-ins satisfy the real automated checks, and only once they are in place.

The demo lifts its halt by deploying a misuse classifier and hardening the weights bucket, then
re-verifying; these tests hold the stand-ins to the same verifiers the gate runs (no shortcut).
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import urllib.request
import uuid
from typing import Any

from policy.schema import Policy
from rsp.demo_standins import MisuseClassifier, harden_bucket
from tasks.safeguards import VerificationContext, verify_safeguard
from tasks.safeguards.probe import CANARY_INPUT

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _classify(url: str, text: str) -> dict[str, Any]:
    req = urllib.request.Request(f"{url}/classify", data=json.dumps({"input": text}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def test_classifier_is_unknown_before_and_met_after_it_is_deployed(tiny_policy: Policy) -> None:
    standin = MisuseClassifier(_port())
    ctx = VerificationContext(now=NOW, probe_url=standin.url, probe_timeout_s=2.0)
    before = verify_safeguard(tiny_policy.safeguard("sg-dep3"), ctx)
    assert before.state == "unknown"  # nothing listens yet: the probe cannot say it is met
    standin.start()
    try:
        after = verify_safeguard(tiny_policy.safeguard("sg-dep3"), ctx)
        assert after.state == "met", after
        assert _classify(standin.url, CANARY_INPUT)["decision"] == "refuse"
        assert _classify(standin.url, "What is the boiling point of water?") == {"decision": "allow", "flagged": False}
    finally:
        standin.stop()


def test_hardened_bucket_meets_the_check_and_a_missing_one_does_not(tiny_policy: Policy, s3_endpoint: str,
                                                                    s3_client: Any) -> None:
    bucket = f"demo-weights-{uuid.uuid4().hex[:8]}"
    ctx = VerificationContext(now=NOW, bucket=bucket, s3_endpoint_url=s3_endpoint, s3_region="us-east-1")
    assert verify_safeguard(tiny_policy.safeguard("sg-sec3"), ctx).state == "unknown"  # no bucket yet
    controls = harden_bucket(s3_client, bucket)
    verdict = verify_safeguard(tiny_policy.safeguard("sg-sec3"), ctx)
    assert verdict.state == "met", verdict
    assert len(controls) == 6
