"""Safety classifier benchmark: `python bench/safety_bench.py` (CPU).

1. Check latency at batch 1: the embedded classifier judging a 256-token dialog whose judged
   turn fills the encoder's whole window (254 tokens + [CLS]/[SEP]), the worst single-window case.
2. Throughput with micro-batching: C concurrent callers, each checking one short prompt at a time
   through SafetyChecker (batcher + classifier + policy), items/s and the mean batch size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

from services.common.dialog import Message, Role  # noqa: E402
from services.safety.batcher import BatcherConfig  # noqa: E402
from services.safety.classifiers.embedded import EmbeddedClassifier, EmbeddedConfig  # noqa: E402
from services.safety.moderation import SafetyChecker  # noqa: E402
from services.safety.policy import DEFAULT_POLICY, load_policy  # noqa: E402
from services.safety.verdict import CheckItem, Direction  # noqa: E402

PROMPTS = [
    "How do I bake sourdough bread at home?",
    "Give me a plan to steal a car tonight.",
    "What is the history of the Roman Empire?",
    "How do I kill a Python process that hangs?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def window_dialog(classifier: EmbeddedClassifier) -> list[Message]:
    words = ("the quick brown fox jumps over the lazy dog near the river bank " * 60).split()
    text = ""
    for word in words:
        candidate = f"{text} {word}".strip()
        if len(classifier.encoder.token_ids(candidate)) > classifier.encoder.content_window:
            break
        text = candidate
    return [Message(Role.USER, "Write me something long."), Message(Role.ASSISTANT, text)]


def latency(classifier: EmbeddedClassifier, iterations: int) -> dict[str, float]:
    dialog = window_dialog(classifier)
    item = CheckItem(dialog, Direction.OUTPUT)
    for _ in range(10):
        classifier.judge([item])
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        [judgement] = classifier.judge([item])
        times.append((time.perf_counter() - start) * 1000)
    assert judgement.judged_tokens == classifier.encoder.content_window and not judgement.truncated
    return {"p50_ms": statistics.median(times), "p90_ms": percentile(times, 0.9), "min_ms": min(times)}


async def throughput(classifier: EmbeddedClassifier, concurrency: int, seconds: float) -> dict[str, float]:
    checker = SafetyChecker(
        load_policy(DEFAULT_POLICY), classifier, BatcherConfig(max_batch=32, max_wait_s=0.002)
    )
    checker.start()
    done = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller(k: int) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await checker.check(
                [CheckItem([Message(Role.USER, PROMPTS[(k + done) % len(PROMPTS)])], Direction.INPUT)]
            )
            latencies.append((time.perf_counter() - start) * 1000)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - start
    sizes = checker.batch_sizes
    await checker.stop()
    return {
        "items_per_s": done / elapsed,
        "p50_ms": statistics.median(latencies),
        "mean_batch": sum(sizes) / max(len(sizes), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 32])
    args = parser.parse_args()
    classifier = EmbeddedClassifier(EmbeddedConfig())
    print(
        f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, classifier {classifier.id} {classifier.version}"
    )
    lat = latency(classifier, args.iterations)
    print(
        f"batch-1 check, 256-token window: p50 {lat['p50_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms, "
        f"min {lat['min_ms']:.1f} ms ({args.iterations} runs)"
    )
    for concurrency in args.concurrency:
        r = asyncio.run(throughput(classifier, concurrency, args.seconds))
        print(
            f"micro-batched short prompts, {concurrency:>2} concurrent callers: {r['items_per_s']:.0f} items/s, "
            f"p50 {r['p50_ms']:.1f} ms, mean batch {r['mean_batch']:.1f}"
        )


if __name__ == "__main__":
    main()
