"""A Hugging Face checkpoint folder on this machine: load it offline, decode greedily in batches.

    model, tokenizer = load_folder("/ckpt/step-100", device="cpu", dtype=None)
    texts = generate_greedy(model, tokenizer, ["Q: ...", "Q: ..."], max_new_tokens=16)

A checkpoint under evaluation is a folder the trainer wrote, never a hub download,
and the gate must work offline: everything loads with `local_files_only=True`, and a
missing or unloadable folder raises `CheckpointLoadError` (the runner turns it into
an undetermined benchmark). Each call returns a fresh model, so a caller that
perturbs the weights (the noise-injection probe) never changes another caller's.

torch and transformers (the `torch` extra) are imported inside the functions, so
importing this module stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

_DTYPES = ("float32", "float16", "bfloat16")


class CheckpointLoadError(RuntimeError):
    """The folder is missing, or transformers could not load a model and tokenizer from it."""


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise CheckpointLoadError("loading a checkpoint folder needs the torch extra: "
                                  "pip install 'rsp-gate[torch]' (torch==2.13.0 exactly)") from exc
    return torch


def resolve_device(device: str) -> str:
    """`auto` means the GPU when there is one; anything else is passed to torch as given."""
    if device == "auto":
        return "cuda" if _torch().cuda.is_available() else "cpu"
    return device


def load_folder(path: str | Path, device: str = "cpu", dtype: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a local checkpoint folder, in eval mode on `device`.

    The tokenizer pads on the left (what batched generation needs) with its EOS token
    when it has no pad token. Raises `CheckpointLoadError` with a one-line reason.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointLoadError(f"checkpoint folder {folder} does not exist")
    if dtype is not None and dtype not in _DTYPES:
        raise CheckpointLoadError(f"checkpoint dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    torch = _torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype:
        kwargs["dtype"] = getattr(torch, dtype)
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model: Any = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
        model = model.to(resolve_device(device)).eval()
    except Exception as exc:  # any loader failure is one reason, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointLoadError(f"cannot load checkpoint folder {folder}: {type(exc).__name__}: {first}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def context_limit(model: Any) -> int | None:
    """The longest sequence the model takes (positions), when its config says."""
    cfg = model.config
    limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    return int(limit) if limit else None


@dataclass(frozen=True)
class Generated:
    text: str
    input_tokens: int
    output_tokens: int


def generate_greedy(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int) -> list[Generated]:
    """One left-padded greedy `generate` call for all `prompts` (the caller sizes the batch).

    An over-long prompt keeps its tail: the question and the answer format come last.
    """
    torch = _torch()
    limit = context_limit(model)
    tokenizer.truncation_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, truncation=limit is not None,
                    max_length=(limit - max_new_tokens) if limit is not None else None)
    ids = enc["input_ids"].to(model.device)
    mask = enc["attention_mask"].to(model.device)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id)
    new = out[:, ids.shape[1]:]
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    eos = tokenizer.eos_token_id
    results = []
    for i, text in enumerate(texts):
        row = new[i].tolist()
        n_out = row.index(eos) + 1 if eos is not None and eos in row else len(row)
        results.append(Generated(str(text), int(mask[i].sum()), n_out))
    return results
