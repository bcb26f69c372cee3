"""bench/paged_attention_bench.py's CPU dry run (Triton's interpreter, tiny shapes) times every cache
variant at two split counts and reports it; a GPU run is too scarce to find a broken variant or table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.slow


def test_every_cache_variant_is_timed_and_reported(tmp_path: Path) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "attention.json"
    command = [sys.executable, "-m", "bench.paged_attention_bench", "--dry-run", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    timed = json.loads(out.read_text())
    caches = [
        "bf16", "fp8", "bf16 head-major", "fp8 head-major", "fp8, fp8 q.k", "fp8, fp8 q.k and p.v",
        "bf16, CUDA cores", "fp8, CUDA cores",
    ]  # fmt: skip
    # Two rows split their keys 16 ways in the engine; the dry run also times one pass.
    assert [(row["context"], row["splits"], row["cache"]) for row in timed] == [
        (c, splits, cache) for c in (32, 80) for splits in (16, 1) for cache in caches
    ]
    assert all("error" not in row and row["us"] > 0 for row in timed), timed
    assert all(
        row["max_diff_vs_bf16"] == 0 for row in timed if row["cache"] == "bf16" and row["splits"] == 16
    )
    for splits in (16, 1):
        by_cache = {row["cache"]: row for row in timed if row["context"] == 80 and row["splits"] == splits}
        # The same values in another layout, or multiplied on other cores, give the same output up to
        # rounding; e4m3 rounding moves it a little.
        assert by_cache["bf16 head-major"]["max_diff_vs_bf16"] == by_cache["bf16"]["max_diff_vs_bf16"] < 1e-3
        assert by_cache["fp8 head-major"]["max_diff_vs_bf16"] == by_cache["fp8"]["max_diff_vs_bf16"]
        assert by_cache["bf16, CUDA cores"]["max_diff_vs_bf16"] < 1e-3
        assert 0 < by_cache["fp8"]["mean_diff_vs_bf16"] < by_cache["fp8, fp8 q.k"]["mean_diff_vs_bf16"] < 0.05
        assert (
            abs(by_cache["fp8, CUDA cores"]["mean_diff_vs_bf16"] - by_cache["fp8"]["mean_diff_vs_bf16"])
            < 1e-3
        )
    for context in (32, 80):
        for splits in (16, 1):
            for cache in caches:
                assert f"| 2 | {context} | {splits} | {cache} |" in done.stdout, done.stdout[-3000:]
