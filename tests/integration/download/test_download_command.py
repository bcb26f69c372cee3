"""`llamagate download` end to end against a fake signed-URL server on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamagate.cli import build_parser
from llamagate.download.command import run_download_command
from llamagate.download.sync import FreeBytes, disk_free_bytes
from tests.integration.download.release_server import SIGNATURE, ReleaseServer, build_release, serve
from tests.support.processes import free_port

MODELS = ("7B-chat", "13B")
SHARD = "llama-2-7b-chat/consolidated.00.pth"
SHARD_13B = "llama-2-13b/consolidated.01.pth"


@pytest.fixture
def release() -> Iterator[ReleaseServer]:
    with serve(ReleaseServer(build_release(MODELS))) as server:
        yield server


def download(url: str, out: Path, *extra: str, free_bytes: FreeBytes = disk_free_bytes) -> int:
    argv = ["download", "--url", url, "--models", ",".join(MODELS), "--out", str(out), "--progress", "off"]
    argv += ["--backoff", "0.01", "--max-backoff", "0.05", *extra]
    return run_download_command(build_parser().parse_args(argv), free_bytes=free_bytes)


def assert_tree_matches(out: Path, release: ReleaseServer) -> None:
    for path, content in release.files.items():
        assert (out / path).read_bytes() == content, path
    assert not list(out.rglob("*.part"))


def test_full_download_fetches_every_file_once_and_verifies(
    release: ReleaseServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert download(release.url(), tmp_path) == 0

    assert_tree_matches(tmp_path, release)
    fetched = sorted(r.path for r in release.gets())
    assert fetched == sorted(release.files)  # each file exactly once, checklists included
    err = capsys.readouterr().err
    assert "11 file(s) downloaded" in err
    assert SIGNATURE not in err  # the signed URL is a credential until it expires: never logged


def test_second_run_makes_no_request_at_all(
    release: ReleaseServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert download(release.url(), tmp_path) == 0
    before = len(release.requests)

    assert download(release.url(), tmp_path) == 0

    assert len(release.requests) == before  # no GET of content, no HEAD, no checklist either
    assert "0 file(s) downloaded" in capsys.readouterr().err
    assert_tree_matches(tmp_path, release)


def test_cut_connection_resumes_with_range_without_refetching_bytes(
    release: ReleaseServer, tmp_path: Path
) -> None:
    release.cut_after[SHARD] = 100_000

    assert download(release.url(), tmp_path) == 0

    first, second = release.gets(SHARD)
    assert first.range is None and first.body_bytes == 100_000
    assert second.range == "bytes=100000-" and second.status == 206
    assert first.body_bytes + second.body_bytes == len(release.files[SHARD])  # nothing fetched twice
    assert_tree_matches(tmp_path, release)


def test_partial_file_from_an_earlier_run_is_resumed(release: ReleaseServer, tmp_path: Path) -> None:
    part = tmp_path / (SHARD + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(release.files[SHARD][:1234])

    assert download(release.url(), tmp_path) == 0

    (only,) = release.gets(SHARD)
    assert only.range == "bytes=1234-"
    assert only.body_bytes == len(release.files[SHARD]) - 1234
    assert_tree_matches(tmp_path, release)


def test_corrupted_download_is_named_and_fetched_again(
    release: ReleaseServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release.corrupt_once.add(SHARD_13B)

    assert download(release.url(), tmp_path) == 0

    err = capsys.readouterr().err
    assert f"BAD: {SHARD_13B}: md5" in err
    assert len(release.gets(SHARD_13B)) == 2
    assert f"fetched again after a bad md5: {SHARD_13B}" in err
    assert_tree_matches(tmp_path, release)


def test_corrupted_file_on_disk_is_named_and_only_it_is_fetched_again(
    release: ReleaseServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert download(release.url(), tmp_path) == 0
    shard = tmp_path / SHARD_13B
    shard.write_bytes(b"\0" * 10 + shard.read_bytes()[10:])
    before = len(release.gets())
    capsys.readouterr()

    assert download(release.url(), tmp_path) == 0

    assert f"BAD: {SHARD_13B}: md5" in capsys.readouterr().err
    assert [r.path for r in release.gets()[before:]] == [SHARD_13B]
    assert_tree_matches(tmp_path, release)


def test_file_that_stays_corrupt_fails_with_its_name(
    release: ReleaseServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release.corrupt_once.add(SHARD)

    assert download(release.url(), tmp_path, "--checksum-retries", "0") == 6

    err = capsys.readouterr().err
    assert f"error: {SHARD} does not match llama-2-7b-chat/checklist.chk" in err
    assert "Traceback" not in err
    assert not (tmp_path / SHARD).exists()


def test_expired_link_403_explains_how_to_get_a_new_one(
    release: ReleaseServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release.forbidden = True

    assert download(release.url(), tmp_path) == 3

    err = capsys.readouterr().err
    assert "HTTP 403" in err and "expired" in err and "24 hours" in err and "new link" in err
    assert SIGNATURE not in err
    assert "Traceback" not in err


def test_model_not_on_the_server_is_a_404_explained(
    release: ReleaseServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "download",
        "--url",
        release.url(),
        "--models",
        "70B",
        "--out",
        str(tmp_path),
        "--progress",
        "off",
    ]
    assert run_download_command(build_parser().parse_args(argv)) == 3
    assert "llama-2-70b/checklist.chk: not found on the server (HTTP 404)" in capsys.readouterr().err


def test_link_shim_url_is_rejected_before_any_request(
    release: ReleaseServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shim = "https://l.facebook.com/l.php?u=https%3A%2F%2Fdownload.llamameta.net%2F*%3FPolicy%3Dx&h=AT0"

    assert download(shim, tmp_path / "out") == 2

    err = capsys.readouterr().err
    assert "l.facebook.com" in err and "copy it as text" in err
    assert "https://download.llamameta.net/*" in err  # the wrapped URL, recovered for the user
    assert release.requests == []
    assert not (tmp_path / "out").exists()


def test_url_without_star_is_rejected_before_any_request(
    release: ReleaseServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert download(release.url().replace("*", "tokenizer.model"), tmp_path) == 2

    assert "has no '*'" in capsys.readouterr().err
    assert release.requests == []


def test_url_cut_at_ampersand_by_the_shell_is_rejected(
    release: ReleaseServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert download(release.url().split("&")[0], tmp_path) == 2

    assert "single quotes" in capsys.readouterr().err
    assert release.requests == []


def test_not_enough_disk_space_is_refused_before_downloading(
    release: ReleaseServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[Path] = []

    def tiny_disk(path: Path) -> int:
        seen.append(path)
        return 100_000

    assert download(release.url(), tmp_path, free_bytes=tiny_disk) == 4

    err = capsys.readouterr().err
    assert "not enough disk space" in err and "--out" in err
    assert seen == [tmp_path]
    assert release.gets(content_only=True) == []  # only checklists and HEADs went out


def test_unreachable_server_is_a_network_failure_after_retries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/*?Policy=p&Signature=s&Key-Pair-Id=k"

    assert download(url, tmp_path, "--retries", "2") == 5

    err = capsys.readouterr().err
    assert "gave up after 2 attempts" in err and "run the same command again" in err
    assert "retrying in" in err


def test_verify_only_checks_disk_without_network(
    release: ReleaseServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert download(release.url(), tmp_path) == 0
    before = len(release.requests)
    argv = ["download", "--verify-only", "--models", ",".join(MODELS), "--out", str(tmp_path), "--rehash"]

    assert run_download_command(build_parser().parse_args(argv)) == 0
    (tmp_path / SHARD).unlink()
    assert run_download_command(build_parser().parse_args(argv)) == 6

    assert SHARD in capsys.readouterr().err
    assert len(release.requests) == before


def test_url_can_come_from_a_file_to_stay_out_of_ps(release: ReleaseServer, tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text(release.url() + "\n")
    argv = ["download", "--url-file", str(url_file), "--models", "7B-chat", "--out", str(tmp_path / "m")]

    assert run_download_command(build_parser().parse_args([*argv, "--progress", "off"])) == 0
    assert (tmp_path / "m/llama-2-7b-chat/consolidated.00.pth").is_file()


def test_unreadable_url_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["download", "--url-file", str(tmp_path / "nope"), "--models", "7B", "--out", str(tmp_path)]

    assert run_download_command(build_parser().parse_args(argv)) == 2
    assert "cannot read --url-file" in capsys.readouterr().err


def test_the_real_cli_process_exits_with_the_code_and_one_line_no_traceback(tmp_path: Path) -> None:
    shim = "https://l.facebook.com/l.php?u=https%3A%2F%2Fdownload.llamameta.net%2F*"
    argv = ["download", "--url", shim, "--models", "7B-chat", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "llamagate.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert done.stderr.startswith("llamagate download: error: this URL starts with l.facebook.com")
    assert len(done.stderr.strip().splitlines()) == 1


def test_error_page_saved_as_a_checklist_is_named_and_dropped(
    release: ReleaseServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release.files["llama-2-13b/checklist.chk"] = b"<html><body>Service Unavailable</body></html>"

    assert download(release.url(), tmp_path) == 6

    assert "llama-2-13b/checklist.chk is not an md5 checklist" in capsys.readouterr().err
    assert not (tmp_path / "llama-2-13b/checklist.chk").exists()  # so the next run fetches it again
