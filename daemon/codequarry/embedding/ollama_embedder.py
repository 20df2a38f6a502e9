"""Embeddings from an Ollama server (`/api/embed`, batched), default `nomic-embed-text`."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import numpy as np
import ollama

from codequarry.embedding.base import Vectors, check_shape, normalise, with_retries
from codequarry.errors import EmbedderUnavailable

DEFAULT_URL = "http://localhost:11434"
DEFAULT_MODEL = "nomic-embed-text"
KNOWN_DIMS = {"nomic-embed-text": 768, "mxbai-embed-large": 1024, "all-minilm": 384,
              "snowflake-arctic-embed": 1024, "bge-m3": 1024}
KNOWN_CONTEXT = {"nomic-embed-text": 2048, "mxbai-embed-large": 512, "all-minilm": 256}
# nomic-embed models are trained with task prefixes; others take raw text
PREFIXES = {"nomic-embed-text": ("search_document: ", "search_query: ")}


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ollama.ResponseError):
        return exc.status_code >= 500 or exc.status_code in (408, 429)
    return isinstance(exc, ConnectionError | httpx.TransportError)


class OllamaEmbedder:
    def __init__(self, model: str | None = None, url: str | None = None, dims: int | None = None,
                 max_batch: int = 32, timeout: float = 60.0, retries: int = 3) -> None:
        self.model_name = model or DEFAULT_MODEL
        base = self.model_name.split(":")[0]
        self.url = url or DEFAULT_URL
        self.dims = dims or KNOWN_DIMS.get(base, 0)
        self.max_batch = max_batch
        self.max_tokens = KNOWN_CONTEXT.get(base, 512)
        self.retries = retries
        self.model_version = "unknown"
        self._prefixes = PREFIXES.get(base, ("", ""))
        self._client = ollama.AsyncClient(host=self.url, timeout=timeout)
        self.model_id = ""

    async def start(self) -> None:
        """Learn the model's digest (part of the cache key) and, if unknown, its dims."""
        try:
            listing = await with_retries(self._client.list, what=self._where("list models"),
                                         retries=self.retries, is_transient=_transient)
        except ollama.ResponseError as exc:
            raise EmbedderUnavailable(f"{self._where('list models')}: {exc.error}") from None
        wanted = {self.model_name, f"{self.model_name}:latest"}
        digest = next((m.digest for m in listing.models if m.model in wanted and m.digest), None)
        if digest is None:
            raise EmbedderUnavailable(
                f"{self._where('')} has no model {self.model_name!r}; run: ollama pull {self.model_name}")
        self.model_version = digest[:12]
        if not self.dims:
            self.dims = int((await self._embed(["dimension probe"])).shape[1])
        self.model_id = f"ollama:{self.model_name}@{self.model_version}:{self.dims}"

    def _where(self, action: str) -> str:
        return f"ollama at {self.url}" + (f" ({action})" if action else "")

    async def _embed(self, texts: list[str]) -> Vectors:
        async def call() -> ollama.EmbedResponse:
            return await self._client.embed(model=self.model_name, input=texts, truncate=True)

        try:
            response = await with_retries(call, what=self._where("embed"), retries=self.retries,
                                          is_transient=_transient)
        except ollama.ResponseError as exc:
            raise EmbedderUnavailable(
                f"{self._where('embed')}: HTTP {exc.status_code}: {exc.error}") from None
        return np.asarray(response.embeddings, dtype=np.float32).reshape(len(response.embeddings), -1)

    async def _embed_checked(self, texts: list[str]) -> Vectors:
        out = []
        for start in range(0, len(texts), self.max_batch):
            part = texts[start : start + self.max_batch]
            vectors = await self._embed(part)
            out.append(check_shape(vectors, len(part), self.dims, f"ollama model {self.model_name}"))
        return normalise(np.concatenate(out)) if out else np.zeros((0, self.dims), np.float32)

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return await self._embed_checked([self._prefixes[0] + t for t in texts])

    async def embed_query(self, text: str) -> Vectors:
        return await self._embed_checked([self._prefixes[1] + text])

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return [len(text) // 4 + 1 for text in texts]

    async def aclose(self) -> None:
        await self._client.close()  # type: ignore[no-untyped-call]
