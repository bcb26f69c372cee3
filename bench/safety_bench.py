"""Safety classifier benchmark: `python bench/safety_bench.py [--device cpu|cuda] [--threads N]`.

1. Check latency at batch 1: the embedded classifier judging a 256-token dialog whose judged
   turn fills the encoder's whole window (254 tokens + [CLS]/[SEP]), the worst single-window case.
2. Throughput with micro-batching: C concurrent callers, each checking one short prompt at a time
   through SafetyChecker (batcher + classifier + policy), items/s and the mean batch size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from services.safety.device import parse_device  # noqa: E402
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


def cpu_model() -> str:
    """The CPU's model name: the same torch build runs 1.5-2x apart on different x86 server CPUs."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


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


async def short_check(classifier: EmbeddedClassifier, iterations: int) -> dict[str, float]:
    """One short prompt at a time: the classifier alone, then through the service's checker
    (batcher thread hop + policy, no batching wait): what a single input check costs."""
    item = CheckItem([Message(Role.USER, PROMPTS[0])], Direction.INPUT)
    checker = SafetyChecker(load_policy(DEFAULT_POLICY), classifier, BatcherConfig(max_wait_s=0.0))
    checker.start()
    direct, served = [], []
    for i in range(iterations + 10):
        start = time.perf_counter()
        classifier.judge([item])
        middle = time.perf_counter()
        await checker.check([item])
        if i >= 10:
            direct.append((middle - start) * 1000)
            served.append((time.perf_counter() - middle) * 1000)
    await checker.stop()
    return {"judge_p50_ms": statistics.median(direct), "checker_p50_ms": statistics.median(served)}


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
    parser.add_argument("--device", type=parse_device, default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=0, help="intra-op CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    classifier = EmbeddedClassifier(EmbeddedConfig(device=args.device))
    print(
        f"host: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, device {args.device}, classifier {classifier.id} {classifier.version}"
    )
    lat = latency(classifier, args.iterations)
    print(
        f"batch-1 check, 256-token window: p50 {lat['p50_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms, "
        f"min {lat['min_ms']:.1f} ms ({args.iterations} runs)"
    )
    short = asyncio.run(short_check(classifier, args.iterations))
    print(
        f"batch-1 check, one short prompt: classifier p50 {short['judge_p50_ms']:.2f} ms, "
        f"through the checker (batcher, policy) p50 {short['checker_p50_ms']:.2f} ms"
    )
    for concurrency in args.concurrency:
        r = asyncio.run(throughput(classifier, concurrency, args.seconds))
        print(
            f"micro-batched short prompts, {concurrency:>2} concurrent callers: {r['items_per_s']:.0f} items/s, "
            f"p50 {r['p50_ms']:.1f} ms, mean batch {r['mean_batch']:.1f}"
        )


if __name__ == "__main__":
    main()
