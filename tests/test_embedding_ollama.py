"""The Ollama embedder against a real local HTTP server speaking Ollama's API
(tests/ollama_standin.py), and the retry policy every remote embedder shares (base.py)."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import numpy as np
import pytest
from structlog.testing import capture_logs

from codequarry.embedding.base import check_shape, describe, normalise, with_retries
from codequarry.embedding.ollama_embedder import OllamaEmbedder
from codequarry.errors import EmbedderMismatch, EmbedderUnavailable

from .ollama_standin import OllamaStandIn, bag_of_words

TEXTS = ["def parse_config(path)", "retry with backoff", "class Shape", "area of a torus", "x"]


class FlakyStandIn(OllamaStandIn):
    """Answers the first `fail_first` POST requests with HTTP 500, then behaves as `mode` says.

    The handler reads `mode` after recording the request, so the decision depends only on
    how many POSTs arrived before: deterministic, no timers.
    """

    def __init__(self, fail_first: int, **kwargs: Any) -> None:
        self.fail_first = fail_first
        super().__init__(**kwargs)

    @property
    def mode(self) -> str:
        posts = sum(1 for _, body in self.requests if body is not None)
        return "error500" if posts <= self.fail_first else self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = value


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def posts(standin: OllamaStandIn, path: str = "/api/embed") -> list[Any]:
    return [body for p, body in standin.requests if p == path and body is not None]


@pytest.fixture
def standin() -> Iterator[OllamaStandIn]:
    with OllamaStandIn() as server:
        yield server


@pytest.fixture
async def make_embedder() -> AsyncIterator[Callable[..., OllamaEmbedder]]:
    """Build OllamaEmbedders that are closed after the test."""
    made: list[OllamaEmbedder] = []

    def build(**kwargs: Any) -> OllamaEmbedder:
        embedder = OllamaEmbedder(**kwargs)
        made.append(embedder)
        return embedder

    yield build
    for embedder in made:
        await embedder.aclose()


# --- success -------------------------------------------------------------------------------------


async def test_start_learns_digest_and_builds_model_id_without_probing_known_dims(
    standin: OllamaStandIn, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    """start() takes the model's digest from /api/tags as model_version; known dims need no probe."""
    embedder = make_embedder(url=standin.url)
    await embedder.start()

    digest = hashlib.sha256(b"nomic-embed-text").hexdigest()
    assert embedder.model_name == "nomic-embed-text"
    assert embedder.model_version == digest[:12]
    assert embedder.dims == 768
    assert embedder.model_id == f"ollama:nomic-embed-text@{digest[:12]}:768"
    assert embedder.max_tokens == 2048
    assert [path for path, _ in standin.requests] == ["/api/tags"]


async def test_model_named_with_latest_tag_is_found(
    standin: OllamaStandIn, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    """`nomic-embed-text:latest` matches the server's model and keeps the nomic prefixes."""
    embedder = make_embedder(model="nomic-embed-text:latest", url=standin.url)
    await embedder.start()
    await embedder.embed_documents(["hello"])

    assert embedder.model_id.startswith("ollama:nomic-embed-text:latest@")
    assert posts(standin)[0]["input"] == ["search_document: hello"]


async def test_embed_documents_returns_unit_vectors_in_order_in_max_batch_requests(
    standin: OllamaStandIn, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    """Documents are sent in batches of max_batch; rows come back normalised, in input order."""
    embedder = make_embedder(url=standin.url, max_batch=2)
    await embedder.start()
    vectors = await embedder.embed_documents(TEXTS)

    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS), 768)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sent = posts(standin)
    assert [len(body["input"]) for body in sent] == [2, 2, 1]
    assert all(body["model"] == "nomic-embed-text" for body in sent)
    for row, text in enumerate(TEXTS):
        expected = np.asarray(bag_of_words("search_document: " + text, 768), dtype=np.float32)
        np.testing.assert_allclose(vectors[row], expected, atol=1e-5)


