"""The Dockerfiles: multi-stage, small final stage, non-root, pinned; and `make images` builds the
tags the manifests use. Static checks (no Docker engine here): hadolint plus the structure below."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.manifests import DOCKER, IMAGE_TAG, REPO, SERVICES

HADOLINT = REPO / ".work" / "deploy-tools" / "bin" / "hadolint"
# Packages that build things; none may be installed in a final stage.
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|clang|make|build-essential|cmake|\S+-dev|python3(\.\d+)?-(pip|venv)|git)\b"
)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(path: Path) -> list[Stage]:
    """Instructions per stage, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.IGNORECASE)
            assert m, f"{path.name}: cannot read FROM {rest}"
            stages.append(Stage(base=m.group(1), name=m.group(2)))
        else:
            assert stages, f"{path.name}: {op} before FROM"
            stages[-1].instructions.append((op, rest.strip()))
    return stages


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_is_multistage_small_and_non_root(service: str) -> None:
    path = DOCKER / f"{service}.Dockerfile"
    stages = parse(path)
    assert len(stages) >= 2, "build in one stage, run from a clean one"
    final = stages[-1]
    ops = final.instructions
    users = [arg for op, arg in ops if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the final stage runs as a non-root user"
    assert users[-1] == "10001:10001", "same uid/gid as the manifests' runAsUser/runAsGroup"
    for op, arg in ops:
        if op == "RUN":
            assert not BUILD_TOOLS.search(arg), f"build tooling in the final stage: {arg}"
            assert "pip install" not in arg, "the final stage copies a venv, it does not install"
    copies = [arg for op, arg in ops if op == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"], "the final stage takes only the venv"
    assert any(op == "ENTRYPOINT" for op, _ in ops)
    assert any(op == "HEALTHCHECK" for op, _ in ops)


@pytest.mark.parametrize("service", SERVICES)
def test_base_images_and_packages_are_pinned(service: str) -> None:
    stages = parse(DOCKER / f"{service}.Dockerfile")
    expected_base = {
        "inference": r"nvidia/cuda:\d+\.\d+\.\d+-base-ubuntu\d\d\.\d\d",
        "safety": r"python:3\.11\.\d+-slim-\w+",
        "gateway": r"python:3\.11\.\d+-slim-\w+",
    }[service]
    for stage in stages:
        assert re.fullmatch(expected_base + r"(@sha256:[0-9a-f]{64})?", stage.base), stage.base
    runs = " ".join(arg for stage in stages for op, arg in stage.instructions if op == "RUN")
    for requirements in re.findall(r"-r (/requirements/\S+)", runs):
        path = DOCKER / "requirements" / Path(requirements).name
        pins = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
        assert pins, path
        for line in pins:
            assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+]+", line), (
                f"{path.name}: {line} is not pinned"
            )
    assert f"/requirements/{service}.txt" in runs


def test_requirement_files_agree_on_shared_packages() -> None:
    versions: dict[str, dict[str, str]] = {}
    for path in (DOCKER / "requirements").glob("*.txt"):
        for line in path.read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                name, version = line.split("==")
                versions.setdefault(name.lower(), {})[path.name] = version
    for name, by_file in versions.items():
        distinct = {v.split("+")[0] for v in by_file.values()}  # torch 2.13.0 vs 2.13.0+cpu
        assert len(distinct) == 1, f"{name}: {by_file}"


def test_hadolint_passes() -> None:
    if not HADOLINT.exists():
        pytest.fail(f"{HADOLINT} is missing: `make test` installs it")
    files = [str(DOCKER / f"{s}.Dockerfile") for s in SERVICES]
    result = subprocess.run([str(HADOLINT), *files], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_images_builds_the_tags_the_manifests_use() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "for s in inference safety gateway" in makefile
    assert f"-f deploy/docker/$$s.Dockerfile -t llamagate-$$s:{IMAGE_TAG}" in makefile
    base = (REPO / "deploy" / "k8s" / "base" / "kustomization.yaml").read_text()
    for service in SERVICES:
        assert re.search(rf"- name: llamagate-{service}\n\s+newTag: {re.escape(IMAGE_TAG)}\n", base)


def test_build_context_has_what_the_dockerfiles_copy() -> None:
    ignored = [p for p in (REPO / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    for must in (".git", ".venv", ".work", "**/*.pth"):
        assert must in ignored
    for service in SERVICES:
        for stage in parse(DOCKER / f"{service}.Dockerfile"):
            for op, arg in stage.instructions:
                if op != "COPY" or arg.startswith("--from"):
                    continue
                for source in arg.split()[:-1]:
                    assert (REPO / source).exists(), f"{service}: COPY {source} is not in the repository"
                    top = source.rstrip("/").split("/")[0]
                    assert top not in ignored, f"{service}: COPY {source} is excluded by .dockerignore"


def _declared(pyproject: Path, extras: list[str]) -> set[str]:
    import tomllib

    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project.get("optional-dependencies", {}).get(extra, [])
    names = {re.split(r"[<>=\[; ]", req, maxsplit=1)[0].lower().replace("_", "-") for req in wanted}
    return {n for n in names if not n.startswith("llamagate")}


@pytest.mark.parametrize("service", SERVICES)
def test_each_image_pins_every_dependency_of_what_it_installs(service: str) -> None:
    """The images install llamagate-server[<extra>] (and the gateway the SDK) from local wheels with no
    index, so a dependency missing from the image's pins would fail the build: catch it here."""
    runs = " ".join(
        arg
        for stage in parse(DOCKER / f"{service}.Dockerfile")
        for op, arg in stage.instructions
        if op == "RUN"
    )
    extras = re.search(r'"llamagate-server\[([a-z,]+)\]"', runs)
    assert extras, f"{service}: the image installs llamagate-server with its extra"
    needed = _declared(REPO / "pyproject.toml", extras.group(1).split(","))
    needed |= _declared(REPO / "proto" / "pyproject.toml", [])
    if re.search(r"\bllamagate\b(?![-\[])", runs.split("--find-links /wheels", 1)[1]):
        needed |= _declared(REPO / "sdk" / "pyproject.toml", [])
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (DOCKER / "requirements" / f"{service}.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert needed <= pinned, f"{service}.txt lacks pins for {sorted(needed - pinned)}"
