"""A lean forward of a BERT encoder for checks on the CPU: transformers' BertModel arithmetic in eval
mode, without its module layers, with each linear's weight laid out for oneDNN once.

Why: a check is a forward of a few rows of tens of tokens, so fixed costs per operation decide its
time, not arithmetic. Profiled on a Xeon with AMX (one thread, one 16-token row, 5.4 ms): an eager
bf16 `nn.Linear` re-lays-out its weight for oneDNN on every call (60-155 µs each, 3.1 ms of 37
linears), and the model's Python layers (module calls, output capturing, keyword deprecation
wrappers) took most of the rest. torch.compile with freezing should pack the weights, but with the
encoder's dynamic shapes it kept aten's addmm (torch 2.11-2.13) and saved under 1 ms.

Here the weights are packed once at load (`torch.ops.mkldnn._reorder_linear_weight`, the op that
inductor's freezing uses) and each layer is a handful of calls: one fused query/key/value
projection, scaled-dot-product attention, and the two residual LayerNorms. The operations and
their order are BertModel's (embeddings word + token type, then + position; post-LayerNorm blocks;
exact GELU unless the config says otherwise), so scores match the transformers model (the tests
compare them). Anything else (int8, fp16, other devices) keeps the transformers model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

Activation = Callable[[torch.Tensor], torch.Tensor]

# transformers' names for the activations whose arithmetic is a plain torch call.
ACTIVATIONS: dict[str, Activation] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


def onednn_packs(weight: torch.Tensor) -> bool:
    """Whether a weight gets a oneDNN layout of its own: bf16 on a CPU with bf16 instructions.
    fp32 linears run through MKL's GEMM, which reads the plain layout without a copy."""
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    )


class PackedLinear:
    """`x @ weight.T + bias`, the weight laid out once for oneDNN where that pays (onednn_packs)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.out_features = weight.shape[0]
        self.bias = bias.detach().contiguous()
        self.packed = onednn_packs(weight)
        self.weight = (
            torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None)
            if self.packed
            else weight.detach().contiguous()
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.packed:
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat, self.weight, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)


@dataclass(frozen=True)
class Block:
    qkv: PackedLinear  # query, key and value projections as one matrix
    out: PackedLinear
    attention_norm: torch.nn.LayerNorm  # the model's own modules: a plain F.layer_norm call each
    up: PackedLinear
    down: PackedLinear
    output_norm: torch.nn.LayerNorm


def _linear(layer: torch.nn.Linear) -> PackedLinear:
    assert layer.bias is not None, "BERT's linears have biases"
    return PackedLinear(layer.weight, layer.bias)


class LeanBert:
    """`hidden = LeanBert(model)(ids, mask, positions)`: BertModel's last_hidden_state.

    `mask` is [batch, length] (1 = token, 0 = padding) or a boolean [batch, 1, length, length]
    (which key each query may attend to, as packed rows need); `positions` defaults to 0..length-1.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        config = model.config
        if config.model_type != "bert" or getattr(config, "is_decoder", False):
            raise ValueError(f"LeanBert runs BERT encoders, not {config.model_type!r}")
        if config.hidden_act not in ACTIVATIONS:
            raise ValueError(f"LeanBert has no activation {config.hidden_act!r}")
        self.heads = int(config.num_attention_heads)
        self.activation = ACTIVATIONS[config.hidden_act]
        # transformers' submodules are reached by their attribute names, which carry no types.
        bert: Any = model
        embeddings = bert.embeddings
        self.words = embeddings.word_embeddings.weight.detach()
        self.positions = embeddings.position_embeddings.weight.detach()
        # Checks pass no token types: every token is type 0, as transformers fills them in.
        self.token_type = embeddings.token_type_embeddings.weight.detach()[0]
        self.embedding_norm: torch.nn.LayerNorm = embeddings.LayerNorm
        self.blocks = [self._block(layer) for layer in bert.encoder.layer]

    @staticmethod
    def _block(layer: Any) -> Block:
        attention = layer.attention
        projections = (attention.self.query, attention.self.key, attention.self.value)
        return Block(
            qkv=PackedLinear(
                torch.cat([p.weight for p in projections]), torch.cat([p.bias for p in projections])
            ),
            out=_linear(attention.output.dense),
            attention_norm=attention.output.LayerNorm,
            up=_linear(layer.intermediate.dense),
            down=_linear(layer.output.dense),
            output_norm=layer.output.LayerNorm,
        )

    @torch.inference_mode()
    def __call__(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, length = ids.shape
        if positions is None:
            positions = torch.arange(length, device=ids.device).expand(batch, length)
        x = F.embedding(ids, self.words) + self.token_type
        x = self.embedding_norm(x + F.embedding(positions, self.positions))
        allowed = mask[:, None, None, :].bool() if mask.dim() == 2 else mask.bool()
        # As an additive mask, made once: SDPA turns a boolean mask into this in every layer.
        bias = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill_(
            ~allowed, float("-inf")
        )
        width = x.shape[-1]
        for block in self.blocks:
            q, k, v = block.qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            attended = attended.transpose(1, 2).reshape(batch, length, width)
            x = block.attention_norm(block.out(attended) + x)
            x = block.output_norm(block.down(self.activation(block.up(x))) + x)
        return x
