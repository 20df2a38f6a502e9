"""Fault run (issue 10, "Figures"): a real `codequarry daemon` indexing a real tree while a
steady stream of edits goes on, through four kinds of fault:

- daemon-kill:     kill -9 of the daemon, started again `--daemon-down` seconds later;
- postmaster-kill: kill -9 of the embedded PostgreSQL's postmaster (the daemon must bring
                   it back by itself: nothing else starts it until the daemon's status
                   answers again);
- disk-full:       the data dir is a tmpfs (`--tmpfs-mb`, needs root), filled to the last
                   byte for `--disk-full-seconds`, then freed;
- embedder-down:   the embedder (an Ollama stand-in, tests/ollama_standin.py, on a fixed
                   port) stops for `--embedder-down-seconds`, then starts again.

    python bench/fault_bench.py [--phase daemon-kill --phase disk-full ...] [--rounds N]

After each fault: the edits stop, and the clock runs from the end of the fault until the
end of the first `codequarry verify` run that exits 0 (the index equals a fresh index of
the tree, every chunk with its vector): `recovered_s`, an upper bound; verify runs back
to back and takes `verify_run_s` itself (`clean_verify_started_s` is the lower bound). For the postmaster
phase, `daemon_recovered_s` is the time until the daemon's own status answers, settled,
first (so `verify`, a separate process, never restarts the server for it).
Then every edit made in the round is looked up (lexical search through the daemon's
socket, its unique identifier) and the ones not found are counted as lost. A round that
does not recover within `--timeout` seconds is reported as such; the run goes on with a
fresh daemon. Results: bench/results/faults.json and a table on stdout.

The tree: a git repository of a few hundred real files, copies of stdlib packages
(`--packages`). Edits alternate between a new file and a function appended to an
existing file of the tree, every `--edit-interval` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.ollama_standin import OllamaStandIn  # noqa: E402

from codequarry.client import DaemonClient  # noqa: E402
from codequarry.errors import CodequarryError  # noqa: E402
from common import BENCH_DIR, RESULTS, machine  # noqa: E402

PHASES = ("daemon-kill", "postmaster-kill", "disk-full", "embedder-down")
DEFAULT_ROUNDS = {"daemon-kill": 10, "postmaster-kill": 10, "disk-full": 3, "embedder-down": 3}
PROJECT = "faults"
CODEQUARRY = Path(sys.executable).with_name("codequarry")


# ---- the tree and the edits ------------------------------------------------------------------


def make_tree(target: Path, packages: list[str]) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in packages:
        shutil.copytree(stdlib / name, target / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "test", "tests"))
    (target / "edits").mkdir()
    git = ["git", "-C", str(target), "-c", "user.email=b@b", "-c", "user.name=bench"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "tree"], check=True)
    return target


class EditStream:
    """A thread writing one edit every `interval` seconds while running."""

    def __init__(self, tree: Path, interval: float) -> None:
        self.tree = tree
        self.interval = interval
        self.targets = sorted(p for p in tree.rglob("*.py") if "edits" not in p.parts)[:50]
        self.count = 0
        self.written: list[str] = []  # identifiers, in order
        self._running = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def resume(self) -> None:
        self._running.set()

    def pause(self) -> None:
        self._running.clear()
        time.sleep(self.interval * 1.5)  # an edit in flight lands before the clock starts

    def close(self) -> None:
        self._stop.set()
        self._running.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._running.wait()
            if self._stop.is_set():
                return
            self._edit()
            time.sleep(self.interval)

    def _edit(self) -> None:
        self.count += 1
        ident = "cqfault" + _letters(os.getpid()) + "q" + _letters(self.count)  # one lexeme
        body = f"\n\ndef {ident}(value):\n    \"\"\"Fault bench edit {self.count}.\"\"\"\n    return value\n"
        if self.count % 2:
            path = self.tree / "edits" / f"edit_{self.count}.py"
            path.write_text(body.lstrip())
        else:
            path = self.targets[(self.count // 2) % len(self.targets)]
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(body)
        self.written.append(ident)


def _letters(number: int) -> str:
    """`number` in base 26 with letters only: the text search parser keeps it one word."""
    out = ""
    while True:
        number, digit = divmod(number, 26)
        out = chr(ord("a") + digit) + out
        if number == 0:
            return out


# ---- the embedder that can go down --------------------------------------------------------------


class Embedder:
    """The Ollama stand-in on a fixed port, stopped and started again for real."""

    def __init__(self) -> None:
        self.standin = OllamaStandIn()  # nomic-embed-text, 768 dims
        self.standin.__enter__()
        self.port = self.standin._server.server_address[1]
        self.handler = self.standin._server.RequestHandlerClass
        self.url = self.standin.url
        self.server: ThreadingHTTPServer | None = self.standin._server

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def start(self) -> None:
        if self.server is None:
            self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
            self.server.daemon_threads = True
            threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


# ---- the daemon -----------------------------------------------------------------------------------


class Home:
    def __init__(self, base: Path, tree: Path, embedder_url: str, tmpfs_mb: int | None) -> None:
        self.base = base
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        self.data = base / "data"
        self.data.mkdir()
        self.tmpfs = False
        if tmpfs_mb:
            result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={tmpfs_mb}m,mode=0700", "tmpfs",
                                     str(self.data)], capture_output=True, text=True, check=False)
            self.tmpfs = result.returncode == 0
            self.tmpfs_error = result.stderr.strip()
        self.runtime = base / "run"
        self.runtime.mkdir(mode=0o700)
        self.config = base / "config.toml"
        self.config.write_text(
            f'[embedder]\nkind = "ollama"\nurl = "{embedder_url}"\nmodel = "nomic-embed-text"\n'
            f'timeout_seconds = 5\nmax_retries = 0\n\n'
            f'[database]\nembedded_shared_buffers_mb = 64\n\n'
            f'[[projects]]\nid = "{PROJECT}"\npath = "{tree}"\n')
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEQUARRY_", "XDG_"))}
        self.env.update(CODEQUARRY_HOME=str(self.data), CODEQUARRY_CONFIG=str(self.config),
                        XDG_RUNTIME_DIR=str(self.runtime))
        self.process: subprocess.Popen[bytes] | None = None
        self.log = base / "daemon.log"

    def socket(self) -> Path:
        from codequarry.config import load_settings

        saved = {k: os.environ.get(k) for k in ("CODEQUARRY_HOME", "CODEQUARRY_CONFIG", "XDG_RUNTIME_DIR")}
        os.environ.update({k: self.env[k] for k in saved})
        try:
            return load_settings(self.config).socket_path
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def start_daemon(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([str(CODEQUARRY), "daemon"], env=self.env, stdout=log,
                                            stderr=log, stdin=subprocess.DEVNULL)

    def kill_daemon(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop_daemon(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill_daemon()
            self.process = None

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "pg" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def disk_full_refusals(self) -> int:
        """How often the embedded PostgreSQL's log says it ran out of space."""
        try:
            return (self.data / "pg" / "log").read_text(errors="replace").count("No space left on device")
        except OSError:
            return 0

    def client(self) -> DaemonClient:
        return DaemonClient(self.socket(), timeout=10)

    def status(self) -> dict[str, Any] | None:
        try:
            for entry in self.client().get("/api/status")["projects"]:
                if entry["project"] == PROJECT:
                    return dict(entry)
        except (CodequarryError, OSError, ValueError, KeyError):
            return None
        return None

    def verify(self) -> tuple[bool, str]:
        result = subprocess.run([str(CODEQUARRY), "verify", "--project", PROJECT], env=self.env,
                                capture_output=True, text=True, timeout=300, check=False)
        lines = (result.stdout + result.stderr).strip().splitlines()
        return result.returncode == 0, lines[0][:200] if lines else ""

    def found(self, ident: str) -> bool:
        try:
            answer = self.client().post("/api/search", {"query": ident, "projects": [PROJECT],
                                                        "mode": "lexical", "limit": 10})
        except (CodequarryError, OSError, ValueError):
            return False
        return any(ident in hit.get("snippet", "") for hit in answer["results"])

    def close(self) -> None:
        self.stop_daemon()
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.data)], check=False)


