"""Log-likelihood scoring of multiple-choice questions, the way lm-evaluation-harness scores WMDP.

    model, tokenizer = hf_folder.load_folder(path, device, dtype)
    scored = score_multiple_choice(model, tokenizer, items)   # items: question, choices, target

Each question becomes one prompt (lm-eval's MMLU/WMDP template: the question, lettered
choices, "Answer:") and one continuation per choice (" A", " B", ...). Every
(prompt + continuation) goes through the model in batched forward passes; a choice's
log-likelihood is the sum of its continuation tokens' log-probabilities, and the
answer is the choice with the highest one (ties go to the first, as argmax does). No
text is generated, so no answer is ever unparseable.

The runner path (`table_for`) reads the questions from the benchmark's proxy task and
returns the same sample rows as generate scoring: one per (question, attempt), score 1
when the chosen letter is the target. Scoring is deterministic, so every attempt of a
question gets the same score, exactly as greedy generation does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policy.results import SampleTable
from policy.schema import Benchmark
from tasks.benchmarks.hf_folder import context_limit

DEFAULT_BATCH_SIZE = 32
_HEADER = "The following are multiple choice questions (with answers).\n\n"


def letter(i: int) -> str:
    return chr(ord("A") + i)


def mc_prompt(question: str, choices: Sequence[str]) -> str:
    lines = [question.strip(), *(f"{letter(i)}. {c}" for i, c in enumerate(choices))]
    return _HEADER + "\n".join(lines) + "\nAnswer:"


def _encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    # As lm-eval does: encode the whole string and split at the context's length, so a
    # tokenizer that merges across the boundary still scores the continuation's own tokens.
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    cut = len(ctx)
    if cut >= len(whole) or whole[:cut] != ctx:
        cut = len(whole) - len(tokenizer(continuation, add_special_tokens=False)["input_ids"])
    return list(whole[:cut]), list(whole[cut:])


def loglikelihoods(model: Any, tokenizer: Any, requests: Sequence[tuple[str, str]], *,
                   batch_size: int = DEFAULT_BATCH_SIZE) -> list[float]:
    """Summed log-probability of each continuation given its context, in request order."""
    import torch

    limit = context_limit(model)
    seqs: list[tuple[list[int], list[int]]] = []  # (input ids, continuation tokens)
    for context, continuation in requests:
        ctx, cont = _encode_pair(tokenizer, context, continuation)
        if not cont:
            raise ValueError(f"continuation {continuation!r} encodes to no tokens")
        ids = (ctx + cont)[:-1]  # the last token is only predicted, never fed
        if limit is not None and len(ids) > limit:
            ids = ids[-limit:]  # keep the tail: the question and the choice come last
        seqs.append((ids, cont))
    # Longest first, so each batch pads little and an out-of-memory shows up on the first batch.
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = [0.0] * len(seqs)
    device = model.device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = len(seqs[chunk[0]][0])
            # Right padding: a causal model's real tokens never see the padding after them.
            batch = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                n = len(seqs[i][0])
                batch[row, :n] = torch.tensor(seqs[i][0], dtype=torch.long)
                mask[row, :n] = 1
            logits = model(input_ids=batch.to(device), attention_mask=mask.to(device)).logits
            sums = []
            for row, i in enumerate(chunk):
                n, cont = len(seqs[i][0]), seqs[i][1]
                # Position t predicts token t + 1, so the last len(cont) positions predict the continuation.
                # Only those positions are normalised: a whole batch of vocabulary-wide float32 rows
                # would not fit for a real vocabulary.
                logprobs = torch.log_softmax(logits[row, n - len(cont):n].float(), dim=-1)
                targets = torch.tensor(cont, dtype=torch.long, device=logprobs.device)
                sums.append(logprobs.gather(1, targets[:, None]).sum())
            for i, value in zip(chunk, torch.stack(sums).tolist(), strict=True):  # one device sync a batch
                out[i] = float(value)
    return out


def score_multiple_choice(model: Any, tokenizer: Any, items: Sequence[Mapping[str, Any]], *,
                          batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict[str, Any]]:
    """Score questions {question, choices, target letter[, sample_id]} by log-likelihood.

    Returns one dict per item: the item's fields plus `logprobs` (one per choice),
    `answer` (the chosen letter) and `score` (1.0 when answer == target, else 0.0).
    """
    requests: list[tuple[str, str]] = []
    for item in items:
        prompt = mc_prompt(str(item["question"]), list(item["choices"]))
        requests.extend((prompt, f" {letter(i)}") for i in range(len(item["choices"])))
    flat = loglikelihoods(model, tokenizer, requests, batch_size=batch_size)
    scored: list[dict[str, Any]] = []
    at = 0
    for item in items:
        k = len(item["choices"])
        lps = flat[at:at + k]
        at += k
        best = max(range(k), key=lambda j: lps[j])  # first of equals, like argmax
        answer = letter(best)
        scored.append({**item, "logprobs": lps, "answer": answer,
                       "score": 1.0 if answer == str(item["target"]).strip().upper() else 0.0})
    return scored


def table_for(model: Any, tokenizer: Any, task: Any, benchmark: Benchmark, *, limit: int | None,
              batch_size: int = DEFAULT_BATCH_SIZE) -> SampleTable:
    """Rows for an Inspect multiple-choice Task's dataset, scored by log-likelihood.

    Same rows as the Inspect runner reads back from a generate run: sample_id, attempt
    0..attempts-1, version = the task's declared version (else the policy's).
    """
    from tasks.benchmarks.base import RunnerError, rows_for

    samples = list(task.dataset)[:limit] if limit is not None else list(task.dataset)
    items = []
    for s in samples:
        if not s.choices or not isinstance(s.input, str) or not isinstance(s.target, str):
            raise RunnerError(f"{benchmark.id}: loglikelihood scoring needs multiple-choice questions "
                              f"(text input, choices, one target letter); sample {s.id} is not one")
        items.append({"sample_id": str(s.id), "question": s.input, "choices": list(s.choices), "target": s.target})
    if not items:
        raise RunnerError(f"{benchmark.id}: the task has no samples to score")
    version = str(getattr(task, "version", "") or "")
    version = version if version not in ("0", "") else benchmark.version
    scored = score_multiple_choice(model, tokenizer, items, batch_size=batch_size)
    rows = [{"benchmark": benchmark.id, "version": version, "sample_id": r["sample_id"], "attempt": a,
             "score": r["score"], "error": None}
            for r in scored for a in range(benchmark.attempts)]
    return rows_for(benchmark, rows, source=f"{benchmark.id}: loglikelihood scoring")
