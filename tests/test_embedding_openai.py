"""The OpenAI-compatible embedder against a real local HTTP server speaking `/v1/embeddings`
(tests/ollama_standin.py), and `create_embedder` choosing the embedder from the config."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import pydantic
import pytest

from codequarry.config import EmbedderConfig
from codequarry.embedding import create_embedder
from codequarry.embedding.local import LocalEmbedder
from codequarry.embedding.ollama_embedder import OllamaEmbedder
from codequarry.embedding.openai_compat import OpenAIEmbedder
from codequarry.errors import EmbedderMismatch, EmbedderUnavailable

from .ollama_standin import OllamaStandIn, bag_of_words

TEXTS = ["def parse_config(path)", "retry with backoff", "class Shape", "area of a torus", "x"]
KEY_ENV = "CODEQUARRY_TEST_EMBEDDING_KEY"


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def posts(standin: OllamaStandIn) -> list[Any]:
    return [body for path, body in standin.requests if body is not None]


@pytest.fixture
def standin() -> Iterator[OllamaStandIn]:
    with OllamaStandIn(model="text-embedding-3-small", dims=768) as server:
        yield server


@pytest.fixture
async def make_embedder() -> AsyncIterator[Callable[..., Any]]:
    """Build embedders (directly or through create_embedder) that are closed after the test."""
    made: list[Any] = []

    def build(factory: Callable[..., Any] = OpenAIEmbedder, /, *args: Any, **kwargs: Any) -> Any:
        embedder = factory(*args, **kwargs)
        made.append(embedder)
        return embedder

    yield build
    for embedder in made:
        await embedder.aclose()


# --- success -------------------------------------------------------------------------------------


async def test_start_probes_dims_and_builds_model_id(
    standin: OllamaStandIn, make_embedder: Callable[..., Any]
) -> None:
    """Without configured dims, start() embeds one probe text to learn them; model_id names url,
    model and dims."""
    embedder = make_embedder(model="text-embedding-3-small", url=standin.url + "/v1")
    assert embedder.dims == 0
    await embedder.start()

    assert embedder.dims == 768
    assert embedder.model_id == f"openai:{standin.url}/v1:text-embedding-3-small:768"
    assert standin.requests == [
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["dimension probe"]})
    ]


async def test_configured_dims_skip_the_probe_and_trailing_slash_is_ignored(
    standin: OllamaStandIn, make_embedder: Callable[..., Any]
) -> None:
    """With dims configured, start() sends nothing; a URL ending in `/` reaches /v1/embeddings."""
    embedder = make_embedder(model="m", url=standin.url + "/v1/", dims=768)
    await embedder.start()
    assert standin.requests == []
    assert embedder.model_id == f"openai:{standin.url}/v1:m:768"

    await embedder.embed_documents(["x"])
    assert [path for path, _ in standin.requests] == ["/v1/embeddings"]


async def test_embed_documents_returns_unit_vectors_in_order_in_max_batch_requests(
    standin: OllamaStandIn, make_embedder: Callable[..., Any]
) -> None:
    """Texts go out in batches of max_batch, raw (no prefixes); rows come back normalised, in order."""
    embedder = make_embedder(model="m", url=standin.url + "/v1", dims=768, max_batch=2)
    vectors = await embedder.embed_documents(TEXTS)

    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS), 768)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert [body["input"] for body in posts(standin)] == [TEXTS[0:2], TEXTS[2:4], TEXTS[4:]]
    for row, text in enumerate(TEXTS):
        np.testing.assert_allclose(vectors[row], bag_of_words(text, 768), atol=1e-5)


async def test_rows_are_ordered_by_index_not_by_position_in_the_answer(
    standin: OllamaStandIn, make_embedder: Callable[..., Any]
) -> None:
    """A server listing `data` last-first still yields each text's own vector in its row."""
    standin.reverse_openai_data = True
    embedder = make_embedder(model="m", url=standin.url + "/v1", dims=768)
    vectors = await embedder.embed_documents(TEXTS)

    for row, text in enumerate(TEXTS):
        np.testing.assert_allclose(vectors[row], bag_of_words(text, 768), atol=1e-5)


