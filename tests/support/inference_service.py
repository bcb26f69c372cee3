"""The real inference service as a subprocess (plain python for MP 1, torchrun + gloo for MP 2), and a
small asyncio client for its bidirectional Generate stream.

Tests compare tokens between runs and never hard-code them: the demo model may be retrained.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from llamagate.v1 import inference_service_pb2 as pb
from llamagate.v1 import inference_service_pb2_grpc as pb_grpc
from llamagate.v1 import types_pb2
from tests.support.processes import ServiceProcess, free_port, python_module, wait_serving
from tests.support.stack import telemetry_flags

SERVICE = "llamagate.v1.InferenceService"
# Small enough to start in seconds on two cores; 119 usable KV blocks (1904 tokens) hold 32 short
# streams at once, but not 8 streams of 250 tokens (which must then preempt).
MAX_SEQ_LEN = 512
BASE_ARGS: tuple[str, ...] = ("--device", "cpu", "--max-seq-len", str(MAX_SEQ_LEN), "--max-batch-size", "32")
BASE_ARGS += ("--num-kv-blocks", "120")


@dataclass(frozen=True)
class DemoModel:
    ckpt_dir: Path
    tokenizer: Path


def inference_process(
    demo: DemoModel, workdir: Path, *args: str, ranks: int = 1, name: str = "inference"
) -> ServiceProcess:
    """An unstarted inference service on a free loopback port (torchrun --standalone when ranks > 1)."""
    port = free_port()
    service = [
        "--ckpt-dir", str(demo.ckpt_dir),
        "--tokenizer-path", str(demo.tokenizer),
        "--host", "127.0.0.1",
        "--port", str(port),
        *telemetry_flags("inference"),
        *BASE_ARGS,
        *args,
    ]  # fmt: skip
    if ranks == 1:
        argv = python_module("services.inference", *service)
    else:
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
        argv += ["-m", "services.inference", *service]
    # One thread per process: the ranks (and the test client) share two cores.
    return ServiceProcess(name, argv, port, workdir / f"{name}.log", env={"OMP_NUM_THREADS": "1"})


def start_request(
    prompt: str = "",
    n: int = 8,
    *,
    echo: bool = False,
    request_id: str = "",
    dialog: types_pb2.Dialog | None = None,
    **sampling: object,
) -> pb.GenerateRequest:
    """A GenerateStart; greedy unless `temperature` is given.

    Long streams set ignore_eos: the demo model is trained to end its replies with EOS early.
    """
    params = types_pb2.SamplingParams(**{"temperature": 0.0, "max_gen_len": n, **sampling})  # type: ignore[arg-type]
    start = pb.GenerateStart(request_id=request_id, sampling=params, echo=echo)
    if dialog is not None:
        start.dialog.CopyFrom(dialog)
    else:
        start.prompt = prompt
    return pb.GenerateRequest(start=start)


@dataclass
class Reply:
    """Everything one Generate stream sent back."""

    started: pb.GenerateStarted | None = None
    deltas: list[pb.TokenDelta] = field(default_factory=list)
    done: pb.GenerateDone | None = None

    @property
    def tokens(self) -> list[int]:
        return [t for d in self.deltas if not d.echo for t in d.token_ids]

    @property
    def text(self) -> str:
        return "".join(d.text for d in self.deltas if not d.echo)

    @property
    def logprobs(self) -> list[float]:
        return [p for d in self.deltas if not d.echo for p in d.logprobs]

    def add(self, message: pb.GenerateResponse) -> None:
        if message.HasField("started"):
            self.started = message.started
        elif message.HasField("delta"):
            self.deltas.append(message.delta)
        else:
            self.done = message.done


async def generate(
    stub: pb_grpc.InferenceServiceStub, request: pb.GenerateRequest, timeout_s: float = 60
) -> Reply:
    """Send one start, half-close, collect the stream."""
    reply = Reply()
    async for message in stub.Generate(iter([request]), timeout=timeout_s):
        reply.add(message)
    return reply


async def generate_open(
    stub: pb_grpc.InferenceServiceStub, request: pb.GenerateRequest, timeout_s: float = 60
) -> Reply:
    """As `generate`, but the request side stays open until GenerateDone (as the gateway uses it)."""
    reply = Reply()
    outbox = Outbox()
    outbox.send(request)
    call = stub.Generate(outbox.__aiter__(), timeout=timeout_s)
    while (message := await call.read()) != grpc.aio.EOF:
        reply.add(message)
        if reply.done is not None:
            outbox.close()
    return reply


class Outbox:
    """The client half of a bidirectional stream that stays open until `close()`."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[pb.GenerateRequest | None] = asyncio.Queue()

    def send(self, message: pb.GenerateRequest) -> None:
        self._queue.put_nowait(message)

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[pb.GenerateRequest]:
        while (message := await self._queue.get()) is not None:
            yield message


async def model_info(stub: pb_grpc.InferenceServiceStub) -> pb.GetModelInfoResponse:
    return await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)


async def wait_all_blocks_free(stub: pb_grpc.InferenceServiceStub, timeout_s: float = 10.0) -> float:
    """Seconds until GetModelInfo reports every KV block free; fails the test after timeout_s."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    info = await model_info(stub)
    while info.kv_blocks_free != info.kv_blocks_total:
        assert loop.time() - began < timeout_s, (
            f"KV blocks not returned: {info.kv_blocks_free} of {info.kv_blocks_total} free after {timeout_s}s"
        )
        await asyncio.sleep(0.05)
        info = await model_info(stub)
    return loop.time() - began


def channel(process: ServiceProcess) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(process.target)


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc), e.g. torchrun's rank processes."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        children += [int(p) for p in text.split()]
    return children


def rank_of(pid: int) -> int | None:
    """The torchrun RANK of a process, from its environment; None if it has none or is gone."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return None
    for item in environ:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


def start_service(process: ServiceProcess, timeout_s: float = 180.0) -> ServiceProcess:
    """Start and wait for SERVING; on failure stop every rank (not only torchrun) and show the log."""
    process.start(wait=False)
    try:
        wait_serving(process.target, timeout_s=timeout_s, proc=process.proc)
    except Exception as error:
        stop_service(process)
        raise RuntimeError(f"{process.name} failed to start ({error}); log:\n{process.log_tail()}") from None
    return process


def stop_service(process: ServiceProcess, timeout_s: float = 40.0) -> None:
    """Stop a service and every rank it started, even when a test failed half-way.

    torchrun starts each rank in a session of its own, so killing torchrun's process group would
    orphan the ranks: SIGTERM lets torchrun stop them, and any rank still alive after that is killed.
    """
    if process.proc is None:
        return
    rank_pids = child_pids(process.proc.pid) if process.proc.poll() is None else []
    process.terminate(timeout_s=timeout_s)
    for pid in rank_pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not reaped it yet.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
