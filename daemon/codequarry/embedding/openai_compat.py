"""Embeddings from any OpenAI-compatible `/v1/embeddings` server (LM Studio, llama.cpp,
vLLM, TEI, Ollama's /v1, or OpenAI itself)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import httpx
import numpy as np

from codequarry.embedding.base import Vectors, check_shape, normalise, with_retries
from codequarry.errors import EmbedderUnavailable


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code in (408, 429)
    return isinstance(exc, httpx.TransportError)


class OpenAIEmbedder:
    model_version = "remote"

    def __init__(self, model: str, url: str, dims: int | None = None, api_key_env: str | None = None,
                 max_batch: int = 32, timeout: float = 60.0, retries: int = 3,
                 max_tokens: int = 512) -> None:
        self.model_name = model
        self.url = url.rstrip("/")
        self.dims = dims or 0
        self.max_batch = max_batch
        self.max_tokens = max_tokens
        self.retries = retries
        headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise EmbedderUnavailable(f"environment variable {api_key_env} (api_key_env) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(timeout=timeout, headers=headers)
        self.model_id = ""

    async def start(self) -> None:
        if not self.dims:
            self.dims = int((await self._embed(["dimension probe"])).shape[1])
        self.model_id = f"openai:{self.url}:{self.model_name}:{self.dims}"

    async def _embed(self, texts: list[str]) -> Vectors:
        async def call() -> httpx.Response:
            response = await self._client.post(f"{self.url}/embeddings",
                                               json={"model": self.model_name, "input": texts})
            response.raise_for_status()
            return response

        try:
            response = await with_retries(call, what=f"embeddings at {self.url}",
                                          retries=self.retries, is_transient=_transient)
            rows = sorted(response.json()["data"], key=lambda item: item["index"])
            return np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        except httpx.HTTPStatusError as exc:
            raise EmbedderUnavailable(
                f"embeddings at {self.url}: HTTP {exc.response.status_code}: {exc.response.text[:200]}"
            ) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise EmbedderUnavailable(f"embeddings at {self.url}: unexpected answer ({exc})") from None

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        out = []
        for start in range(0, len(texts), self.max_batch):
            part = list(texts[start : start + self.max_batch])
            vectors = await self._embed(part)
            out.append(check_shape(vectors, len(part), self.dims, f"model {self.model_name}"))
        return normalise(np.concatenate(out)) if out else np.zeros((0, self.dims), np.float32)

    async def embed_query(self, text: str) -> Vectors:
        return await self.embed_documents([text])

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return [len(text) // 4 + 1 for text in texts]

    async def aclose(self) -> None:
        await self._client.aclose()
