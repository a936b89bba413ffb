"""`rsp-hf`: a Hugging Face checkpoint folder, loaded locally and decoded greedily.

Loaded with `local_files_only=True`: a checkpoint under evaluation is a folder the
trainer wrote, never a hub download (and the gate must work offline). Generation
is greedy (deterministic) and short; a lock serialises calls into the model
because one torch module is not meant to be driven from several threads at once.
torch and transformers (the `torch` extra) are imported here only.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from inspect_ai.model import ChatMessage, GenerateConfig, ModelAPI, ModelOutput, ModelUsage
from inspect_ai.tool import ToolChoice, ToolInfo

DEFAULT_MAX_NEW_TOKENS = 16


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
        **model_args: Any,
    ) -> None:
        super().__init__(model_name, base_url, api_key, [], config or GenerateConfig())
        if model_args:
            raise ValueError(f"rsp-hf: unknown model_args {', '.join(sorted(model_args))}")
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"rsp-hf: checkpoint folder {folder} does not exist")
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("rsp-hf needs the torch extra: pip install 'rsp-gate[torch]' "
                              "(torch==2.13.0 exactly)") from exc

        self._torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.max_new_tokens = int(max_new_tokens)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        kwargs: dict[str, Any] = {"local_files_only": True}
        if dtype:
            kwargs["dtype"] = getattr(torch, dtype)
        model: Any = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
        self.model = model.to(device).eval()
        self._lock = threading.Lock()

    def max_connections(self) -> int:
        return 1  # generation is serialised by the lock anyway

    async def count_text_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def _prompt(self, messages: list[ChatMessage]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            chat = [{"role": m.role, "content": m.text} for m in messages]
            return str(self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
        return "\n\n".join(m.text for m in messages) + "\n\n"

    def _generate_sync(self, prompt: str, max_new: int) -> tuple[str, int, int]:
        torch = self._torch
        ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        # Keep the tail of an over-long prompt: the question and answer format come last.
        limit = getattr(self.model.config, "max_position_embeddings", None) or getattr(
            self.model.config, "n_positions", None)
        if limit and ids.shape[1] + max_new > limit:
            ids = ids[:, -(limit - max_new):]
        ids = ids.to(self.device)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        with self._lock, torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=max_new, pad_token_id=pad)
        new = out[0, ids.shape[1]:]
        return str(self.tokenizer.decode(new, skip_special_tokens=True)), int(ids.shape[1]), int(new.shape[0])

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        max_new = config.max_tokens or self.max_new_tokens
        text, n_in, n_out = await asyncio.to_thread(self._generate_sync, self._prompt(input), max_new)
        output = ModelOutput.from_content(model=self.model_name, content=text)
        output.usage = ModelUsage(input_tokens=n_in, output_tokens=n_out, total_tokens=n_in + n_out)
        return output