def wait_for(condition: Any, timeout: float, interval: float = 0.5) -> float | None:
    """Seconds until `condition()` held, or None after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(interval)
    return None


def settled(home: Home) -> bool:
    status = home.status()
    return bool(status and status["pending_files"] == 0 and status["pending_events"] == 0
                and status["vector_coverage"] >= 1.0)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):  # ENOSPC: this size no longer fits
                while True:
                    os.write(descriptor, b"\xff" * size)
    finally:
        os.close(descriptor)
    return filler


# ---- one round --------------------------------------------------------------------------------------


def run_round(phase: str, home: Home, edits: EditStream, embedder: Embedder, args: argparse.Namespace,
              ) -> dict[str, Any]:
    first_edit = len(edits.written)
    edits.resume()
    time.sleep(args.lead_in)  # edits before the fault
    result: dict[str, Any] = {"phase": phase}
    if phase == "daemon-kill":
        home.kill_daemon()
        time.sleep(args.daemon_down)
        home.start_daemon()
    elif phase == "postmaster-kill":
        pid = home.postmaster_pid()
        if pid is None:
            result["error"] = "no postmaster.pid"
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(args.postmaster_down)
    elif phase == "disk-full":
        if not home.tmpfs:
            edits.pause()
            return result | {"error": f"no tmpfs data dir: {home.tmpfs_error or 'not mounted'}"}
        refusals = home.disk_full_refusals()
        filler = fill(home.data)
        time.sleep(args.disk_full_seconds)
        # did PostgreSQL have to refuse a write? (small edits may fit in free pages)
        result["db_writes_refused"] = home.disk_full_refusals() - refusals
        filler.unlink()
    elif phase == "embedder-down":
        embedder.stop()
        time.sleep(args.embedder_down_seconds)
        embedder.start()
    edits.pause()
    fault_end = time.monotonic()
    if phase == "postmaster-kill":  # through the daemon only: verify would start the server itself
        answered = wait_for(lambda: settled(home), args.timeout)
        result["daemon_recovered_s"] = None if answered is None else round(answered, 2)
        if answered is None:
            result["error"] = "daemon status did not recover"
    last = ""
    if "error" not in result:
        clean_from: list[float] = []  # when the first clean verify started, and took

        def clean() -> bool:
            nonlocal last
            began = time.monotonic()
            ok, last = home.verify()
            if ok:
                clean_from.extend((began, time.monotonic() - began))
            return ok

        took = wait_for(clean, args.timeout - (time.monotonic() - fault_end), interval=1.0)
        if took is None:
            result["error"] = f"verify not clean after {args.timeout}s: {last}"
        else:  # verified by the end of that run (an upper bound); it started at the lower one
            result["recovered_s"] = round(clean_from[0] + clean_from[1] - fault_end, 2)
            result["clean_verify_started_s"] = round(max(clean_from[0] - fault_end, 0.0), 2)
            result["verify_run_s"] = round(clean_from[1], 2)
    round_edits = edits.written[first_edit:]
    lost = [ident for ident in round_edits if not home.found(ident)]
    result.update(edits=len(round_edits), lost=len(lost), lost_examples=lost[:3])
    if "error" in result and phase in ("daemon-kill", "postmaster-kill"):  # go on with a fresh daemon
        home.kill_daemon()
        home.start_daemon()
        wait_for(lambda: settled(home), args.timeout)
        # "lost" above is what the daemon that met the fault never indexed; a fresh one may
        result["lost_after_fresh_daemon"] = sum(1 for ident in lost if not home.found(ident))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", action="append", choices=PHASES, help="repeatable; default: all four")
    parser.add_argument("--rounds", type=int, help="rounds per phase (default 10, 10, 3, 3)")
    parser.add_argument("--packages", default="json,email,http,logging,asyncio,xml,urllib,importlib,"
                        "concurrent,multiprocessing,unittest,tomllib,zoneinfo,sqlite3,wsgiref")
    parser.add_argument("--edit-interval", type=float, default=0.5)
    parser.add_argument("--lead-in", type=float, default=2.0, help="edits before each fault (s)")
    parser.add_argument("--daemon-down", type=float, default=2.0)
    parser.add_argument("--postmaster-down", type=float, default=3.0, help="edits after the kill (s)")
    parser.add_argument("--disk-full-seconds", type=float, default=15.0)
    parser.add_argument("--embedder-down-seconds", type=float, default=30.0)
    parser.add_argument("--tmpfs-mb", type=int, default=512, help="0: no tmpfs (disk-full is skipped)")
    parser.add_argument("--timeout", type=float, default=180.0, help="per round (s)")
    parser.add_argument("--out", type=Path, default=RESULTS / "faults.json")
    args = parser.parse_args()
    phases = args.phase or list(PHASES)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally below stops the daemon

    base = BENCH_DIR / "faults"
    tree = make_tree(base / "tree", [p for p in args.packages.split(",") if p])
    files = sum(1 for p in tree.rglob("*") if p.is_file() and ".git" not in p.parts)
    embedder = Embedder()
    home = Home(base / "home", tree, embedder.url, args.tmpfs_mb if "disk-full" in phases else 0)
    edits = EditStream(tree, args.edit_interval)
    rounds: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        home.start_daemon()
        first = wait_for(lambda: settled(home), 900, interval=1.0)
        if first is None:
            raise SystemExit(f"the first index did not finish; see {home.log}")
        print(f"tree: {files} files; first index {first:.1f}s", file=sys.stderr)
        for phase in phases:
            for number in range(args.rounds or DEFAULT_ROUNDS[phase]):
                outcome = run_round(phase, home, edits, embedder, args) | {"round": number + 1}
                print(json.dumps(outcome), file=sys.stderr)
                rounds.append(outcome)
    finally:
        edits.close()
        home.close()
        embedder.stop()
    figures = {"tree_files": files, "edit_interval_s": args.edit_interval, "rounds": rounds,
               "phases": summarise(rounds), "wall_s": round(time.monotonic() - started, 1),
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "faults", "machine": machine(), "figures": figures},
                                   indent=2) + "\n")
    print_table(figures["phases"])


def summarise(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for phase in PHASES:
        mine = [r for r in rounds if r["phase"] == phase]
        if not mine:
            continue
        times = [r["recovered_s"] for r in mine if r.get("recovered_s") is not None]
        out[phase] = {"rounds": len(mine), "failed": sum(1 for r in mine if "error" in r),
                      "recovery_median_s": round(statistics.median(times), 2) if times else None,
                      "recovery_max_s": max(times) if times else None,
                      "edits": sum(r.get("edits", 0) for r in mine),
                      "lost": sum(r.get("lost", 0) for r in mine),
                      "errors": sorted({r["error"] for r in mine if "error" in r})[:3]}
    return out


def print_table(phases: dict[str, dict[str, Any]]) -> None:
    print(f"{'fault':<16} {'rounds':>6} {'failed':>6} {'median s':>9} {'max s':>7} {'edits':>6} {'lost':>5}")
    for phase, row in phases.items():
        median = "-" if row["recovery_median_s"] is None else f"{row['recovery_median_s']:.1f}"
        worst = "-" if row["recovery_max_s"] is None else f"{row['recovery_max_s']:.1f}"
        print(f"{phase:<16} {row['rounds']:>6} {row['failed']:>6} {median:>9} {worst:>7} "
              f"{row['edits']:>6} {row['lost']:>5}")
        for error in row["errors"]:
            print(f"  {error}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
