"""What the gateway and its two safety checks add to time-to-first-token.

Starts the three real services on loopback (demo model, embedded safety classifier; see
tests/support/stack.py), then measures TTFT of the same greedy chat turn
  - directly on the inference service (Generate: start -> first token delta), and
  - through the gateway (Chat: start -> first released text delta; this includes authentication,
    the input check, generation, the output check of the first chunk and the fsync'ed audit records),
at 1 and 32 concurrent streams, and reports p50/p99 of both and the difference. At 1 stream the
two paths alternate request by request; at more, they run in phases of `concurrency` streams.

By default the gateway runs with --chunk-tokens 1, so the first chunk is the first token and the
difference is the gateway + checks overhead alone; --chunk-tokens N adds the hold-back of N tokens
(the time to generate them) to the gateway's TTFT, as a deployment with that setting sees it.

Both services run on the CPU unless --inference-device / --safety-device say otherwise (cuda on
a GPU host; auto: cuda when present). --safety-cpus / --inference-cpus / --gateway-cpus pin each
service (every one of its threads) to its own CPUs once it serves, and the bench's own client to
the CPUs left over, so a classifier on the CPU does not share cores with the model's host loop or
the gateway; give the safety service as many --threads as it has CPUs.

    python -m bench.gateway_bench [--requests 64] [--chunk-tokens 1] [--markdown]
        [--inference-device cpu|cuda|auto] [--safety-device cpu|cuda|auto]
        [--safety-cpus 0-3 --inference-cpus 4-9 --gateway-cpus 10-11 --safety-flag=--threads=4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import platform
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from llamagate.v1 import inference_service_pb2 as inf_pb
from llamagate.v1 import inference_service_pb2_grpc as inf_grpc
from llamagate.v1 import safety_service_pb2 as safety_pb
from llamagate.v1 import safety_service_pb2_grpc as safety_grpc
from llamagate.v1 import types_pb2
from services.gateway.audit import AuditRecord, AuditSink, text_sha256
from tests.support.processes import free_port
from tests.support.stack import Stack, StackConfig, running_stack

PROMPT = "Tell me a short story about a garden."
DEVICES = ["cpu", "cuda", "auto"]
SAMPLING = types_pb2.SamplingParams(temperature=0.0, max_gen_len=32)
# The pause before the "after idle" safety check of --breakdown (about one reply and one direct
# request of the 1-stream phase).
IDLE_GAP_S = 0.02


async def direct_ttft(stub: inf_grpc.InferenceServiceStub) -> float:
    start = inf_pb.GenerateStart(
        dialog=types_pb2.Dialog(messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content=PROMPT)]),
        sampling=SAMPLING,
    )
    began = time.perf_counter()
    call = stub.Generate(timeout=60)
    await call.write(inf_pb.GenerateRequest(start=start))
    ttft = None
    while (message := await call.read()) is not grpc.aio.EOF:
        if ttft is None and message.HasField("delta") and message.delta.token_ids:
            ttft = time.perf_counter() - began
        if message.HasField("done"):
            break
    call.cancel()
    assert ttft is not None, "no token"
    return ttft


async def gateway_ttft(stub: chat_grpc.ChatServiceStub, metadata: tuple[tuple[str, str], ...]) -> float:
    request = chat_pb.ChatRequest(
        start=chat_pb.ChatStart(
            messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content=PROMPT)], sampling=SAMPLING
        )
    )
    began = time.perf_counter()
    call = stub.Chat(metadata=metadata, timeout=60)
    await call.write(request)
    ttft = None
    while (message := await call.read()) is not grpc.aio.EOF:
        if ttft is None and message.HasField("delta"):
            ttft = time.perf_counter() - began
        if message.HasField("done"):
            assert message.done.finish_reason != types_pb2.FINISH_REASON_SAFETY, (
                "the bench prompt was refused"
            )
            break
    await call.done_writing()
    call.cancel()
    assert ttft is not None, "no text released"
    return ttft


def bench_dialog() -> types_pb2.Dialog:
    return types_pb2.Dialog(messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content=PROMPT)])


async def health_rtt(stub: health_pb2_grpc.HealthStub) -> float:
    began = time.perf_counter()
    await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    return time.perf_counter() - began


async def input_check(stub: safety_grpc.SafetyServiceStub) -> float:
    item = safety_pb.CheckItem(dialog=bench_dialog(), direction=types_pb2.DIRECTION_INPUT)
    began = time.perf_counter()
    response = await stub.Check(safety_pb.CheckRequest(items=[item]), timeout=10)
    assert response.verdicts[0].safe, "the bench prompt was judged unsafe"
    return time.perf_counter() - began


async def first_chunk_check(stub: safety_grpc.SafetyServiceStub) -> float:
    """An output CheckStream as the gateway runs it: context sent at the start, then the time from
    sending the first one-token chunk to its verdict."""
    call = stub.CheckStream(timeout=10)
    await call.write(safety_pb.CheckStreamRequest(context=bench_dialog()))
    began = time.perf_counter()
    await call.write(safety_pb.CheckStreamRequest(chunk=" Once"))
    response = await call.read()
    elapsed = time.perf_counter() - began
    assert response is not grpc.aio.EOF and response.verdict.safe, "the bench chunk was judged unsafe"
    await call.done_writing()
    return elapsed


async def audit_write(sink: AuditSink) -> float:
    """One verdict record made durable (write, flush, fsync), as the gateway does before a release."""
    record = AuditRecord(
        request_id="bench", tenant="bench", direction="output", stage="chunk", verdict="safe",
        categories=[], classifier_id="bench", classifier_version="0", text_sha256=text_sha256(" Once"),
    )  # fmt: skip
    began = time.perf_counter()
    await sink.write(record)
    return time.perf_counter() - began


async def keep_generating(stub: inf_grpc.InferenceServiceStub, stop: asyncio.Event) -> None:
    """Long greedy generations back to back until `stop`: the model busy, as during a reply."""
    start = inf_pb.GenerateStart(
        dialog=bench_dialog(),
        sampling=types_pb2.SamplingParams(temperature=0.0, max_gen_len=400, ignore_eos=True),
    )
    while not stop.is_set():
        call = stub.Generate(timeout=60)
        await call.write(inf_pb.GenerateRequest(start=start))
        while not stop.is_set() and (message := await call.read()) is not grpc.aio.EOF:
            if message.HasField("done"):
                break
        call.cancel()


async def hops(stack: Stack, requests: int) -> list[tuple[str, list[float]]]:
    rows: list[tuple[str, list[float]]] = []
    for name, target in {"gateway": stack.gateway_target, "safety": stack.safety_target}.items():
        async with grpc.aio.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            rows.append(
                (
                    f"health Check round trip, {name}",
                    await measure(functools.partial(health_rtt, health), 1, requests),
                )
            )
    # A directory next to the gateway's audit trail: the same volume, so the same fsync cost.
    sink = AuditSink(stack.audit_dir.parent / "bench-audit")
    rows.append(
        ("audit record durable (gateway's volume)", await measure(lambda: audit_write(sink), 1, requests))
    )
    await sink.close()
    async with grpc.aio.insecure_channel(stack.safety_target) as channel:
        safety = safety_grpc.SafetyServiceStub(channel)
        rows.append(
            (
                "safety Check, input side (bench dialog)",
                await measure(lambda: input_check(safety), 1, requests),
            )
        )
        rows.append(
            (
                "safety CheckStream, first 1-token chunk",
                await measure(lambda: first_chunk_check(safety), 1, requests),
            )
        )

        async def after_idle() -> float:
            # As a turn's input check finds the service: idle since the last reply, not back to back.
            await asyncio.sleep(IDLE_GAP_S)
            return await input_check(safety)

        rows.append(
            (
                f"safety Check, input side, {IDLE_GAP_S * 1000:.0f} ms after the last call",
                await measure(after_idle, 1, requests),
            )
        )
    return rows


async def breakdown(stack: Stack, requests: int) -> list[tuple[str, list[float]]]:
    """Each hop of the gateway's path alone, one at a time, with the model idle and then while it
    generates (as it does while the first chunk is checked): where the TTFT overhead goes."""
    rows = [(f"{name}, model idle", values) for name, values in await hops(stack, requests)]
    async with grpc.aio.insecure_channel(stack.inference_target) as channel:
        stop = asyncio.Event()
        background = asyncio.ensure_future(keep_generating(inf_grpc.InferenceServiceStub(channel), stop))
        try:
            await asyncio.sleep(0.5)
            rows += [(f"{name}, model generating", values) for name, values in await hops(stack, requests)]
        finally:
            stop.set()
            await background
    return rows


async def measure(fn, concurrency: int, requests: int) -> list[float]:  # type: ignore[no-untyped-def]
    for _ in range(min(4, requests)):  # warm-up: connections, first-call paths
        await fn()
    results: list[float] = []
    while len(results) < requests:
        results += await asyncio.gather(*(fn() for _ in range(concurrency)))
    return results


async def alternate(direct_fn, gateway_fn, requests: int) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    """One stream: a direct and a gateway request in turn, in a seeded random order per pair.

    A run of back-to-back direct requests may find the model warmer than a gateway request does
    (its input check leaves the model idle for milliseconds first), which would count as gateway
    overhead. Alternating gives both paths the same history (bench/RESULTS.md has the comparison).
    """
    order = random.Random(0)
    for _ in range(min(4, requests)):
        await direct_fn()
        await gateway_fn()
    direct: list[float] = []
    via: list[float] = []
    while len(via) < requests:
        if order.random() < 0.5:
            direct.append(await direct_fn())
            via.append(await gateway_fn())
        else:
            via.append(await gateway_fn())
            direct.append(await direct_fn())
    return direct, via


def cpu_list(text: str) -> set[int]:
    """taskset's list format: '0-3,6' -> {0, 1, 2, 3, 6}."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` onto `cpus` (threads it starts later inherit them)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
            os.sched_setaffinity(int(task.name), cpus)


