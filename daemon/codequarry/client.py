"""A small client for the daemon's JSON API on its unix socket (stdlib only, so a CLI
search that asks the daemon starts fast)."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

from codequarry.errors import CodequarryError, DaemonNotRunning, UsageError

CWD_HEADER = "x-codequarry-cwd"  # set by the stdio bridge: the client's working directory


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


class DaemonClient:
    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def running(self) -> bool:
        try:
            self.get("/api/health", timeout=2.0)
            return True
        except DaemonNotRunning:
            return False

    def get(self, path: str, timeout: float | None = None) -> Any:
        return self._request("GET", path, None, timeout)

    def post(self, path: str, body: dict[str, Any], timeout: float | None = None) -> Any:
        return self._request("POST", path, body, timeout)

    def _request(self, method: str, path: str, body: dict[str, Any] | None, timeout: float | None) -> Any:
        if not self.socket_path.exists():
            raise DaemonNotRunning(f"no daemon socket at {self.socket_path}")
        connection = _UnixConnection(self.socket_path, timeout or self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            data = json.loads(response.read() or b"null")
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            raise DaemonNotRunning(
                f"the daemon does not answer on {self.socket_path} ({exc.strerror})") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise CodequarryError(f"talking to the daemon failed: {exc}") from None
        finally:
            connection.close()
        if response.status >= 400:
            message = data.get("error", f"HTTP {response.status}") if isinstance(data, dict) else str(data)
            error = UsageError(message) if response.status in (400, 404) else CodequarryError(message)
            raise error
        return data
