"""The daemon's figures (issue 3) and its memory (issue 6), measured on a real
`codequarry daemon` subprocess with the default local model, through its JSON API.

    python bench/daemon_bench.py [--phases idle,backlog,tree] [--edits 50] ...

Phases (each its own data dir and a git clone of a real corpus, see bench/common.py):

- idle: index `--idle-corpus`; daemon RSS once idle (the model loaded; PostgreSQL
  processes apart); then `--edits` timed edits after `--warmup` untimed ones; then
  `--burst-files` real source files (a seeded sample of site-packages) written at once,
  RSS sampled every 50 ms until they are all chunked and for `--burst-embed-seconds`
  of embedding after that.
- backlog: the same edits on a fresh daemon that was just given `--backlog-corpus`
  (26k chunks by default), started once its embedding is under way.
- tree: a tree of several thousand files (`--tree`) indexed once (`--reuse-tree-home`
  keeps that index between runs). Catch-up: SIGTERM, start again, time until the
  startup reconcile is done, against `git status` on the same tree. Then a clone of the
  tree becomes a second project (its vectors all come from the cache), and
  `--branch-files` of its files change on a branch: `git checkout` there and back,
  counting the embeddings computed each way (embedding_metadata, read in-process with
  Store.open on the daemon's own embedded server).

An edit writes one new Python function (unique identifier, its own topic and words) to
a new file, or appends it to the file of the previous edit; the clock starts after
write, fsync and close. Two searches are polled every `--poll-ms` through the socket
until each returns a hit on the file whose line span holds the new `def` line:
lexical, with the identifier as query; semantic, with the function's source as query,
among the top `--semantic-top` results. A semantic hit needs the new chunk's vector (an
unembedded chunk is invisible to the vector search, and the edited file's older chunks
do not hold the new line), so this times "edit -> embedded and found" end to end
without a hand-picked paraphrase whose ranking would be a quality figure, not a
latency. Each semantic poll embeds its query in the daemon, on the same two cores: the
cost of one poll is reported.

Catch-up "done" is not visible in the status: before the startup reconcile has queued
anything it already shows 0 pending (reported as status_idle_first_seen). So one file's
mtime is touched while the daemon is down (same content: nothing to chunk or embed)
and catch-up ends when its change event, which the reconcile records only after
comparing the whole tree, is processed and the status is idle.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import psutil

from codequarry.client import DaemonClient
from codequarry.config import Settings, add_project, load_settings
from codequarry.errors import CodequarryError
from codequarry.logs import configure_logging
from common import BENCH_DIR, CORPORA, SITE, codequarry_home, corpus, emit, git_status_seconds, summary

CODEQUARRY = Path(sys.executable).with_name("codequarry")
WORK = BENCH_DIR / "daemon-work"
MB = 2**20
# ~3,000 files, ~25 MB of real Python (and stubs, data files) from this venv's site-packages
DEFAULT_TREE = ("site:mypy,mypyc,beartype,dns,authlib,mcp,key_value,cryptography,asyncpg,filelock,"
                "greenlet,markdown_it,openapi_pydantic,uvicorn,joserfc,opentelemetry,pgvector")
BRANCH_SUFFIXES = (".py", ".java", ".pyi")

TOPICS = [
    ("compute_volume_of_torus", "major_radius, minor_radius",
     "tube_area = 3.141592653589793 * minor_radius ** 2\n"
     "    ring_length = 2 * 3.141592653589793 * major_radius\n    return tube_area * ring_length"),
    ("celsius_readings_to_fahrenheit", "readings",
     "converted = []\n    for celsius in readings:\n        converted.append(celsius * 9 / 5 + 32)\n"
     "    return converted"),
    ("count_vowels_in_sentence", "sentence",
     "vowels = set('aeiouAEIOU')\n    return sum(1 for letter in sentence if letter in vowels)"),
    ("monthly_mortgage_payment", "principal, annual_rate, years",
     "monthly_rate = annual_rate / 12\n    months = years * 12\n"
     "    growth = (1 + monthly_rate) ** months\n"
     "    return principal * monthly_rate * growth / (growth - 1)"),
    ("merge_overlapping_intervals", "intervals",
     "merged = []\n    for start, end in sorted(intervals):\n"
     "        if merged and start <= merged[-1][1]:\n"
     "            merged[-1][1] = max(merged[-1][1], end)\n        else:\n"
     "            merged.append([start, end])\n    return merged"),
    ("edit_distance_between_words", "first, second",
     "previous = list(range(len(second) + 1))\n    for i, a in enumerate(first, 1):\n"
     "        current = [i]\n        for j, b in enumerate(second, 1):\n"
     "            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))\n"
     "        previous = current\n    return previous[-1]"),
    ("parse_key_value_pairs", "line",
     "pairs = {}\n    for item in line.split(';'):\n        key, _, value = item.partition('=')\n"
     "        pairs[key.strip()] = value.strip()\n    return pairs"),
    ("moving_average_of_prices", "prices, window",
     "averages = []\n    for end in range(window, len(prices) + 1):\n"
     "        averages.append(sum(prices[end - window:end]) / window)\n    return averages"),
    ("is_valid_ipv4_address", "address",
     "parts = address.split('.')\n    if len(parts) != 4:\n        return False\n"
     "    return all(part.isdigit() and 0 <= int(part) <= 255 for part in parts)"),
    ("flatten_nested_lists", "items",
     "flat = []\n    for item in items:\n        if isinstance(item, list):\n"
     "            flat.extend(item)\n        else:\n            flat.append(item)\n    return flat"),
    ("roman_numeral_to_integer", "numeral",
     "values = {'I': 1, 'V': 5, 'X': 10, 'L': 50, 'C': 100, 'D': 500, 'M': 1000}\n    total = 0\n"
     "    for current, following in zip(numeral, numeral[1:] + ' '):\n"
     "        sign = -1 if values.get(following, 0) > values[current] else 1\n"
     "        total += sign * values[current]\n    return total"),
    ("greatest_common_divisor", "a, b",
     "while b:\n        a, b = b, a % b\n    return abs(a)"),
    ("word_frequencies_in_text", "text",
     "counts = {}\n    for word in text.lower().split():\n"
     "        counts[word] = counts.get(word, 0) + 1\n    return counts"),
    ("body_mass_index_category", "weight_kg, height_m",
     "index = weight_kg / height_m ** 2\n    if index < 18.5:\n        return 'underweight'\n"
     "    return 'normal' if index < 25 else 'overweight'"),
    ("rotate_matrix_clockwise", "matrix",
     "rows = len(matrix)\n"
     "    return [[matrix[rows - 1 - r][c] for r in range(rows)] for c in range(len(matrix[0]))]"),
    ("split_list_into_batches", "items, size",
     "batches = []\n    for start in range(0, len(items), size):\n"
     "        batches.append(items[start:start + size])\n    return batches"),
    ("great_circle_distance_km", "lat1, lon1, lat2, lon2",
     "from math import asin, cos, radians, sin, sqrt\n"
     "    dlat, dlon = radians(lat2 - lat1), radians(lon2 - lon1)\n"
     "    h = sin(dlat / 2) ** 2 + cos(radians(lat1)) * cos(radians(lat2)) * sin(dlon / 2) ** 2\n"
     "    return 2 * 6371.0 * asin(sqrt(h))"),
    ("caesar_cipher_shift", "message, shift",
     "shifted = []\n    for letter in message:\n        if letter.isalpha():\n"
     "            base = ord('a') if letter.islower() else ord('A')\n"
     "            letter = chr((ord(letter) - base + shift) % 26 + base)\n"
     "        shifted.append(letter)\n    return ''.join(shifted)"),
    ("median_of_unsorted_numbers", "values",
     "ordered = sorted(values)\n    middle = len(ordered) // 2\n    if len(ordered) % 2:\n"
     "        return ordered[middle]\n    return (ordered[middle - 1] + ordered[middle]) / 2"),
    ("seconds_to_clock_string", "total_seconds",
     "hours, rest = divmod(int(total_seconds), 3600)\n    minutes, seconds = divmod(rest, 60)\n"
     "    return f'{hours:02d}:{minutes:02d}:{seconds:02d}'"),
]
PLACES = ("warehouse satellite bakery orchard hospital library airport stadium vineyard harbor factory "
          "museum glacier volcano rainforest subway lighthouse observatory aquarium greenhouse railway "
          "pharmacy cinema theater classroom laboratory brewery canyon desert island marina monastery "
          "castle embassy bazaar circus farm garage kitchen garden attic cellar tunnel bridge quarry "
          "refinery reactor rocket submarine tractor bicycle helicopter ferry tramway mill bakehouse "
          "dairy forge kiln tannery").split()


def note(message: str) -> None:
    print(f"[daemon_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- the daemon subprocess ----------------------------------------------------------------

class DaemonProcess:
    """`codequarry daemon` in the current (codequarry_home) environment."""

    def __init__(self, home: Path, settings: Settings) -> None:
        self.home = home
        self.settings = settings
        self.client = DaemonClient(settings.socket_path, timeout=60)
        self.process: subprocess.Popen[bytes] | None = None
        (home / "logs").mkdir(exist_ok=True)  # not next to config.toml: its watcher looks there
        self.stderr_path = home / "logs" / "daemon.stderr"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 600) -> float:
        """Start it; returns seconds from spawning to a served socket."""
        started = time.perf_counter()
        with open(self.stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(
                [str(CODEQUARRY), "daemon", "--log-file", str(self.home / "logs" / "daemon.log")],
                env=dict(os.environ), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        while True:
            self.check_alive()
            with contextlib.suppress(CodequarryError):
                if self.client.running():
                    return time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"the daemon did not serve within {timeout}s")
            time.sleep(0.02)

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.stderr_path.read_text(errors="replace")[-3000:] if self.stderr_path.exists() else ""
            raise RuntimeError(f"the daemon exited with {self.process.returncode}:\n{tail}")

    def stop(self, timeout: float = 60) -> float:
        """SIGTERM, wait (kill after `timeout`); seconds it took."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return 0.0
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            note(f"the daemon did not stop within {timeout}s: killing it")
            self.process.kill()
            self.process.wait()
        self.process = None
        return time.perf_counter() - started

    def project(self, project_id: str) -> dict[str, Any]:
        status = self.client.get("/api/status")
        for entry in status["projects"]:
            if entry["project"] == project_id:
                return dict(entry) | {"model": status["daemon"].get("model")}
        return {}

    def wait(self, condition: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> float:
        started = time.perf_counter()
        last_note = started
        while not condition():
            self.check_alive()
            now = time.perf_counter()
            if now - started > timeout:
                raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
            if now - last_note > 30:
                note(f"still waiting for {what} ({now - started:.0f}s)")
                last_note = now
            time.sleep(every)
        return time.perf_counter() - started


def settled(entry: dict[str, Any]) -> bool:
    """Everything chunked and embedded, the model loaded (status rounds coverage to 4 places)."""
    return bool(entry and entry["files"] + entry["skipped_files"] > 0 and entry["pending_files"] == 0
                and entry["pending_events"] == 0 and entry["vector_coverage"] >= 1.0 and entry["model"])


def postmaster(pgdata: Path) -> psutil.Process | None:
    try:
        return psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
        return None


@contextlib.contextmanager
def daemon_for(home: Path) -> Iterator[DaemonProcess]:
    """A daemon object for this home; whatever happens, the daemon and its PostgreSQL end."""
    daemon = DaemonProcess(home, load_settings())
    try:
        yield daemon
    finally:
        with contextlib.suppress(Exception):
            daemon.stop()
        server = postmaster(daemon.settings.pgdata)
        if server is not None and str(daemon.settings.pgdata) in " ".join(server.cmdline()):
            time.sleep(2)  # pgserver stops it after the last client detaches
            if server.is_running():
                note(f"stopping the leftover PostgreSQL {server.pid}")
                server.terminate()
                with contextlib.suppress(psutil.TimeoutExpired):
                    server.wait(10)


def clone(source: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", "--local", str(source), str(target)], check=True)
    return target


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), "-c", "user.email=b@b", "-c", "user.name=bench", *args],
                            check=True, capture_output=True, text=True)
    return result.stdout.strip()


