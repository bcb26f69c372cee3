"""Hugging Face Llama checkpoints (`config.json` + `*.safetensors`, LlamaForCausalLM names): the one
place that knows the format, read (`read_model_args`, `HFWeights`) and written (`save_hf_checkpoint`)
from the same tables.

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

from llamagate.formats.llama_hf import llama2_config_problems
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
# config.json key -> (the ModelArgs field it is read into, the ModelArgs attribute it is written
# from: the resolved value where the field may be unset).
_CONFIG_FIELDS: dict[str, tuple[str, str]] = {
    "hidden_size": ("dim", "dim"),
    "num_hidden_layers": ("n_layers", "n_layers"),
    "num_attention_heads": ("n_heads", "n_heads"),
    "num_key_value_heads": ("n_kv_heads", "kv_heads"),
    "vocab_size": ("vocab_size", "vocab_size"),
    "intermediate_size": ("ffn_hidden_dim", "hidden_dim"),
    "rms_norm_eps": ("norm_eps", "norm_eps"),
    "rope_theta": ("rope_theta", "rope_theta"),
}
# Keys a config may leave out: ModelArgs' defaults (all heads are kv heads, eps 1e-5, theta 10000) apply.
_OPTIONAL = frozenset({"num_key_value_heads", "rms_norm_eps", "rope_theta"})
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


def rotated_heads(name: str, args: ModelArgs) -> int | None:
    """How many heads weight `name` (our naming) holds if its rows are permuted for rotate_half."""
    if name.endswith("attention.wq.weight"):
        return args.n_heads
    if name.endswith("attention.wk.weight"):
        return args.kv_heads
    return None


def read_model_args(ckpt_dir: Path) -> ModelArgs:
    config: dict[str, Any] = json.loads((ckpt_dir / HF_CONFIG).read_text())
    # The same rules `llamagate verify-hf` applies before a checkpoint is copied to a node.
    problems = llama2_config_problems(config)
    if problems:
        raise HFCheckpointError(f"{ckpt_dir}/{HF_CONFIG}: " + "; ".join(problems))
    heads = config["num_attention_heads"]
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    values = {
        field: config[key]
        for key, (field, _) in _CONFIG_FIELDS.items()
        if key not in _OPTIONAL or config.get(key) is not None
    }
    values.setdefault("n_kv_heads", heads)
    if "rope_theta" in rope:  # newer transformers keep it with the other rotary parameters
        values["rope_theta"] = rope["rope_theta"]
    return ModelArgs(**values)


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
        heads = rotated_heads(name, self.args)
        # The permutation stays within a head, so this rank's block of whole heads is undone alone.
        return tensor if heads is None else from_rotate_half(tensor, heads // world_size)


def save_hf_checkpoint(state: Mapping[str, Tensor], args: ModelArgs, out_dir: Path) -> None:
    """Write full weights in our (Meta) naming as a LlamaForCausalLM checkpoint transformers can load."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, tensor in state.items():
        heads = rotated_heads(name, args)
        tensors[hf_name(name)] = (tensor if heads is None else to_rotate_half(tensor, heads)).contiguous()
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **{key: getattr(args, attribute) for key, (_, attribute) in _CONFIG_FIELDS.items()},
        "max_position_embeddings": args.max_seq_len,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": str(next(iter(state.values())).dtype).removeprefix("torch."),
    }
    (out_dir / HF_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
