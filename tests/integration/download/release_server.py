"""A fake Meta download server on 127.0.0.1: a small release tree with real md5 checklists.

Behaves like the signed-URL CDN where it matters to the downloader: serves `/<release path>` only with
the signature in the query, honours `Range: bytes=N-` (206 + Content-Range), answers HEAD with
Content-Length. Tests make it misbehave on purpose: cut a connection mid-file, answer 403, serve a
corrupted copy. It records every request so tests can assert what was (not) fetched.
"""

from __future__ import annotations

import hashlib
import random
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from llamagate.download.release import LEGAL, model_group

SIGNATURE = "test-signature"
CHECKLISTS = ("tokenizer_checklist.chk", "checklist.chk")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int  # bytes of the file actually sent


def build_release(models: tuple[str, ...], shard_bytes: int = 300_000, seed: int = 0) -> dict[str, bytes]:
    """A release tree like Meta's (same paths), with small random files and matching checklists."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {name: f"fake {name}\n".encode() for name in LEGAL.files}
    files["tokenizer.model"] = rng.randbytes(50_000)
    files["tokenizer_checklist.chk"] = _checklist(files, ["tokenizer.model"], "")
    for model in models:
        group = model_group(model)
        for name in group.files:
            path = group.path(name)
            files[path] = b'{"dim": 64}\n' if name == "params.json" else rng.randbytes(shard_bytes)
        files[group.path("checklist.chk")] = _checklist(files, list(group.files), group.folder)
    return files


def _checklist(files: dict[str, bytes], names: list[str], folder: str) -> bytes:
    prefix = f"{folder}/" if folder else ""
    lines = [f"{hashlib.md5(files[prefix + n]).hexdigest()}  {n}\n" for n in names]
    return "".join(lines).encode()


@dataclass
class ReleaseServer:
    files: dict[str, bytes]
    port: int = 0
    forbidden: bool = False  # every request gets 403, like an expired link
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before cutting (once)
    cut_every: dict[str, int] = field(default_factory=dict)  # path -> most bytes any one response sends
    corrupt_once: set[str] = field(default_factory=set)  # paths served with flipped bytes (once)
    fail_once: dict[str, int] = field(default_factory=dict)  # path -> error status answered once
    head_allowed: bool = True  # False: HEAD gets 405, as on servers that only allow GET
    ignore_range: bool = False  # like a server without Range support: always 200 with the whole file
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/*?Policy=p&Signature={SIGNATURE}&Key-Pair-Id=k"

    def gets(self, path: str | None = None, content_only: bool = False) -> list[Request]:
        with self.lock:
            return [
                r
                for r in self.requests
                if r.method == "GET"
                and (path is None or r.path == path)
                and not (content_only and r.path.endswith(CHECKLISTS))
            ]

    def record(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)


def _handler(server: ReleaseServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

        def do_HEAD(self) -> None:
            if not server.head_allowed:
                return self._status(405, urlsplit(self.path).path.lstrip("/"), None, b"")
            self._serve(send_body=False)

        def do_GET(self) -> None:
            self._serve(send_body=True)

        def _serve(self, send_body: bool) -> None:
            parts = urlsplit(self.path)
            path = unquote(parts.path).lstrip("/")
            range_header = self.headers.get("Range")
            signed = parse_qs(parts.query).get("Signature") == [SIGNATURE]
            if server.forbidden or not signed:
                return self._status(403, path, range_header, b"<Error>AccessDenied</Error>")
            if path not in server.files:
                return self._status(404, path, range_header, b"<Error>NoSuchKey</Error>")
            body = server.files[path]
            with server.lock:
                status = server.fail_once.pop(path, None)
            if status is not None:
                return self._status(status, path, range_header, b"busy")
            if server.ignore_range:
                range_header = None
            with server.lock:
                if send_body and path in server.corrupt_once:
                    server.corrupt_once.discard(path)
                    body = bytes(b ^ 0xFF for b in body[:16]) + body[16:]
                cut = (server.cut_after.pop(path, None) or server.cut_every.get(path)) if send_body else None
            start = 0
            if range_header:
                start = int(range_header.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    server.record(Request(self.command, path, range_header, 416, 0))
                    return self.end_headers()
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            if cut is not None and cut >= len(payload):
                cut = None
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Accept-Ranges", "bytes")
            sent = 0
            if send_body:
                sent = len(payload) if cut is None else min(cut, len(payload))
            # Recorded before the client can see the response end, so tests never race the log.
            server.record(Request(self.command, path, range_header, 206 if range_header else 200, sent))
            self.end_headers()
            if send_body:
                self.wfile.write(payload[:sent])
                self.wfile.flush()
            if cut is not None:
                # Mid-file disconnect: FIN after the bytes sent so far, as a dropped CDN connection looks.
                self.connection.shutdown(socket.SHUT_WR)
                self.close_connection = True

        def _status(self, code: int, path: str, range_header: str | None, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            server.record(Request(self.command, path, range_header, code, 0))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # The downloader hangs up on purpose (a 403 body it does not need, siblings cancelled after a
        # failure); anything other than a dropped connection is still reported.
        if not isinstance(sys.exception(), ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextmanager
def serve(server: ReleaseServer) -> Iterator[ReleaseServer]:
    httpd = _QuietServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
