"""Text completion with a pretrained Llama 2 model, as the reference's example_text_completion.py.

    torchrun --nproc_per_node MP -m services.inference.examples.example_text_completion \
        --ckpt_dir llama-2-7b/ --tokenizer_path tokenizer.model
MP must divide the model's heads (any checkpoint shard count works: weights are resharded at load).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from services.common.sampling import SamplingParams
from services.inference.model.generation import Llama
from services.inference.model.parallel import exit_after_work

PROMPTS = [
    # For these prompts, the expected answer is the natural continuation of the prompt.
    "I believe the meaning of life is",
    "Simply put, the theory of relativity states that ",
    """A brief message congratulating the team on the launch:

        Hi everyone,

        I just """,
    # Few-shot prompt: examples first, then the case to complete.
    """Translate English to French:

        sea otter => loutre de mer
        peppermint => menthe poivrée
        plush girafe => girafe peluche
        cheese =>""",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt_dir", type=Path, required=True)
    parser.add_argument("--tokenizer_path", type=Path, required=True)
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top_p", type=float, default=0.9)
    parser.add_argument("--max_seq_len", type=int, default=128)
    parser.add_argument("--max_gen_len", type=int, default=64)
    parser.add_argument("--max_batch_size", type=int, default=4)
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    generator = Llama.build(
        args.ckpt_dir, args.tokenizer_path, args.max_seq_len, args.max_batch_size, device=args.device
    )
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_gen_len=args.max_gen_len)
    results = generator.text_completion(PROMPTS, params)
    if generator.ctx.is_main:
        for prompt, result in zip(PROMPTS, results, strict=True):
            print(prompt)
            print(f"> {result.generation}")
            print("\n==================================\n")
    exit_after_work()


if __name__ == "__main__":
    main()