async def test_nomic_gets_search_document_and_search_query_prefixes(
    standin: OllamaStandIn, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    """nomic-embed-text is sent `search_document: ` before chunks and `search_query: ` before queries."""
    embedder = make_embedder(url=standin.url)
    await embedder.start()
    await embedder.embed_documents(["def torus_volume()"])
    query = await embedder.embed_query("volume of a torus")

    assert query.shape == (1, 768)
    assert [body["input"] for body in posts(standin)] == [
        ["search_document: def torus_volume()"],
        ["search_query: volume of a torus"],
    ]


async def test_models_without_task_prefixes_get_raw_text(
    make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    """Other models (all-minilm, 384 dims) receive the texts unchanged."""
    with OllamaStandIn(model="all-minilm", dims=384) as server:
        embedder = make_embedder(model="all-minilm", url=server.url)
        await embedder.start()
        documents = await embedder.embed_documents(["def f()"])
        query = await embedder.embed_query("find f")

        assert (documents.shape, query.shape) == ((1, 384), (1, 384))
        assert [body["input"] for body in posts(server)] == [["def f()"], ["find f"]]


async def test_empty_input_gives_zero_rows_without_a_request(
    standin: OllamaStandIn, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    """Embedding no texts returns a (0, dims) array and asks the server nothing."""
    embedder = make_embedder(url=standin.url)
    vectors = await embedder.embed_documents([])
    assert vectors.shape == (0, 768)
    assert standin.requests == []


async def test_unknown_model_dims_are_probed_at_start(
    make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    """A model missing from the known table, with no dims configured, is probed once for its dims."""
    with OllamaStandIn(model="my-embedder", dims=100) as server:
        embedder = make_embedder(model="my-embedder", url=server.url)
        assert embedder.dims == 0
        await embedder.start()

        assert embedder.dims == 100
        assert embedder.model_id.endswith(":100")
        assert [body["input"] for body in posts(server)] == [["dimension probe"]]
        assert (await embedder.embed_documents(["a", "b"])).shape == (2, 100)


async def test_configured_dims_are_used_instead_of_a_probe(
    make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    """dims given in the config are trusted: start() sends no embedding request."""
    with OllamaStandIn(model="my-embedder", dims=100) as server:
        embedder = make_embedder(model="my-embedder", url=server.url, dims=100)
        await embedder.start()
        assert embedder.dims == 100
        assert posts(server) == []


# --- failures ------------------------------------------------------------------------------------


async def test_model_missing_on_the_server_tells_the_user_to_ollama_pull(
    standin: OllamaStandIn, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    """A model the server does not have fails start() with the `ollama pull` command to run."""
    embedder = make_embedder(model="mxbai-embed-large", url=standin.url)
    with pytest.raises(EmbedderUnavailable) as caught:
        await embedder.start()
    assert "ollama pull mxbai-embed-large" in str(caught.value)
    assert standin.url in str(caught.value)


async def test_embedding_with_a_model_the_server_lacks_is_not_retried(
    standin: OllamaStandIn, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    """HTTP 404 from /api/embed is not transient: one attempt, then EmbedderUnavailable naming 404."""
    embedder = make_embedder(model="mxbai-embed-large", url=standin.url, retries=3)
    with pytest.raises(EmbedderUnavailable, match=r"HTTP 404.*mxbai-embed-large"):
        await embedder.embed_documents(["x"])
    assert len(posts(standin)) == 1


async def test_http_500_is_retried_with_backoff_then_unavailable(
    standin: OllamaStandIn, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    """A server answering 500 is asked retries+1 times, with a pause, then EmbedderUnavailable."""
    embedder = make_embedder(url=standin.url, retries=1)
    await embedder.start()
    standin.mode = "error500"

    started = time.monotonic()
    with pytest.raises(EmbedderUnavailable) as caught:
        await embedder.embed_documents(["x"])
    elapsed = time.monotonic() - started

    assert len(posts(standin)) == 2
    assert elapsed >= 0.25  # base_delay 0.5 s with jitter factor >= 0.5
    assert "model runner crashed" in str(caught.value)
    assert "500" in str(caught.value)
    assert standin.url in str(caught.value)


async def test_recovers_when_a_500_is_followed_by_success(
    make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    """One 500 then a healthy answer: the retry succeeds and the caller never sees the error."""
    with FlakyStandIn(fail_first=1) as server:
        embedder = make_embedder(url=server.url, retries=2)
        await embedder.start()
        vectors = await embedder.embed_documents(["retry me"])

        assert vectors.shape == (1, 768)
        expected = np.asarray(bag_of_words("search_document: retry me", 768), dtype=np.float32)
        np.testing.assert_allclose(vectors[0], expected, atol=1e-5)
        assert len(posts(server)) == 2


async def test_slow_server_times_out_quickly_as_unavailable(
    standin: OllamaStandIn, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    """A server slower than the timeout gives EmbedderUnavailable after about the timeout."""
    embedder = make_embedder(url=standin.url, timeout=0.3, retries=0)
    await embedder.start()
    standin.mode, standin.delay = "slow", 3.0

    started = time.monotonic()
    with pytest.raises(EmbedderUnavailable, match="Timeout"):
        await embedder.embed_documents(["x"])
    assert time.monotonic() - started < 2.0


async def test_wrong_dims_raise_mismatch_naming_expected_and_actual(
    standin: OllamaStandIn, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    """Vectors of another size than configured raise EmbedderMismatch naming both sizes."""
    embedder = make_embedder(url=standin.url)
    await embedder.start()
    standin.mode = "wrong_dims"
    with pytest.raises(EmbedderMismatch) as caught:
        await embedder.embed_documents(["x"])
    message = str(caught.value)
    assert "771-dimensional" in message
    assert "expected 768" in message
    assert "nomic-embed-text" in message


async def test_connection_refused_is_unavailable(make_embedder: Callable[..., OllamaEmbedder]) -> None:
    """No server at the URL: start() and embedding both raise EmbedderUnavailable naming the URL."""
    url = closed_port_url()
    embedder = make_embedder(url=url, retries=0)
    with pytest.raises(EmbedderUnavailable, match="list models") as caught:
        await embedder.start()
    assert url in str(caught.value)
    with pytest.raises(EmbedderUnavailable, match="embed"):
        await embedder.embed_documents(["x"])


# --- the shared retry policy (base.py) -----------------------------------------------------------


class Flaky:
    """An async callable that raises `errors` in turn, then returns "done"; counts calls."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def transient(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError)


async def test_with_retries_retries_transient_failures_until_success() -> None:
    """Transient failures are retried; the eventual result is returned."""
    call = Flaky(ConnectionError("a"), ConnectionError("b"))
    assert await with_retries(call, what="op", retries=2, is_transient=transient, base_delay=0.01) == "done"
    assert call.calls == 3


async def test_with_retries_gives_up_after_retries_plus_one_attempts() -> None:
    """Persistent transient failures: retries+1 attempts, then EmbedderUnavailable chained to the last."""
    last = ConnectionError("refused\nsecond line")
    call = Flaky(ConnectionError("first"), ConnectionError("second"), last, ConnectionError("unused"))
    with pytest.raises(EmbedderUnavailable) as caught:
        await with_retries(call, what="ollama at x", retries=2, is_transient=transient, base_delay=0.01)
    assert call.calls == 3
    assert str(caught.value) == "ollama at x: ConnectionError: refused"
    assert caught.value.__cause__ is last


async def test_with_retries_zero_retries_means_one_attempt() -> None:
    """retries=0: a transient failure is reported after a single attempt."""
    call = Flaky(ConnectionError("down"))
    with pytest.raises(EmbedderUnavailable):
        await with_retries(call, what="op", retries=0, is_transient=transient, base_delay=0.01)
    assert call.calls == 1


async def test_with_retries_raises_non_transient_errors_at_once_unchanged() -> None:
    """A non-transient error is re-raised as is after one attempt, whatever the retry budget."""
    error = ValueError("bad request")
    call = Flaky(error)
    with pytest.raises(ValueError, match="bad request") as caught:
        await with_retries(call, what="op", retries=5, is_transient=transient, base_delay=0.01)
    assert caught.value is error
    assert call.calls == 1


async def test_with_retries_backs_off_exponentially_with_jitter() -> None:
    """The n-th pause is base_delay * 2**n times a jitter in [0.5, 1.5), and it is really waited."""
    call = Flaky(ConnectionError("a"), ConnectionError("b"), ConnectionError("c"))
    started = time.monotonic()
    with capture_logs() as logs:
        await with_retries(call, what="op", retries=3, is_transient=transient, base_delay=0.1)
    elapsed = time.monotonic() - started

    retries = [entry for entry in logs if entry["event"] == "embedder_retry"]
    assert [entry["attempt"] for entry in retries] == [1, 2, 3]
    for n, entry in enumerate(retries):
        assert 0.1 * 2**n * 0.5 - 0.005 <= entry["delay"] <= 0.1 * 2**n * 1.5 + 0.005
        assert entry["log_level"] == "warning"
    assert elapsed >= sum(entry["delay"] for entry in retries) - 0.02


async def test_with_retries_does_not_swallow_cancellation_during_backoff() -> None:
    """Cancelling the caller while it waits between attempts cancels at once."""
    call = Flaky(*[ConnectionError("down")] * 10)
    started = time.monotonic()
    with anyio.move_on_after(0.2) as scope:
        await with_retries(call, what="op", retries=5, is_transient=transient, base_delay=10.0)
    assert scope.cancelled_caught
    assert call.calls == 1
    assert time.monotonic() - started < 2.0


def test_describe_keeps_type_and_first_line_only() -> None:
    """describe() gives `Type: first line`, or just the type for an empty message."""
    assert describe(RuntimeError("boom\ntraceback noise")) == "RuntimeError: boom"
    assert describe(TimeoutError()) == "TimeoutError"


def test_normalise_gives_unit_rows_and_leaves_zero_rows_zero() -> None:
    """normalise() scales rows to length 1 as float32 and never divides by zero."""
    out = normalise(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float64))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-6)


def test_check_shape_rejects_wrong_count_and_wrong_dims() -> None:
    """check_shape() names the expected and actual shape in its EmbedderMismatch."""
    good = np.zeros((2, 4), dtype=np.float32)
    assert check_shape(good, 2, 4, "m") is good
    with pytest.raises(EmbedderMismatch, match=r"asked for 3 vectors, got shape \(2, 4\)"):
        check_shape(good, 3, 4, "m")
    with pytest.raises(EmbedderMismatch, match=r"m: returned 4-dimensional vectors, expected 8"):
        check_shape(good, 2, 8, "m")
