"""Shared parts of the benchmark scripts: real corpora, a private codequarry home,
machine facts, percentiles, and the JSON + one-line summary every script prints.

Corpora are real source trees found on this machine (installed packages, the JDK's
sources), copied once under $CQ_BENCH_DIR (default /tmp/cq-bench) and committed to git,
so `git status` can be timed on the same tree. Nothing is generated.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH_DIR = Path(os.environ.get("CQ_BENCH_DIR", "/tmp/cq-bench"))
RESULTS = Path(__file__).resolve().parent / "results"
SITE = Path(sysconfig.get_paths()["purelib"])
JDK_SOURCES = [Path("/usr/lib/jvm/temurin-25-jdk-amd64/lib/src.zip"),
               *sorted(Path("/usr/lib/jvm").glob("*/lib/src.zip"))]

# name -> (description, [(source, subpath or zip prefix)])
CORPORA: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "small": ("starlette (Python, ~1k chunks)", [("site", "starlette")]),
    "medium": ("rich (Python, ~4k chunks)", [("site", "rich")]),
    "large": ("java.util without concurrent/ (Java, ~26k chunks)",
              [("jdk", "java.base/java/util/")]),
    "huge": ("numpy + sqlalchemy + fastmcp + pydantic (Python, ~100k chunks)",
             [("site", "numpy"), ("site", "sqlalchemy"), ("site", "fastmcp"), ("site", "pydantic")]),
    "mcp50k": ("numpy (Python, ~50k chunks)", [("site", "numpy")]),
    # issue 13's unchanged re-index and restart figures: a tree of about 3,000 files
    "files3k": ("numpy + sqlalchemy + fastmcp + pydantic + mypy + pygments (Python, ~3,000 files)",
                [("site", "numpy"), ("site", "sqlalchemy"), ("site", "fastmcp"), ("site", "pydantic"),
                 ("site", "mypy"), ("site", "pygments")]),
}


def corpus(name: str) -> Path:
    """The corpus directory (a git repository), created on first use."""
    target = BENCH_DIR / "corpora" / name
    if (target / ".git").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for source, sub in CORPORA[name][1]:
        if source == "site":
            shutil.copytree(SITE / sub, target / sub, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            _unzip_java(sub, target, exclude=("java.base/java/util/concurrent/",))
    git = ["git", "-C", str(target), "-c", "user.email=b@b", "-c", "user.name=bench"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "corpus"], check=True)
    return target


def _unzip_java(prefix: str, target: Path, exclude: tuple[str, ...]) -> None:
    archive = next((p for p in JDK_SOURCES if p.exists()), None)
    if archive is None:
        raise SystemExit("no JDK src.zip found under /usr/lib/jvm")
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.namelist():
            if member.startswith(prefix) and member.endswith(".java") and not member.startswith(exclude):
                out = target / member[len("java.base/"):]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zipped.read(member))


@contextmanager
def codequarry_home(name: str, fresh: bool = True) -> Iterator[Path]:
    """A private CODEQUARRY_HOME + config for one benchmark (env vars set while inside)."""
    home = BENCH_DIR / "homes" / name
    if fresh:
        shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("CODEQUARRY_HOME", "CODEQUARRY_CONFIG", "XDG_RUNTIME_DIR")}
    os.environ["CODEQUARRY_HOME"] = str(home / "data")
    os.environ["CODEQUARRY_CONFIG"] = str(home / "config.toml")
    runtime = home / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        yield home
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def git_status_seconds(repo: Path, repeat: int = 5) -> float:
    """Median wall time of `git status --porcelain` on a warm cache."""
    subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, check=True)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: Sequence[float], scale: float = 1000.0) -> dict[str, float]:
    """p50/p95/mean/max (in ms by default) of a list of seconds."""
    return {"p50": round(percentile(values, 50) * scale, 2), "p95": round(percentile(values, 95) * scale, 2),
            "mean": round(statistics.fmean(values) * scale, 2), "max": round(max(values) * scale, 2),
            "n": len(values)}


def machine() -> dict[str, Any]:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M")}


def emit(name: str, figures: dict[str, Any], line: str) -> None:
    """Write bench/results/<name>.json and print the JSON, then the one-line table."""
    RESULTS.mkdir(exist_ok=True)
    document = {"benchmark": name, "machine": machine(), "figures": figures}
    (RESULTS / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))
    print(line)
    sys.stdout.flush()


def rss_mb(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 2**20


def postgres_cpu_seconds(pgdata: Path) -> float:
    """User + system CPU of the PostgreSQL server: its live processes and those reaped."""
    import psutil

    try:
        postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
        reaped = postmaster.cpu_times()
        total = reaped.user + reaped.system + reaped.children_user + reaped.children_system
        for member in postmaster.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                total += times.user + times.system
        return float(total)
    except (OSError, ValueError, psutil.Error):
        return float("nan")
