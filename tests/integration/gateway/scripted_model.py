"""A "scripted" Llama checkpoint whose greedy reply to any chat prompt is a chosen text.

With every layer's output projections (attention wo, MLP w2) zero, each block adds nothing to the
residual stream, so the model is a bigram machine: logits = output(norm(embedding(last token))).
Embedding rows are random (near-orthogonal in 128 dims); the output row of token t[i+1] is set to
the embedding of t[i], so the greedy successor of t[i] is t[i+1], and EOS follows the last token.
That needs a token sequence without repeats, so the text is segmented greedily into the longest
pieces not used yet (the tokenizer has byte-fallback tokens, and several pieces spell the same
characters). t[0] is the last token of the chat prompt ("[/INST]"), the same for every user turn.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import torch

from services.common.dialog import Message, Role
from services.inference.model.chat_format import encode_dialog
from services.inference.model.tokenizer import Tokenizer


def _spellings(tokenizer: Tokenizer) -> dict[str, list[int]]:
    """Text spelled by each token (byte tokens included), skipping unk/bos/eos."""
    spelled: dict[str, list[int]] = {}
    for token in range(3, tokenizer.n_words):
        piece = tokenizer.piece(token)
        if piece.startswith("<0x") and piece.endswith(">"):
            value = int(piece[3:-1], 16)
            if value >= 0x80:
                continue  # part of a multi-byte character: not used for ASCII scripts
            text = chr(value)
        else:
            text = piece.replace("\u2581", " ")
        spelled.setdefault(text, []).append(token)
    return spelled


def segment_without_repeats(tokenizer: Tokenizer, text: str, avoid: set[int]) -> list[int]:
    """Tokens spelling `text`, none repeated nor in `avoid`: depth-first, longest pieces first."""
    spelled = _spellings(tokenizer)
    longest = max(len(s) for s in spelled)
    used = set(avoid)
    budget = [100_000]  # bounded search: a text that needs more is too repetitive

    def spell(position: int) -> list[int] | None:
        if position == len(text):
            return []
        budget[0] -= 1
        if budget[0] < 0:
            return None
        for length in range(min(longest, len(text) - position), 0, -1):
            for token in spelled.get(text[position : position + length], []):
                if token in used:
                    continue
                used.add(token)
                rest = spell(position + length)
                if rest is not None:
                    return [token, *rest]
                used.discard(token)
        return None

    tokens = spell(0)
    if tokens is None:
        raise ValueError(f"cannot spell {text!r} without repeating a token; use a less repetitive text")
    return tokens


def write_scripted_checkpoint(
    demo_ckpt: Path, tokenizer_path: Path, out_dir: Path, text: str, filler_tokens: int = 0
) -> list[int]:
    """Write out_dir/{params.json, consolidated.00.pth, tokenizer.model}; return the scripted tokens.

    `filler_tokens` more (distinct, arbitrary) tokens follow the text, so the generation is still
    running when a test acts on the text (e.g. a safety stop that must cancel it).
    """
    tokenizer = Tokenizer(tokenizer_path)
    prompt_end = encode_dialog(tokenizer, [Message(Role.USER, "any question")])[-1]
    tokens = segment_without_repeats(tokenizer, text, {prompt_end})
    unused = [t for t in range(3, tokenizer.n_words) if t not in {prompt_end, *tokens}]
    tokens += [t for t in unused if not tokenizer.piece(t).startswith("<0x")][:filler_tokens]
    state = torch.load(demo_ckpt / "consolidated.00.pth", map_location="cpu", weights_only=True)
    vocab, dim = state["tok_embeddings.weight"].shape
    generator = torch.Generator().manual_seed(1234)
    embedding = torch.randn(vocab, dim, generator=generator)
    embedding *= dim**0.5 / embedding.norm(dim=1, keepdim=True)  # rms 1: RMSNorm leaves rows as they are
    output = torch.zeros(vocab, dim)
    chain = [prompt_end, *tokens, tokenizer.eos_id]
    for current, following in itertools.pairwise(chain):
        output[following] = embedding[current]
    dtype = state["tok_embeddings.weight"].dtype
    state["tok_embeddings.weight"] = embedding.to(dtype)
    state["output.weight"] = output.to(dtype)
    state["norm.weight"] = torch.ones(dim, dtype=dtype)
    for name, value in state.items():
        if name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
            state[name] = torch.zeros_like(value)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state, out_dir / "consolidated.00.pth")
    params = json.loads((demo_ckpt / "params.json").read_text())
    (out_dir / "params.json").write_text(json.dumps(params))
    shutil.copy(tokenizer_path, out_dir / "tokenizer.model")
    return tokens
