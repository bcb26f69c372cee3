"""Train the embedded classifier's head: `python -m services.safety.train_head`.

Embeds the training split once with the MiniLM encoder, then fits the small head on
the cached embeddings: seconds on a CPU, and seeded, so the shipped head is reproducible.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from services.safety.data.build_dataset import DATA_DIR, load_jsonl
from services.safety.encoder import EncoderConfig, SentenceEncoder, minilm_dir
from services.safety.head import DEFAULT_HEAD, SafetyHead

LABELS = ["O1", "O2", "O3", "O4", "O5", "O6"]
log = logging.getLogger("train_head")


def targets(examples: list[dict], labels: list[str]) -> torch.Tensor:
    y = torch.zeros((len(examples), len(labels)))
    for i, ex in enumerate(examples):
        for label in ex["labels"]:
            y[i, labels.index(label)] = 1.0
    return y


def fit(x: torch.Tensor, y: torch.Tensor, hidden: int, epochs: int, seed: int) -> SafetyHead:
    torch.manual_seed(seed)
    head = SafetyHead(x.shape[1], hidden, LABELS)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=1e-2)
    # Positives are rare per label; weight them so each label's classes count about equally.
    pos = y.sum(0).clamp(min=1.0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=((len(y) - pos) / pos).sqrt())
    head.train()
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(head(x), y)
        loss.backward()
        opt.step()
    log.info("final training loss %.4f", loss.item())
    return head.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=DATA_DIR / "train.jsonl")
    parser.add_argument("--out", type=Path, default=DEFAULT_HEAD)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=["bf16", "int8", "fp32"], default="bf16")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    examples = load_jsonl(args.train)
    encoder = SentenceEncoder(EncoderConfig(minilm_dir(), precision=args.precision))
    start = time.perf_counter()
    x = encoder.embed_texts([str(e["text"]) for e in examples])
    log.info("embedded %d examples in %.1fs", len(examples), time.perf_counter() - start)
    head = fit(x, targets(examples, LABELS), args.hidden, args.epochs, args.seed)
    head.save(args.out, {"encoder": "all-MiniLM-L6-v2", "precision": args.precision})
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
