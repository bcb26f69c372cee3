"""The reliability suite's one stack (tests/support/reliability.py), shared by its modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import free_port
from tests.support.reliability import ReliabilityStack, reliability_stack_config
from tests.support.stack import require_services, running_stack


# One stack for the whole suite (starting one costs seconds of the 2-core CI box); the fault tests
# restart what they kill on the same ports, so later modules find it whole.
@pytest.fixture(scope="session")
def rstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReliabilityStack]:
    require_services()
    port = free_port()
    with running_stack(tmp_path_factory.mktemp("reliability"), reliability_stack_config(port)) as stack:
        yield ReliabilityStack(stack, port)
