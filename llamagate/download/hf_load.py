"""The last step of `verify-hf`: let the loaders themselves build the model, on the meta device.

verify_hf_dir compares the files with our own table of LlamaForCausalLM tensors. Here, two loaders
give their own verdict, still without allocating the model's memory:
- transformers (whose format this is) builds LlamaForCausalLM on the meta device, and its state
  dict's names and shapes are compared with the safetensors headers;
- llamagate's inference loader (services.inference.checkpoint, when installed) reads the config the
  way the server will (rejecting, e.g., rope scaling or biases Llama 2 does not have) and loads every
  tensor onto the meta device: each is read from disk once and dropped, so this step reads the whole
  checkpoint (about a minute for 7B on a fast disk) but never holds more than one tensor.
"""

from __future__ import annotations

from pathlib import Path

from llamagate.download.errors import CheckpointInvalid
from llamagate.download.hf_checkpoint import HfReport


def check_loads(directory: Path, report: HfReport) -> None:
    _check_with_transformers(directory, report)
    _check_with_llamagate_loader(directory, report)


def _check_with_transformers(directory: Path, report: HfReport) -> None:
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
    found = {name: tuple(shape) for name, (_, shape) in report.tensors.items()}
    missing = sorted(set(wanted) - set(found))
    wrong = sorted(n for n in wanted if n in found and found[n] != wanted[n])
    if missing or wrong:
        raise CheckpointInvalid(
            f"{directory}: LlamaForCausalLM from transformers would not load it: "
            f"missing {missing[:8]}, wrong shape {wrong[:8]}"
        )


def _check_with_llamagate_loader(directory: Path, report: HfReport) -> None:
    try:
        import torch

        from services.inference.checkpoint import load_model, read_model_args
        from services.inference.parallel import ParallelContext
    except ImportError as error:
        report.warnings.append(
            f"llamagate's inference loader is not installed ({error}); checked with transformers only"
        )
        return
    # Our loader reports every problem as a ValueError subclass (CheckpointError, HFCheckpointError).
    try:
        args = read_model_args(directory)
        meta = ParallelContext(
            rank=0, world_size=1, local_rank=0, device=torch.device("meta"), backend="none"
        )
        load_model(directory, ctx=meta, dtype=torch.float32, max_seq_len=args.max_seq_len)
    except (ValueError, KeyError) as error:
        raise CheckpointInvalid(f"llamagate's inference server could not load {directory}: {error}") from None
