"""API keys follow their file: a rewrite or a Kubernetes-style symlink swap is picked up, a bad file
keeps the keys in force."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
import yaml

from services.common.errors import Unauthenticated
from services.gateway.auth import ApiKeyFileWatcher, load_api_keys


def keys_document(*keys: str) -> str:
    return yaml.safe_dump(
        {"tenants": {"acme": {"keys": [{"sha256": hashlib.sha256(k.encode()).hexdigest()} for k in keys]}}}
    )


def bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def test_a_rewritten_file_revokes_and_adds_keys(tmp_path: Path) -> None:
    path = tmp_path / "api-keys.yaml"
    path.write_text(keys_document("old-key", "kept-key"))
    keys = load_api_keys(path)
    watcher = ApiKeyFileWatcher(keys, path)
    assert not watcher.check_once()  # unchanged: nothing to do
    path.write_text(keys_document("kept-key", "new-key-longer"))
    assert watcher.check_once()
    with pytest.raises(Unauthenticated):
        keys.authenticate(bearer("old-key"))
    assert keys.authenticate(bearer("kept-key")).name == "acme"
    assert keys.authenticate(bearer("new-key-longer")).name == "acme"


def test_a_secret_volume_symlink_swap_is_picked_up(tmp_path: Path) -> None:
    """The kubelet writes a new timestamped directory and swaps the `..data` link to it."""
    first, second = tmp_path / "..2026_01_01_first", tmp_path / "..2026_01_02_second"
    first.mkdir()
    second.mkdir()
    (first / "api-keys.yaml").write_text(keys_document("leaked-key"))
    (second / "api-keys.yaml").write_text(keys_document("rotated-key"))
    # Same size (hashes) and the same mtime: only the inode tells them apart.
    mtime = os.stat(first / "api-keys.yaml").st_mtime_ns
    os.utime(second / "api-keys.yaml", ns=(mtime, mtime))
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "api-keys.yaml").symlink_to("..data/api-keys.yaml")
    path = tmp_path / "api-keys.yaml"
    keys = load_api_keys(path)
    watcher = ApiKeyFileWatcher(keys, path)
    assert keys.authenticate(bearer("leaked-key")).name == "acme"

    tmp_link = tmp_path / "..data_tmp"
    tmp_link.symlink_to(second.name)
    tmp_link.replace(tmp_path / "..data")  # rename(2): atomic, as the kubelet does
    assert watcher.check_once()
    with pytest.raises(Unauthenticated):
        keys.authenticate(bearer("leaked-key"))
    assert keys.authenticate(bearer("rotated-key")).name == "acme"


@pytest.mark.parametrize(
    "bad",
    ["tenants: [unclosed", "tenants: {}", "tenants:\n  acme:\n    keys: []\n"],
    ids=["yaml", "empty", "nokeys"],
)
def test_a_bad_file_keeps_the_keys_in_force_and_logs_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    path = tmp_path / "api-keys.yaml"
    path.write_text(keys_document("good-key"))
    keys = load_api_keys(path)
    watcher = ApiKeyFileWatcher(keys, path)
    path.write_text(bad)
    with caplog.at_level(logging.ERROR, logger="services.gateway.auth"):
        assert not watcher.check_once()
    assert "keeping the keys in force" in caplog.text
    assert keys.authenticate(bearer("good-key")).name == "acme"
    # Fixed again: the next look loads it.
    path.write_text(keys_document("fixed-key"))
    assert watcher.check_once()
    assert keys.authenticate(bearer("fixed-key")).name == "acme"


def test_a_missing_file_keeps_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "api-keys.yaml"
    path.write_text(keys_document("good-key"))
    keys = load_api_keys(path)
    watcher = ApiKeyFileWatcher(keys, path)
    path.unlink()
    assert not watcher.check_once()
    assert keys.authenticate(bearer("good-key")).name == "acme"
