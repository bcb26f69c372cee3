"""Choosing the next token: greedy or nucleus (top-p) sampling, batched, reproducible per request.

The reference samples with `torch.multinomial` under one global seed, so a request's tokens depend
on which other requests share its batch. Here the randomness of row i is a pure function of
(seed_i, step_i): a counter-based hash gives one uniform number per (seed, step, vocab entry), and
the exponential-race trick (argmax of p / E with E ~ Exp(1)) turns them into an exact draw from the
renormalised nucleus. No Python loop over rows, no host sync: the function compiles and runs the
same on every tensor-parallel rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_U32 = 0xFFFFFFFF


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer hash (xorshift-multiply rounds) on int64 tensors holding values < 2^32.

    Both multipliers are below 2^31, so no product overflows int64: the result is the same on
    every device and backend.
    """
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _U32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _U32
    return x ^ (x >> 16)


def uniform_noise(seeds: Tensor, steps: Tensor, vocab_size: int) -> Tensor:
    """[b] int64 seeds and steps -> [b, vocab_size] fp32 uniforms in (0, 1), one per (seed, step, token)."""
    lo, hi = seeds & _U32, (seeds >> 32) & _U32
    row = _mix32(_mix32(_mix32(lo) ^ hi) ^ (steps & _U32))
    column = _mix32(torch.arange(vocab_size, device=seeds.device, dtype=torch.int64) + 0x9E3779B9)
    bits = _mix32(row[:, None] ^ column) >> 8  # 24 bits: exactly representable in fp32
    return (bits.float() + 0.5) * (1.0 / (1 << 24))


def greedy_sample(logits: Tensor) -> tuple[Tensor, Tensor]:
    """What `sample` returns when every row has temperature 0, without the top-p machinery."""
    logits = logits.float()
    tokens = logits.argmax(dim=-1)
    logprobs = F.log_softmax(logits, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
    return tokens, logprobs


def sample(
    logits: Tensor, temperature: Tensor, top_p: Tensor, seeds: Tensor, steps: Tensor
) -> tuple[Tensor, Tensor]:
    """logits [b, V] fp32; temperature, top_p [b] fp32; seeds, steps [b] int64 -> (tokens [b], logprobs [b]).

    Rows with temperature 0 take the argmax. Others keep the smallest set of most likely tokens whose
    probability mass reaches top_p (the reference's rule: drop a token when the mass before it
    already exceeds top_p) and draw from it. logprobs are log_softmax of the raw logits at the
    chosen token, as the reference reports them.
    """
    logits = logits.float()
    greedy = logits.argmax(dim=-1)
    scaled = logits / torch.where(temperature > 0, temperature, 1.0)[:, None]
    probs = torch.softmax(scaled, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before > top_p[:, None], 0.0)
    # Exponential race: argmax p_i / E_i with E_i = -log(u_i) picks i with probability p_i / sum(p).
    exponential = -torch.log(uniform_noise(seeds, steps, logits.shape[-1]).gather(-1, order))
    pick = (sorted_probs / exponential).argmax(dim=-1, keepdim=True)
    sampled = order.gather(-1, pick).squeeze(-1)
    tokens = torch.where(temperature > 0, sampled, greedy)
    logprobs = F.log_softmax(logits, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
    return tokens, logprobs
