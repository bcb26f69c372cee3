"""Hugging Face Llama checkpoints (`config.json` + `*.safetensors`, LlamaForCausalLM names).

Two differences from Meta's layout: the names, and the rows of wq / wk. Meta's rotary embedding
rotates interleaved pairs (x0, x1), (x2, x3), ...; Hugging Face's `rotate_half` rotates the first
half of each head against the second, so its conversion script permutes the rows of every q/k head
from [pair0.a, pair0.b, pair1.a, ...] to [pair0.a, pair1.a, ..., pair0.b, pair1.b, ...]. The
permutation stays within a head, so a rank can read its block of whole heads and undo it locally.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from services.inference.model.transformer import ModelArgs

HF_CONFIG = "config.json"
_LAYER_NAMES = {
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"tok_embeddings": "model.embed_tokens", "norm": "model.norm", "output": "lm_head"}
# Rotary frequencies some transformers versions saved with the weights: recomputed, never loaded.
_IGNORED_SUFFIX = "rotary_emb.inv_freq"
_LAYER = re.compile(r"^layers\.(\d+)\.(.+)\.weight$")


class HFCheckpointError(ValueError):
    """The Hugging Face checkpoint is not a plain Llama this model can run."""


def hf_name(name: str) -> str:
    """Our (Meta) weight name -> the LlamaForCausalLM name."""
    match = _LAYER.match(name)
    if match:
        return f"model.layers.{match[1]}.{_LAYER_NAMES[match[2]]}.weight"
    return f"{_TOP_NAMES[name.removesuffix('.weight')]}.weight"


def to_rotate_half(w: Tensor, n_heads: int) -> Tensor:
    """Meta's q/k rows -> Hugging Face's (what transformers' convert_llama_weights_to_hf does)."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def from_rotate_half(w: Tensor, n_heads: int) -> Tensor:
    """Hugging Face's q/k rows -> Meta's interleaved pairs (inverse of to_rotate_half)."""
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def read_model_args(ckpt_dir: Path) -> ModelArgs:
    config: dict[str, Any] = json.loads((ckpt_dir / HF_CONFIG).read_text())
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    problems = []
    if config.get("model_type", "llama") != "llama":
        problems.append(f"model_type is {config.get('model_type')!r}, not 'llama'")
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        problems.append(f"rope scaling {rope} is not supported (Llama 2 uses plain rotary embeddings)")
    if config.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act is {config['hidden_act']!r}, not 'silu'")
    if config.get("attention_bias") or config.get("mlp_bias"):
        problems.append("biases in attention/MLP are not part of Llama 2")
    heads = config["num_attention_heads"]
    if config.get("head_dim") not in (None, config["hidden_size"] // heads):
        problems.append(f"head_dim {config['head_dim']} is not hidden_size / num_attention_heads")
    if problems:
        raise HFCheckpointError(f"{ckpt_dir}/{HF_CONFIG}: " + "; ".join(problems))
    return ModelArgs(
        dim=config["hidden_size"],
        n_layers=config["num_hidden_layers"],
        n_heads=heads,
        n_kv_heads=config.get("num_key_value_heads") or heads,
        vocab_size=config["vocab_size"],
        ffn_hidden_dim=config["intermediate_size"],
        norm_eps=config.get("rms_norm_eps", 1e-5),
        rope_theta=rope.get("rope_theta", config.get("rope_theta", 10000.0)),
    )


class HFWeights:
    """Weights of *.safetensors files, each rank reading only its block through safetensors slices."""

    def __init__(
        self, ckpt_dir: Path, args: ModelArgs, full_shapes: Mapping[str, tuple[int, ...]], stack: ExitStack
    ) -> None:
        files = sorted(ckpt_dir.glob("*.safetensors"))
        if not files:
            raise HFCheckpointError(
                f"{ckpt_dir} has {HF_CONFIG} but no *.safetensors files (convert .bin weights to safetensors)"
            )
        self.ckpt_dir, self.args, self.full_shapes = ckpt_dir, args, full_shapes
        self.handles: dict[str, Any] = {}
        for file in files:
            handle = stack.enter_context(safe_open(str(file), framework="pt", device="cpu"))
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                if not key.endswith(_IGNORED_SUFFIX):
                    self.handles[key] = handle
        config = json.loads((ckpt_dir / HF_CONFIG).read_text())
        self.tied = "lm_head.weight" not in self.handles and bool(config.get("tie_word_embeddings"))

    def _key(self, name: str) -> str:
        return "model.embed_tokens.weight" if name == "output.weight" and self.tied else hf_name(name)

    def names(self) -> set[str]:
        """Our names for the tensors present; tensors we do not know keep their HF name, marked."""
        ours = {hf_name(name): name for name in self.full_shapes}
        if self.tied:
            ours["model.embed_tokens.weight"] = "tok_embeddings.weight"
        names = {ours.get(key, f"(hf) {key}") for key in self.handles}
        return names | ({"output.weight"} if self.tied else set())

    def read(self, name: str, dim: int | None, rank: int, world_size: int) -> Tensor:
        piece = self.handles[self._key(name)].get_slice(self._key(name))
        shape = tuple(piece.get_shape())
        if shape != self.full_shapes[name]:
            raise HFCheckpointError(
                f"{self.ckpt_dir}: {self._key(name)} has shape {shape}, but {HF_CONFIG} implies "
                f"{self.full_shapes[name]}: the config does not match the weights"
            )
        if dim is None:
            tensor = piece[:]
        else:
            size = shape[dim] // world_size
            start, stop = rank * size, (rank + 1) * size
            tensor = piece[start:stop] if dim == 0 else piece[:, start:stop]
        if name.endswith("attention.wq.weight"):
            tensor = from_rotate_half(tensor, self.args.n_heads // world_size)
        elif name.endswith("attention.wk.weight"):
            tensor = from_rotate_half(tensor, self.args.kv_heads // world_size)
        return tensor


def save_hf_checkpoint(state: Mapping[str, Tensor], args: ModelArgs, out_dir: Path) -> None:
    """Write full weights in our (Meta) naming as a LlamaForCausalLM checkpoint transformers can load."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, tensor in state.items():
        if name.endswith("attention.wq.weight"):
            tensor = to_rotate_half(tensor, args.n_heads)
        elif name.endswith("attention.wk.weight"):
            tensor = to_rotate_half(tensor, args.kv_heads)
        tensors[hf_name(name)] = tensor.contiguous()
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args.dim,
        "intermediate_size": args.hidden_dim,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.kv_heads,
        "vocab_size": args.vocab_size,
        "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,
        "max_position_embeddings": args.max_seq_len,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": str(next(iter(state.values())).dtype).removeprefix("torch."),
    }
    (out_dir / HF_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
