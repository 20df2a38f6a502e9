"""Embedders behind one protocol; `create_embedder` builds the configured one."""

from __future__ import annotations

from codequarry.config import EmbedderConfig
from codequarry.embedding.base import Embedder, Vectors

__all__ = ["Embedder", "Vectors", "create_embedder"]


def create_embedder(config: EmbedderConfig) -> Embedder:
    if config.kind == "ollama":
        from codequarry.embedding.ollama_embedder import OllamaEmbedder

        return OllamaEmbedder(config.model, config.url, config.dims, config.batch_size,
                              config.timeout_seconds, config.max_retries)
    if config.kind == "openai":
        from codequarry.embedding.openai_compat import OpenAIEmbedder

        assert config.model is not None  # both enforced by EmbedderConfig
        assert config.url is not None
        return OpenAIEmbedder(config.model, config.url, config.dims, config.api_key_env,
                              config.batch_size, config.timeout_seconds, config.max_retries)
    from codequarry.embedding.local import LocalEmbedder

    return LocalEmbedder(max_batch=config.batch_size, threads=config.threads)
