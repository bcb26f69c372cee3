"""The three distributions install as documented: the SDK and CLI into a fresh virtualenv with
neither torch nor transformers nor any server code, and the servers' heavy dependencies only
through their extras."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HEAVY = {"torch", "transformers", "sentencepiece", "triton"}

pytestmark = pytest.mark.slow


def _names(requirements: list[str]) -> set[str]:
    return {
        req.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
        for req in requirements
    }


def test_only_the_extras_bring_the_heavy_dependencies() -> None:
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    sdk = tomllib.loads((ROOT / "sdk" / "pyproject.toml").read_text())["project"]
    contract = tomllib.loads((ROOT / "proto" / "pyproject.toml").read_text())["project"]
    assert not _names(server["dependencies"]) & HEAVY
    assert not _names(sdk["dependencies"]) & HEAVY
    assert not _names(contract["dependencies"]) & HEAVY
    extras = server["optional-dependencies"]
    assert {"torch", "sentencepiece"} <= _names(extras["inference"])
    assert {"torch", "transformers"} <= _names(extras["safety"])
    assert not _names(extras["gateway"]) & HEAVY


def test_the_sdk_installs_into_a_fresh_virtualenv_without_torch(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            str(ROOT / "proto"),
            str(ROOT / "sdk"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    installed = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert {"llamagate", "llamagate-contract", "grpcio"} <= installed
    assert not installed & (HEAVY | {"llamagate-server"}), sorted(installed & (HEAVY | {"llamagate-server"}))

    # Run from an empty directory so nothing of the repository is importable by accident.
    probe = (
        "import llamagate.client, llamagate.cli, llamagate.v1.chat_service_pb2_grpc, llamagate.formats.audit\n"
        "import importlib.util as u\n"
        "assert u.find_spec('services') is None and u.find_spec('torch') is None\n"
        "print('ok')\n"
    )
    imported = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert imported.stdout.strip() == "ok", imported.stderr
    cli = subprocess.run(
        [str(venv / "bin" / "llamagate"), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert cli.returncode == 0 and "chat" in cli.stdout, cli.stderr
