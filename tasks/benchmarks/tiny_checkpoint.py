"""A random-weights, GPT-2-shaped checkpoint folder with a character-level tokenizer.

    write_tiny_checkpoint(tmp / "ckpt")                       # what the tests load (1 layer, 32 wide)
    write_tiny_checkpoint(tmp / "ckpt", n_layer=12, n_embd=768, n_head=12)   # GPT-2 small's shape

The vocabulary is built here (printable ASCII and newline), so nothing is downloaded:
tests, bench/bench_real_model.py and demos get a real transformers checkpoint folder
(safetensors weights, tokenizer files) offline. The weights are random; `seed` makes
them reproducible. Needs the torch extra.
"""

from __future__ import annotations

from pathlib import Path


def write_tiny_checkpoint(folder: str | Path, *, n_layer: int = 1, n_embd: int = 32, n_head: int = 2,
                          n_positions: int = 1024, seed: int = 0) -> Path:
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = Path(folder)
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {"[UNK]": 0, "[EOS]": 1, **{ch: i + 2 for i, ch in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]", pad_token="[EOS]")
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=len(vocab),
                                       n_positions=n_positions, eos_token_id=1, bos_token_id=1))
    fast.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder
