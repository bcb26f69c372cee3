"""bench/inference_bench.py's decode-kernel variants on the CPU (tiny shape): each variant builds its
engine, passes the correctness check against the eager model and is reported with the columns
that compare them; a GPU run is too scarce to find a broken variant or table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.slow


def test_decode_attention_variants_are_measured_and_reported(tmp_path: Path) -> None:
    out = tmp_path / "inference.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "bench.inference_bench", "--device", "cpu", "--shape", "tiny", "--new-tokens", "8",
        "--variants", "auto,auto-cudacores", "--streams", "4", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [result] = json.loads(out.read_text())["results"]
    variants = result["variants"]
    assert list(variants) == ["auto", "auto-cudacores"]
    for variant in variants.values():
        assert variant["correctness"]["ok"], variant["correctness"]
        assert variant["batch1_decode_tok_s"] > 0 and variant["streams4_total_tok_s"] > 0
    assert (
        "| b1 attention µs | 4 streams tok/s | 4 streams GPU step ms | 4 streams attention µs |"
        in done.stdout
    )
    assert "| auto-cudacores |" in done.stdout
