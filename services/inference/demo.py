"""A tiny DEMO Llama for `make run` and tests, trained in seconds on a small built-in corpus.

Not a useful language model: 2 layers and dim 128, trained briefly on demo_corpus.txt as chat
turns, so it answers an `[INST]` prompt with corpus-like English sentences and then EOS. It exists
so the whole stack (tensor-parallel ranks, engine, gateway, safety) runs anywhere in seconds with
no download, and so the output the safety classifier judges looks like text rather than bytes.
The tokenizer is real sentencepiece BPE, trained deterministically on the same corpus, with
Llama's ids (unk 0, bos 1, eos 2, no pad) and byte fallback, so any Unicode text encodes.

    python -m services.inference.demo --out .work/demo
writes DIR/tokenizer.model and DIR/llama-demo/{params.json, consolidated.00.pth, DEMO.txt}.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import sentencepiece as spm
import torch

from services.inference.model.chat_format import B_INST, E_INST
from services.inference.model.checkpoint import meta_params, save_meta_checkpoint
from services.inference.model.transformer import ModelArgs, Transformer, init_random_weights

# Bump when the recipe changes, so write_demo rebuilds stale demo directories.
DEMO_VERSION = 3
DEMO_SEED = 20231124
DEMO_VOCAB_SIZE = 1000
# GQA (4 query heads sharing 2 kv heads) so MP 1 and 2 both run; vocab and FFN split by 2 and 4 too.
DEMO_ARGS = ModelArgs(
    dim=128, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=DEMO_VOCAB_SIZE, multiple_of=64, norm_eps=1e-5
)
CORPUS = Path(__file__).with_name("demo_corpus.txt")
# Enough steps for short, sentence-like replies that end in EOS; about five seconds on two cores.
DEMO_TRAIN_STEPS = 150
DEMO_TRAIN_BATCH = 16
NOTICE = (
    "DEMO MODEL: a tiny model trained for seconds on a built-in corpus; it babbles and understands nothing.\n"
)


@dataclass(frozen=True)
class DemoPaths:
    tokenizer: Path
    ckpt_dir: Path


def train_tokenizer(corpus: Path, vocab_size: int = DEMO_VOCAB_SIZE) -> bytes:
    """A Llama-style sentencepiece BPE model; single-threaded and unshuffled so it is reproducible."""
    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return model.getvalue()


def training_examples(corpus: Path, tokenizer: spm.SentencePieceProcessor) -> list[list[int]]:
    """Each corpus line as the chat reply to the line before it (`[INST] a [/INST] b</s>`), and the
    two lines as plain text (`a b</s>`), so both chat turns and text completion get text back."""
    lines = [line.strip() for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    bos, eos = tokenizer.bos_id(), tokenizer.eos_id()
    examples = []
    for prompt, reply in itertools.pairwise(lines):
        chat = tokenizer.encode(f"{B_INST} {prompt} {E_INST}") + tokenizer.encode(f" {reply}")
        examples.append([bos, *chat, eos])
        examples.append([bos, *tokenizer.encode(f"{prompt} {reply}"), eos])
    return examples


def train_demo(model: Transformer, examples: list[list[int]], steps: int = DEMO_TRAIN_STEPS) -> None:
    """Next-token training on padded batches of chat examples; seeded and single-threaded so it is
    reproducible (every process that builds the demo writes the same weights)."""
    generator = torch.Generator().manual_seed(DEMO_SEED)
    width = max(len(e) for e in examples)
    batch = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, example in enumerate(examples):
        batch[row, : len(example)] = torch.tensor(example)
    lengths = torch.tensor([len(e) for e in examples])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
        with torch.enable_grad():
            for _ in range(steps):
                picked = torch.randint(len(examples), (DEMO_TRAIN_BATCH,), generator=generator)
                rows = batch[picked, : int(lengths[picked].max())]
                tokens, targets = rows[:, :-1].clamp(min=0), rows[:, 1:]
                logits = model(tokens)
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)


def _fingerprint() -> str:
    recipe = json.dumps(
        {
            "version": DEMO_VERSION,
            "seed": DEMO_SEED,
            "steps": DEMO_TRAIN_STEPS,
            "batch": DEMO_TRAIN_BATCH,
            "args": asdict(DEMO_ARGS),
        },
        sort_keys=True,
    )
    return hashlib.sha256(recipe.encode() + CORPUS.read_bytes()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    # Concurrent writers (parallel test workers, several ranks) must never see a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_demo(out_dir: Path) -> DemoPaths:
    """Create the demo tokenizer and checkpoint under out_dir, unless an identical one is already there."""
    paths = DemoPaths(tokenizer=out_dir / "tokenizer.model", ckpt_dir=out_dir / "llama-demo")
    stamp = paths.ckpt_dir / "DEMO.txt"
    fingerprint = _fingerprint()
    if stamp.is_file() and paths.tokenizer.is_file() and fingerprint in stamp.read_text():
        return paths
    paths.ckpt_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_bytes = train_tokenizer(CORPUS)
    _write_atomic(paths.tokenizer, tokenizer_bytes)
    model = Transformer(DEMO_ARGS)
    init_random_weights(model, DEMO_SEED)
    train_demo(model, training_examples(CORPUS, spm.SentencePieceProcessor(model_proto=tokenizer_bytes)))
    params = {**meta_params(DEMO_ARGS), "demo": True}
    save_meta_checkpoint(model.state_dict(), params, paths.ckpt_dir, num_shards=1)
    _write_atomic(stamp, f"{NOTICE}fingerprint {fingerprint}\n".encode())
    return paths


def is_demo_checkpoint(ckpt_dir: Path) -> bool:
    """True for a checkpoint written by write_demo (its params.json says "demo": true)."""
    params = ckpt_dir / "params.json"
    return params.is_file() and bool(json.loads(params.read_text()).get("demo"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="directory to write the demo model into")
    paths = write_demo(parser.parse_args().out)
    print(f"{NOTICE}tokenizer: {paths.tokenizer}\ncheckpoint: {paths.ckpt_dir}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
