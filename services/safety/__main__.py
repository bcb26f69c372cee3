"""`python -m services.safety`: load the policy and the classifier, then serve SafetyService.

The port opens at once with health NOT_SERVING; it turns SERVING only once the classifier is
loaded and has judged a warm-up item. A bad policy is a config error before anything starts.
"""

from __future__ import annotations

import os

# torch's intra-op threads (libgomp) read these once, when torch loads. How long an idle one spins
# before it sleeps is the trade: a check is a forward of hundreds of short ops, and a thread that
# sleeps between them pays a futex wake-up per op (OMP_WAIT_POLICY=PASSIVE: a 57-token check on
# 2 threads took 23.8 ms through the service against 13.2 ms in-process), while libgomp's default
# spin (GOMP_SPINCOUNT=300000, milliseconds) holds the cores long after a check and took them from
# whatever else runs there (the whole stack on 2 cores: first token 65 -> 125 ms through the
# gateway). A few thousand spins bridge the gaps between the ops of one forward and let the
# threads sleep right after it (2 threads: 23.8 -> 15.2 ms, within 2 ms of in-process).
# OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment choose otherwise.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "3000"

import asyncio
import dataclasses
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

import torch

from llamagate.v1 import safety_service_pb2_grpc as pb_grpc
from services.common.dialog import Message, Role
from services.common.errors import Unavailable
from services.common.logs import configure_logging
from services.common.server import GrpcServer
from services.common.telemetry import Telemetry, setup_telemetry
from services.common.verdicts import Direction
from services.safety.classifiers.base import Classifier
from services.safety.classifiers.factory import build_classifier
from services.safety.config import SafetyConfig, build_parser, config_from_args
from services.safety.metrics import SafetyMetrics
from services.safety.moderation import SafetyChecker
from services.safety.policy import Policy, PolicyError, load_policy
from services.safety.servicer import SafetyServicer
from services.safety.verdict import CheckItem

SERVICE_NAME = "llamagate.v1.SafetyService"
log = logging.getLogger("services.safety")


async def serve(config: SafetyConfig) -> int:
    policy = load_policy(config.policy_path)  # fail before binding anything
    if config.classifier == "llama-guard":
        from services.safety.classifiers.llama_guard_format import check_policy

        check_policy(config.llama_guard_version, policy)  # a policy the release cannot judge: exit 2
    telemetry = setup_telemetry(config.telemetry)
    try:
        return await _serve(config, policy, telemetry)
    finally:
        telemetry.shutdown()  # last: flushes spans and metrics


async def _serve(config: SafetyConfig, policy: Policy, telemetry: Telemetry) -> int:
    server = GrpcServer(
        dataclasses.replace(config.server, extra_interceptors=telemetry.server_interceptors()), [SERVICE_NAME]
    )
    holder = _LateServicer()
    pb_grpc.add_SafetyServiceServicer_to_server(holder, server.server)
    port = await server.start()
    server.install_signal_handlers()
    log.info(
        "safety listening on %s:%d (NOT_SERVING until the classifier is loaded)", config.server.host, port
    )
    try:
        classifier = await _load(config, policy)
        checker = SafetyChecker(policy, classifier, config.batcher)
    except PolicyError as error:
        log.error("config error: %s", error)
        await server.stop()
        return 2
    checker.start()
    await checker.check([CheckItem([Message(Role.USER, "warm-up")], Direction.INPUT)])
    holder.target = SafetyServicer(checker, SafetyMetrics.create(telemetry.meter))
    await server.set_serving(True)
    log.info("serving policy %s with %s %s", policy.name, classifier.id, classifier.version)
    await server.wait_for_stop_request()
    await server.stop()
    await checker.stop()
    return 0


async def _load(config: SafetyConfig, policy: Policy) -> Classifier:
    """Build the classifier in a thread that ends once it is built.

    torch keeps an intra-op thread pool for every thread that ran a parallel op, and the
    classifier's worker thread (batcher.py) gets its own. A loading thread that stays alive
    (asyncio.to_thread's) would keep a second pool next to it; libgomp then counts more threads
    than cores and stops its idle threads from spinning, whatever the environment asks for.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="safety-loader") as loader:
        return await asyncio.get_running_loop().run_in_executor(loader, build_classifier, config, policy)


class _LateServicer(pb_grpc.SafetyServiceServicer):
    """Registered before the classifier loads (so health can answer); forwards once it is ready."""

    target: SafetyServicer | None = None

    def _ready(self) -> SafetyServicer:
        if self.target is None:
            raise Unavailable("the safety classifier is still loading; retry when health is SERVING")
        return self.target

    async def Check(self, request, context):  # type: ignore[no-untyped-def]
        return await self._ready().Check(request, context)

    async def CheckStream(self, request_iterator, context):  # type: ignore[no-untyped-def]
        async for response in self._ready().CheckStream(request_iterator, context):
            yield response

    async def GetPolicy(self, request, context):  # type: ignore[no-untyped-def]
        return await self._ready().GetPolicy(request, context)


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(build_parser().parse_args(argv))
    configure_logging(config.telemetry)
    # Everything the classifiers load is local; never reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return asyncio.run(serve(config))
    except PolicyError as error:
        log.error("config error: %s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
