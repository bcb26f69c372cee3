"""The last step of `verify-hf`: let transformers itself build the model, on the meta device.

verify_hf_dir compares the files with our own table of LlamaForCausalLM tensors. Here transformers
(whose format this is) builds LlamaForCausalLM on the meta device, without allocating the model's
memory, and its state dict's names and shapes are compared with the safetensors headers. It needs
torch and transformers (`pip install "llamagate[verify]"`); without them the step is skipped with a
warning. Whether the inference server itself would serve the directory is the server's own check:
`python -m services.inference.verify_checkpoint DIR`, run where the server is installed; the
config rules it applies first (llamagate.formats.llama_hf) are checked here too.
"""

from __future__ import annotations

import json
from pathlib import Path

from llamagate.download.errors import CheckpointInvalid
from llamagate.download.hf_checkpoint import HfReport
from llamagate.formats.llama_hf import llama2_config_problems


def check_loads(directory: Path, report: HfReport) -> None:
    config = json.loads((directory / "config.json").read_text())
    problems = llama2_config_problems(config)
    if problems:
        raise CheckpointInvalid(
            f"llamagate's inference server would not serve {directory}: " + "; ".join(problems)
        )
    try:
        import torch
        from transformers import AutoConfig, LlamaForCausalLM
    except ImportError as error:
        report.warnings.append(
            f"transformers is not installed ({error}): the files were checked, not loaded; "
            'pip install "llamagate[verify]" to build the model on the meta device too'
        )
        return

    try:
        config = AutoConfig.from_pretrained(directory)
    except (OSError, ValueError) as error:
        raise CheckpointInvalid(f"transformers cannot read {directory}/config.json: {error}") from None
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    wanted = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        wanted.pop("lm_head.weight", None)
    found = {name: tuple(shape) for name, (_, shape) in report.tensors.items()}
    missing = sorted(set(wanted) - set(found))
    wrong = sorted(n for n in wanted if n in found and found[n] != wanted[n])
    if missing or wrong:
        raise CheckpointInvalid(
            f"{directory}: LlamaForCausalLM from transformers would not load it: "
            f"missing {missing[:8]}, wrong shape {wrong[:8]}"
        )
