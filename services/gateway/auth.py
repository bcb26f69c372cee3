"""API keys and tenants: `authorization: Bearer <key>` metadata -> the tenant and its limits.

The keys file is YAML, loaded at start and again whenever it changes (`ApiKeyFileWatcher`):

    tenants:
      acme:
        requests_per_minute: 60      # optional; unset = unlimited
        tokens_per_minute: 40000     # optional; prompt + completion tokens
        keys:
          - sha256: 9f86d081884c7d65...   # preferred: only the hash is stored
          - plain: dev-key-123            # accepted for development

Keys are looked up by their sha256, so plain keys and hashed keys are the same to the lookup and
the gateway never keeps a presented key longer than the request.

Reload: the watcher polls the file's identity (device, inode, size, mtime of the file the path
resolves to). A Kubernetes Secret volume updates by swapping a `..data` symlink to a new directory,
so the resolved file is a new inode; an in-place rewrite changes size or mtime. A changed file is
parsed in full and swapped in at once; a file that does not parse keeps the keys in force (an error
is logged), so a bad edit never locks every tenant out or lets a revoked key back in.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.common.errors import Unauthenticated

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tenant:
    name: str
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """Maps sha256(api key) -> Tenant."""

    def __init__(self, by_hash: Mapping[str, Tenant]) -> None:
        self._by_hash = dict(by_hash)

    def replace_with(self, other: ApiKeys) -> None:
        """Take `other`'s keys. One reference assignment: a lookup sees the old set or the new one."""
        self._by_hash = other._by_hash

    @property
    def tenants(self) -> list[Tenant]:
        return sorted({t.name: t for t in self._by_hash.values()}.values(), key=lambda t: t.name)

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Tenant:
        """The tenant of the request's bearer key; Unauthenticated with what to fix otherwise."""
        values = [v for k, v in (metadata or ()) if k.lower() == "authorization"]
        if not values:
            raise Unauthenticated(
                "missing 'authorization: Bearer <api key>' metadata", reason="API_KEY_MISSING"
            )
        value = values[0].decode() if isinstance(values[0], bytes) else values[0]
        scheme, _, key = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated(
                "the authorization metadata must be 'Bearer <api key>'", reason="API_KEY_MALFORMED"
            )
        tenant = self._by_hash.get(hash_key(key.strip()))
        if tenant is None:
            raise Unauthenticated("invalid API key", reason="API_KEY_INVALID")
        return tenant


def _limit(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{where} must be a positive number, got {value!r}")
    return float(value)


def parse_api_keys(document: Any, source: str = "api keys") -> ApiKeys:
    if not isinstance(document, dict) or not isinstance(document.get("tenants"), dict):
        raise ValueError(f"{source}: expected a mapping with a 'tenants' mapping at the top")
    by_hash: dict[str, Tenant] = {}
    for name, spec in document["tenants"].items():
        where = f"{source}: tenants.{name}"
        if not isinstance(spec, dict):
            raise ValueError(f"{where} must be a mapping")
        unknown = set(spec) - {"requests_per_minute", "tokens_per_minute", "keys"}
        if unknown:
            raise ValueError(f"{where} has unknown settings {sorted(unknown)}")
        tenant = Tenant(
            str(name),
            _limit(spec.get("requests_per_minute"), f"{where}.requests_per_minute"),
            _limit(spec.get("tokens_per_minute"), f"{where}.tokens_per_minute"),
        )
        keys = spec.get("keys")
        if not isinstance(keys, list) or not keys:
            raise ValueError(f"{where}.keys must be a non-empty list of {{sha256: ...}} or {{plain: ...}}")
        for i, entry in enumerate(keys):
            if not isinstance(entry, dict) or len(entry) != 1 or not ({"sha256", "plain"} & set(entry)):
                raise ValueError(f"{where}.keys[{i}] must be {{sha256: <hex>}} or {{plain: <key>}}")
            if "plain" in entry:
                digest = hash_key(str(entry["plain"]))
            else:
                digest = str(entry["sha256"]).lower()
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise ValueError(f"{where}.keys[{i}].sha256 is not a 64-digit hex sha256")
            if digest in by_hash and by_hash[digest].name != tenant.name:
                raise ValueError(f"{where}.keys[{i}] is also a key of tenant {by_hash[digest].name}")
            by_hash[digest] = tenant
    if not by_hash:
        raise ValueError(f"{source}: no tenants defined")
    return ApiKeys(by_hash)


def load_api_keys(path: Path) -> ApiKeys:
    return parse_api_keys(yaml.safe_load(path.read_text()), str(path))


FileIdentity = tuple[int, int, int, int]


def file_identity(path: Path) -> FileIdentity:
    """(device, inode, size, mtime) of the file `path` resolves to (symlinks followed)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class ApiKeyFileWatcher:
    """Reloads `keys` from `path` whenever the file changes; see the module docstring."""

    def __init__(self, keys: ApiKeys, path: Path, interval_s: float = 2.0) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.keys = keys
        self.path = path
        self.interval_s = interval_s
        self.reloads = 0
        self._seen: FileIdentity | None = self._identity()

    def _identity(self) -> FileIdentity | None:
        try:
            return file_identity(self.path)
        except OSError:
            return None  # mid-swap or removed: keep the keys in force, look again next time

    def check_once(self) -> bool:
        """Reload if the file changed since the last look; True when new keys were swapped in."""
        identity = self._identity()
        if identity is None or identity == self._seen:
            return False
        self._seen = identity
        try:
            fresh = load_api_keys(self.path)
        except (OSError, ValueError, yaml.YAMLError) as error:
            log.error(
                "api keys file %s changed but is not valid; keeping the keys in force: %s", self.path, error
            )
            return False
        self.keys.replace_with(fresh)
        self.reloads += 1
        log.info("api keys reloaded from %s: %d tenants", self.path, len(fresh.tenants))
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await asyncio.to_thread(self.check_once)
