"""Chat completion with a Llama 2 chat model, as the reference's example_chat_completion.py.

    torchrun --nproc_per_node MP -m services.inference.examples.example_chat_completion \
        --ckpt_dir llama-2-7b-chat/ --tokenizer_path tokenizer.model
MP must divide the model's heads (any checkpoint shard count works: weights are resharded at load).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from services.common.dialog import Message, Role
from services.common.sampling import SamplingParams
from services.inference.model.generation import Llama
from services.inference.model.parallel import exit_after_work

S, U, A = Role.SYSTEM, Role.USER, Role.ASSISTANT
DIALOGS = [
    [Message(U, "what is the recipe of mayonnaise?")],
    [
        Message(U, "I am going to Paris, what should I see?"),
        Message(
            A,
            "Paris, the capital of France, is known for its stunning architecture, art museums, "
            "historical landmarks, and romantic atmosphere. Some of the top attractions are:\n\n"
            "1. The Eiffel Tower\n2. The Louvre Museum\n3. Notre-Dame Cathedral",
        ),
        Message(U, "What is so great about #1?"),
    ],
    [
        Message(S, "Always answer with Haiku"),
        Message(U, "I am going to Paris, what should I see?"),
    ],
    [
        Message(S, "Always answer with emojis"),
        Message(U, "How to go from Beijing to NY?"),
    ],
    [
        Message(
            S,
            "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
            "while being safe. If you don't know the answer to a question, please don't share false "
            "information.",
        ),
        Message(U, "Write a brief birthday message to John"),
    ],
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt_dir", type=Path, required=True)
    parser.add_argument("--tokenizer_path", type=Path, required=True)
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top_p", type=float, default=0.9)
    parser.add_argument("--max_seq_len", type=int, default=512)
    parser.add_argument("--max_batch_size", type=int, default=8)
    parser.add_argument("--max_gen_len", type=int, default=None, help="default: max_seq_len - 1")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    generator = Llama.build(
        args.ckpt_dir, args.tokenizer_path, args.max_seq_len, args.max_batch_size, device=args.device
    )
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_gen_len=args.max_gen_len)
    results = generator.chat_completion(DIALOGS, params)
    if generator.ctx.is_main:
        for dialog, result in zip(DIALOGS, results, strict=True):
            for message in dialog:
                print(f"{message.role.capitalize()}: {message.content}\n")
            print(f"> {result.generation.role.capitalize()}: {result.generation.content}")
            print("\n==================================\n")
    exit_after_work()


if __name__ == "__main__":
    main()
