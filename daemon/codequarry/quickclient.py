"""One HTTP/1.1 request to the daemon's unix socket with nothing but `socket` and `json`.

`codequarry.client.DaemonClient` uses http.client, whose import (email parsing, ssl) costs
more than the whole search a thin `codequarry search` asks for; this is the fast path's
transport. The daemon (uvicorn) answers a `Connection: close` request with a
Content-Length or chunked body, both read here.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from codequarry.errors import CodequarryError, DaemonNotRunning, UsageError

_MAX_HEADER_BYTES = 64 * 1024


def request(socket_path: str, method: str, path: str, body: dict[str, Any] | None = None,
            timeout: float = 30.0) -> Any:
    """Send one request, return the decoded JSON answer.

    Raises DaemonNotRunning when nothing listens on `socket_path`, UsageError for a 400/404
    answer, CodequarryError for any other error status or a broken exchange (the same
    mapping as DaemonClient).
    """
    payload = json.dumps(body).encode() if body is not None else b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path)
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            raise DaemonNotRunning(f"the daemon does not answer on {socket_path} ({exc.strerror})") from None
        try:
            sock.sendall(head + payload)
            status, raw = _read_response(sock)
            data = json.loads(raw or b"null")
        except (OSError, ValueError) as exc:
            raise CodequarryError(f"talking to the daemon failed: {exc}") from None
    finally:
        sock.close()
    if status >= 400:
        message = data.get("error", f"HTTP {status}") if isinstance(data, dict) else str(data)
        raise UsageError(message) if status in (400, 404) else CodequarryError(message)
    return data


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """(status, body) of the answer; ValueError when it is not HTTP/1.x."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        part = sock.recv(65536)
        if not part or len(buffer) > _MAX_HEADER_BYTES:
            raise ValueError("the answer ended before its headers")
        buffer += part
    header_blob, _, rest = buffer.partition(b"\r\n\r\n")
    lines = header_blob.decode("latin-1").split("\r\n")
    version, _, tail = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP answer: {lines[0][:60]!r}")
    status = int(tail.split(" ", 1)[0])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, _dechunk(sock, rest)
    length = headers.get("content-length")
    chunks = [rest]
    received = len(rest)
    while length is None or received < int(length):
        part = sock.recv(65536)
        if not part:
            if length is not None:
                raise ValueError("the answer ended early")
            break
        chunks.append(part)
        received += len(part)
    return status, b"".join(chunks)


def _dechunk(sock: socket.socket, data: bytes) -> bytes:
    body: list[bytes] = []
    while True:
        while b"\r\n" not in data:
            data += _recv(sock)
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        while len(data) < size + 2:
            data += _recv(sock)
        if size == 0:
            return b"".join(body)
        body.append(data[:size])
        data = data[size + 2:]


def _recv(sock: socket.socket) -> bytes:
    part = sock.recv(65536)
    if not part:
        raise ValueError("the answer ended early")
    return part
