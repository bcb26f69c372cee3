"""Check a Hugging Face-format Llama directory on disk before a server tries to load it.

Reads config.json, opens every safetensors file's header (a truncated file fails here, by name), and
compares the tensors found with the names and shapes LlamaForCausalLM has for that config. No tensor
data is read, so checking a 70B directory takes seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from llamagate.download.errors import CheckpointInvalid

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_MAX_LISTED = 8


@dataclass(frozen=True)
class LlamaShape:
    """The config.json fields that decide tensor names and shapes."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    attention_bias: bool
    mlp_bias: bool

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LlamaShape:
        try:
            hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            return cls(
                hidden=hidden,
                layers=int(config["num_hidden_layers"]),
                heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                intermediate=int(config["intermediate_size"]),
                vocab=int(config["vocab_size"]),
                tied_embeddings=bool(config.get("tie_word_embeddings", False)),
                attention_bias=bool(config.get("attention_bias", False)),
                mlp_bias=bool(config.get("mlp_bias", False)),
            )
        except KeyError as missing:
            raise CheckpointInvalid(f"config.json lacks {missing}; is this a Llama config?") from None

    def expected_tensors(self) -> dict[str, tuple[int, ...]]:
        h, q, kv, ff = (
            self.hidden,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.intermediate,
        )
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab, h)}
        for i in range(self.layers):
            p = f"model.layers.{i}."
            linear = {
                "self_attn.q_proj": ((q, h), self.attention_bias),
                "self_attn.k_proj": ((kv, h), self.attention_bias),
                "self_attn.v_proj": ((kv, h), self.attention_bias),
                "self_attn.o_proj": ((h, q), self.attention_bias),
                "mlp.gate_proj": ((ff, h), self.mlp_bias),
                "mlp.up_proj": ((ff, h), self.mlp_bias),
                "mlp.down_proj": ((h, ff), self.mlp_bias),
            }
            for name, (shape, bias) in linear.items():
                shapes[f"{p}{name}.weight"] = shape
                if bias:
                    shapes[f"{p}{name}.bias"] = (shape[0],)
            shapes[f"{p}input_layernorm.weight"] = (h,)
            shapes[f"{p}post_attention_layernorm.weight"] = (h,)
        shapes["model.norm.weight"] = (h,)
        if not self.tied_embeddings:
            shapes["lm_head.weight"] = (self.vocab, h)
        return shapes


@dataclass
class HfReport:
    directory: Path
    shape: LlamaShape
    files: list[str]
    parameters: int
    tensors: dict[str, tuple[str, list[int]]]  # name -> (file, shape)
    warnings: list[str] = field(default_factory=list)


def verify_hf_dir(directory: Path) -> HfReport:
    """Raise CheckpointInvalid naming every problem found; return a report when the directory is usable."""
    if not directory.is_dir():
        raise CheckpointInvalid(f"{directory} is not a directory")
    config = _read_json(directory / "config.json")
    architectures = config.get("architectures") or []
    warnings: list[str] = []
    if "LlamaForCausalLM" not in architectures:
        warnings.append(f"config.json architectures is {architectures}, not LlamaForCausalLM")
    shape = LlamaShape.from_config(config)
    files, found = _read_headers(directory)
    expected = shape.expected_tensors()

    problems: list[str] = []
    missing = [name for name in expected if name not in found]
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing: {_list(missing)}")
    wrong = [
        f"{name} is {list(found[name][1])} in {found[name][0]}, expected {list(shape_)}"
        for name, shape_ in expected.items()
        if name in found and tuple(found[name][1]) != shape_
    ]
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) with the wrong shape: {_list(wrong)}")
    if problems:
        raise CheckpointInvalid(f"{directory}: " + "; ".join(problems))

    unexpected = [name for name in found if name not in expected and not name.endswith("rotary_emb.inv_freq")]
    if unexpected:
        warnings.append(f"{len(unexpected)} tensor(s) not used by LlamaForCausalLM: {_list(unexpected)}")
    if not any((directory / name).is_file() for name in ("tokenizer.model", "tokenizer.json")):
        warnings.append("no tokenizer.model or tokenizer.json next to the weights")
    parameters = sum(_numel(found[name][1]) for name in expected)
    return HfReport(directory, shape, files, parameters, found, warnings)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointInvalid(f"{path} is missing: not a Hugging Face model directory") from None
    except (OSError, ValueError) as error:
        raise CheckpointInvalid(f"{path} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise CheckpointInvalid(f"{path} is not a JSON object")
    return value


def _read_headers(directory: Path) -> tuple[list[str], dict[str, tuple[str, list[int]]]]:
    """-> (files, {tensor name: (file, shape)}), following the index file when there is one."""
    index_path = directory / INDEX_FILE
    claimed: dict[str, str] = {}
    if index_path.is_file():
        weight_map = _read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointInvalid(f"{index_path} has no weight_map")
        claimed = {str(k): str(v) for k, v in weight_map.items()}
        files = sorted(set(claimed.values()))
    elif (directory / SINGLE_FILE).is_file():
        files = [SINGLE_FILE]
    else:
        raise CheckpointInvalid(f"{directory} has neither {SINGLE_FILE} nor {INDEX_FILE}")

    found: dict[str, tuple[str, list[int]]] = {}
    absent = [name for name in files if not (directory / name).is_file()]
    if absent:
        raise CheckpointInvalid(f"{directory}: file(s) named in {INDEX_FILE} are missing: {_list(absent)}")
    for name in files:
        try:
            with safe_open(str(directory / name), framework="numpy") as f:  # headers only: no torch needed
                for key in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                    found[key] = (name, list(f.get_slice(key).get_shape()))
        except (SafetensorError, OSError) as error:
            raise CheckpointInvalid(
                f"{directory / name} cannot be read (truncated download?): {error}"
            ) from None
    misplaced = [k for k, file in claimed.items() if found.get(k, (file,))[0] != file]
    if misplaced:
        raise CheckpointInvalid(f"{INDEX_FILE} points to the wrong file for: {_list(misplaced)}")
    return files, found


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _list(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")
