"""Benchmark: concurrent signed Slack approvals against the approval service on loopback.

    python bench/bench_approvals.py [--requests 100] [--people 50] [--halts 4]

Starts `rsp serve-approvals` as a subprocess (uvicorn, one worker) over a fresh SQLite
ledger and roster, opens `--halts` halts, then fires `--requests` correctly signed
block_actions requests at once (asyncio + httpx): each of `--people` approvers clicks
Approve on "their" halt (person i -> halt i % halts), twice when requests = 2 x people.
Reports throughput and latency percentiles, then checks the ledger: every request is
exactly one vote.recorded (none lost), each halt's tally counts each person once (none
double-counted), and replaying every request is refused (409) without a ledger write.

The policy is the tiny test policy (quorum 2, must include rso) and every approver holds
only `ceo`, so no quorum is reached: this measures recording votes, not lifting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SECRET = "bench-signing-secret-5d1e"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


async def _fire(url: str, bodies: list[bytes], headers: list[dict[str, str]]) -> tuple[list[int], list[float], float]:
    import httpx

    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        async def one(body: bytes, hdrs: dict[str, str]) -> tuple[int, float]:
            t0 = time.perf_counter()
            r = await client.post(f"{url}/slack/interactions", content=body, headers=hdrs)
            return r.status_code, time.perf_counter() - t0

        start = time.perf_counter()
        results = await asyncio.gather(*(one(b, h) for b, h in zip(bodies, headers, strict=True)))
        wall = time.perf_counter() - start
    return [s for s, _ in results], [lat for _, lat in results], wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--people", type=int, default=50)
    ap.add_argument("--halts", type=int, default=4)
    args = ap.parse_args()

    import httpx

    from tests.plugins.slack_api import TINY_POLICY, block_actions_body, sign

    root = Path(tempfile.mkdtemp(prefix="rsp-bench-approvals-"))
    home = root / "home"
    home.mkdir()
    people = [f"p{i:03d}" for i in range(args.people)]
    roster = "people:\n" + "".join(f"  {p}: {{roles: [ceo], slack_user_id: U0BENCH{i:04d}}}\n"
                                   for i, p in enumerate(people))
    (home / "roster.yaml").write_text(roster)
    env = {**os.environ, "RSP_HOME": str(home), "RSP_POLICY": str(TINY_POLICY), "RSP_ROSTER": str(home / "roster.yaml"),
           "RSP_NOTIFY": "file", "RSP_SLACK_SIGNING_SECRET": SECRET, "RSP_CONFIG": str(root / "none.yaml"),
           "PYTHONPATH": str(REPO), "DO_NOT_TRACK": "1"}
    for var in ("RSP_LEDGER_URL", "RSP_SLACK_BOT_TOKEN"):
        env.pop(var, None)
    os.environ.update({k: env[k] for k in ("RSP_HOME", "RSP_POLICY", "RSP_ROSTER", "RSP_NOTIFY", "RSP_CONFIG")})

    from policy.loading import parse_policy
    from tasks.approvals.state import approval_state
    from tasks.enforcement import open_manual_halt
    from tasks.ledger import Ledger
    from tasks.settings import get_settings

    get_settings.cache_clear()
    policy = parse_policy(TINY_POLICY.read_text(), "tiny")
    ledger = Ledger(get_settings().resolved_ledger_url)
    halts = [open_manual_halt(f"bench halt {i}", ledger=ledger, policy=policy)[0].halt_id for i in range(args.halts)]

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    rsp = Path(sys.executable).parent / "rsp"
    log = open(root / "service.log", "wb")  # noqa: SIM115 - the subprocess owns it
    proc = subprocess.Popen([str(rsp), "serve-approvals", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                print((root / "service.log").read_text()[-3000:])
                return 2
            time.sleep(0.2)

        bodies: list[bytes] = []
        headers: list[dict[str, str]] = []
        expected: dict[str, set[str]] = {h: set() for h in halts}
        for n in range(args.requests):
            i = n % args.people
            halt = halts[i % args.halts]
            expected[halt].add(people[i])
            body = block_actions_body(f"U0BENCH{i:04d}", "rsp_approve", halt, extra={"bench_nonce": n})
            bodies.append(body)
            headers.append(sign(SECRET, body))

        statuses, latencies, wall = asyncio.run(_fire(url, bodies, headers))
        replay_statuses, _, _ = asyncio.run(_fire(url, bodies, headers))
        # Background work (a notification per vote) runs after each answer: let it drain.
        time.sleep(1.0)
        head_after_replay = ledger.head()[0]
        time.sleep(0.5)

        votes = ledger.events(kind="vote.recorded")
        refused = ledger.events(kind="vote.refused")
        per_halt_ok = True
        counted_total = 0
        for h in halts:
            record = ledger.halt(h)
            assert record is not None
            state = approval_state(ledger, record, policy=policy)
            counted = set(state.tally.approvers) if state.tally else set()
            counted_total += len(counted)
            per_halt_ok &= counted == expected[h]
        duplicates = sum(1 for v in votes if v.payload.get("duplicate"))
        ok = (statuses.count(200) == args.requests and len(votes) == args.requests and not refused
              and per_halt_ok and replay_statuses.count(409) == args.requests
              and ledger.head()[0] == head_after_replay and ledger.verify().ok)

        ms = [lat * 1000 for lat in latencies]
        print(f"\n### Approval service: {args.requests} concurrent signed requests on loopback "
              f"({args.people} approvers, {args.halts} halts, SQLite ledger, 1 uvicorn worker)\n")
        print("| metric | value |")
        print("| --- | --- |")
        print(f"| requests (all at once) | {args.requests} |")
        print(f"| HTTP 200 | {statuses.count(200)} |")
        print(f"| wall time | {wall:.3f} s |")
        print(f"| throughput | {args.requests / wall:.1f} req/s |")
        print(f"| latency p50 | {statistics.median(ms):.1f} ms |")
        print(f"| latency p95 | {_pct(ms, 0.95):.1f} ms |")
        print(f"| latency max | {max(ms):.1f} ms |")
        print(f"| vote.recorded events | {len(votes)} (expected {args.requests}: none lost) |")
        print(f"| flagged duplicate (same person again) | {duplicates} |")
        print(f"| distinct approvers counted | {counted_total} (expected "
              f"{sum(len(v) for v in expected.values())}: none double-counted) |")
        print(f"| vote.refused events | {len(refused)} |")
        print(f"| replayed requests refused (409) | {replay_statuses.count(409)}/{args.requests}, ledger unchanged |")
        print(f"| ledger hash chain verifies | {ledger.verify().ok} |")
        print(f"\nresult: {'OK' if ok else 'FAILED'}")
        return 0 if ok else 1
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


if __name__ == "__main__":
    raise SystemExit(main())
