"""The last step of `verify-hf`: let the loader itself build the model, on the meta device.

verify_hf_dir compares the files with our own table of LlamaForCausalLM tensors; this asks
transformers (the library the file format comes from) for its state dict on the meta device — no
memory, no tensor data — and compares it with the safetensors headers, so a renamed or newly added
parameter in a future transformers release cannot slip past the table.
"""

from __future__ import annotations

from pathlib import Path

from llamagate.download.errors import CheckpointInvalid
from llamagate.download.hf_checkpoint import HfReport


def check_loads(directory: Path, report: HfReport) -> None:
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    try:
        config = AutoConfig.from_pretrained(directory)
    except (OSError, ValueError) as error:
        raise CheckpointInvalid(f"transformers cannot read {directory}/config.json: {error}") from None
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    wanted = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        wanted.pop("lm_head.weight", None)
    found = {name: shape for name, (_, shape) in report.tensors.items()}
    missing = sorted(set(wanted) - set(found))
    wrong = sorted(n for n in wanted if n in found and tuple(found[n]) != wanted[n])
    if missing or wrong:
        raise CheckpointInvalid(
            f"{directory}: LlamaForCausalLM from transformers would not load it: "
            f"missing {missing[:8]}, wrong shape {wrong[:8]}"
        )
