"""The resumable downloader on its own, against servers that answer Range requests unusually."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llamagate.download.errors import NetworkFailure
from llamagate.download.fetch import FetchConfig, Fetcher, RetryPolicy
from llamagate.download.progress import Progress
from tests.integration.download.release_server import ReleaseServer, build_release, serve

FILE = "tokenizer.model"
FAST_RETRY = FetchConfig(retry=RetryPolicy(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02))


@pytest.fixture
def server() -> Iterator[ReleaseServer]:
    with serve(ReleaseServer(build_release(()))) as running:
        yield running


async def fetch(server: ReleaseServer, dest: Path, config: FetchConfig = FAST_RETRY) -> int:
    url = server.url().replace("*", FILE)
    async with httpx.AsyncClient() as client:
        return await Fetcher(client, config, Progress(enabled=False)).fetch(url, dest, FILE)


async def test_server_that_ignores_range_restarts_the_file_cleanly(
    server: ReleaseServer, tmp_path: Path
) -> None:
    server.ignore_range = True
    dest = tmp_path / FILE
    (tmp_path / (FILE + ".part")).write_bytes(b"stale partial bytes")

    assert await fetch(server, dest) == len(server.files[FILE])  # the whole file came again

    assert dest.read_bytes() == server.files[FILE]  # overwritten, not appended to


async def test_complete_partial_file_is_finished_by_a_416_without_a_body(
    server: ReleaseServer, tmp_path: Path
) -> None:
    dest = tmp_path / FILE
    (tmp_path / (FILE + ".part")).write_bytes(server.files[FILE])

    assert await fetch(server, dest) == 0

    (request,) = server.gets(FILE)
    assert request.status == 416 and request.body_bytes == 0
    assert dest.read_bytes() == server.files[FILE]


async def test_partial_file_longer_than_the_servers_copy_is_discarded(
    server: ReleaseServer, tmp_path: Path
) -> None:
    dest = tmp_path / FILE
    (tmp_path / (FILE + ".part")).write_bytes(server.files[FILE] + b"junk")

    await fetch(server, dest)

    assert dest.read_bytes() == server.files[FILE]
    assert [r.status for r in server.gets(FILE)] == [416, 200]


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_busy_server_is_retried(server: ReleaseServer, tmp_path: Path, status: int) -> None:
    server.fail_once[FILE] = status

    await fetch(server, tmp_path / FILE)

    assert [r.status for r in server.gets(FILE)] == [status, 200]
    assert (tmp_path / FILE).read_bytes() == server.files[FILE]


async def test_retry_budget_counts_only_attempts_without_progress(
    server: ReleaseServer, tmp_path: Path
) -> None:
    size = len(server.files[FILE])
    server.cut_every[FILE] = size // 5 + 1  # 4 cuts, each after progress: more failures than attempts=3

    await fetch(server, tmp_path / FILE)

    assert len(server.gets(FILE)) == 5
    assert sum(r.body_bytes for r in server.gets(FILE)) == size
    assert (tmp_path / FILE).read_bytes() == server.files[FILE]


async def test_server_error_that_persists_is_a_network_failure(server: ReleaseServer, tmp_path: Path) -> None:
    server.fail_once[FILE] = 503
    config = FetchConfig(retry=RetryPolicy(attempts=1, initial_backoff_s=0.01, max_backoff_s=0.01))

    with pytest.raises(NetworkFailure, match="HTTP 503"):
        await fetch(server, tmp_path / FILE, config)


async def test_size_comes_from_head_or_is_unknown_when_head_is_not_allowed(server: ReleaseServer) -> None:
    url = server.url().replace("*", FILE)
    async with httpx.AsyncClient() as client:
        fetcher = Fetcher(client, FAST_RETRY, Progress(enabled=False))
        assert await fetcher.size_of(url, FILE) == len(server.files[FILE])
        server.head_allowed = False
        assert await fetcher.size_of(url, FILE) is None
