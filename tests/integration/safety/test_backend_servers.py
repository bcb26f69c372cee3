"""The llama-guard and sequence backends load from a checkpoint directory and serve over gRPC."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from llamagate.v1 import safety_service_pb2 as pb
from llamagate.v1 import safety_service_pb2_grpc as pb_grpc
from llamagate.v1 import types_pb2 as t
from services.safety.policy import POLICIES_DIR
from tests.support.processes import ServiceProcess, free_port, python_module
from tests.support.stack import telemetry_flags
from tests.unit.safety.tiny_models import build_tiny_bert_classifier, build_tiny_llama_guard

pytestmark = pytest.mark.slow


def serve_and_check(tmp_path: Path, *args: str) -> pb.CheckResponse:
    port = free_port()
    proc = ServiceProcess(
        "safety",
        python_module("services.safety", "--port", str(port), *telemetry_flags("safety"), *args),
        port,
        tmp_path / "safety.log",
    ).start()
    try:
        with grpc.insecure_channel(proc.target) as channel:
            dialog = t.Dialog(
                messages=[
                    t.Message(role=t.ROLE_USER, content="hello"),
                    t.Message(role=t.ROLE_ASSISTANT, content="kill python process"),
                ]
            )
            item = pb.CheckItem(dialog=dialog, direction=t.DIRECTION_OUTPUT)
            return pb_grpc.SafetyServiceStub(channel).Check(pb.CheckRequest(items=[item]), timeout=30)
    finally:
        assert proc.terminate() == 0, proc.log_tail()


def test_llama_guard_server(tmp_path: Path) -> None:
    model = build_tiny_llama_guard(tmp_path / "guard", ["unsafe", "\n", "O3"])
    # The tiny model answers in Llama Guard 1's O-codes: the O-coded policy, not the MLCommons default.
    o_policy = str(POLICIES_DIR / "llama_guard.yaml")
    args = ("--classifier", "llama-guard", "--model-dir", str(model), "--policy", o_policy)
    [verdict] = serve_and_check(tmp_path, *args).verdicts
    assert not verdict.safe and verdict.classifier_id == "llama-guard"
    assert [(c.code, c.violated) for c in verdict.categories] == [("O3", True)]


def test_sequence_server(tmp_path: Path) -> None:
    model = build_tiny_bert_classifier(tmp_path / "bert", ["benign", "violence", "weapons"])
    (tmp_path / "labels.yaml").write_text("benign: null\nviolence: O1\nweapons: O4\n")
    (tmp_path / "policy.yaml").write_text(
        f"extends: {POLICIES_DIR / 'llama_guard.yaml'}\ndisabled: [O2, O3, O5, O6]\n"
    )
    args = [
        "--classifier",
        "sequence",
        "--model-dir",
        str(model),
        "--label-map",
        str(tmp_path / "labels.yaml"),
    ]
    [verdict] = serve_and_check(tmp_path, *args, "--policy", str(tmp_path / "policy.yaml")).verdicts
    assert verdict.classifier_id == "sequence" and verdict.judged_tokens == 3
    assert {c.code for c in verdict.categories} == {"O1", "O4"}


def test_llama_guard_3_server(tmp_path: Path) -> None:
    from tests.unit.safety.tiny_models import TEMPLATE_V3_8B, build_tiny_s_guard

    model = build_tiny_s_guard(
        tmp_path / "guard3",
        ["\n\n", "unsafe", "\n", "S1"],
        trigger="<|end_header_id|>",
        chat_template=TEMPLATE_V3_8B,
    )
    args = ["--classifier", "llama-guard", "--llama-guard-version", "3", "--model-dir", str(model)]
    [verdict] = serve_and_check(tmp_path, *args, "--policy", str(POLICIES_DIR / "mlcommons.yaml")).verdicts
    assert not verdict.safe and verdict.classifier_id == "llama-guard"
    assert [(c.code, c.violated) for c in verdict.categories] == [("S1", True)]
    assert not verdict.truncated
