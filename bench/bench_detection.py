"""How long checkpoint detection takes as the history grows, on a local folder and on S3.

    python bench/bench_detection.py                      # 1,000 and 10,000 checkpoints, both backends
    python bench/bench_detection.py --sizes 1000 --backends local

For each size it fills a fresh store with N complete checkpoints in the
recommended layout (runs of 1,000 steps: <run>/step-<9 digits>/checkpoint.json),
then measures

* full listing        - list every manifest (what a full rescan costs),
* detection           - full listing + reading and parsing every manifest
                        (a cold start with the whole history unclaimed),
* per checkpoint      - detection / N,
* tick, nothing new   - an incremental scan from a cursor at the newest key
                        (median of --repeats; what every watch tick costs),
* requests            - S3 HTTP requests for the full listing / the tick.

The S3 endpoint is moto's server, started here in its own process on 127.0.0.1
so that its CPU time is not charged to the client's interpreter; its latency is a
loopback's, so absolute S3 numbers are a floor, and real S3 adds ~20-50 ms per
request (which is why the tick's single request matters). Set-up (writing the
checkpoints) is reported but not part of any measurement.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.manifest import MANIFEST_NAME, manifest_bytes, new_manifest
from tasks.stores import CheckpointStore, LocalFolderStore, checkpoint_key

STEPS_PER_RUN = 1000


@dataclass
class Row:
    backend: str
    n: int
    setup_s: float
    list_s: float
    detect_s: float
    tick_s: float
    requests: str
    loaded: int


def layout(n: int) -> list[tuple[str, bytes]]:
    items = []
    for i in range(n):
        run, step = f"run-{i // STEPS_PER_RUN:03d}", (i % STEPS_PER_RUN) * 500
        key = checkpoint_key(run, step)
        items.append((f"{key}/{MANIFEST_NAME}", manifest_bytes(new_manifest(run, step, 1e21 * (1 + i)))))
    return items


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


class Counter:
    def __init__(self, client: Any):
        self.count = 0
        client.meta.events.register("before-send.s3", self._hit)

    def _hit(self, **_: Any) -> None:
        self.count += 1


def measure(backend: str, store: CheckpointStore, n: int, setup_s: float, repeats: int, workers: int) -> Row:
    counter = Counter(store.client) if hasattr(store, "client") else None
    list_s, result = timed(lambda: store.scan(full=True))
    pages = counter.count if counter else 0
    assert len(result.refs) == n, (backend, n, len(result.refs))
    detect_s, loaded = timed(lambda: store.load_all(store.scan(full=True).refs, max_workers=workers))
    assert len(loaded.checkpoints) == n and not loaded.rejected
    ticks = []
    for _ in range(repeats):
        before = counter.count if counter else 0
        tick_s, tick = timed(lambda: store.scan(result.next_cursor))
        assert tick.refs == () and not tick.full
        ticks.append(tick_s)
        tick_requests = (counter.count - before) if counter else 0
    requests = f"{pages} / {tick_requests}" if counter else "-"
    return Row(
        backend, n, setup_s, list_s, detect_s, statistics.median(ticks), requests, len(loaded.checkpoints)
    )


def bench_local(n: int, repeats: int) -> Row:
    root = Path(tempfile.mkdtemp(prefix="bench-detect-"))
    try:
        items = layout(n)

        def write() -> None:
            for key, data in items:
                path = root / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)

        setup_s, _ = timed(write)
        return measure("local", LocalFolderStore(root), n, setup_s, repeats, workers=1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def moto_endpoint() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server on {url} did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bench_s3(endpoint: str, n: int, repeats: int, workers: int) -> Row:
    from tasks.stores.s3 import S3Store

    bucket = f"bench-{n}-{time.monotonic_ns() % 10**9}"
    store = S3Store(bucket, "checkpoints", endpoint_url=endpoint, region="us-east-1")
    store.client.create_bucket(Bucket=bucket)
    items = layout(n)

    def upload() -> None:
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(
                pool.map(
                    lambda kv: store.client.put_object(Bucket=bucket, Key="checkpoints/" + kv[0], Body=kv[1]),
                    items,
                )
            )

    setup_s, _ = timed(upload)
    return measure("s3 (moto)", store, n, setup_s, repeats, workers=workers)


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def table(rows: list[Row], workers: int) -> str:
    header = [
        "backend",
        "checkpoints",
        "full listing",
        "detection (list+parse)",
        "per checkpoint",
        "tick, nothing new",
        "requests full/tick",
        "set-up",
    ]
    body = [
        [
            r.backend,
            f"{r.n:,}",
            fmt_s(r.list_s),
            fmt_s(r.detect_s),
            f"{r.detect_s / r.n * 1e6:.0f} µs",
            fmt_s(r.tick_s),
            r.requests,
            fmt_s(r.setup_s),
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        f"S3 manifests are read with {workers} threads; local ones sequentially. "
        f"Tick: median of repeats. Set-up is not part of any measurement."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="1000,10000", help="comma-separated checkpoint counts (default 1000,10000)"
    )
    parser.add_argument("--backends", default="local,s3", help="comma-separated: local, s3 (default both)")
    parser.add_argument("--repeats", type=int, default=5, help="ticks to time per size (median reported)")
    parser.add_argument("--workers", type=int, default=8, help="threads reading S3 manifests (default 8)")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"local", "s3"}
    if unknown or not sizes or min(sizes) < 1:
        parser.error(f"bad --backends {sorted(unknown)} or --sizes {args.sizes!r}")

    rows: list[Row] = []
    if "local" in backends:
        for n in sizes:
            rows.append(bench_local(n, args.repeats))
            print(f"  local {n:,} done", file=sys.stderr)
    if "s3" in backends:
        import logging

        logging.getLogger("botocore").setLevel(logging.ERROR)
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true"
        )
        with moto_endpoint() as endpoint:
            for n in sizes:
                rows.append(bench_s3(endpoint, n, args.repeats, args.workers))
                print(f"  s3 {n:,} done", file=sys.stderr)
    print(table(rows, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
