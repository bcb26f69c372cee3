"""An async, resumable, retrying HTTP downloader (httpx + tenacity), bounded to N transfers at once.

A file is written to `<name>.part` and renamed only once the server has sent every byte, so a file
under its final name is always complete, and a `.part` file is always safe to resume with a Range
request. Transient failures (connection cut, timeouts, 429/5xx) are retried with exponential backoff
and jitter; the retry budget counts only attempts that made no progress, so a long shard on a flaky
link keeps going as long as bytes keep arriving.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from llamagate.download.errors import LinkRejected, NetworkFailure
from llamagate.download.progress import Progress

T = TypeVar("T")

PART_SUFFIX = ".part"
_HEAD_UNSUPPORTED = frozenset({405, 501})  # then the size is learned from the GET instead
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")

EXPIRED_LINK_HELP = (
    "The signed URL has expired or is used up: Meta's links are valid for 24 hours and for a limited "
    "number of downloads per file. Request a new link at "
    "https://llama.meta.com/llama-downloads/ and run the same command with the new --url; complete "
    "files are kept and partial ones resume."
)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8  # consecutive attempts without progress before giving up on a file
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0


@dataclass(frozen=True)
class FetchConfig:
    concurrency: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connect_timeout_s: float = 30.0
    read_timeout_s: float = 120.0
    chunk_bytes: int = 1 << 20

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.read_timeout_s, connect=self.connect_timeout_s)


@dataclass
class _Transfer:
    url: str
    part: Path
    label: str
    received: int = 0  # over all attempts: what the network delivered, not what ended up in the file


class TransientHttpError(Exception):
    """A response worth retrying (server busy, connection closed before the last byte)."""


class _StopWhenStalled:
    """tenacity stop condition: give up after `attempts` failures in a row that added no bytes."""

    def __init__(self, attempts: int, part: Path) -> None:
        self._attempts = attempts
        self._part = part
        self._stalled = 0
        self._last_size = _size(part)

    def __call__(self, state: RetryCallState) -> bool:
        size = _size(self._part)
        self._stalled = self._stalled + 1 if size <= self._last_size else 1
        self._last_size = size
        return self._stalled >= self._attempts


class Fetcher:
    def __init__(self, client: httpx.AsyncClient, config: FetchConfig, progress: Progress) -> None:
        self._client = client
        self._config = config
        self._progress = progress
        self._slots = asyncio.Semaphore(config.concurrency)

    async def size_of(self, url: str, label: str) -> int | None:
        """Content-Length from a HEAD request, or None when the server does not say."""

        async def head() -> httpx.Response:
            async with self._slots:
                response = await self._client.head(url)
            if response.status_code not in _HEAD_UNSUPPORTED:
                _raise_for_status(response, label)
            return response

        response = await self._retrying(label, part=None, call=head)
        if response.status_code in _HEAD_UNSUPPORTED:
            return None
        length = response.headers.get("content-length")
        return int(length) if length is not None and length.isdigit() else None

    async def fetch(self, url: str, dest: Path, label: str) -> int:
        """Download `url` to `dest` (resuming `dest.part`); returns the bytes transferred."""
        part = dest.with_name(dest.name + PART_SUFFIX)
        dest.parent.mkdir(parents=True, exist_ok=True)
        transfer = _Transfer(url, part, label)
        async with self._slots:
            await self._retrying(label, part=part, call=lambda: self._attempt(transfer))
        part.replace(dest)
        return transfer.received

    async def _retrying(self, label: str, part: Path | None, call: Callable[[], Awaitable[T]]) -> T:
        policy = self._config.retry
        stop = _StopWhenStalled(policy.attempts, part) if part else stop_after_attempt(policy.attempts)
        retrying = AsyncRetrying(
            stop=stop,
            wait=wait_exponential(multiplier=policy.initial_backoff_s, max=policy.max_backoff_s)
            + wait_random(0, policy.initial_backoff_s),
            retry=retry_if_exception_type((httpx.TransportError, TransientHttpError)),
            before_sleep=lambda state: self._progress.note(
                f"{label}: {_describe(state)}; retrying in {state.upcoming_sleep:.1f}s"
            ),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    result = await call()
        except (httpx.TransportError, TransientHttpError) as error:
            raise NetworkFailure(
                f"{label}: {_describe_error(error)}; gave up after {policy.attempts} attempts without "
                "progress. Check the network and run the same command again: it resumes where it stopped."
            ) from error
        return result

    async def _attempt(self, transfer: _Transfer) -> None:
        url, part, label = transfer.url, transfer.part, transfer.label
        offset = _size(part)
        # identity: Range offsets count bytes on the wire, which must be the bytes of the file.
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        async with self._client.stream("GET", url, headers=headers) as response:
            if response.status_code == 416 and offset:
                # The partial file is not shorter than the resource: complete, or junk to discard.
                total = _content_range(response.headers.get("content-range"))[1]
                if total == offset:
                    return
                await asyncio.to_thread(part.unlink)
                raise TransientHttpError(f"partial file ({offset} bytes) did not fit the server's copy")
            _raise_for_status(response, label)
            start, total = _content_range(response.headers.get("content-range"))
            if response.status_code == 206 and start != offset:
                await asyncio.to_thread(part.unlink)
                raise TransientHttpError(f"server answered the Range request from byte {start}")
            if response.status_code != 206:
                offset = 0  # the server ignored the Range header: start over
            length = response.headers.get("content-length")
            if total is None and length is not None and length.isdigit():
                total = offset + int(length)
            self._progress.start(label, total, offset)
            with part.open("ab" if offset else "wb") as f:
                await self._write_body(response, f, transfer)
        if total is not None and _size(part) < total:
            raise TransientHttpError(f"connection closed at byte {_size(part)} of {total}")

    async def _write_body(self, response: httpx.Response, f: BinaryIO, transfer: _Transfer) -> None:
        """Write in chunk_bytes batches (in a thread), keeping every byte received if the link drops."""
        pending = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                pending += chunk
                transfer.received += len(chunk)
                self._progress.advance(transfer.label, len(chunk))
                if len(pending) >= self._config.chunk_bytes:
                    await asyncio.to_thread(f.write, bytes(pending))
                    pending.clear()
        finally:
            # Bytes that arrived before a cut are valid: keep them so the retry's Range starts after them.
            f.write(pending)


def _raise_for_status(response: httpx.Response, label: str) -> None:
    status = response.status_code
    if status < 400:
        return
    if status in (401, 403):
        raise LinkRejected(
            f"{label}: the server refused the download (HTTP {status} Forbidden). {EXPIRED_LINK_HELP}"
        )
    if status == 404:
        raise LinkRejected(
            f"{label}: not found on the server (HTTP 404). Check that your approval e-mail covers this "
            "model (--models) and that the URL was copied whole."
        )
    if status in _RETRYABLE_STATUS:
        raise TransientHttpError(f"HTTP {status} {response.reason_phrase}")
    raise NetworkFailure(f"{label}: unexpected HTTP {status} {response.reason_phrase} from the server")


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    match = _CONTENT_RANGE.fullmatch(header.strip()) if header else None
    if match is None:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _describe(state: RetryCallState) -> str:
    error = state.outcome.exception() if state.outcome else None
    return _describe_error(error) if error else "failed"


def _describe_error(error: BaseException) -> str:
    return str(error) or type(error).__name__
