"""Served checkpoints (vLLM, SGLang): the manifest names the model and its endpoint, Inspect's own
provider talks to it over HTTP, and the rows come back as from any other checkpoint.

The endpoint is `tests/plugins/openai_server.py`: the OpenAI-compatible API both servers expose,
answered for real over HTTP with a known answer key, so the scores the gate reads can be checked.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from policy.schema import Benchmark
from tasks.benchmarks import CheckpointInfo, RunnerError, run_benchmark
from tasks.manifest import ManifestRejected, parse_manifest
from tests.plugins.openai_server import ServedModel

BENCH = "wmdp-bio-proxy"
LIMIT = 6


def bench() -> Benchmark:
    return Benchmark(id=BENCH, name=BENCH, version="1", domain="cbrn", description="served model test",
                     attempts=1, runner={"type": "inspect", "task": BENCH})


def served(model: str, base_url: str | None = None) -> CheckpointInfo:
    spec: dict[str, Any] = {"kind": "inspect", "model": model}
    if base_url:
        spec["base_url"] = base_url
    return CheckpointInfo("run-served", 3, 1e22, "sha256:served", spec)


def answer_key() -> dict[str, str]:
    """Question text -> correct letter, from the proxy's own dataset file."""
    from tasks.benchmarks.proxies import proxy_task

    return {str(s.input): str(s.target) for s in proxy_task(BENCH).dataset}


def knows_every_other(model: ServedModel) -> list[str]:
    """Make the server answer the first, third, … question correctly and the rest wrongly (a known score)."""
    key = answer_key()
    questions = list(key)[:LIMIT]
    right = set(questions[::2])

    def answer(prompt: str) -> str:
        question = next(q for q in questions if q in prompt)
        letter = key[question]
        wrong = "B" if letter == "A" else "A"
        return f"ANSWER: {letter if question in right else wrong}"

    model.answer = answer
    return [q in right for q in questions]  # type: ignore[misc]


@pytest.mark.parametrize("provider", ["vllm", "sglang"])
def test_served_model_is_evaluated_through_inspects_provider(provider: str, served_model: ServedModel,
                                                              tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "test")
    monkeypatch.setenv("SGLANG_API_KEY", "test")
    served_model.reset()
    expected = knows_every_other(served_model)
    table = run_benchmark(served(f"{provider}/served-model", served_model.base_url), bench(), log_dir=tmp_path,
                          limit=LIMIT)
    assert len(served_model.requests) == LIMIT  # every question went over HTTP to the endpoint
    assert {r["model"] for r in served_model.requests} == {"served-model"}
    assert sorted(table.score.tolist()) == sorted(1.0 if ok else 0.0 for ok in expected)
    assert not any(table.error.tolist())


def test_endpoint_from_settings_when_the_manifest_names_none(served_model: ServedModel, tmp_path: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.settings import get_settings

    monkeypatch.setenv("RSP_SERVED_BASE_URL", served_model.base_url)
    monkeypatch.setenv("VLLM_API_KEY", "test")
    get_settings.cache_clear()
    try:
        served_model.reset()
        table = run_benchmark(served("vllm/served-model"), bench(), log_dir=tmp_path, limit=2)
    finally:
        get_settings.cache_clear()
    assert len(table.score) == 2 and len(served_model.requests) == 2


def test_no_endpoint_fails_closed_instead_of_starting_a_server(tmp_path: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.settings import get_settings

    monkeypatch.delenv("RSP_SERVED_BASE_URL", raising=False)
    monkeypatch.delenv("VLLM_BASE_URL", raising=False)
    get_settings.cache_clear()
    with pytest.raises(RunnerError, match="RSP_SERVED_BASE_URL"):
        run_benchmark(served("vllm/org/model"), bench(), log_dir=tmp_path, limit=1)


def test_unreachable_endpoint_is_a_runner_error_not_a_score(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv("VLLM_API_KEY", "test")
    cfg = bench().model_copy(update={"runner": {"type": "inspect", "task": BENCH, "retries": 0}})
    try:
        table = run_benchmark(served("vllm/served-model", f"http://127.0.0.1:{port}/v1"), cfg, log_dir=tmp_path,
                              limit=2)
    except RunnerError:
        return
    # Inspect may record per-sample errors instead of failing the task: then every row is an error, never a 0.
    assert all(table.error.tolist())


def _manifest(model: dict[str, Any]) -> bytes:
    return json.dumps({"run_id": "r", "step": 1, "effective_compute": 1e20, "created_at": "2026-11-30T00:00:00Z",
                       "model": model}).encode()


def test_manifest_base_url_must_be_an_http_url() -> None:
    ok = parse_manifest(_manifest({"kind": "inspect", "model": "vllm/org/m", "base_url": "http://gpu-1:8000/v1"}), "r/step-1")
    assert ok.model.base_url == "http://gpu-1:8000/v1"  # type: ignore[union-attr]
    for bad in ("file:///etc/passwd", "gpu-1:8000", "http://a b/v1", ""):
        with pytest.raises(ManifestRejected, match="base_url"):
            parse_manifest(_manifest({"kind": "inspect", "model": "vllm/org/m", "base_url": bad}), "r/step-1")
