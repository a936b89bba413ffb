"""Real checkpoint folders: batched greedy generation (rsp-hf) and log-likelihood scoring.

Every test loads a real transformers model from a folder written here (random weights,
character-level tokenizer; `tasks.benchmarks.tiny_checkpoint`); nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from policy.results import ROW_FIELDS
from policy.schema import Benchmark
from tasks.benchmarks import CheckpointInfo, RunnerError, run_benchmark
from tasks.benchmarks.hf_folder import CheckpointLoadError, generate_greedy, load_folder
from tasks.benchmarks.loglikelihood import loglikelihoods, score_multiple_choice
from tasks.benchmarks.tiny_checkpoint import write_tiny_checkpoint


def bench(bid: str = "wmdp-bio-proxy", *, attempts: int = 1, **runner: Any) -> Benchmark:
    return Benchmark(id=bid, name=bid, version="1", domain="cbrn", description="test benchmark",
                     attempts=attempts, runner={"type": "inspect", **runner})


def hf(folder: Path, **extra: Any) -> CheckpointInfo:
    return CheckpointInfo("run-hf", 5, 1e20, "sha256:tiny", {"kind": "huggingface", "path": str(folder), **extra})


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("hf") / "ckpt", n_layer=2, n_embd=32, n_head=2)


@pytest.fixture(scope="module")
def always_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose next-token logits are 1 for "C" and 0 for every other token, whatever the context.

    The final layer norm outputs the constant vector e0 (weight 0, bias e0) and the tied
    output embedding has 1 in column 0 for "C" only, so every choice's log-likelihood
    differs only by its letter's term and "C" always wins.
    """
    folder = write_tiny_checkpoint(tmp_path_factory.mktemp("hf") / "always-c")
    model, tokenizer = load_folder(folder)
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.transformer.wte.weight[:, 0] = 0.0
        model.transformer.wte.weight[tokenizer.convert_tokens_to_ids("C"), 0] = 1.0
    model.save_pretrained(folder)
    return folder


PROMPTS = ["Q: 2 + 2 = ?\nA:", "A much longer prompt, so that the batch needs left padding.\nAnswer:", "x",
           "The capital of France is", "ANSWER: B\n\nNext question:", "0123456789" * 5]


def test_batched_greedy_generation_equals_one_prompt_at_a_time(folder: Path) -> None:
    model, tokenizer = load_folder(folder)
    alone = [generate_greedy(model, tokenizer, [p], 8)[0] for p in PROMPTS]
    together = generate_greedy(model, tokenizer, PROMPTS, 8)
    assert [g.text for g in together] == [g.text for g in alone]
    assert all(g.output_tokens >= 1 for g in together)
    assert [g.input_tokens for g in together] == [len(p) for p in PROMPTS]  # one token per character


def test_provider_batches_concurrent_requests_and_answers_like_unbatched(
        folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inspect_ai.model import ChatMessageUser, GenerateConfig

    from tasks.benchmarks import hf_model

    sizes: list[int] = []
    real = hf_model.generate_greedy

    def counting(model: Any, tokenizer: Any, prompts: list[str], max_new: int) -> Any:
        sizes.append(len(prompts))
        return real(model, tokenizer, prompts, max_new)

    monkeypatch.setattr(hf_model, "generate_greedy", counting)
    api = hf_model.LocalHFCheckpointAPI("tiny", path=str(folder), max_new_tokens=6, batch_size=4, batch_wait_s=0.5)
    assert api.max_connections() == 8

    async def ask_all() -> list[str]:
        outs = await asyncio.gather(*(api.generate([ChatMessageUser(content=p)], [], "none", GenerateConfig())
                                      for p in PROMPTS))
        return [o.completion for o in outs]

    try:
        answers = asyncio.run(ask_all())
    finally:
        api.close()
    assert sizes == [4, 2]  # six concurrent requests, batches of at most four
    model, tokenizer = load_folder(folder)
    expected = [generate_greedy(model, tokenizer, [hf_model.prompt_text(tokenizer, [ChatMessageUser(content=p)])],
                                6)[0].text for p in PROMPTS]
    assert answers == expected


def test_loglikelihoods_equal_a_direct_forward_pass(folder: Path) -> None:
    model, tokenizer = load_folder(folder)
    requests = [("Question: which?\nAnswer:", " A"), ("Short", " B"), ("Question: which?\nAnswer:", " longer text"),
                ("x" * 40, " D")]
    got = loglikelihoods(model, tokenizer, requests, batch_size=3)  # two batches, padded
    for (context, continuation), value in zip(requests, got, strict=True):
        ctx = tokenizer(context)["input_ids"]
        full = tokenizer(context + continuation)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0], dim=-1)
        direct = sum(float(logprobs[t - 1, full[t]]) for t in range(len(ctx), len(full)))
        assert value == pytest.approx(direct, abs=1e-4)


