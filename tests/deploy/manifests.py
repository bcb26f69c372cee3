"""Render the kustomize overlays with the real kustomize (built into kubectl) and walk what comes out.

`kubectl` is part of the machine image these tests run on (its apt package kubectl, kustomize v5);
a standalone `kustomize` binary is used when there is one. No cluster is contacted: `kubectl
kustomize` only reads files.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS_DIR = K8S / "overlays"
DOCKER = REPO / "deploy" / "docker"

# The reference release: 7B is one model-parallel shard, 13B two, 70B eight.
MODEL_PARALLEL = {
    "llama-2-7b": 1,
    "llama-2-7b-chat": 1,
    "llama-2-13b": 2,
    "llama-2-13b-chat": 2,
    "llama-2-70b": 8,
    "llama-2-70b-chat": 8,
}
# A release model served with FP8 weights (`--weights-dtype fp8`) on fewer GPUs than the release's
# model-parallel size: overlay -> (the release model it serves, GPUs = model-parallel size).
FP8_OVERLAYS = {
    "llama-2-70b-chat-fp8": ("llama-2-70b-chat", 2),
    "llama-2-13b-chat-fp8": ("llama-2-13b-chat", 1),
}
EXTRA_OVERLAYS = ("llama-2-7b-chat-llama-guard", "llama-2-7b-chat-spare", *FP8_OVERLAYS)
IMAGE_TAG = "0.1.0"
SERVICES = ("inference", "safety", "gateway")
GPU = "nvidia.com/gpu"

Doc = dict[str, Any]


def kustomize_command(path: Path) -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build", str(path)]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize", str(path)]
    raise RuntimeError(
        "neither `kustomize` nor `kubectl` is on PATH: install the Debian package kubectl "
        "(apt-get install kubectl) or a kustomize v5 binary to render deploy/k8s"
    )


def build(path: Path) -> list[Doc]:
    result = subprocess.run(kustomize_command(path), capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"kustomize build {path} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


@dataclass(frozen=True)
class Container:
    owner: str  # "Kind/name" of the object whose pod template holds it
    spec: Doc
    pod: Doc  # the pod spec around it

    def env(self) -> dict[str, str]:
        return {e["name"]: e["value"] for e in self.spec.get("env", []) if "value" in e}

    def expanded_args(self) -> list[str]:
        """command + args with $(VAR) expanded from literal env values, as the kubelet does."""
        words = [*self.spec.get("command", []), *self.spec.get("args", [])]
        env = self.env()
        out = []
        for word in words:
            for key, value in env.items():
                word = word.replace(f"$({key})", value)
            out.append(word)
        return out


def pod_specs(doc: Doc) -> Iterator[tuple[str, Doc, Doc]]:
    """(owner, pod template metadata, pod spec) of every pod template in one object."""
    owner = f"{doc['kind']}/{doc['metadata']['name']}"
    spec = doc.get("spec", {})
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield owner, spec["template"].get("metadata", {}), spec["template"]["spec"]
    elif doc["kind"] == "LeaderWorkerSet":
        lwt = spec["leaderWorkerTemplate"]
        for key in ("leaderTemplate", "workerTemplate"):
            if key in lwt:
                yield f"{owner}.{key}", lwt[key].get("metadata", {}), lwt[key]["spec"]


def containers(docs: list[Doc], *, init: bool = True) -> Iterator[Container]:
    for doc in docs:
        for owner, _, pod in pod_specs(doc):
            keys = ("initContainers", "containers") if init else ("containers",)
            for key in keys:
                for c in pod.get(key, []):
                    yield Container(owner, c, pod)
