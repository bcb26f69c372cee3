"""Fixtures of the inference service tests: the demo model, and one MP-1 service they share."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.support.inference_service import DemoModel, inference_process, start_service, stop_service
from tests.support.processes import ServiceProcess
from tests.support.stack import demo_model


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoModel:
    # Built once in .work/demo (cached by its recipe's fingerprint), then copied: the shared
    # directory may be rebuilt by another run while these services load it.
    ckpt, tokenizer = demo_model()
    copy = tmp_path_factory.mktemp("demo")
    shutil.copytree(ckpt, copy / ckpt.name)
    shutil.copy(tokenizer, copy / tokenizer.name)
    return DemoModel(copy / ckpt.name, copy / tokenizer.name)


@pytest.fixture(scope="session")
def mp1(demo: DemoModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One MP-1 service shared by every module that only talks to it (no signals, no kills)."""
    # Prompts prefill in chunks of 64 here (512 in the MP-2 service): comparing the two covers chunking.
    workdir = tmp_path_factory.mktemp("mp1")
    process = start_service(inference_process(demo, workdir, "--prefill-chunk", "64", name="mp1"))
    yield process
    stop_service(process)