def test_multiple_choice_picks_the_choice_with_the_highest_loglikelihood(folder: Path, always_c: Path) -> None:
    items = [{"sample_id": "q1", "question": "Pick one.", "choices": ["w", "x", "y", "z"], "target": "C"},
             {"sample_id": "q2", "question": "Pick again.", "choices": ["1", "2", "3"], "target": "A"}]
    model, tokenizer = load_folder(always_c)
    scored = score_multiple_choice(model, tokenizer, items)
    assert [s["answer"] for s in scored] == ["C", "C"] and [s["score"] for s in scored] == [1.0, 0.0]
    assert scored[0]["logprobs"][2] > max(scored[0]["logprobs"][:2] + scored[0]["logprobs"][3:])

    model, tokenizer = load_folder(folder)  # random weights: the answer is whichever choice scores highest
    for s in score_multiple_choice(model, tokenizer, items):
        best = max(range(len(s["choices"])), key=lambda i: s["logprobs"][i])
        assert s["answer"] == "ABCD"[best] and s["score"] == (1.0 if "ABCD"[best] == s["target"] else 0.0)


def test_both_scorings_give_rows_of_the_same_shape(always_c: Path, tmp_path: Path) -> None:
    info = hf(always_c, max_new_tokens=4, batch_size=8)
    gen = run_benchmark(info, bench(attempts=2, scoring="generate"), log_dir=tmp_path / "gen", limit=5)
    ll = run_benchmark(info, bench(attempts=2, scoring="loglikelihood"), log_dir=tmp_path / "ll", limit=5)
    gen_rows, ll_rows = list(gen.rows()), list(ll.rows())
    assert all(tuple(r) == ROW_FIELDS for r in gen_rows + ll_rows)
    key = lambda r: (r["benchmark"], r["version"], r["sample_id"], r["attempt"])
    assert sorted(map(key, gen_rows)) == sorted(map(key, ll_rows)) and len(ll_rows) == 10
    # The model always prefers "C": a question scores 1 exactly when its answer is C, in every attempt.
    targets = {}
    for line in Path("tasks/benchmarks/datasets/wmdp-bio-proxy.jsonl").read_text().splitlines()[:5]:
        r = json.loads(line)
        targets[r["id"]] = "ABCD"[r["answer"]]
    assert {(r["sample_id"], r["attempt"]): r["score"] for r in ll_rows} == {
        (sid, a): (1.0 if t == "C" else 0.0) for sid, t in targets.items() for a in (0, 1)}
    assert all(r["error"] is None for r in ll_rows)
    assert not list((tmp_path / "ll").rglob("*.eval"))  # scored outside Inspect: no log to resume


def test_missing_or_unloadable_folder_fails_closed(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CheckpointLoadError, match="does not exist"):
        load_folder(tmp_path / "absent")
    with pytest.raises(CheckpointLoadError, match="cannot load checkpoint folder"):
        load_folder(broken)
    for scoring in ("generate", "loglikelihood"):
        with pytest.raises(RunnerError, match="does not exist"):
            run_benchmark(hf(tmp_path / "absent"), bench(scoring=scoring), log_dir=tmp_path / scoring, limit=2)
        with pytest.raises(RunnerError, match="cannot load checkpoint folder"):
            run_benchmark(hf(broken), bench(scoring=scoring), log_dir=tmp_path / scoring, limit=2)


def test_loglikelihood_scoring_refuses_what_it_cannot_score(folder: Path, tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="runner.scoring must be"):
        bench(scoring="logprob")
    served = CheckpointInfo("r", 1, 1e20, "", {"kind": "inspect", "model": "openai/gpt-x"})
    with pytest.raises(RunnerError, match="needs a checkpoint folder"):
        run_benchmark(served, bench(scoring="loglikelihood"), log_dir=tmp_path, limit=2)
    with pytest.raises(RunnerError, match="multiple-choice"):
        run_benchmark(hf(folder), bench("re-bench-proxy", scoring="loglikelihood"), log_dir=tmp_path, limit=2)
    with pytest.raises(RunnerError, match="is not one"):
        run_benchmark(hf(folder), bench("other", task="inspect_evals/wmdp_bio", scoring="loglikelihood"),
                      log_dir=tmp_path, limit=2)