async def test_embed_query_gives_one_row_and_empty_input_no_request(
    standin: OllamaStandIn, make_embedder: Callable[..., Any]
) -> None:
    """embed_query returns a (1, dims) vector of the raw query; no texts means no request."""
    embedder = make_embedder(model="m", url=standin.url + "/v1", dims=768)
    assert (await embedder.embed_documents([])).shape == (0, 768)
    assert standin.requests == []

    query = await embedder.embed_query("volume of a torus")
    assert query.shape == (1, 768)
    assert posts(standin) == [{"model": "m", "input": ["volume of a torus"]}]


async def test_api_key_is_sent_as_bearer_header(
    standin: OllamaStandIn, make_embedder: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key read from api_key_env goes in `Authorization: Bearer <key>` on every request."""
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    embedder = make_embedder(model="m", url=standin.url + "/v1", api_key_env=KEY_ENV)
    await embedder.start()
    await embedder.embed_documents(["x"])

    assert len(standin.request_headers) == 2
    assert all(h.get("authorization") == "Bearer sk-test-123" for h in standin.request_headers)


async def test_no_authorization_header_without_api_key_env(
    standin: OllamaStandIn, make_embedder: Callable[..., Any]
) -> None:
    """Without api_key_env, no Authorization header is sent."""
    embedder = make_embedder(model="m", url=standin.url + "/v1", dims=768)
    await embedder.embed_documents(["x"])
    assert len(standin.request_headers) == 1
    assert "authorization" not in standin.request_headers[0]


# --- failures ------------------------------------------------------------------------------------


def test_missing_api_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """api_key_env naming an unset variable fails at construction, naming the variable."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(EmbedderUnavailable, match=KEY_ENV):
        OpenAIEmbedder("m", "http://127.0.0.1:1/v1", api_key_env=KEY_ENV)


def test_empty_api_key_variable_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """An api key variable set to the empty string is refused like an unset one."""
    monkeypatch.setenv(KEY_ENV, "")
    with pytest.raises(EmbedderUnavailable, match=f"{KEY_ENV}.*not set"):
        OpenAIEmbedder("m", "http://127.0.0.1:1/v1", api_key_env=KEY_ENV)


async def test_http_500_is_retried_then_unavailable(
    standin: OllamaStandIn, make_embedder: Callable[..., Any]
) -> None:
    """A 500 answer is retried (retries+1 attempts), then EmbedderUnavailable naming the URL and 500."""
    standin.mode = "error500"
    embedder = make_embedder(model="m", url=standin.url + "/v1", dims=768, retries=1)
    with pytest.raises(EmbedderUnavailable) as caught:
        await embedder.embed_documents(["x"])
    assert len(posts(standin)) == 2
    assert "500" in str(caught.value)
    assert f"{standin.url}/v1" in str(caught.value)


async def test_http_404_is_not_retried_and_reports_the_status(
    standin: OllamaStandIn, make_embedder: Callable[..., Any]
) -> None:
    """A 4xx answer (wrong base URL) is not transient: one attempt, EmbedderUnavailable with HTTP 404."""
    embedder = make_embedder(model="m", url=standin.url + "/wrong", retries=3)
    with pytest.raises(EmbedderUnavailable, match=r"HTTP 404.*not found"):
        await embedder.start()
    assert len(posts(standin)) == 1


async def test_wrong_dims_raise_mismatch_naming_expected_and_actual(
    standin: OllamaStandIn, make_embedder: Callable[..., Any]
) -> None:
    """Vectors of another size than configured raise EmbedderMismatch naming both sizes."""
    standin.mode = "wrong_dims"
    embedder = make_embedder(model="text-embedding-3-small", url=standin.url + "/v1", dims=768)
    with pytest.raises(EmbedderMismatch) as caught:
        await embedder.embed_documents(["x"])
    message = str(caught.value)
    assert "771-dimensional" in message
    assert "expected 768" in message
    assert "text-embedding-3-small" in message


async def test_connection_refused_is_unavailable(make_embedder: Callable[..., Any]) -> None:
    """No server at the URL: EmbedderUnavailable naming the URL."""
    url = closed_port_url()
    embedder = make_embedder(model="m", url=url, retries=0)
    with pytest.raises(EmbedderUnavailable) as caught:
        await embedder.start()
    assert url in str(caught.value)


async def test_slow_server_times_out_quickly_as_unavailable(
    standin: OllamaStandIn, make_embedder: Callable[..., Any]
) -> None:
    """A server slower than the timeout gives EmbedderUnavailable after about the timeout."""
    standin.mode, standin.delay = "slow", 3.0
    embedder = make_embedder(model="m", url=standin.url + "/v1", dims=768, timeout=0.3, retries=0)
    started = time.monotonic()
    with pytest.raises(EmbedderUnavailable, match="Timeout"):
        await embedder.embed_documents(["x"])
    assert time.monotonic() - started < 2.0


# --- create_embedder -----------------------------------------------------------------------------


def test_create_embedder_local_is_the_default() -> None:
    """The default config builds the local ONNX embedder with the configured batch and threads."""
    default = create_embedder(EmbedderConfig())
    assert isinstance(default, LocalEmbedder)
    assert default.max_batch == 32

    tuned = create_embedder(EmbedderConfig(kind="local", batch_size=8, threads=1))
    assert isinstance(tuned, LocalEmbedder)
    assert (tuned.max_batch, tuned.threads) == (8, 1)


async def test_create_embedder_ollama_defaults(make_embedder: Callable[..., Any]) -> None:
    """kind = "ollama" with nothing else means nomic-embed-text (768 dims) on localhost:11434."""
    embedder = make_embedder(create_embedder, EmbedderConfig(kind="ollama"))
    assert isinstance(embedder, OllamaEmbedder)
    assert (embedder.model_name, embedder.dims) == ("nomic-embed-text", 768)
    assert embedder.url == "http://localhost:11434"
    assert embedder.max_batch == 32


async def test_create_embedder_ollama_passes_every_setting(make_embedder: Callable[..., Any]) -> None:
    """url, model, dims, batch_size, timeout_seconds and max_retries all reach the Ollama embedder."""
    with OllamaStandIn(model="my-embedder", dims=100) as server:
        config = EmbedderConfig(kind="ollama", url=server.url, model="my-embedder", dims=100,
                                batch_size=2, timeout_seconds=0.3, max_retries=0)
        embedder = make_embedder(create_embedder, config)
        assert isinstance(embedder, OllamaEmbedder)
        await embedder.start()
        assert embedder.model_id.startswith("ollama:my-embedder@")
        assert embedder.model_id.endswith(":100")

        await embedder.embed_documents(["a", "b", "c"])
        assert [len(body["input"]) for body in posts(server)] == [2, 1]  # batch_size

        server.mode = "error500"
        with pytest.raises(EmbedderUnavailable):
            await embedder.embed_documents(["d"])
        assert len(posts(server)) == 3  # max_retries = 0: one attempt

        server.mode, server.delay = "slow", 3.0
        started = time.monotonic()
        with pytest.raises(EmbedderUnavailable, match="Timeout"):
            await embedder.embed_documents(["e"])
        assert time.monotonic() - started < 2.0  # timeout_seconds


async def test_create_embedder_openai_passes_every_setting(
    standin: OllamaStandIn, make_embedder: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """url, model, dims, api_key_env, batch_size and max_retries all reach the OpenAI embedder."""
    monkeypatch.setenv(KEY_ENV, "sk-config")
    config = EmbedderConfig(kind="openai", url=standin.url + "/v1", model="text-embedding-3-small",
                            dims=768, api_key_env=KEY_ENV, batch_size=2, max_retries=0)
    embedder = make_embedder(create_embedder, config)
    assert isinstance(embedder, OpenAIEmbedder)
    await embedder.start()
    assert embedder.model_id == f"openai:{standin.url}/v1:text-embedding-3-small:768"

    await embedder.embed_documents(["a", "b", "c"])
    assert [len(body["input"]) for body in posts(standin)] == [2, 1]
    assert all(h.get("authorization") == "Bearer sk-config" for h in standin.request_headers)

    standin.mode = "error500"
    with pytest.raises(EmbedderUnavailable):
        await embedder.embed_documents(["d"])
    assert len(posts(standin)) == 3


def test_openai_config_without_url_is_rejected() -> None:
    """kind = "openai" needs both url and model: the config refuses it before any embedder exists."""
    with pytest.raises(pydantic.ValidationError, match="needs both url and model"):
        EmbedderConfig(kind="openai", model="m")
