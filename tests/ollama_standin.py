"""A small real HTTP server that speaks the part of Ollama's API codequarry uses
(`GET /api/tags`, `POST /api/embed`) and of the OpenAI-compatible API
(`POST /v1/embeddings`). Ollama itself cannot run here; this is the network peer.

Vectors are deterministic bags of hashed words, so texts sharing words are close.
Set `mode` to make it fail: "error500", "slow" (answers after `delay` seconds),
"wrong_dims", or "ok". `request_headers` holds each request's headers (lower-cased
names), parallel to `requests`; set `reverse_openai_data` to list /v1/embeddings `data`
items last-first (each keeps its `index`), as a server is free to do.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


def bag_of_words(text: str, dims: int) -> list[float]:
    vector = [0.0] * dims
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vector[int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little") % dims] += 1
    vector[0] += 1e-3
    norm = sum(v * v for v in vector) ** 0.5
    return [v / norm for v in vector]


class OllamaStandIn:
    def __init__(self, model: str = "nomic-embed-text", dims: int = 768) -> None:
        self.model = model
        self.dims = dims
        self.mode = "ok"
        self.delay = 5.0
        self.requests: list[tuple[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.reverse_openai_data = False
        self.embedded = 0
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                standin.request_headers.append({k.lower(): v for k, v in self.headers.items()})
                standin.requests.append((self.path, None))
                if self.path == "/api/tags":
                    self._reply(200, {"models": [{
                        "name": f"{standin.model}:latest", "model": f"{standin.model}:latest",
                        "modified_at": "2026-01-01T00:00:00Z", "size": 1,
                        "digest": hashlib.sha256(standin.model.encode()).hexdigest(),
                        "details": {}}]})
                else:
                    self._reply(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                standin.request_headers.append({k.lower(): v for k, v in self.headers.items()})
                standin.requests.append((self.path, body))
                if standin.mode == "error500":
                    self._reply(500, {"error": "model runner crashed"})
                    return
                if standin.mode == "slow":
                    time.sleep(standin.delay)
                texts = body.get("input", [])
                texts = [texts] if isinstance(texts, str) else texts
                dims = standin.dims + (3 if standin.mode == "wrong_dims" else 0)
                vectors = [bag_of_words(t, dims) for t in texts]
                standin.embedded += len(texts)
                if self.path == "/api/embed":
                    if body.get("model", "").split(":")[0] != standin.model:
                        self._reply(404, {"error": f"model '{body.get('model')}' not found"})
                        return
                    self._reply(200, {"model": standin.model, "embeddings": vectors})
                elif self.path == "/v1/embeddings":
                    data = [{"object": "embedding", "index": i, "embedding": v}
                            for i, v in enumerate(vectors)]
                    if standin.reverse_openai_data:
                        data.reverse()
                    self._reply(200, {"object": "list", "model": body.get("model"), "data": data})
                else:
                    self._reply(404, {"error": "not found"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> OllamaStandIn:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
