"""The reference's static-batch generator: the plain eager baseline the engine is checked against.

`Llama.build` joins the torchrun job, loads this rank's shard and the tokenizer; `text_completion` and
`chat_completion` behave as the reference's (left-aligned prompts decoded in lock step, prompt tokens
forced until each row's prompt is consumed, stop at EOS, echo and logprobs as it computes them),
except that sampling is our per-row, seeded `sampling.sample`. Every rank runs the same calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from services.common.dialog import Message, Role
from services.common.errors import InvalidRequest
from services.common.sampling import SamplingParams, seed_as_int64
from services.inference.model.chat_format import encode_dialog, encode_text
from services.inference.model.checkpoint import default_dtype, load_model
from services.inference.model.parallel import ParallelContext, init_parallel, local_kv_heads
from services.inference.model.sampling import sample
from services.inference.model.tokenizer import Tokenizer
from services.inference.model.transformer import ModelArgs, Transformer, apply_rotary

PAD_ID = -1  # never fed to the model: a row's padding is overwritten before its position is read


class ContiguousKVCache:
    """One [batch, max_seq_len] key/value buffer per layer; every row is at the same position."""

    def __init__(
        self, args: ModelArgs, batch_size: int, kv_heads: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        shape = (args.n_layers, batch_size, args.max_seq_len, kv_heads, args.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.start_pos = 0

    def attend(self, layer_id: int, q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        b, t = q.shape[:2]
        end = self.start_pos + t
        self.k[layer_id, :b, self.start_pos : end] = k
        self.v[layer_id, :b, self.start_pos : end] = v
        keys, values = self.k[layer_id, :b, :end], self.v[layer_id, :b, :end]
        mask = None
        if t > 1:  # query i (at start_pos + i) sees keys 0 .. start_pos + i
            mask = torch.ones(t, end, dtype=torch.bool, device=q.device).tril(diagonal=self.start_pos)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=mask, enable_gqa=True
        )
        return out.transpose(1, 2)


@dataclass(frozen=True)
class CompletionPrediction:
    generation: str
    tokens: list[str] | None = None
    logprobs: list[float] | None = None


@dataclass(frozen=True)
class ChatPrediction:
    generation: Message
    tokens: list[str] | None = None
    logprobs: list[float] | None = None


class Llama:
    def __init__(
        self, model: Transformer, tokenizer: Tokenizer, ctx: ParallelContext, max_batch_size: int
    ) -> None:
        self.model, self.tokenizer, self.ctx = model, tokenizer, ctx
        self.max_seq_len = model.args.max_seq_len
        self.max_batch_size = max_batch_size

    @staticmethod
    def build(
        ckpt_dir: Path,
        tokenizer_path: Path,
        max_seq_len: int,
        max_batch_size: int,
        *,
        device: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Llama:
        """Join torchrun (if launched by it), load the tokenizer and this rank's shard of the model."""
        ctx = init_parallel(device)
        tokenizer = Tokenizer(tokenizer_path)
        model = load_model(
            ckpt_dir,
            ctx=ctx,
            dtype=dtype or default_dtype(ctx.device),
            max_seq_len=max_seq_len,
            vocab_size=tokenizer.n_words,
        )
        return Llama(model, tokenizer, ctx, max_batch_size)

    @torch.inference_mode()
    def generate(
        self,
        prompt_tokens: Sequence[Sequence[int]],
        params: SamplingParams,
        *,
        echo: bool = False,
        seeds: Sequence[int] | None = None,
    ) -> tuple[list[list[int]], list[list[float]] | None]:
        """Token ids (and logprobs) generated for each prompt, cut at EOS; `seeds` default to 1, 2, 3, ..."""
        params.validate()
        bsz = len(prompt_tokens)
        if not 0 < bsz <= self.max_batch_size:
            raise InvalidRequest(
                f"batch of {bsz} prompts: send 1 to {self.max_batch_size} (--max_batch_size)"
            )
        if seeds is not None and len(seeds) != bsz:
            raise ValueError(f"{len(seeds)} seeds for {bsz} prompts: give one seed per prompt")
        lengths = [len(p) for p in prompt_tokens]
        if min(lengths) == 0 or max(lengths) > self.max_seq_len:
            raise InvalidRequest(f"prompt lengths {lengths}: each must be 1 to {self.max_seq_len} tokens")
        max_gen_len = params.max_gen_len or self.max_seq_len - 1
        total_len = min(self.max_seq_len, max_gen_len + max(lengths))
        device = self.ctx.device

        tokens = torch.full((bsz, total_len), PAD_ID, dtype=torch.long, device=device)
        for i, prompt in enumerate(prompt_tokens):
            tokens[i, : len(prompt)] = torch.tensor(prompt, dtype=torch.long, device=device)
        token_logprobs = torch.zeros(bsz, total_len, dtype=torch.float, device=device)
        prompt_len = torch.tensor(lengths, device=device)
        temperature = torch.full((bsz,), params.temperature, device=device)
        top_p = torch.full((bsz,), params.top_p, device=device)
        row_seeds = torch.tensor(list(seeds) if seeds is not None else range(1, bsz + 1), device=device)
        eos_reached = torch.zeros(bsz, dtype=torch.bool, device=device)
        input_text_mask = tokens != PAD_ID
        args = self.model.args
        kv_heads = local_kv_heads(args, self.ctx.world_size)
        cache = ContiguousKVCache(args, bsz, kv_heads, self.model.output.weight.dtype, device)

        prev_pos = 0
        for cur_pos in range(min(lengths), total_len):
            cache.start_pos = prev_pos
            positions = torch.arange(prev_pos, cur_pos, device=device).expand(bsz, -1)
            logits = self.model(tokens[:, prev_pos:cur_pos], positions, cache)
            next_token, _ = sample(logits[:, -1], temperature, top_p, row_seeds, cur_pos - prompt_len)
            next_token = torch.where(input_text_mask[:, cur_pos], tokens[:, cur_pos], next_token)
            tokens[:, cur_pos] = next_token
            if params.logprobs:
                targets = tokens[:, prev_pos + 1 : cur_pos + 1]
                chosen = F.log_softmax(logits, dim=-1).gather(-1, targets.clamp_min(0)[..., None]).squeeze(-1)
                token_logprobs[:, prev_pos + 1 : cur_pos + 1] = chosen.masked_fill(targets == PAD_ID, 0.0)
            eos_reached |= ~input_text_mask[:, cur_pos] & (next_token == self.tokenizer.eos_id)
            prev_pos = cur_pos
            if bool(eos_reached.all()):
                break

        out_tokens, out_logprobs = [], []
        all_logprobs = token_logprobs.tolist()
        for i, row in enumerate(tokens.tolist()):
            start = 0 if echo else lengths[i]
            ids = row[start : lengths[i] + max_gen_len]
            probs = all_logprobs[i][start : lengths[i] + max_gen_len]
            if self.tokenizer.eos_id in ids[lengths[i] - start :]:
                cut = ids.index(self.tokenizer.eos_id, lengths[i] - start)
                ids, probs = ids[:cut], probs[:cut]
            ids = [t for t in ids if t != PAD_ID]  # only when the loop stopped early at EOS
            out_tokens.append(ids)
            out_logprobs.append(probs[: len(ids)])
        return out_tokens, (out_logprobs if params.logprobs else None)

    def text_completion(
        self, prompts: Sequence[str], params: SamplingParams, *, echo: bool = False
    ) -> list[CompletionPrediction]:
        prompt_tokens = [encode_text(self.tokenizer, p) for p in prompts]
        generations, logprobs = self.generate(
            prompt_tokens, params, echo=echo, seeds=self._seeds(params, prompts)
        )
        return [
            CompletionPrediction(
                generation=self.tokenizer.decode(ids),
                tokens=[self.tokenizer.decode([t]) for t in ids] if logprobs else None,
                logprobs=logprobs[i] if logprobs else None,
            )
            for i, ids in enumerate(generations)
        ]

    def chat_completion(
        self, dialogs: Sequence[Sequence[Message]], params: SamplingParams
    ) -> list[ChatPrediction]:
        prompt_tokens = [encode_dialog(self.tokenizer, dialog) for dialog in dialogs]
        generations, logprobs = self.generate(prompt_tokens, params, seeds=self._seeds(params, dialogs))
        return [
            ChatPrediction(
                generation=Message(Role.ASSISTANT, self.tokenizer.decode(ids)),
                tokens=[self.tokenizer.decode([t]) for t in ids] if logprobs else None,
                logprobs=logprobs[i] if logprobs else None,
            )
            for i, ids in enumerate(generations)
        ]

    @staticmethod
    def _seeds(params: SamplingParams, batch: Sequence[object]) -> list[int]:
        # The reference seeds one generator with 1; here each row gets its own stream, seed + row.
        base = 1 if params.seed is None else params.seed
        return [seed_as_int64((base + i) % 2**64) for i in range(len(batch))]
