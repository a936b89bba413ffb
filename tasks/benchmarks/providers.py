"""Our Inspect model providers: `rsp-sim` (simulated checkpoints) and `rsp-hf` (local HF folders).

Importing this module imports Inspect and registers both with `@modelapi`; the
runner imports it only when it runs an evaluation. After that, Inspect resolves
`rsp-sim/<name>` and `rsp-hf/<name>` like any other model string (also from
`inspect eval --model ...` once this module is imported, e.g. via a task file).

rsp-sim model_args: run_id, step, effective_compute, digest, benchmark, chance
  [, curves {id: [midpoint, slope]}, capability_offset, error_rate]
rsp-hf  model_args: path [, device, max_new_tokens, dtype, batch_size, batch_wait_s] (batched greedy; hf_model.py)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inspect_ai.model import (
    ChatMessage,
    GenerateConfig,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    modelapi,
)
from inspect_ai.tool import ToolChoice, ToolInfo

from tasks.benchmarks import curves

SIM_API = "rsp-sim"
HF_API = "rsp-hf"
_UNSURE = "I am not sure."


def _approx_tokens(text: str) -> int:
    # ~4 characters per token: avoids tiktoken, whose encodings download on first use.
    return max(1, len(text) // 4)


def _messages_text(messages: list[ChatMessage]) -> str:
    return "\n\n".join(m.text for m in messages)


@modelapi(name=SIM_API)
class SimulatedCheckpointAPI(ModelAPI):
    """A checkpoint whose capability is a logistic function of effective compute (see `curves`).

    It needs the sample it is answering (id, epoch, target, choices) and reads it from
    Inspect's current TaskState, so it runs offline with no tokenizer and answers
    any task: multiple choice as "ANSWER: <letter>", anything else with the target text.
    """

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig | None = None,
        *,
        run_id: str = "sim",
        step: int = 0,
        effective_compute: float = 1e24,
        digest: str = "",
        benchmark: str = "",
        chance: float = 0.0,
        curves: Mapping[str, list[float]] | None = None,
        capability_offset: float = 0.0,
        error_rate: float = 0.0,
        **model_args: Any,
    ) -> None:
        super().__init__(model_name, base_url, api_key, [], config or GenerateConfig())
        if model_args:
            raise ValueError(f"{SIM_API}: unknown model_args {', '.join(sorted(model_args))}")
        self.key = _curves_key(run_id, int(step), digest)
        self.benchmark = benchmark or model_name
        self.p = _curves_p(float(effective_compute), self.benchmark, float(chance), float(capability_offset), curves)
        self.error_rate = float(error_rate)

    def max_connections(self) -> int:
        return 256  # answers are instant; let Inspect run many samples at once

    async def count_text_tokens(self, text: str) -> int:
        return _approx_tokens(text)

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        # Private import by necessity: the sample being answered is only reachable through
        # Inspect's current TaskState (the same accessor Inspect's own scorers use).
        from inspect_ai.solver._task_state import sample_state

        state = sample_state()
        prompt = _messages_text(input)
        if state is not None:
            sample_id: object = state.sample_id
            epoch = state.epoch
            target = state.target.text if state.target.target else ""
            n_choices = len(state.choices)
            target_letter = target.strip()[:1].upper() if n_choices else ""
        else:  # called outside an evaluation: deterministic in the prompt, never "correct"
            sample_id, epoch, target, n_choices, target_letter = prompt, 1, "", 0, ""

        if self.error_rate and curves.uniform("error", self.key, self.benchmark, sample_id, epoch) < self.error_rate:
            raise RuntimeError(f"simulated failure for sample {sample_id} epoch {epoch}")

        correct = bool(target) and curves.outcome(self.key, self.benchmark, sample_id, epoch, self.p)
        if n_choices:
            letters = [chr(ord("A") + i) for i in range(n_choices)]
            if correct and target_letter in letters:
                answer = target_letter
            else:
                wrong = [x for x in letters if x != target_letter] or letters
                answer = wrong[int(curves.uniform("wrong", self.key, sample_id, epoch) * len(wrong))]
            content = f"ANSWER: {answer}"
        else:
            content = target if correct else _UNSURE

        output = ModelOutput.from_content(model=self.model_name, content=content)
        # Setting usage ourselves keeps Inspect from counting tokens with a downloaded tokenizer.
        in_tok, out_tok = _approx_tokens(prompt), _approx_tokens(content)
        output.usage = ModelUsage(input_tokens=in_tok, output_tokens=out_tok, total_tokens=in_tok + out_tok)
        return output


def _curves_key(run_id: str, step: int, digest: str) -> str:
    return curves.checkpoint_key(digest, run_id, step)


def _curves_p(compute: float, benchmark: str, chance: float, offset: float,
              overrides: Mapping[str, list[float]] | None) -> float:
    return curves.p_correct(compute, benchmark, chance, capability_offset=offset,
                            overrides={k: (v[0], v[1]) for k, v in (overrides or {}).items()})


@modelapi(name=HF_API)
def _hf() -> type[ModelAPI]:
    # A factory, so torch/transformers are imported only when an rsp-hf model is created.
    from tasks.benchmarks.hf_model import LocalHFCheckpointAPI

    return LocalHFCheckpointAPI
