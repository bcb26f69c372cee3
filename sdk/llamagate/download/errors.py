"""What can go wrong, each with the exit code a script or a Kubernetes Job can act on.

Codes 2-4 and 7 mean "a person must change something" (retrying will not help); 5 and 6 mean
"the network or the server misbehaved" (retrying later may help). docs/download.md lists them.
"""

from __future__ import annotations


class DownloadError(Exception):
    """Base class: `str(error)` is the whole message shown to the user, fix included."""

    exit_code = 1


class UsageError(DownloadError):
    """The command line is wrong: a malformed URL, an unknown model name, a bad flag value."""

    exit_code = 2


class LinkRejected(DownloadError):
    """The server refused the signed URL (403/404): it expired, or it does not cover that file."""

    exit_code = 3


class NotEnoughSpace(DownloadError):
    exit_code = 4


class NetworkFailure(DownloadError):
    """Transient errors that did not clear up within the retry budget."""

    exit_code = 5


class ChecksumFailure(DownloadError):
    """A file still does not match its md5 checklist after being fetched again."""

    exit_code = 6


class CheckpointInvalid(DownloadError):
    """A Hugging Face directory on disk is incomplete or does not match its config."""

    exit_code = 7
