"""Where a request's time to first token goes: the engine's steps timed from the host, and the
device's kernels of the same work from the profiler.

`StepClock` stands in for the engine's runner. While it records, it notes when each step's launch
began and returned (the host enqueueing the step's work: on CUDA the device runs it meanwhile,
on the CPU the launch is the step) and how long the engine then waited for the step's tokens (the
device still busy once the host had nothing left to do). `first_token_breakdown` splits one
request's TTFT along those marks; `device_profile` sums the kernels' time of a call under
torch.profiler, so a host-bound step (launch time close to the TTFT, kernel time well below it)
tells itself apart from a device-bound one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch._C._profiler import _ExperimentalConfig
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from bench.inference_bench import Record
from services.inference.engine.runner import ModelRunner, PendingStep, StepResult
from services.inference.engine.step_plan import StepPlan


@dataclass
class StepTimes:
    decode: bool
    rows: int
    # New tokens across the step's rows (a prefill chunk's length, 1 per decode row).
    tokens: int
    launch_start: float
    launch_end: float
    wait_start: float | None = None
    wait_end: float | None = None


class _TimedPending:
    def __init__(self, pending: PendingStep, times: StepTimes) -> None:
        self._pending = pending
        self._times = times

    def result(self) -> StepResult:
        self._times.wait_start = time.perf_counter()
        result = self._pending.result()
        self._times.wait_end = time.perf_counter()
        return result


class StepClock:
    """The runner, with every step launched while `recording` timed into `steps`."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.recording = False
        self.steps: list[StepTimes] = []

    @property
    def asynchronous(self) -> bool:
        return self.runner.asynchronous

    def launch(self, plan: StepPlan) -> PendingStep | _TimedPending:
        if not self.recording:
            return self.runner.launch(plan)
        start = time.perf_counter()
        pending = self.runner.launch(plan)
        times = StepTimes(
            plan.decode, len(plan.rows), sum(len(row.tokens) for row in plan.rows), start, time.perf_counter()
        )
        self.steps.append(times)
        return _TimedPending(pending, times)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)


def first_token_breakdown(record: Record, steps: list[StepTimes]) -> dict[str, float]:
    """`record`'s TTFT (it ran alone, its steps in `steps`) in ms: from submission to the first
    launch (the engine's wake-up, admission, prefix lookup and planning); the launches of the
    prefill steps; launches of later steps made before the first token was read back (the engine
    plans a step ahead); the wait for the first token's step; from its read-back to the sink."""
    assert record.first is not None
    first = record.first
    # The read-back that released the first token: the last one finished before it.
    sampled = max(
        (s for s in steps if s.wait_end is not None and s.wait_end <= first), key=lambda s: s.wait_end or 0
    )
    assert sampled.wait_start is not None and sampled.wait_end is not None
    before = [s for s in steps if s.launch_start < sampled.wait_start]
    prefill = [s for s in before if not s.decode]
    ms = 1000.0
    parts = {
        "submit_to_launch_ms": ms * (before[0].launch_start - record.submitted),
        "prefill_launch_ms": ms * sum(s.launch_end - s.launch_start for s in prefill),
        "next_step_launch_ms": ms * sum(s.launch_end - s.launch_start for s in before if s.decode),
        "wait_for_device_ms": ms * (sampled.wait_end - sampled.wait_start),
        "read_back_to_sink_ms": ms * (first - sampled.wait_end),
    }
    ttft = ms * (first - record.submitted)
    # The rest: the engine's loop between those marks (stats, the inbox, bookkeeping).
    rest = ttft - sum(parts.values())
    return {
        "ttft_ms": ttft,
        **parts,
        "rest_ms": rest,
        "prefill_steps": len(prefill),
        "prefill_tokens": sum(s.tokens for s in prefill),
    }


@dataclass
class DeviceProfile:
    wall_ms: float
    # The device kernels' summed time and count (0 on the CPU).
    device_busy_ms: float
    device_kernels: int
    # (name, self ms, calls), largest first.
    top_kernels: list[tuple[str, float, int]]
    top_host_ops: list[tuple[str, float, int]]
    # False where this torch cannot profile threads other than the caller's (the engine's).
    engine_thread_profiled: bool


def device_profile(run: Callable[[], object], device: torch.device, top: int = 6) -> DeviceProfile:
    """`run()` under torch.profiler: its wall time, the device kernels' total time and count, and
    the largest kernels and host ops of every thread (self time). On the CPU there are no device
    kernels; the profiler's own cost per op inflates the host's times and the wall time."""
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    try:
        # The engine's ops run on its own thread; by default only the profiling thread's are seen.
        config: _ExperimentalConfig | None = _ExperimentalConfig(profile_all_threads=True)
    except TypeError:  # a torch without the option: device kernels only, said so in the result
        config = None
    start = time.perf_counter()
    with profile(activities=activities, experimental_config=config) as prof:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    kernels = sorted(
        (e for e in events if e.device_type == DeviceType.CUDA),
        key=lambda e: e.self_device_time_total,
        reverse=True,
    )
    host = sorted(
        (e for e in events if e.device_type == DeviceType.CPU),
        key=lambda e: e.self_cpu_time_total,
        reverse=True,
    )
    return DeviceProfile(
        wall_ms=1000 * wall,
        device_busy_ms=sum(e.self_device_time_total for e in kernels) / 1000,
        device_kernels=sum(e.count for e in kernels),
        top_kernels=[(str(e.key)[:80], e.self_device_time_total / 1000, e.count) for e in kernels[:top]],
        top_host_ops=[(str(e.key)[:80], e.self_cpu_time_total / 1000, e.count) for e in host[:top]],
        engine_thread_profiled=config is not None,
    )
