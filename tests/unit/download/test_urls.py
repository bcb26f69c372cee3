from __future__ import annotations

import pytest

from llamagate.download.errors import UsageError
from llamagate.download.urls import parse_signed_url

GOOD = "https://download.llamameta.net/*?Policy=eyJ&Signature=abc~d&Key-Pair-Id=K15&Download-Request-ID=1"


def test_file_path_replaces_the_star_and_keeps_the_signature() -> None:
    url = parse_signed_url(GOOD)
    assert url.for_path("llama-2-7b-chat/consolidated.00.pth") == GOOD.replace(
        "*", "llama-2-7b-chat/consolidated.00.pth"
    )


def test_paths_are_percent_encoded_but_slashes_kept() -> None:
    assert (
        parse_signed_url(GOOD).for_path("a b/c.pth").startswith("https://download.llamameta.net/a%20b/c.pth?")
    )


def test_surrounding_whitespace_and_quotes_from_copy_paste_are_ignored() -> None:
    assert parse_signed_url(f"  '{GOOD}'\n").template == GOOD


def test_redacted_form_hides_the_signature() -> None:
    redacted = parse_signed_url(GOOD).redacted()
    assert "Signature" not in redacted and redacted.startswith("https://download.llamameta.net/*")


@pytest.mark.parametrize("host", ["l.facebook.com", "lm.facebook.com"])
def test_facebook_link_shim_is_rejected_with_the_fix(host: str) -> None:
    with pytest.raises(UsageError, match="copy it as text") as raised:
        parse_signed_url(f"https://{host}/l.php?u=https%3A%2F%2Fdownload.llamameta.net%2F*%3FPolicy%3Dx&h=A")
    assert "https://download.llamameta.net/*?..." in str(raised.value)


def test_missing_star_is_rejected() -> None:
    with pytest.raises(UsageError, match=r"no '\*'"):
        parse_signed_url(GOOD.replace("*", "llama-2-7b/params.json"))


def test_escaped_star_gets_a_specific_hint() -> None:
    with pytest.raises(UsageError, match="%2A"):
        parse_signed_url(GOOD.replace("*", "%2A"))


def test_two_stars_are_rejected() -> None:
    with pytest.raises(UsageError, match="more than one"):
        parse_signed_url(GOOD.replace("*", "*/*"))


@pytest.mark.parametrize("raw", ["", "download.llamameta.net/*?Policy=x", "ftp://host/*"])
def test_not_an_http_url_is_rejected(raw: str) -> None:
    with pytest.raises(UsageError, match="not an http"):
        parse_signed_url(raw)


def test_url_truncated_at_ampersand_by_an_unquoted_shell_argument_is_rejected() -> None:
    with pytest.raises(UsageError, match="single quotes"):
        parse_signed_url(GOOD.split("&")[0])
