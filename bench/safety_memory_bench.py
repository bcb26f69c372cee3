"""Safety service memory under load: `python -m bench.safety_memory_bench` (CPU).

Starts `python -m services.safety` (embedded classifier) as a subprocess, then drives it the way
the gateway does: S concurrent CheckStream streams (context, then chunks of a few words, each
judged with the whole output so far) plus unary Checks, with replies of varied length so batch
shapes vary. It samples the process's RSS every second and prints it per phase, so a leak (RSS
still rising phase after phase) can be told from a plateau (RSS levels off). Extra environment
for the service (e.g. MALLOC_ARENA_MAX=2) is passed with --env, to compare allocator settings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from pathlib import Path

import grpc

from llamagate.v1 import safety_service_pb2 as pb
from llamagate.v1 import safety_service_pb2_grpc as pb_grpc
from llamagate.v1 import types_pb2
from tests.support.processes import ServiceProcess, free_port, python_module

TEXT = (
    "the lighthouse keeper wrote the weather in a small green notebook every morning at six rain came "
    "from the west on tuesday and by noon the harbour was the colour of slate she counted the boats "
    "twice because the first count is always a little hopeful how do I bake bread kill a process"
)
WORDS = TEXT.split()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def dialog(*turns: tuple[types_pb2.Role.ValueType, str]) -> types_pb2.Dialog:
    return types_pb2.Dialog(messages=[types_pb2.Message(role=r, content=c) for r, c in turns])


async def stream_loop(
    stub: pb_grpc.SafetyServiceStub, rng: random.Random, stop: float, counts: list[int]
) -> None:
    while time.monotonic() < stop:
        prompt = " ".join(rng.choices(WORDS, k=rng.randint(3, 40)))
        chunks = [" ".join(rng.choices(WORDS, k=rng.randint(1, 6))) for _ in range(rng.randint(1, 24))]
        requests = [pb.CheckStreamRequest(context=dialog((types_pb2.ROLE_USER, prompt)))]
        requests += [pb.CheckStreamRequest(chunk=" " + c) for c in chunks]
        async for _ in stub.CheckStream(iter(requests), timeout=60):
            counts[0] += 1


async def unary_loop(
    stub: pb_grpc.SafetyServiceStub, rng: random.Random, stop: float, counts: list[int]
) -> None:
    while time.monotonic() < stop:
        items = [
            pb.CheckItem(
                dialog=dialog((types_pb2.ROLE_USER, " ".join(rng.choices(WORDS, k=rng.randint(2, 300))))),
                direction=types_pb2.DIRECTION_INPUT,
            )
            for _ in range(rng.randint(1, 8))
        ]
        await stub.Check(pb.CheckRequest(items=items), timeout=60)
        counts[0] += len(items)


async def drive(
    target: str, pid: int, streams: int, phases: int, phase_s: float
) -> list[tuple[float, float, int]]:
    """Load in phases; returns (RSS at the end, peak RSS, checks done) per phase, printing each."""
    results = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SafetyServiceStub(channel)
        counts = [0]
        for phase in range(phases):
            stop = time.monotonic() + phase_s
            tasks = [stream_loop(stub, random.Random(f"{phase}-{i}"), stop, counts) for i in range(streams)]
            tasks += [unary_loop(stub, random.Random(f"u{phase}-{i}"), stop, counts) for i in range(4)]
            load = asyncio.gather(*tasks)
            peak = rss_mib(pid)
            while not load.done():
                await asyncio.sleep(1.0)
                peak = max(peak, rss_mib(pid))
            await load
            end = rss_mib(pid)
            results.append((end, peak, counts[0]))
            print(
                f"phase {phase + 1}/{phases}: RSS {end:.0f} MiB (peak {peak:.0f}), {counts[0]} checks so far"
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--phases", type=int, default=6)
    parser.add_argument("--phase-s", type=float, default=20.0)
    parser.add_argument("--env", nargs="*", default=[], help="NAME=VALUE for the service process")
    parser.add_argument("--log", type=Path, default=Path("/tmp/safety_memory_bench.log"))
    args = parser.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    port = free_port()
    service = ServiceProcess(
        "safety", python_module("services.safety", "--port", str(port)), port, args.log, env=env
    ).start()
    assert service.proc is not None
    try:
        base = rss_mib(service.proc.pid)
        print(f"service env {env or '(default)'}; RSS after start and warm-up: {base:.0f} MiB")
        phases = asyncio.run(drive(service.target, service.proc.pid, args.streams, args.phases, args.phase_s))
        final = rss_mib(service.proc.pid)
        # A leak keeps climbing after the first phases; a plateau does not: compare the halves.
        half = len(phases) // 2
        first_peak = max(p[1] for p in phases[:half]) if half else base
        second_peak = max(p[1] for p in phases[half:])
        print(
            f"RSS start {base:.0f} -> end {final:.0f} MiB (+{final - base:.0f}); peak first half "
            f"{first_peak:.0f}, second half {second_peak:.0f} MiB; {phases[-1][2]} checks in "
            f"{args.phases * args.phase_s:.0f} s"
        )
    finally:
        service.terminate()
        print(f"service log: {args.log} ({os.path.getsize(args.log)} bytes)")


if __name__ == "__main__":
    main()
