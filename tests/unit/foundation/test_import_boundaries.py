"""Rooms and doors: the import contracts in pyproject.toml ([tool.importlinter], see ARCHITECTURE.md).

Client code never imports a service (or torch), services never import the SDK, the contract imports
nothing of ours, services do not import each other, and inside inference the arrows run edge ->
engine -> kernels -> model only. The second test shows the same contracts catch a violation.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(config: Path, cwd: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": pythonpath} if pythonpath else None
    return subprocess.run(
        [str(LINT_IMPORTS), str(config), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_code_keeps_every_import_contract() -> None:
    result = lint_imports(ROOT / "pyproject.toml", ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def _write(root: Path, module: str, source: str = "") -> None:
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.parents:
        if parent == root or (parent.name == "llamagate" and parent.parent == root):
            break  # `llamagate` stays a namespace package, as in the real tree
        (parent / "__init__.py").touch()
    path.write_text(source)


def test_the_contracts_catch_each_forbidden_import(tmp_path: Path) -> None:
    """A tree with the real package names and one violation per contract: every contract breaks."""
    for module in ("llamagate.v1.types_pb2", "llamagate.formats.audit", "llamagate.cli.main"):
        _write(tmp_path, module)
    _write(tmp_path, "llamagate.v1.bad", "import services.gateway.servicer\n")
    _write(tmp_path, "llamagate.client.bad", "import services.safety.verdict\n")
    _write(tmp_path, "llamagate.commands.ok", "import llamagate.client.bad\n")
    _write(tmp_path, "llamagate.download.ok", "import llamagate.formats.audit\n")
    _write(tmp_path, "llamagate.download.hf_load", "import torch\nimport transformers\n")
    _write(tmp_path, "services.gateway.servicer", "import llamagate.client.bad\n")
    _write(tmp_path, "services.safety.verdict", "import services.inference.engine.scheduler\n")
    _write(tmp_path, "services.common.errors", "import services.gateway.servicer\n")
    _write(tmp_path, "services.inference.servicer", "import services.inference.engine.scheduler\n")
    _write(tmp_path, "services.inference.demo")
    _write(tmp_path, "services.inference.verify_checkpoint")
    _write(tmp_path, "services.inference.__main__")
    _write(tmp_path, "services.inference.engine.scheduler", "import services.inference.kernels.attention\n")
    _write(tmp_path, "services.inference.kernels.attention", "import services.inference.engine.scheduler\n")
    _write(tmp_path, "services.inference.model.transformer")
    _write(tmp_path, "services.stack")
    _write(tmp_path, "training.safety.finetune")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = ["[importlinter]", "root_packages =", *(f"    {p}" for p in config["root_packages"])]
    lines.append("include_external_packages = True")
    for i, contract in enumerate(config["contracts"]):
        lines.append(f"[importlinter:contract:{i}]")
        for key, value in contract.items():
            if isinstance(value, list):
                lines += [f"{key} =", *(f"    {v}" for v in value)]
            else:
                lines.append(f"{key} = {value}")
    (tmp_path / ".importlinter").write_text("\n".join(lines) + "\n")

    result = lint_imports(tmp_path / ".importlinter", tmp_path, pythonpath=str(tmp_path))
    assert result.returncode != 0
    broken = len(config["contracts"])
    assert f"Contracts: 0 kept, {broken} broken." in result.stdout, result.stdout[-4000:] + result.stderr