def pin_stack(stack: Stack, args: argparse.Namespace) -> str:
    """Pin the services that have CPUs given, and this process to the rest; says what went where."""
    usable = os.sched_getaffinity(0)
    placed: list[str] = []
    taken: set[int] = set()
    for name, process, cpus in (
        ("safety", stack.safety, args.safety_cpus),
        ("inference", stack.inference, args.inference_cpus),
        ("gateway", stack.gateway, args.gateway_cpus),
    ):
        if cpus is None:
            continue
        wanted = cpu_list(cpus)
        if not wanted <= usable:
            raise SystemExit(f"--{name}-cpus {cpus}: this machine offers CPUs {sorted(usable)}")
        assert process.proc is not None
        pin(process.proc.pid, wanted)
        taken |= wanted
        placed.append(f"{name} on CPUs {cpus}")
    if not placed:
        return ""
    client = usable - taken or usable
    pin(os.getpid(), client)
    return ", ".join([*placed, f"bench client on {len(client)} CPUs"])


def stage_totals(metrics_url: str) -> dict[str, tuple[float, float]]:
    """(count, sum in s) per stage of the gateway's llamagate_gateway_stage_seconds histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, tuple[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "llamagate_gateway_stage_seconds":
            continue
        for sample in family.samples:
            count, total = totals.get(sample.labels.get("stage", ""), (0.0, 0.0))
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
            else:
                continue
            totals[sample.labels["stage"]] = (count, total)
    return totals


def stage_means(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> list[tuple[str, float, int]]:
    """Each stage's mean (ms) and count between two readings of stage_totals."""
    rows = []
    for stage, (count, total) in sorted(after.items()):
        count0, total0 = before.get(stage, (0.0, 0.0))
        if count > count0:
            rows.append((stage, (total - total0) / (count - count0) * 1000, int(count - count0)))
    return rows


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def run(
    stack: Stack, requests: int, concurrencies: list[int], metrics_url: str
) -> tuple[list[dict[str, float]], list[tuple[str, float, int]]]:
    """The TTFT rows per concurrency, and the gateway's own stage means over the 1-stream phase."""
    rows = []
    stages: list[tuple[str, float, int]] = []
    async with (
        grpc.aio.insecure_channel(stack.inference_target) as inf,
        grpc.aio.insecure_channel(stack.gateway_target) as gw,
    ):
        inference, chat = inf_grpc.InferenceServiceStub(inf), chat_grpc.ChatServiceStub(gw)
        for concurrency in concurrencies:
            n = max(requests, concurrency * 2)
            if concurrency == 1:
                before = stage_totals(metrics_url)
                direct, via = await alternate(
                    lambda: direct_ttft(inference), lambda: gateway_ttft(chat, stack.metadata), n
                )
                stages = stage_means(before, stage_totals(metrics_url))
            else:
                # The model is busy throughout either way; phases keep `concurrency` streams on
                # one path at a time (mixing them would halve the gateway's load). Two rounds so
                # that both paths see the same drift of the machine.
                direct, via = [], []
                for _ in range(2):
                    direct += await measure(lambda: direct_ttft(inference), concurrency, n // 2)
                    via += await measure(lambda: gateway_ttft(chat, stack.metadata), concurrency, n // 2)
            rows.append(
                {
                    "concurrency": concurrency,
                    "n": len(via),
                    "direct_p50": pct(direct, 0.5),
                    "direct_p99": pct(direct, 0.99),
                    "gateway_p50": pct(via, 0.5),
                    "gateway_p99": pct(via, 0.99),
                    "overhead_p50": pct(via, 0.5) - pct(direct, 0.5),
                    "overhead_p99": pct(via, 0.99) - pct(direct, 0.99),
                }
            )
    return rows, stages


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=64, help="measured requests per setting and path")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--chunk-tokens", type=int, default=1)
    parser.add_argument("--moderation", choices=["sentence", "buffer"], default="sentence")
    parser.add_argument("--markdown", action="store_true", help="print a bench/RESULTS.md section")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time each hop alone (health round trips, the two safety checks) at 1 stream",
    )
    parser.add_argument("--inference-device", choices=DEVICES, default="cpu", help="the model's device")
    parser.add_argument("--safety-device", choices=DEVICES, default="cpu", help="the classifier's device")
    for name in ("safety", "inference", "gateway"):
        parser.add_argument(f"--{name}-cpus", help=f"pin the {name} service to these CPUs, e.g. 0-3")
    parser.add_argument(
        "--inference-flag",
        action="append",
        default=[],
        help="extra inference flag, repeatable (e.g. --inference-flag=--no-compile for a quick GPU start)",
    )
    parser.add_argument(
        "--safety-flag",
        action="append",
        default=[],
        help="extra safety flag, repeatable (e.g. --safety-flag=--threads=4)",
    )
    args = parser.parse_args()
    metrics_port = free_port()
    config = StackConfig(
        inference_args=(
            *("--device", args.inference_device, "--max-seq-len", "512", "--max-batch-size", "32"),
            *args.inference_flag,
        ),
        safety_args=("--device", args.safety_device, *args.safety_flag),
        # The gateway's /metrics: its own time per stage (llamagate_gateway_stage_seconds).
        gateway_args=(
            *("--chunk-tokens", str(args.chunk_tokens), "--moderation", args.moderation),
            *("--metrics-port", str(metrics_port)),
        ),
        tenants={},
    )
    # Other work on the machine moves CPU numbers a lot; the load average says how much there was.
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as workdir, running_stack(Path(workdir), config) as stack:
        placement = pin_stack(stack, args)
        rows, stages = asyncio.run(
            run(stack, args.requests, args.concurrency, f"http://127.0.0.1:{metrics_port}/metrics")
        )
        hops = asyncio.run(breakdown(stack, args.requests)) if args.breakdown else []
    load_after = os.getloadavg()[0]
    header = (
        "| streams | n | direct TTFT p50 / p99 (ms) | gateway TTFT p50 / p99 (ms) | overhead p50 / p99 (ms) |"
    )
    lines = [header, "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['n']} | {r['direct_p50']:.1f} / {r['direct_p99']:.1f} | "
            f"{r['gateway_p50']:.1f} / {r['gateway_p99']:.1f} | {r['overhead_p50']:.1f} / {r['overhead_p99']:.1f} |"
        )
    if args.markdown:
        print(
            f"\n### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: inference on {args.inference_device}, "
            f"safety on {args.safety_device}\n\n"
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
            + (f" ({placement})" if placement else "")
            + "; demo model, embedded classifier (MiniLM).\n"
            f"Load average (1 min) before / after: {load_before:.1f} / {load_after:.1f}.\n"
            f"Command: `python -m bench.gateway_bench --requests {args.requests} --chunk-tokens {args.chunk_tokens}"
            f" --moderation {args.moderation} --inference-device {args.inference_device}"
            f" --safety-device {args.safety_device}"
            + "".join(f" --inference-flag={flag}" for flag in args.inference_flag)
            + "".join(f" --safety-flag={flag}" for flag in args.safety_flag)
            + "".join(
                f" --{name}-cpus {cpus}"
                for name, cpus in (
                    ("safety", args.safety_cpus),
                    ("inference", args.inference_cpus),
                    ("gateway", args.gateway_cpus),
                )
                if cpus
            )
            + " --markdown`\n"
        )
    if placement and not args.markdown:
        print(placement)
    print("\n".join(lines))
    if stages:
        print("\n| inside the gateway, 1 stream | mean (ms) | count |\n|---|---|---|")
        for stage, mean_ms, count in stages:
            print(f"| {stage} | {mean_ms:.2f} | {count} |")
    if hops:
        print("\n| hop, 1 stream | p50 / p99 (ms) |\n|---|---|")
        for name, values in hops:
            print(f"| {name} | {pct(values, 0.5):.2f} / {pct(values, 0.99):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
