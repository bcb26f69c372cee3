"""bench/fp8_bench.py's CPU dry run (`--tiny`) completes and reports every section: the engines
asked for (and only those), the accuracy comparisons, the kernel table and the 70B-layer
projection; a GPU run is too scarce to find a broken report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.slow


def dry_run(out: Path, *flags: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "bench.fp8_bench", "--tiny", "--out", str(out), *flags]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| batch-1 decode tok/s |" in done.stdout, done.stdout[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def test_the_default_run_reports_every_engine_and_section(tmp_path: Path) -> None:
    result = dry_run(tmp_path / "all.json")
    seven = result["7b"]
    engines = seven["engines"]
    assert list(engines) == ["bf16", "fp8", "fp8 kernel<=64 scaled_mm:decode (triton)", "fp8-kv8"]
    assert engines["fp8-kv8"]["kv_cache_dtype"] == "fp8"
    assert engines["fp8 kernel<=64 scaled_mm:decode (triton)"]["fp8_options"]["tensor_cores"] == "triton"
    assert all(engine["batch1_decode_tok_s"] > 0 for engine in engines.values())
    for path in ("dequantized", "fp8_activations", "fp8_kv_cache"):
        assert 0 <= seven["accuracy"][path]["top1_agreement"] <= 1
    # The cache's rounding moves the trained demo model's logits, but keeps its top tokens.
    kv_cache = result["demo_accuracy"]["fp8_kv_cache"]
    assert kv_cache["max_abs_diff"] > 0 and kv_cache["top1_agreement"] > 0.9
    for greedy in ("greedy", "greedy_fp8_kv8"):
        assert len(seven["accuracy"][greedy]["identical_prefix_lens"]) == 2
    assert result["demo_accuracy"]["dequantized"]["top1_agreement"] > 0.9
    assert {row["weight"] for row in result["kernels"]} >= {"wqkv", "wo", "w13", "w2", "70B w13"}
    assert result["70b_layers"]["projected_80_layer_step_ms"] > 0


def test_a_run_of_some_engines_measures_only_those(tmp_path: Path) -> None:
    result = dry_run(
        tmp_path / "some.json",
        "--skip",
        "demo,kernels,70b",
        "--engines",
        "bf16,fp8-kv8",
        "--fp8-variants",
        "",
        "--decode-attention",
        "cuda-cores",
    )
    assert list(result["7b"]["engines"]) == ["bf16", "fp8-kv8"]
    assert result["decode_attention"] == "cuda-cores"
    accuracy = result["7b"]["accuracy"]
    assert "greedy_fp8_kv8" in accuracy and "greedy" not in accuracy
    assert "kernels" not in result and "70b_layers" not in result


def test_a_variant_names_its_tensor_core_kernel(tmp_path: Path) -> None:
    result = dry_run(
        tmp_path / "variant.json",
        "--skip",
        "demo,kernels,70b",
        "--engines",
        "fp8",
        "--fp8-variants",
        "16-decode-cublas",
    )
    engines = result["7b"]["engines"]
    assert list(engines) == ["fp8", "fp8 kernel<=16 scaled_mm:decode (cublas)"]
    options = engines["fp8 kernel<=16 scaled_mm:decode (cublas)"]["fp8_options"]
    assert options == {"max_rows": 16, "scaled_mm": "decode", "tensor_cores": "cublas"}
