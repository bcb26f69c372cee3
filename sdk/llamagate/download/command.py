"""`llamagate download` and `llamagate verify-hf`: flags -> typed config -> core -> exit code.

Known mistakes become one clear message on stderr and a distinct exit code (errors.py), never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamagate.download.errors import DownloadError, UsageError
from llamagate.download.release import MODELS, parse_models
from llamagate.download.urls import parse_signed_url

if TYPE_CHECKING:
    from llamagate.download.progress import Progress
    from llamagate.download.sync import DownloadConfig, FreeBytes, Summary

# httpx, tqdm, tenacity, safetensors and torch are imported only by the subcommand that runs, so that
# every other `llamagate` subcommand starts fast and works in images without them.

INTERRUPTED = 130


def register(subparsers: Any) -> None:
    download = subparsers.add_parser(
        "download",
        help="fetch and md5-verify Llama 2 weights with the signed URL from Meta's approval e-mail",
        description="Fetch and verify Llama 2 weights (resumable, parallel, safe to run again). "
        "See docs/download.md.",
    )
    source = download.add_mutually_exclusive_group()
    source.add_argument(
        "--url",
        help="the signed URL from the e-mail, in single quotes (asked for when omitted on a terminal)",
    )
    source.add_argument(
        "--url-file",
        type=Path,
        help="read the URL from this file ('-': stdin), keeping it out of `ps` and shell history",
    )
    download.add_argument(
        "--models", required=True, help=f"comma-separated, from {','.join(MODELS)}; or 'all'"
    )
    download.add_argument("--out", type=Path, default=Path("."), help="target directory (default: .)")
    download.add_argument("--concurrency", type=int, default=4, help="files downloaded at once (default 4)")
    download.add_argument(
        "--retries", type=int, default=8, help="attempts without progress before giving up on a file"
    )
    download.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds")
    download.add_argument("--max-backoff", type=float, default=60.0, help="longest retry delay in seconds")
    download.add_argument("--read-timeout", type=float, default=120.0, help="seconds without data = retry")
    download.add_argument(
        "--checksum-retries", type=int, default=1, help="downloads again of a file with a bad md5"
    )
    download.add_argument("--verify-only", action="store_true", help="check files on disk; no network")
    download.add_argument("--rehash", action="store_true", help="hash every file, ignoring earlier checks")
    download.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="progress bars (auto: only on a terminal; off: a line per 10%% and per file, for logs)",
    )
    download.set_defaults(func=run_download_command)

    verify = subparsers.add_parser(
        "verify-hf",
        help="check that a Hugging Face-format Llama directory is complete and matches its config",
    )
    verify.add_argument("directory", type=Path)
    verify.add_argument(
        "--no-load", action="store_true", help="skip the final check that builds the model on the meta device"
    )
    verify.set_defaults(func=run_verify_hf_command)


def download_config_from_args(args: argparse.Namespace) -> DownloadConfig:
    """All validation of user input happens here, before any network traffic."""
    from llamagate.download.fetch import FetchConfig, RetryPolicy
    from llamagate.download.sync import DownloadConfig

    for flag in ("concurrency", "retries"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag} must be at least 1")
    if args.checksum_retries < 0:
        raise UsageError("--checksum-retries must be 0 or more")
    raw_url = args.url if args.url is not None else _read_url_file(args.url_file)
    if raw_url is None and not args.verify_only:
        if not sys.stdin.isatty():
            raise UsageError("--url is required (the signed URL from the approval e-mail, in single quotes)")
        raw_url = input("Enter the URL from the e-mail: ")
    return DownloadConfig(
        url=parse_signed_url(raw_url) if raw_url is not None else None,
        models=tuple(parse_models(args.models)),
        out=args.out,
        fetch=FetchConfig(
            concurrency=args.concurrency,
            retry=RetryPolicy(
                attempts=args.retries, initial_backoff_s=args.backoff, max_backoff_s=args.max_backoff
            ),
            read_timeout_s=args.read_timeout,
        ),
        checksum_retries=args.checksum_retries,
        verify_only=args.verify_only,
        rehash=args.rehash,
    )


def _read_url_file(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return sys.stdin.readline() if str(path) == "-" else path.read_text()
    except OSError as error:
        raise UsageError(f"cannot read --url-file {path}: {error.strerror}") from None


def run_download_command(args: argparse.Namespace, free_bytes: FreeBytes | None = None) -> int:
    """Also the programmatic entry for tests (free_bytes stands in for the disk)."""
    from llamagate.download.progress import Progress
    from llamagate.download.sync import disk_free_bytes

    try:
        config = download_config_from_args(args)
        progress_on = {"on": True, "off": False, "auto": sys.stderr.isatty()}[args.progress]
        summary = asyncio.run(_download(config, Progress(enabled=progress_on), free_bytes or disk_free_bytes))
    except DownloadError as error:
        print(f"llamagate download: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("llamagate download: interrupted; run the same command again to resume", file=sys.stderr)
        return INTERRUPTED
    print(_summary_line(summary, config), file=sys.stderr)
    return 0


async def _download(config: DownloadConfig, progress: Progress, free_bytes: FreeBytes) -> Summary:
    import httpx

    from llamagate.download.sync import sync_release

    try:
        async with httpx.AsyncClient(timeout=config.fetch.timeout(), follow_redirects=True) as client:
            return await sync_release(config, client, progress, free_bytes)
    finally:
        progress.close()


def _summary_line(summary: Summary, config: DownloadConfig) -> str:
    verb = "verified" if config.verify_only else "done"
    source = f" from {config.url.redacted()}" if config.url and not config.verify_only else ""
    line = (
        f"{verb}: {', '.join(config.models)}{source} in {config.out}: {len(summary.fetched)} file(s) downloaded "
        f"({summary.bytes_transferred / 2**20:.1f} MiB), {len(summary.skipped)} already present and verified"
    )
    if summary.refetched:
        line += f"; fetched again after a bad md5: {', '.join(sorted(set(summary.refetched)))}"
    if summary.unverified:
        line += f"; without a checksum: {', '.join(summary.unverified)}"
    return line


def run_verify_hf_command(args: argparse.Namespace) -> int:
    from llamagate.download.hf_checkpoint import verify_hf_dir

    try:
        report = verify_hf_dir(args.directory)
        if not args.no_load:
            from llamagate.download.hf_load import check_loads  # lazy: imports torch/transformers

            check_loads(args.directory, report)
    except DownloadError as error:
        print(f"llamagate verify-hf: error: {error}", file=sys.stderr)
        return error.exit_code
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    s = report.shape
    print(
        f"ok: {args.directory}: LlamaForCausalLM, {s.layers} layers, hidden {s.hidden}, {s.heads} heads "
        f"({s.kv_heads} kv), vocab {s.vocab}, {report.parameters / 1e6:.1f}M parameters in "
        f"{len(report.files)} file(s)"
    )
    return 0
