from __future__ import annotations

import pytest

from tests.deploy.manifests import EXTRA_OVERLAYS, K8S, MODEL_PARALLEL, OVERLAYS_DIR, Doc, build


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Doc]]:
    """Every overlay, rendered once per test session (the multinode example under its own name)."""
    out = {name: build(OVERLAYS_DIR / name) for name in (*MODEL_PARALLEL, *EXTRA_OVERLAYS)}
    out["multinode"] = build(K8S / "multinode")
    return out
