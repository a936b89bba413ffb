"""`rsp-hf`: a Hugging Face checkpoint folder, loaded locally and decoded greedily in batches.

Inspect calls `generate` once per sample, concurrently. Requests go onto a queue; one
worker thread takes up to `batch_size` of them at a time (waiting at most
`batch_wait_s` for the next one to arrive) and runs them as one left-padded greedy
`generate` (`hf_folder.generate_greedy`). Answers go back to the event loop with
`call_soon_threadsafe`, so a finished batch is seen at once.

Why not Inspect's own `hf/` provider: it loads with `device_map` (needs accelerate),
samples unless told not to, has no offline switch for the tokenizer, waits 2 s after
the last request before a partial batch runs and polls each answer once a second
(bench/bench_real_model.py measures both). `max_connections()` is twice the batch
size, so the next batch is queued while one runs; the runner turns Inspect's adaptive
concurrency off so that this is the limit it uses.

model_args: path [, device (cpu|cuda|auto), max_new_tokens, dtype, batch_size, batch_wait_s]
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass
from typing import Any

from inspect_ai.model import ChatMessage, GenerateConfig, ModelAPI, ModelOutput, ModelUsage
from inspect_ai.tool import ToolChoice, ToolInfo

from tasks.benchmarks.hf_folder import Generated, generate_greedy, load_folder

DEFAULT_MAX_NEW_TOKENS = 16
DEFAULT_BATCH_SIZE = 32
DEFAULT_BATCH_WAIT_S = 0.05


@dataclass
class _Request:
    prompt: str
    max_new: int
    future: asyncio.Future[Generated]
    loop: asyncio.AbstractEventLoop


def prompt_text(tokenizer: Any, messages: list[ChatMessage]) -> str:
    """The text the model sees: the folder's chat template when it has one, else the messages joined."""
    if getattr(tokenizer, "chat_template", None):
        chat = [{"role": m.role, "content": m.text} for m in messages]
        return str(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
    return "\n\n".join(m.text for m in messages) + "\n\n"


def leave_a_core_for_the_event_loop() -> None:
    """On CPU, torch's intra-op threads take every core but one.

    Inspect's event loop (scoring, logging, the next requests) runs beside the batches;
    with a torch thread on every core, OpenMP's spinning workers and the loop take the
    cores from each other, and a batch waits on a descheduled worker. Measured on 2 cores
    (bench/bench_real_model.py): 100 questions in 8.1 s with 2 torch threads, 4.9 s with 1.
    The setting is per process, which is where Inspect runs one evaluation at a time.
    """
    import os

    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), cores - 1)))


def _deliver(req: _Request, result: Generated | None, error: BaseException | None) -> None:
    def set_() -> None:
        if req.future.done():  # the sample was cancelled (time limit) meanwhile
            return
        if error is not None:
            req.future.set_exception(error)
        else:
            req.future.set_result(result)  # type: ignore[arg-type]

    req.loop.call_soon_threadsafe(set_)


class LocalHFCheckpointAPI(ModelAPI):
    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig | None = None,
        *,
        path: str,
        device: str = "cpu",
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        dtype: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
        **model_args: Any,
    ) -> None:
        super().__init__(model_name, base_url, api_key, [], config or GenerateConfig())
        if model_args:
            raise ValueError(f"rsp-hf: unknown model_args {', '.join(sorted(model_args))}")
        if int(batch_size) < 1 or float(batch_wait_s) < 0:
            raise ValueError(f"rsp-hf: batch_size must be >= 1 and batch_wait_s >= 0, "
                             f"got {batch_size} and {batch_wait_s}")
        self.model, self.tokenizer = load_folder(path, device, dtype)
        if self.model.device.type == "cpu":
            leave_a_core_for_the_event_loop()
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        self.batch_wait_s = float(batch_wait_s)
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._worker = threading.Thread(target=self._serve, name=f"rsp-hf-{model_name}", daemon=True)
        self._worker.start()

    def max_connections(self) -> int:
        return 2 * self.batch_size  # one batch running, the next one queued

    def close(self) -> None:
        self._queue.put(None)

    async def count_text_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def _next_batch(self) -> tuple[list[_Request], bool]:
        """Block for one request, then take more until the batch is full or none came for batch_wait_s."""
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < self.batch_size:
            try:
                item = self._queue.get(timeout=self.batch_wait_s)
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _serve(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._next_batch()
            # Requests with different token budgets run apart: greedy output does not depend on
            # the batch, but the budget decides where each answer stops.
            for max_new in sorted({r.max_new for r in batch}):
                group = [r for r in batch if r.max_new == max_new]
                try:
                    results = generate_greedy(self.model, self.tokenizer, [r.prompt for r in group], max_new)
                except Exception as exc:  # noqa: BLE001 - each request of the batch fails with this reason
                    for r in group:
                        _deliver(r, None, exc)
                    continue
                for r, res in zip(group, results, strict=True):
                    _deliver(r, res, None)

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Generated] = loop.create_future()
        self._queue.put(_Request(prompt_text(self.tokenizer, input), int(config.max_tokens or self.max_new_tokens), future, loop))
        res = await future
        output = ModelOutput.from_content(model=self.model_name, content=res.text)
        output.usage = ModelUsage(input_tokens=res.input_tokens, output_tokens=res.output_tokens,
                                  total_tokens=res.input_tokens + res.output_tokens)
        return output
