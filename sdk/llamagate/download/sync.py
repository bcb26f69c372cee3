"""Make an output directory hold a verified copy of the release: the core of `llamagate download`.

Order of work: fetch the (tiny) checklists; check what is already on disk against them; ask the server
how big the missing files are and refuse to start without room for them; fetch the missing files at
once (bounded), verifying each as it lands and fetching it again if it is bad.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from llamagate.download.checklist import (
    ChecklistSyntaxError,
    Mismatch,
    check_file,
    parse_checklist,
)
from llamagate.download.errors import ChecksumFailure, DownloadError, NotEnoughSpace, UsageError
from llamagate.download.fetch import PART_SUFFIX, FetchConfig, Fetcher
from llamagate.download.progress import Progress
from llamagate.download.release import FileGroup, release_plan
from llamagate.download.stamps import VerifiedStamps
from llamagate.download.urls import SignedUrl

FreeBytes = Callable[[Path], int]


@dataclass(frozen=True)
class DownloadConfig:
    url: SignedUrl | None  # None only with verify_only
    models: tuple[str, ...]
    out: Path
    fetch: FetchConfig = field(default_factory=FetchConfig)
    checksum_retries: int = 1  # extra downloads of a file whose md5 is wrong, before giving up
    verify_only: bool = False  # check the files on disk; no network
    rehash: bool = False  # ignore the verified-file stamps and hash everything again


@dataclass
class Summary:
    fetched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refetched: list[str] = field(default_factory=list)  # were bad (on disk or as downloaded)
    unverified: list[str] = field(default_factory=list)  # no checklist entry for them
    bytes_transferred: int = 0


@dataclass(frozen=True)
class _Item:
    group: FileGroup
    name: str
    md5: str | None  # None: no checksum published (LICENSE, USE_POLICY.md)

    @property
    def path(self) -> str:
        return self.group.path(self.name)


def disk_free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


async def sync_release(
    config: DownloadConfig,
    client: httpx.AsyncClient,
    progress: Progress,
    free_bytes: FreeBytes = disk_free_bytes,
) -> Summary:
    config.out.mkdir(parents=True, exist_ok=True)
    run = _Run(config, Fetcher(client, config.fetch, progress), progress)
    items = await run.plan_items()
    todo = await run.check_local(items)
    if config.verify_only:
        if todo:
            raise ChecksumFailure(
                f"{len(todo)} file(s) missing or bad: {', '.join(i.path for i in todo)}. "
                "Run `llamagate download` with the signed URL to fetch them."
            )
        return run.summary
    if todo:
        await run.check_space(todo, free_bytes(config.out))
        await _all_or_first_error([run.fetch_verified(item) for item in todo])
    return run.summary


class _Run:
    def __init__(self, config: DownloadConfig, fetcher: Fetcher, progress: Progress) -> None:
        self._config = config
        self._fetcher = fetcher
        self._progress = progress
        self._stamps: dict[str, VerifiedStamps] = {}
        self.summary = Summary()

    def _url(self, path: str) -> str:
        if self._config.url is None:
            raise UsageError("--url is required unless --verify-only is given")
        return self._config.url.for_path(path)

    def _local(self, path: str) -> Path:
        return self._config.out / path

    def _stamps_for(self, group: FileGroup) -> VerifiedStamps:
        if group.folder not in self._stamps:
            self._stamps[group.folder] = VerifiedStamps(self._local(group.folder or "."))
        return self._stamps[group.folder]

    async def plan_items(self) -> list[_Item]:
        groups = release_plan(self._config.models)
        checklists = await asyncio.gather(*(self._checklist(g) for g in groups))
        items: list[_Item] = []
        for group, entries in zip(groups, checklists, strict=True):
            for name in group.files:
                md5 = entries.get(name) if entries is not None else None
                if md5 is None and entries is not None:
                    self.summary.unverified.append(group.path(name))
                    self._progress.note(
                        f"warning: {group.path(name)} is not in {group.checklist}; not verified"
                    )
                items.append(_Item(group, name, md5))
        return items

    async def _checklist(self, group: FileGroup) -> dict[str, str] | None:
        if group.checklist is None:
            return None
        path = group.path(group.checklist)
        local = self._local(path)
        if not local.is_file():
            if self._config.verify_only:
                raise ChecksumFailure(f"{path} is missing, so nothing in that folder can be verified")
            await self._fetcher.fetch(self._url(path), local, path)
            self.summary.fetched.append(path)
        try:
            return parse_checklist(await asyncio.to_thread(local.read_text), source=path)
        except (ChecklistSyntaxError, UnicodeDecodeError) as error:
            # Typically an HTML error page saved under the checklist's name; drop it so a rerun refetches.
            await asyncio.to_thread(local.unlink)
            raise ChecksumFailure(
                f"{path} is not an md5 checklist ({error}); deleted it, run again"
            ) from error

    async def check_local(self, items: list[_Item]) -> list[_Item]:
        """-> the items to fetch. Bad files are deleted here, and named."""
        todo: list[_Item] = []
        for item in items:
            local = self._local(item.path)
            if not local.is_file():
                todo.append(item)
            elif item.md5 is None or await self._verify(item):
                self.summary.skipped.append(item.path)
            else:
                await asyncio.to_thread(local.unlink)
                self.summary.refetched.append(item.path)
                todo.append(item)
        return todo

    async def _verify(self, item: _Item) -> bool:
        assert item.md5 is not None
        stamps = self._stamps_for(item.group)
        if not self._config.rehash and stamps.is_verified(item.name, item.md5):
            return True
        folder = self._local(item.group.folder or ".")
        mismatch: Mismatch | None = await asyncio.to_thread(check_file, folder, item.name, item.md5)
        if mismatch is None:
            stamps.record(item.name, item.md5)
            return True
        stamps.forget(item.name)
        self._progress.note(f"BAD: {mismatch.describe(item.group.folder)}")
        return False

    async def check_space(self, todo: list[_Item], free: int) -> None:
        sizes = await asyncio.gather(*(self._fetcher.size_of(self._url(i.path), i.path) for i in todo))
        needed = 0
        unknown: list[str] = []
        for item, size in zip(todo, sizes, strict=True):
            if size is None:
                unknown.append(item.path)
                continue
            part = self._local(item.path + PART_SUFFIX)
            have = part.stat().st_size if part.is_file() else 0
            needed += max(size - have, 0)
        self._progress.expect(needed)
        if needed > free:
            raise NotEnoughSpace(
                f"not enough disk space in {self._config.out}: {len(todo)} file(s) need {_gib(needed)} more, "
                f"but only {_gib(free)} is free. Free up space or pass --out on a larger volume "
                "(complete and partial files already there are kept)."
            )
        if unknown:
            self._progress.note(f"note: the server did not report sizes of {len(unknown)} file(s)")

    async def fetch_verified(self, item: _Item) -> None:
        local = self._local(item.path)
        attempts = 1 + self._config.checksum_retries
        for attempt in range(1, attempts + 1):
            transferred = await self._fetcher.fetch(self._url(item.path), local, item.path)
            self.summary.bytes_transferred += transferred
            if item.md5 is None or await self._verify(item):
                self.summary.fetched.append(item.path)
                self._progress.finish(item.path, f"ok: {item.path}")
                return
            await asyncio.to_thread(local.unlink)
            if attempt < attempts:
                self.summary.refetched.append(item.path)
                self._progress.note(f"{item.path}: downloading it again ({attempt + 1}/{attempts})")
        raise ChecksumFailure(
            f"{item.path} does not match {item.group.path(item.group.checklist or '')} after {attempts} "
            "download(s). The server's copy or this disk may be faulty; request a new link, or try "
            "another --out volume."
        )


async def _all_or_first_error(coroutines: list[Coroutine[Any, Any, None]]) -> None:
    """Run all; on the first failure cancel the rest (partial files stay, to resume) and raise it."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as errors:
        known = [e for e in errors.exceptions if isinstance(e, DownloadError)]
        first: BaseException = known[0] if known else errors.exceptions[0]
        raise first from None


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**20 else f"{n} bytes"