# ---- memory ----------------------------------------------------------------------------------

def memory(daemon_pid: int, pgdata: Path, pss: bool = False) -> dict[str, float]:
    """RSS in MB of the daemon alone, of its own child processes, of the embedded
    PostgreSQL (postmaster + backends: the RSS sum counts shared buffers once per process,
    the PSS sum does not)."""
    daemon = psutil.Process(daemon_pid)
    children = daemon.children(recursive=True)
    server = postmaster(pgdata)
    postgres = [server, *server.children(recursive=True)] if server else []
    figures = {"daemon_rss_mb": daemon.memory_info().rss / MB,
               "daemon_children_rss_mb": _sum(children, lambda p: p.memory_info().rss),
               "postgres_rss_sum_mb": _sum(postgres, lambda p: p.memory_info().rss),
               "postgres_processes": float(len(postgres))}
    if pss:
        figures["daemon_pss_mb"] = daemon.memory_full_info().pss / MB
        figures["postgres_pss_sum_mb"] = _sum(postgres, lambda p: p.memory_full_info().pss)
    return figures


def _sum(processes: list[psutil.Process], value: Callable[[psutil.Process], int]) -> float:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += value(process)
    return total / MB


class MemorySampler(threading.Thread):
    """Peak RSS every `interval` s (the process list is refreshed every second)."""

    def __init__(self, daemon_pid: int, pgdata: Path, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.daemon_process = psutil.Process(daemon_pid)
        self.pgdata = pgdata
        self.interval = interval
        self.stopped = threading.Event()
        self.peak: dict[str, float] = {"daemon_rss_mb": 0.0, "daemon_children_rss_mb": 0.0,
                                       "postgres_rss_sum_mb": 0.0, "daemon_plus_postgres_rss_mb": 0.0}
        self.daemon_samples: list[float] = []

    def run(self) -> None:
        children: list[psutil.Process] = []
        postgres: list[psutil.Process] = []
        refreshed = 0.0
        while not self.stopped.is_set():
            now = time.monotonic()
            if now - refreshed > 1.0:
                with contextlib.suppress(psutil.NoSuchProcess):
                    children = self.daemon_process.children(recursive=True)
                server = postmaster(self.pgdata)
                with contextlib.suppress(psutil.NoSuchProcess):
                    postgres = [server, *server.children(recursive=True)] if server else []
                refreshed = now
            try:
                daemon = self.daemon_process.memory_info().rss / MB
            except psutil.NoSuchProcess:
                return
            sample = {"daemon_rss_mb": daemon,
                      "daemon_children_rss_mb": _sum(children, lambda p: p.memory_info().rss),
                      "postgres_rss_sum_mb": _sum(postgres, lambda p: p.memory_info().rss)}
            sample["daemon_plus_postgres_rss_mb"] = sample["daemon_rss_mb"] + sample["postgres_rss_sum_mb"]
            self.daemon_samples.append(daemon)
            for key, value in sample.items():
                self.peak[key] = max(self.peak[key], value)
            self.stopped.wait(max(0.0, self.interval - (time.monotonic() - now)))

    def finish(self) -> dict[str, float]:
        self.stopped.set()
        self.join()
        return {**{f"peak_{k}": round(v, 1) for k, v in self.peak.items()},
                "median_daemon_rss_mb": round(statistics.median(self.daemon_samples or [0.0]), 1),
                "samples": len(self.daemon_samples)}


# ---- edits -------------------------------------------------------------------------------

class Edits:
    """Writes timed edits into a watched repo and polls the daemon until they are found."""

    def __init__(self, daemon: DaemonProcess, project: str, repo: Path, args: argparse.Namespace) -> None:
        self.daemon = daemon
        self.project = project
        self.repo = repo
        self.args = args
        self.folder = repo / "zq_edits"
        self.count = 0
        self.current: Path | None = None
        self.poll_seconds: list[float] = []

    def prepare(self) -> None:
        """The folder exists before the first timed edit (a new directory asks for a rescan)."""
        self.folder.mkdir(exist_ok=True)
        time.sleep(1)
        self.daemon.wait(lambda: self.daemon.project(self.project)["pending_files"] == 0, 120, "the rescan")

    def write(self) -> tuple[str, int, str, str]:
        """One edit: (relative path, line of the def, identifier, function source)."""
        n = self.count
        self.count += 1
        topic, params, body = TOPICS[n % len(TOPICS)]
        place = PLACES[n % len(PLACES)]
        identifier = f"zq_{n}_{topic}_for_{place}"
        source = f"def {identifier}({params}, origin='{place}'):\n    {body}\n"
        if n % 2 == 0 or self.current is None:  # a new file, else append to the last one
            self.current = self.folder / f"edit_{n:03d}_{place}.py"
            prefix, line = "", 1
        else:
            before = self.current.read_text()
            prefix, line = "\n\n", before.count("\n") + 3
        with open(self.current, "a", encoding="utf-8") as handle:
            handle.write(prefix + source)
            handle.flush()
            os.fsync(handle.fileno())
        return self.current.relative_to(self.repo).as_posix(), line, identifier, source

    def measure(self) -> tuple[float | None, float | None]:
        """Seconds from the write to the first lexical and the first semantic hit."""
        rel, line, identifier, source = self.write()
        started = time.perf_counter()
        lexical = semantic = None
        poll = self.args.poll_ms / 1000
        top = self.args.semantic_top
        deadline = started + self.args.edit_timeout
        while (lexical is None or semantic is None) and time.perf_counter() < deadline:
            tick = time.perf_counter()
            if lexical is None and _holds(self._search(identifier, "lexical", 10), rel, line):
                lexical = time.perf_counter() - started
            if semantic is None:
                asked = time.perf_counter()
                answer = self._search(source, "semantic", top)
                self.poll_seconds.append(time.perf_counter() - asked)
                if _holds(answer, rel, line):
                    semantic = time.perf_counter() - started
                    lexical = semantic if lexical is None else lexical
            time.sleep(max(0.0, poll - (time.perf_counter() - tick)))
        if lexical is None or semantic is None:
            note(f"edit {identifier} not found in {self.args.edit_timeout}s "
                 f"(lexical {lexical}, semantic {semantic})")
        return lexical, semantic

    def _search(self, query: str, mode: str, limit: int) -> dict[str, Any]:
        answer: dict[str, Any] = self.daemon.client.post(
            "/api/search", {"query": query, "projects": [self.project], "mode": mode, "limit": limit})
        return answer

    def run(self, on_each: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Warm-up edits, then the timed ones; `on_each` is called before each (untimed)."""
        lexical: list[float] = []
        semantic: list[float] = []
        context: list[dict[str, Any]] = []
        missed = 0
        for index in range(self.args.warmup + self.args.edits):
            before = on_each() if on_each else {}
            lex, sem = self.measure()
            if index >= self.args.warmup:
                context.append(before)
                if lex is not None:
                    lexical.append(lex)
                if sem is not None:
                    semantic.append(sem)
                missed += lex is None or sem is None
            time.sleep(self.args.gap_ms / 1000)
        return {"edits": self.args.edits, "warmup": self.args.warmup, "not_found": missed,
                "lexical_ms": summary(lexical) if lexical else None,
                "semantic_ms": summary(semantic) if semantic else None,
                "semantic_poll_ms": summary(self.poll_seconds) if self.poll_seconds else None,
                "poll_interval_ms": self.args.poll_ms, "semantic_top": self.args.semantic_top,
                "context": context}


def _holds(answer: dict[str, Any], rel: str, line: int) -> bool:
    return any(hit["path"] == rel and hit["start_line"] <= line <= hit["end_line"]
               for hit in answer["results"])


# ---- phase: idle daemon (edits, idle RSS, burst) -------------------------------------------

@contextlib.contextmanager
def watching(corpus_name: str, project: str) -> Iterator[tuple[Path, DaemonProcess, float]]:
    """A fresh home whose daemon watches a git clone of the corpus as `project`:
    (the clone, the started daemon, seconds from start to ready)."""
    repo = clone(corpus(corpus_name), WORK / project)
    with codequarry_home(f"daemon-{project}") as home, daemon_for(home) as daemon:
        add_project(home / "config.toml", project, repo)
        daemon.settings = load_settings()
        yield repo, daemon, daemon.start()


def phase_idle(args: argparse.Namespace) -> dict[str, Any]:
    with watching(args.idle_corpus, "idle") as (repo, daemon, ready):
        note(f"idle: indexing {args.idle_corpus}")
        index_seconds = daemon.wait(lambda: settled(daemon.project("idle")), args.index_timeout,
                                    f"{args.idle_corpus} to be indexed")
        indexed = daemon.project("idle")
        time.sleep(2)
        samples = []
        for _ in range(20):
            samples.append(memory(daemon.pid, daemon.settings.pgdata))
            time.sleep(0.1)
        idle_memory = {key: round(statistics.median(s[key] for s in samples), 1) for key in samples[0]}
        pss = memory(daemon.pid, daemon.settings.pgdata, pss=True)
        idle_memory |= {k: round(v, 1) for k, v in pss.items() if "pss" in k}
        idle_memory["postgres_processes"] = int(idle_memory["postgres_processes"])
        note(f"idle: {args.warmup}+{args.edits} edits")
        edits = Edits(daemon, "idle", repo, args)
        edits.prepare()
        edit_figures = edits.run()
        edit_figures.pop("context")
        burst = run_burst(daemon, repo, args)
    return {"corpus": args.idle_corpus, "files": indexed["files"], "chunks": indexed["chunks"],
            "daemon_start_to_ready_seconds": round(ready, 2), "index_seconds": round(index_seconds, 1),
            **edit_figures, "idle_memory": idle_memory, "burst": burst}


def burst_sources(count: int, exclude: set[str]) -> list[tuple[Path, str]]:
    """A seeded sample of real Python files (<= 64 KB, distinct contents) from site-packages."""
    candidates = []
    for path in sorted(SITE.rglob("*.py")):
        rel = path.relative_to(SITE)
        if rel.parts[0] in exclude or "__pycache__" in rel.parts or not path.is_file():
            continue
        with contextlib.suppress(OSError):
            if 0 < path.stat().st_size <= 65_536:
                candidates.append(rel)
    random.Random(0).shuffle(candidates)
    chosen: list[tuple[Path, str]] = []
    seen: set[str] = set()
    for rel in candidates:
        data = (SITE / rel).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        chosen.append((rel, data.decode("utf-8", errors="replace")))
        if len(chosen) == count:
            break
    return chosen


def run_burst(daemon: DaemonProcess, repo: Path, args: argparse.Namespace) -> dict[str, Any]:
    exclude = {sub.split("/")[0] for source, sub in CORPORA[args.idle_corpus][1] if source == "site"}
    sources = burst_sources(args.burst_files, exclude)
    before = daemon.project("idle")
    known = before["files"] + before["skipped_files"]
    sampler = MemorySampler(daemon.pid, daemon.settings.pgdata)
    sampler.start()
    try:
        note(f"burst: writing {len(sources)} files")
        started = time.perf_counter()
        for rel, text in sources:
            target = repo / "zq_burst" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        written = time.perf_counter() - started

        def chunked() -> bool:
            entry = daemon.project("idle")
            return bool(entry["files"] + entry["skipped_files"] >= known + len(sources)
                        and entry["pending_files"] == 0 and entry["pending_events"] == 0)

        lexical = daemon.wait(chunked, args.burst_timeout, "the burst to be chunked", every=0.1) + written
        embed_started = time.perf_counter()
        with contextlib.suppress(RuntimeError):  # embedding is watched for a bounded time only
            daemon.wait(lambda: settled(daemon.project("idle")), args.burst_embed_seconds,
                        "the burst to be embedded", every=0.5)
        embedding = time.perf_counter() - embed_started
    finally:
        peak = sampler.finish()
    after = daemon.project("idle")
    return {"files": len(sources), "write_seconds": round(written, 2),
            "chunked_seconds": round(lexical, 1), "chunks_added": after["chunks"] - before["chunks"],
            "embedding_watched_seconds": round(embedding, 1),
            "vector_coverage_at_end": after["vector_coverage"], **peak}


# ---- phase: edits during a cold backlog ---------------------------------------------------------

def phase_backlog(args: argparse.Namespace) -> dict[str, Any]:
    with watching(args.backlog_corpus, "backlog") as (repo, daemon, ready):
        note(f"backlog: waiting for the embedding of {args.backlog_corpus} to be under way")

        def under_way() -> bool:
            entry = daemon.project("backlog")
            return bool(entry and entry["chunks"] > 0 and entry["vector_coverage"] > 0 and entry["model"])

        daemon.wait(under_way, args.index_timeout, "the backlog to be under way", every=0.1)
        start = daemon.project("backlog")
        edits = Edits(daemon, "backlog", repo, args)
        edits.prepare()
        note(f"backlog: {args.warmup}+{args.edits} edits at coverage {start['vector_coverage']}")

        def coverage() -> dict[str, Any]:
            entry = daemon.project("backlog")
            return {"coverage": entry["vector_coverage"], "pending_files": entry["pending_files"]}

        figures = edits.run(coverage)
        end = daemon.project("backlog")
        context = figures.pop("context")
    return {"corpus": args.backlog_corpus, "files": end["files"], "chunks": end["chunks"],
            "daemon_start_to_ready_seconds": round(ready, 2),
            "coverage_at_first_edit": context[0]["coverage"] if context else None,
            "coverage_after_last_edit": end["vector_coverage"],
            "edits_during_backlog": sum(1 for c in context if c["coverage"] < 1.0), **figures}


# ---- phase: a big tree: catch-up after a restart, branch switch ------------------------------------

def tree_corpus(spec: str) -> Path:
    """A corpus name from common.CORPORA, or "site:pkg,pkg,..." (site-packages folders)."""
    if not spec.startswith("site:"):
        return corpus(spec)
    packages = [p for p in spec[5:].split(",") if p and (SITE / p).is_dir()]
    name = "tree-" + hashlib.sha256(",".join(packages).encode()).hexdigest()[:8]
    CORPORA[name] = (f"site-packages: {', '.join(packages)}", [("site", p) for p in packages])
    return corpus(name)


def phase_tree(args: argparse.Namespace) -> dict[str, Any]:
    source = tree_corpus(args.tree)
    repo = WORK / "tree"
    reuse = args.reuse_tree_home and (repo / ".git").exists()
    if not reuse:
        clone(source, repo)
    marker_rel = next(p for p in git(repo, "ls-files").splitlines() if p.endswith(BRANCH_SUFFIXES))
    marker = repo / marker_rel
    with codequarry_home("daemon-tree", fresh=not reuse) as home, daemon_for(home) as daemon:
        config = home / "config.toml"
        settings = load_settings()
        if any(p.id == "branch" for p in settings.config.projects):  # left by an earlier run
            subprocess.run([str(CODEQUARRY), "remove", "branch", "--purge"], env=dict(os.environ),
                           check=True, capture_output=True)
        add_project(config, "tree", repo)
        daemon.settings = load_settings()

        def restart(check_marker: bool = True) -> dict[str, float]:
            """Touch the marker (same content), start, time until the reconcile is done."""
            stopping = daemon.stop()
            stamp = time.time_ns()
            os.utime(marker, ns=(stamp, stamp))
            since = datetime.now(UTC)
            started = time.perf_counter()
            ready = daemon.start()
            first_idle = None
            while True:
                entry = daemon.project("tree")
                elapsed = time.perf_counter() - started
                if first_idle is None and settled(entry):
                    first_idle = elapsed
                if settled(entry) and (not check_marker or _processed(daemon, "tree", marker_rel, since)):
                    return {"stop": stopping, "start_to_ready": ready,
                            "status_idle_first_seen": first_idle or elapsed, "caught_up": elapsed}
                daemon.check_alive()
                if elapsed > args.index_timeout:
                    raise RuntimeError("timed out waiting for the startup reconcile")
                time.sleep(0.02)

        note(f"tree: {'reusing' if reuse else 'indexing'} {source.name} (this can take long)")
        initial = restart(check_marker=reuse)  # a fresh index: settled() waits for every event
        entry = daemon.project("tree")
        note(f"tree: {entry['files']} files, {entry['chunks']} chunks; {args.catchup_repeats} restarts")
        runs = [restart() for _ in range(args.catchup_repeats)]
        git_seconds = git_status_seconds(repo)
        caught = statistics.median(r["caught_up"] for r in runs)
        ready = statistics.median(r["start_to_ready"] for r in runs)
        catchup = {
            "tree": args.tree, "files": entry["files"], "skipped": entry["skipped_files"],
            "chunks": entry["chunks"], "reused_index": reuse,
            "initial_index_seconds": round(initial["caught_up"], 1) if not reuse else None,
            "restarts": len(runs),
            "sigterm_stop_seconds": round(statistics.median(r["stop"] for r in runs), 2),
            "start_to_ready_seconds": round(ready, 3),
            "catch_up_from_start_seconds": round(caught, 3),
            "catch_up_after_ready_seconds": round(caught - ready, 3),
            "status_idle_first_seen_seconds": round(statistics.median(
                r["status_idle_first_seen"] for r in runs), 3),
            "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
            "git_status_seconds": round(git_seconds, 4),
            "catch_up_after_ready_vs_git_status": round((caught - ready) / git_seconds, 1),
        }
        branch = anyio.run(branch_switch, daemon, repo, config, args)
    return {"catchup": catchup, "branch": branch}


def _processed(daemon: DaemonProcess, project: str, path: str, since: datetime) -> bool:
    changes = daemon.client.get(f"/api/changes?project={project}&limit=50")["changes"]
    return any(c["path"] == path and c["processed_at"] and datetime.fromisoformat(c["detected_at"]) >= since
               for c in changes)


def make_branch(repo: Path, count: int, nonce: str) -> tuple[str, str, list[str], int]:
    """Commit a branch changing `count` files (a comment line appended, a statement put
    into the first one-line function or method header's body); back on the original
    branch afterwards. Returns (original branch, new branch, paths changed, bodies changed)."""
    original = git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    branch = f"zq-{nonce}"
    git(repo, "checkout", "-q", "-b", branch)
    candidates = [p for p in git(repo, "ls-files").splitlines()
                  if p.endswith(BRANCH_SUFFIXES) and (repo / p).stat().st_size <= 256_000]
    step = max(1, len(candidates) // max(count, 1))
    changed: list[str] = []
    bodies = 0
    for index, rel in enumerate(candidates[::step][:count]):
        path = repo / rel
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        text, body = _change(text, rel.endswith(".java"), nonce, index)
        path.write_text(text, encoding="utf-8")
        changed.append(rel)
        bodies += body
    git(repo, "commit", "-qam", f"bench: {len(changed)} files changed")
    git(repo, "checkout", "-q", original)
    return original, branch, changed, bodies


_PY_DEF = re.compile(r"^(\s*)(async\s+)?def \w+\(.*\).*:\s*$")
_JAVA_METHOD = re.compile(r"^(\s*)(?!(if|for|while|switch|catch|try|else|do|synchronized)\b)"
                          r"[\w<>\[\], .@]*\w+\s*\([^;{}]*\)\s*(throws [\w.,\s]+)?\{\s*$")


def _change(text: str, java: bool, nonce: str, index: int) -> tuple[str, bool]:
    lines = text.splitlines(keepends=True)
    pattern = _JAVA_METHOD if java else _PY_DEF
    body = False
    for number, line in enumerate(lines):
        match = pattern.match(line)
        if match:
            indent = match.group(1) + "    "
            statement = (f"int zqBranch{nonce.title()} = {index};" if java
                         else f"zq_branch_{nonce} = {index}")
            lines.insert(number + 1, f"{indent}{statement}\n")
            body = True
            break
    text = "".join(lines)
    if text and not text.endswith("\n"):
        text += "\n"
    comment = "//" if java else "#"
    return text + f"{comment} zqbranch{nonce} changed on the benchmark branch ({index})\n", body


async def branch_switch(daemon: DaemonProcess, tree: Path, config: Path,
                        args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import text

    from codequarry.store.db import Store

    nonce = "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8))
    repo = clone(tree, WORK / "branch")
    original, branch, changed, bodies = make_branch(repo, args.branch_files, nonce)
    store = await Store.open(load_settings())  # attaches to the daemon's embedded server
    try:
        async def computed() -> int:
            """Texts embedded for the project (earlier runs' rows included: use deltas)."""
            async with store.engine.connect() as conn:
                return int((await conn.execute(text(
                    "SELECT coalesce(sum(count), 0) FROM codequarry.embedding_metadata "
                    "WHERE project = 'branch'"))).scalar() or 0)

        base = await computed()
        add_project(config, "branch", repo)  # the daemon picks it up from the config file
        note(f"branch: a clone of the tree is indexed from the embedding cache; {len(changed)} files change")
        indexed = await anyio.to_thread.run_sync(lambda: daemon.wait(
            lambda: settled(daemon.project("branch")), args.index_timeout, "the clone to be indexed"))
        schema = (await store.project("branch")).s

        async def marked() -> int:
            async with store.engine.connect() as conn:
                return int((await conn.execute(text(
                    f"SELECT count(DISTINCT path) FROM {schema}.chunks "
                    "WHERE path = ANY(:paths) AND content LIKE :m"),
                    {"paths": changed, "m": f"%zqbranch{nonce}%"})).scalar() or 0)

        async def switch(target: str, expect: int) -> tuple[float, int]:
            before = await computed()
            started = time.perf_counter()
            await anyio.to_thread.run_sync(lambda: git(repo, "checkout", "-q", target))
            while True:
                done = await marked() == expect and settled(daemon.project("branch"))
                if done:
                    break
                daemon.check_alive()
                if time.perf_counter() - started > args.index_timeout:
                    raise RuntimeError(f"timed out after checking out {target}")
                await anyio.sleep(0.25)
            return time.perf_counter() - started, await computed() - before

        initial = await computed() - base
        there_seconds, there = await switch(branch, len(changed))
        back_seconds, back = await switch(original, 0)
    finally:
        await store.close()
    return {"files_changed": len(changed), "bodies_changed": bodies, "clone_index_seconds": round(indexed, 1),
            "clone_embeddings_computed": initial, "embeddings_there": there, "embeddings_back": back,
            "seconds_there": round(there_seconds, 2), "seconds_back": round(back_seconds, 2)}


# ---- main ----------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", default="idle,backlog,tree", help="comma-separated: idle, backlog, tree")
    parser.add_argument("--edits", type=int, default=50, help="timed edits per phase")
    parser.add_argument("--warmup", type=int, default=3, help="untimed edits first")
    parser.add_argument("--poll-ms", type=float, default=20, help="search polling interval")
    parser.add_argument("--gap-ms", type=float, default=200, help="pause between edits")
    parser.add_argument("--edit-timeout", type=float, default=60, help="give up on one edit after this")
    parser.add_argument("--semantic-top", type=int, default=3, help="a semantic hit must rank this high")
    parser.add_argument("--idle-corpus", default="medium", choices=sorted(CORPORA))
    parser.add_argument("--backlog-corpus", default="large", choices=sorted(CORPORA))
    parser.add_argument("--burst-files", type=int, default=2000)
    parser.add_argument("--burst-timeout", type=float, default=1800, help="for the burst to be chunked")
    parser.add_argument("--burst-embed-seconds", type=float, default=120,
                        help="keep sampling memory while the burst embeds, at most this long")
    parser.add_argument("--tree", default=DEFAULT_TREE,
                        help="catch-up/branch tree: a corpus name or site:pkg,pkg,... (default ~3,000 files)")
    parser.add_argument("--reuse-tree-home", action="store_true",
                        help="keep the tree's index from an earlier run (its embedding takes long)")
    parser.add_argument("--catchup-repeats", type=int, default=3)
    parser.add_argument("--branch-files", type=int, default=500)
    parser.add_argument("--index-timeout", type=float, default=7200, help="for any index to settle")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    configure_logging("warning")  # the product's log lines (Store.open here) go to stderr

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # runs every cleanup on the way out

    signal.signal(signal.SIGTERM, stop)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    figures: dict[str, Any] = {"parameters": {k: v for k, v in vars(args).items() if k != "phases"},
                               "phases": phases}
    runners = {"idle": phase_idle, "backlog": phase_backlog, "tree": phase_tree}
    for phase in phases:
        started = time.perf_counter()
        result = runners[phase](args)
        figures |= result if phase == "tree" else {phase: result}
        note(f"{phase} done in {time.perf_counter() - started:.0f}s")
    emit("daemon", figures, one_line(figures))


def one_line(f: dict[str, Any]) -> str:
    parts = []
    for phase in ("idle", "backlog"):
        if phase in f:
            p = f[phase]
            lex, sem = p["lexical_ms"] or {}, p["semantic_ms"] or {}
            parts.append(f"{phase} edit->found p50/p95 lexical {lex.get('p50')}/{lex.get('p95')} ms "
                         f"semantic {sem.get('p50')}/{sem.get('p95')} ms"
                         + (f" ({p['not_found']} not found)" if p["not_found"] else ""))
    if "idle" in f:
        m, b = f["idle"]["idle_memory"], f["idle"]["burst"]
        parts.append(f"RSS idle {m['daemon_rss_mb']} MB (+pg PSS {m.get('postgres_pss_sum_mb')}) "
                     f"burst peak {b['peak_daemon_rss_mb']} MB")
    if "catchup" in f:
        c = f["catchup"]
        parts.append(f"catch-up {c['files']} files {c['catch_up_after_ready_seconds']}s after ready "
                     f"(ready {c['start_to_ready_seconds']}s) vs git status {c['git_status_seconds']}s")
    if "branch" in f:
        b = f["branch"]
        parts.append(f"branch {b['files_changed']} files: {b['embeddings_there']} embedded there, "
                     f"{b['embeddings_back']} back")
    return " | ".join(parts)


if __name__ == "__main__":
    main()
