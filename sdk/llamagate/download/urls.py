"""The signed URL from the approval e-mail: catch the known copy-paste mistakes, then build file URLs.

Meta's URL looks like `https://download.llamameta.net/*?Policy=...&Signature=...&Key-Pair-Id=...`;
each file is fetched by putting its release path where the `*` is, as download.sh does.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

from llamagate.download.errors import UsageError

# Hosts of Facebook's link shim: clicking the link in the e-mail (or "copy link address") yields a
# redirect through these instead of the signed URL itself.
_LINK_SHIM_HOSTS = ("l.facebook.com", "lm.facebook.com", "l.messenger.com")


@dataclass(frozen=True)
class SignedUrl:
    template: str  # contains exactly one `*`

    def for_path(self, path: str) -> str:
        return self.template.replace("*", quote(path, safe="/"), 1)

    def redacted(self) -> str:
        """For logs: the query holds the signature, which is as good as a password until it expires."""
        return self.template.split("?", 1)[0] + ("?<signature>" if "?" in self.template else "")


def parse_signed_url(raw: str) -> SignedUrl:
    """Validate before any request is made; every rejection says how to fix it."""
    url = raw.strip().strip("'\"").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(
            f"the URL {url[:60]!r} is not an http(s) URL. Paste the download URL from the approval "
            "e-mail, in single quotes: --url 'https://download.llamameta.net/*?Policy=...'"
        )
    host = (parts.hostname or "").lower()
    if host in _LINK_SHIM_HOSTS:
        raise UsageError(_link_shim_message(parts.query))
    if "*" not in url:
        hint = ""
        if "%2a" in parts.path.lower():
            hint = " (it contains '%2A', an escaped '*': replace it with '*')"
        raise UsageError(
            "the URL has no '*'"
            + hint
            + ". The e-mail's URL contains a literal '*' that stands for each file's path, e.g. "
            "https://download.llamameta.net/*?Policy=...; copy the whole URL as text, unchanged."
        )
    if url.count("*") > 1:
        raise UsageError("the URL has more than one '*'; copy it from the e-mail again, unchanged")
    query = parse_qs(parts.query)
    if "Policy" in query and ("Signature" not in query or "Key-Pair-Id" not in query):
        raise UsageError(
            "the URL has a Policy but no Signature/Key-Pair-Id: the shell cut it at the first '&'. "
            "Put the URL in single quotes: --url 'https://...'"
        )
    return SignedUrl(template=url)


def _link_shim_message(query: str) -> str:
    message = (
        "this URL starts with l.facebook.com: it is Facebook's redirect wrapper, copied as a link "
        "from the e-mail, not the download URL. Select the URL text in the e-mail and copy it as "
        "text (it starts with https://download.llamameta.net/...)"
    )
    target = parse_qs(query).get("u", [""])[0]
    if target:
        message += f"; the wrapped URL appears to be: {target.split('?', 1)[0]}?..."
    return message + "."
