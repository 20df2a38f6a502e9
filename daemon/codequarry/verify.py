"""`codequarry verify`: does a project's index equal a fresh index of its tree?

Checks every file (stat, content hash, skip reason), every chunk (hash and lines, in
order), every vector against the embedding cache, and the counters. Read-only.

It decides what the tree holds and what is skipped through the indexer's own rules
(scan.scan_tree, scan.read_text_file, ignore.IgnoreRules with [index] index_secrets), so
a skipped file is expected to be skipped. The one skip it cannot re-derive is content the
database refused (recorded "refused by the database: ..."): it is accepted as long as the
content hash is still the refused one.
"""

from __future__ import annotations

import anyio

from codequarry.chunking import Chunker
from codequarry.config import ProjectConfig, Settings
from codequarry.faults import DATABASE_REFUSED
from codequarry.ignore import IgnoreRules
from codequarry.runtime import open_runtime
from codequarry.scan import hidden_by, read_text_file, scan_tree
from codequarry.store.db import Store


def verify_project(settings: Settings, config: ProjectConfig) -> list[str]:
    return anyio.run(_verify, settings, config)


async def _verify(settings: Settings, config: ProjectConfig) -> list[str]:
    async with open_runtime(settings) as runtime:
        return await check_project(settings, config, runtime.store, runtime.indexer.chunker)


async def check_project(settings: Settings, config: ProjectConfig, database: Store,
                        chunker: Chunker) -> list[str]:
    """The differences between a project's index and its tree, one line each (empty: none).
    UnknownProject if the project has no index."""
    problems: list[str] = []
    max_bytes = settings.config.index.max_file_bytes
    rules = IgnoreRules(config.path, [*settings.config.index.exclude, *config.exclude], config.include,
                        settings.config.index.index_secrets)
    store = await database.project(config.id)
    unlisted: dict[str, str] = {}
    on_disk = await anyio.to_thread.run_sync(  # off the event loop: the daemon runs this too
        lambda: {f.path: f for f in scan_tree(config.path, rules, max_bytes, unlisted)})
    indexed = await store.indexed_files()
    for where, error in sorted(unlisted.items()):
        problems.append(f"{where or '.'}: cannot be listed ({error}); the index is not compared there")
    for path in sorted(set(indexed) - set(on_disk)):
        if not hidden_by(path, unlisted):
            problems.append(f"{path}: indexed but not in the tree")
    for path, stat in sorted(on_disk.items()):
        before = indexed.get(path)
        if before is None:
            problems.append(f"{path}: in the tree but not indexed")
            continue
        if (before.size, before.mtime_ns) != (stat.size, stat.mtime_ns):
            problems.append(f"{path}: stat differs from the index")
            continue
        expected: list[tuple[str, int, int]] = []
        reason = stat.skip_reason
        if reason is None:
            try:
                source = read_text_file(config.path / path, max_bytes)
            except OSError as exc:
                problems.append(f"{path}: cannot be read ({exc.strerror or exc})")
                continue
            reason = source.skip_reason
            if before.content_hash != source.content_hash:
                problems.append(f"{path}: content hash differs from the index")
                continue
            if reason is None and (before.skip_reason or "").startswith(DATABASE_REFUSED):
                reason = before.skip_reason  # the database refused this very content: final
            elif source.text is not None:
                _, chunks = chunker.chunk_file(path, source.text)
                expected = [(c.content_hash, c.start_line, c.end_line) for c in chunks]
        if (before.skip_reason is None) != (reason is None):
            problems.append(f"{path}: skip reason {before.skip_reason!r}, expected {reason!r}")
        stored = await store.file_chunks(path)
        if [row[:3] for row in stored] != expected:
            problems.append(f"{path}: chunks differ from a fresh chunking "
                            f"({len(stored)} stored, {len(expected)} expected)")
    problems.extend(await store.consistency_problems())
    return problems
