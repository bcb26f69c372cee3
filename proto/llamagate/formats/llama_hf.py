"""What a Hugging Face `config.json` must say for llamagate to serve the model as Llama 2.

The inference server refuses anything else at load time; `llamagate verify-hf` applies the same rules
before anyone copies 130 GB to a node. Pure Python on the parsed JSON: no torch, no transformers.
"""

from __future__ import annotations

from typing import Any


def llama2_config_problems(config: dict[str, Any]) -> list[str]:
    """Every way `config` departs from the Llama 2 architecture; empty when it can be served."""
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
    heads = config.get("num_attention_heads")
    hidden = config.get("hidden_size")
    if heads and hidden and config.get("head_dim") not in (None, hidden // heads):
        problems.append(f"head_dim {config['head_dim']} is not hidden_size / num_attention_heads")
    return problems
