"""Tensor parallelism on CPU: load time and greedy tokens of a 13B/70B-shaped checkpoint, MP=1 vs MP=N.

    python -m bench.multi_rank_cpu_check                  # 70B shape, 2 layers, 8 shards, bf16, MP 1 and 8
    python -m bench.multi_rank_cpu_check --layers 1 --ranks 1,2,4,8 --dtype float32
    python -m bench.multi_rank_cpu_check --shape 13B --layers 1 --ranks 1,2 --dtype float32   # 2 shards

Writes (once) a random checkpoint with bench/make_checkpoint.py in the release's shard count (70B:
dim 8192, 64 query heads, 8 kv heads, FFN 28672, 8 shards; 13B: dim 5120, 40 heads, FFN 13824,
2 shards), the given layers and the demo tokenizer's 1000-token vocabulary so its tokenizer runs too, then runs the CI tests' rank worker (tests/integration/multi_rank/rank_worker.py)
at each MP: plain python for 1, torchrun + gloo with one thread per rank otherwise. The load bar is
rank 0's tqdm. Load time is the slowest rank's `load_model` call, from a warm page cache (the
checkpoint was just written or read), so it measures the read/cast/assemble work, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench import make_checkpoint

ROOT = Path(__file__).resolve().parents[1]

RELEASE_SHARDS = {"7B": 1, "13B": 2, "70B": 8}


def run_ranks(ckpt: Path, world_size: int, out: Path, dtype: str) -> tuple[list[dict[str, object]], float]:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1" if world_size > 1 else os.environ.get("OMP_NUM_THREADS", "2")}
    env["PYTHONPATH"] = str(ROOT)
    launcher = [sys.executable]
    if world_size > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}"]
    worker = ["-m", "tests.integration.multi_rank.rank_worker", "--ckpt", str(ckpt), "--out", str(out)]
    worker += ["--tokenizer", str(ckpt / "tokenizer.model"), "--dtype", dtype]
    start = time.perf_counter()
    # stderr passes through: rank 0's progress bar is part of what this measures.
    subprocess.run([*launcher, *worker], cwd=ROOT, env=env, check=True)
    wall = time.perf_counter() - start
    return [torch.load(out / f"rank{rank}.pt") for rank in range(world_size)], wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="70B", choices=sorted(RELEASE_SHARDS))
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--ranks", default="1,8", help="model-parallel sizes to run (1 first: the reference)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--work", type=Path, default=ROOT / ".work" / "multi_rank_cpu")
    opts = parser.parse_args()

    shards = RELEASE_SHARDS[opts.shape]
    ckpt = opts.work / f"{opts.shape.lower()}-{opts.layers}L-{shards}shards"
    args = make_checkpoint.model_args(opts.shape, opts.layers, "demo")
    if not (ckpt / "params.json").is_file():
        start = time.perf_counter()
        make_checkpoint.write_checkpoint(make_checkpoint.CheckpointSpec(args, shards, torch.bfloat16), ckpt)
        print(f"checkpoint written in {time.perf_counter() - start:.1f} s", flush=True)
    size = sum(f.stat().st_size for f in ckpt.glob("consolidated.*.pth"))
    rows = []
    reference: dict[str, object] | None = None
    for world_size in [int(n) for n in opts.ranks.split(",")]:
        results, wall = run_ranks(ckpt, world_size, opts.work / f"out-mp{world_size}", opts.dtype)
        peak_rss_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        first = results[0]
        reference = reference or first
        logits_diff = max(float((r["logits"] - reference["logits"]).abs().max()) for r in results)  # type: ignore[operator]
        rows.append(
            {
                "mp": world_size,
                "load_s_slowest_rank": max(float(r["load_s"]) for r in results),  # type: ignore[arg-type]
                "generate_s": float(first["generate_s"]),  # type: ignore[arg-type]
                "wall_s_with_startup": wall,
                "largest_process_rss_gib_so_far": peak_rss_gib,
                "greedy_equal_to_mp1": all(r["greedy"] == reference["greedy"] for r in results),
                "max_abs_logit_diff_vs_mp1": logits_diff,
                "max_abs_logit": float(reference["logits"].abs().max()),  # type: ignore[attr-defined]
                "greedy": first["greedy"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    header = {
        "shape": f"{opts.shape} (dim {args.dim}, {args.n_heads} heads, {args.kv_heads} kv heads, FFN "
        f"{args.hidden_dim}), {opts.layers} layers, vocab {args.vocab_size}",
        "checkpoint": f"{shards} shards, bf16, {size / 2**30:.2f} GiB",
        "dtype_loaded": opts.dtype,
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "torch": torch.__version__,
    }
    print(json.dumps(header))
    print(
        "| MP | load_model s (slowest rank) | generate s (3 prompts x 8 tokens) | wall s | greedy == MP1 | max |logit diff| |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['mp']} | {row['load_s_slowest_rank']:.2f} | {row['generate_s']:.2f} | "
            f"{row['wall_s_with_startup']:.1f} | {row['greedy_equal_to_mp1']} | {row['max_abs_logit_diff_vs_mp1']:.2g} |"
        )


if __name__ == "__main__":
    main()
