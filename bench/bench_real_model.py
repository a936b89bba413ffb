"""Real checkpoint folders: our runner's questions/s against transformers' own batched calls.

    .venv/bin/python bench/bench_real_model.py                              # CPU, about a minute
    .venv/bin/python bench/bench_real_model.py --device cuda --size small   # GPT-2 small's shape, bf16
    .venv/bin/python bench/bench_real_model.py --device cuda --size large   # ~700M parameters

One random-weights GPT-2-shaped folder with the tests' character-level tokenizer
(`tasks.benchmarks.tiny_checkpoint`), the shipped `wmdp-bio-proxy` questions, greedy
decoding. Rows:

  generate       engine: `model.generate` on the prompts our run sent, left-padded, batch B
                 ours:   `run_benchmark` (Inspect + the batching `rsp-hf` provider), end to end
                 Inspect's `hf/` provider (`hf/local`, model_path), when accelerate is importable
  loglikelihood  engine: one batched forward pass over every prompt + choice (right-padded, batch B)
                 ours:   `run_benchmark` with `scoring: loglikelihood`, end to end

"ours" includes loading the folder and writing the Inspect log; a warm-up run first
pays Inspect's import. "x engine" is ours / engine in questions per second, by wall
time and by this process's CPU time (the steadier measure on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy.schema import Benchmark
from tasks.benchmarks import CheckpointInfo, run_benchmark

TASK = "wmdp-bio-proxy"
SIZES: dict[str, dict[str, int]] = {
    "cpu": {"n_layer": 2, "n_embd": 128, "n_head": 4},  # ~0.4M parameters: a minute on 2 cores
    "small": {"n_layer": 12, "n_embd": 768, "n_head": 12},  # GPT-2 small, 87M
    "large": {"n_layer": 24, "n_embd": 1536, "n_head": 16},  # ~700M
}


def _bench(scoring: str) -> Benchmark:
    return Benchmark(id=TASK, name=TASK, version="1", domain="cbrn", description="bench",
                     runner={"type": "inspect", "scoring": scoring})


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


Timing = tuple[float, float]  # wall seconds, process CPU seconds


def _clock() -> Timing:
    return time.perf_counter(), time.process_time()


def _since(start: Timing) -> Timing:
    now = _clock()
    return now[0] - start[0], now[1] - start[1]


def _ours(info: CheckpointInfo, scoring: str, n: int, log_dir: Path) -> Timing:
    started = _clock()
    table = run_benchmark(info, _bench(scoring), log_dir=log_dir, limit=n)
    elapsed = _since(started)
    assert len(table) == n and not (table.error != "").any(), "rows with errors"
    return elapsed


def _prompts_and_answers(log_dir: Path, tokenizer: Any) -> tuple[list[str], list[str]]:
    """The exact prompts our provider built, and its answers, read back from the Inspect log."""
    from inspect_ai.log import read_eval_log

    from tasks.benchmarks.hf_model import prompt_text

    log = read_eval_log(str(next(log_dir.rglob("*.eval"))))
    samples = sorted(log.samples or [], key=lambda s: str(s.id))
    prompts = [prompt_text(tokenizer, [m for m in s.messages if m.role != "assistant"]) for s in samples]
    return prompts, [s.output.completion for s in samples]


def _engine_generate(model: Any, tokenizer: Any, prompts: list[str], batch: int, max_new: int,
                     device: str) -> tuple[Timing, list[str]]:
    import torch

    tokenizer.padding_side = "left"
    texts: list[str] = []
    _sync(device)
    started = _clock()
    for i in range(0, len(prompts), batch):
        enc = tokenizer(prompts[i:i + batch], return_tensors="pt", padding=True).to(model.device)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new, pad_token_id=tokenizer.pad_token_id)
        texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    _sync(device)
    return _since(started), texts


def _engine_forward(model: Any, tokenizer: Any, texts: list[str], batch: int, device: str) -> Timing:
    import torch

    tokenizer.padding_side = "right"
    _sync(device)
    started = _clock()
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i:i + batch], return_tensors="pt", padding=True).to(model.device)
        with torch.inference_mode():
            torch.log_softmax(model(**enc).logits.float(), dim=-1)
    _sync(device)
    return _since(started)


def _inspect_hf(folder: Path, n: int, batch: int, max_new: int, device: str, dtype: str,
                log_dir: Path) -> Timing | None:
    try:
        import accelerate  # noqa: F401  (Inspect's hf/ loads with device_map, which needs it)
    except ImportError:
        return None
    from inspect_ai import eval as inspect_eval

    from tasks.benchmarks.proxies import proxy_task

    started = _clock()
    logs = inspect_eval(proxy_task(TASK), model="hf/local", limit=n, max_tokens=max_new, max_connections=batch,
                        model_args={"model_path": str(folder), "device": device, "do_sample": False,
                                    "dtype": dtype},
                        log_dir=str(log_dir), display="none", score_display=False)
    assert logs[0].status == "success", logs[0].error
    return _since(started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
    ap.add_argument("--questions", type=int, default=100, help="at most 100 (the proxy's size)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--dtype", default=None, help="default: float32 on cpu, bfloat16 elsewhere")
    args = ap.parse_args()
    dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    n, b = min(args.questions, 100), args.batch_size

    from tasks.benchmarks.hf_folder import load_folder
    from tasks.benchmarks.loglikelihood import letter, mc_prompt
    from tasks.benchmarks.proxies import proxy_task
    from tasks.benchmarks.tiny_checkpoint import write_tiny_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="bench-real-"))
    folder = write_tiny_checkpoint(tmp / "ckpt", **SIZES[args.size])
    model_spec = {"kind": "huggingface", "path": str(folder), "device": args.device, "dtype": dtype,
                  "batch_size": b, "max_new_tokens": args.max_new_tokens}
    info = CheckpointInfo("bench", 1, 1e20, "sha256:bench", model_spec)
    _ours(info, "generate", b, tmp / "warmup")  # Inspect's import and first-batch costs, not measured

    started = time.perf_counter()
    model, tokenizer = load_folder(folder, args.device, dtype)
    load_s = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())

    results: list[tuple[str, str, Timing | None]] = []
    ours_gen = _ours(info, "generate", n, tmp / "gen")
    prompts, ours_answers = _prompts_and_answers(tmp / "gen", tokenizer)
    engine_gen, engine_answers = _engine_generate(model, tokenizer, prompts, b, args.max_new_tokens, args.device)
    same = sum(a == e for a, e in zip(ours_answers, engine_answers, strict=True))
    results += [("generate", f"transformers generate, batch {b}", engine_gen),
                ("generate", "run_benchmark, rsp-hf (batched)", ours_gen),
                ("generate", f"Inspect hf/ provider, max_connections {b}",
                 _inspect_hf(folder, n, b, args.max_new_tokens, args.device, dtype, tmp / "inspect-hf"))]

    samples = list(proxy_task(TASK).dataset)[:n]
    texts = [mc_prompt(str(s.input), list(s.choices or [])) + f" {letter(i)}"
             for s in samples for i in range(len(s.choices or []))]
    engine_ll = _engine_forward(model, tokenizer, texts, b, args.device)
    ours_ll = _ours(info, "loglikelihood", n, tmp / "ll")
    results += [("loglikelihood", f"transformers forward pass, batch {b}", engine_ll),
                ("loglikelihood", "run_benchmark, scoring=loglikelihood", ours_ll)]

    print(f"device={args.device} size={args.size} params={params / 1e6:.1f}M dtype={dtype} questions={n} "
          f"batch={b} new_tokens={args.max_new_tokens} folder_load={load_s:.2f}s")
    print(f"{'mode':<14} {'path':<42} {'wall s':>7} {'q/s':>7} {'x engine':>8} {'cpu s':>7} {'x engine':>8}")
    engine = {"generate": engine_gen, "loglikelihood": engine_ll}
    for mode, path, t in results:
        if t is None:
            print(f"{mode:<14} {path:<42} skipped: accelerate not installed")
            continue
        e = engine[mode]
        print(f"{mode:<14} {path:<42} {t[0]:>7.2f} {n / t[0]:>7.1f} {e[0] / t[0]:>8.2f} {t[1]:>7.2f} "
              f"{e[1] / t[1]:>8.2f}")
    print(f"greedy answers identical to the engine's: {same}/{n}")


if __name__ == "__main__":
    main()
