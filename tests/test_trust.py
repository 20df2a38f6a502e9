"""Trust (issue 10, behaviours 1-3 and 10): one owner per project, no project's fault ends
the daemon, the daemon owns its embedded PostgreSQL, remove is complete.

In-process daemons for the supervisor's states; real `codequarry` processes where the
behaviour is about processes (start-up races, kill -9 of the postmaster, the CLI).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from codequarry.client import DaemonClient
from codequarry.config import Settings
from codequarry.indexer import Indexer
from codequarry.search import SearchRequest

from .conftest import running_daemon, until, write_files
from .fakes import HashEmbedder
from .ollama_standin import OllamaStandIn
from .test_daemon import (
    CODEQUARRY,
    postgres_processes,
    process_env,  # noqa: F401 (a fixture)
    start_daemon,
    wait_for,
    write_process_config,
)
from .test_mcp import call, uds_session

GOOD = {"src/anchor.py": "def anchor_chain_length(depth):\n    return depth * 3\n"}


async def _status(settings: Settings) -> dict[str, Any]:
    answer: dict[str, Any] = await anyio.to_thread.run_sync(
        DaemonClient(settings.socket_path).get, "/api/status")
    return answer


def _entry(status: dict[str, Any], project: str) -> dict[str, Any]:
    return next(p for p in status["projects"] if p["project"] == project)


async def _lexical(daemon: Any, project: str, query: str) -> set[str]:
    response = await daemon.runtime.searcher.search(
        SearchRequest(query, (project,), "lexical", limit=20), daemon.runtime.indexer.model_id)
    return {hit.path for hit in response.results}


# ---- no project's fault ends the daemon ---------------------------------------------


async def test_a_project_whose_root_is_a_file_is_retrying_while_others_search_and_mcp_answers_then_recovers(
        make_settings: Callable[..., Settings], tmp_path: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    good = write_files(tmp_path / "good", GOOD)
    broken = tmp_path / "broken"
    broken.write_text("not a directory\n")
    settings = make_settings([{"id": "good", "path": str(good)}, {"id": "broken", "path": str(broken)}])
    async with running_daemon(settings, hash_embedder) as daemon:
        async def retrying() -> bool:
            entry = _entry(await _status(settings), "broken")
            return bool(entry["state"] == "retrying" and "not a directory" in (entry["error"] or ""))

        await until(retrying, what="the broken project to be retrying with its error")

        async def good_searchable() -> bool:
            return "src/anchor.py" in await _lexical(daemon, "good", "anchor_chain_length")

        await until(good_searchable, what="the other project to be searchable")
        assert _entry(await _status(settings), "good")["state"] in ("scanning", "watching")
        async with uds_session(settings.socket_path) as session:  # the MCP server answers
            report = await call(session, "get_status", project="broken")
        assert report["projects"][0]["state"] == "retrying"
        assert "not a directory" in report["projects"][0]["error"]

        broken.unlink()  # fix the cause: the runner's next try succeeds
        write_files(broken, {"lib/buoy.py": "def buoy_light_colour():\n    return 'green'\n"})

        async def recovered() -> bool:
            entry = _entry(await _status(settings), "broken")
            return bool(entry["state"] == "watching" and entry["error"] is None and entry["files"] == 1)

        await until(recovered, 30, "the broken project to recover once its root is a directory")
        assert "lib/buoy.py" in await _lexical(daemon, "broken", "buoy_light_colour")


async def test_an_unexpected_exception_in_a_projects_start_or_scan_retries_it_and_the_daemon_lives(
        make_settings: Callable[..., Settings], tmp_path: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_files(tmp_path / "good", GOOD)
    flaky = write_files(tmp_path / "flaky", {"net.py": "def trawl_net_mesh():\n    return 40\n"})
    failures = {"add_project": 1, "reconcile": 1}
    add_project, reconcile = Indexer.add_project, Indexer._reconcile

    async def failing_add(self: Indexer, config: Any) -> Any:
        if config.id == "flaky" and failures["add_project"]:
            failures["add_project"] -= 1
            raise RuntimeError("boom in start")  # not a CodequarryError, not transient
        return await add_project(self, config)

    async def failing_reconcile(self: Indexer, project: Any) -> int:
        if project.id == "flaky" and failures["reconcile"]:
            failures["reconcile"] -= 1
            raise KeyError("boom in scan")
        return await reconcile(self, project)

    monkeypatch.setattr(Indexer, "add_project", failing_add)
    monkeypatch.setattr(Indexer, "_reconcile", failing_reconcile)
    settings = make_settings([{"id": "good", "path": str(good)}, {"id": "flaky", "path": str(flaky)}])
    async with running_daemon(settings, hash_embedder) as daemon:
        seen: set[str] = set()

        async def recovered() -> bool:
            entry = _entry(await _status(settings), "flaky")
            if entry["state"] == "retrying":
                seen.add(entry["error"])
            return bool(entry["state"] == "watching" and entry["files"] == 1)

        await until(recovered, 30, "the flaky project to recover after failing in start and scan")
        assert failures == {"add_project": 0, "reconcile": 0}
        assert any("boom in start" in error for error in seen), seen  # each failure was visible
        assert any("boom in scan" in error for error in seen), seen
        assert "net.py" in await _lexical(daemon, "flaky", "trawl_net_mesh")
        assert "src/anchor.py" in await _lexical(daemon, "good", "anchor_chain_length")


# ---- processes: the CLI, start-up, the postmaster --------------------------------------


def _run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CODEQUARRY, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _hits(env: dict[str, str], query: str, project: str) -> set[str]:
    done = _run(["search", query, "--project", project, "--mode", "lexical", "--json"], env)
    assert done.returncode == 0, done.stderr
    return {hit["path"] for hit in json.loads(done.stdout)["results"]}


def _stop(daemon: subprocess.Popen[str]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


@pytest.mark.usefixtures("seeded_store")
def test_three_cli_index_runs_of_new_repos_at_once_against_a_running_daemon_all_succeed(
        tmp_path: Path, process_env: dict[str, str]) -> None:  # noqa: F811
    repos = {f"new{i}": write_files(tmp_path / f"repo{i}", {
        f"m{i}.py": f"def marker_new_repo_{i}():\n    return {i}\n"}) for i in range(3)}
    with OllamaStandIn() as ollama:
        settings = write_process_config(tmp_path / "config.toml", ollama.url, {})
        daemon = start_daemon(process_env, tmp_path / "logs" / "daemon.log")
        try:
            wait_for(DaemonClient(settings.socket_path).running, 90, "the daemon socket", daemon)
            runs = [subprocess.Popen([CODEQUARRY, "index", str(root), "--project", pid], env=process_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for pid, root in repos.items()]
            outcomes = [(run.wait(timeout=120), run.communicate()[1]) for run in runs]
            assert [code for code, _ in outcomes] == [0, 0, 0], outcomes
            assert daemon.poll() is None, "the daemon died"
            for i, pid in enumerate(repos):
                assert _hits(process_env, f"marker_new_repo_{i}", pid) == {f"m{i}.py"}
            status = json.loads(_run(["status", "--json"], process_env).stdout)
            assert {p["project"]: p["state"] for p in status["projects"]} == dict.fromkeys(repos, "watching")
        finally:
            _stop(daemon)


def test_two_one_shot_index_runs_of_the_same_new_repo_without_a_daemon_both_succeed(
        tmp_path: Path, process_env: dict[str, str]) -> None:  # noqa: F811
    root = write_files(tmp_path / "same", {"twin.py": "def twin_index_marker():\n    return 2\n"})
    with OllamaStandIn() as ollama:
        write_process_config(tmp_path / "config.toml", ollama.url, {})
        runs = [subprocess.Popen([CODEQUARRY, "index", str(root), "--project", "same"], env=process_env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
        outcomes = [(run.wait(timeout=120), run.communicate()[1]) for run in runs]
        assert [code for code, _ in outcomes] == [0, 0], outcomes
        assert _hits(process_env, "twin_index_marker", "same") == {"twin.py"}
        assert not postgres_processes(tmp_path / "data" / "pg"), "a one-shot command left its server running"


def test_status_calls_while_the_daemon_starts_answer_and_never_disturb_it(
        tmp_path: Path, process_env: dict[str, str]) -> None:  # noqa: F811
    root = write_files(tmp_path / "repo", {"start.py": "def startup_marker_fn():\n    return 1\n"})
    log = tmp_path / "logs" / "daemon.log"
    with OllamaStandIn() as ollama:
        settings = write_process_config(tmp_path / "config.toml", ollama.url, {"startup": root})
        daemon = start_daemon(process_env, log)
        try:
            answers = []
            while True:  # from the first moment of the daemon's start until it is ready
                done = _run(["status", "--json"], process_env)
                assert done.returncode == 0, done.stderr
                answers.append(json.loads(done.stdout))
                assert daemon.poll() is None, "the daemon died during start-up"
                if answers[-1]["daemon"]["running"]:
                    break
                assert len(answers) < 40, "the daemon never became ready"
            # every answer came from the daemon, or from before it took the data dir
            assert all(a["daemon"]["running"] for a in answers[1:])
            wait_for(lambda: _hits(process_env, "startup_marker_fn", "startup") == {"start.py"}, 60,
                     "the project to be searchable", daemon)
            assert daemon.poll() is None
            text = log.read_text()
            for disturbance in ("shutting down", "terminating connection", "api_failed", "store_unavailable"):
                assert disturbance not in text
        finally:
            _stop(daemon)
        assert daemon.returncode == 0
        assert not postgres_processes(settings.pgdata)


@pytest.mark.usefixtures("seeded_store")
def test_kill_9_of_the_postmaster_under_the_daemon_is_recovered_and_an_edit_made_after_is_indexed(
        tmp_path: Path, process_env: dict[str, str]) -> None:  # noqa: F811
    root = write_files(tmp_path / "repo", {"keel.py": "def keel_depth():\n    return 3\n"})
    with OllamaStandIn() as ollama:
        settings = write_process_config(tmp_path / "config.toml", ollama.url, {"pgkill": root})
        daemon = start_daemon(process_env, tmp_path / "logs" / "daemon.log")
        try:
            client = DaemonClient(settings.socket_path)
            wait_for(client.running, 90, "the daemon socket", daemon)
            wait_for(lambda: _hits(process_env, "keel_depth", "pgkill") == {"keel.py"}, 60,
                     "the first index", daemon)
            postmaster = int((settings.pgdata / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGKILL)
            wait_for(lambda: not psutil.pid_exists(postmaster)
                     or psutil.Process(postmaster).status() == psutil.STATUS_ZOMBIE, 10, "the kill")
            (root / "keel.py").write_text("def keel_depth():\n    return 3\n\n\n"
                                          "def edited_after_postmaster_kill():\n    return 4\n")

            def edit_found() -> bool:
                try:
                    return "keel.py" in _hits(process_env, "edited_after_postmaster_kill", "pgkill")
                except AssertionError:
                    return False

            wait_for(edit_found, 60, "the edit made after the kill to be searchable", daemon)
            assert daemon.poll() is None
            verify = _run(["verify", "--project", "pgkill"], process_env)
            assert verify.returncode == 0, verify.stdout + verify.stderr
        finally:
            _stop(daemon)
        assert daemon.returncode == 0
        assert not postgres_processes(settings.pgdata), "the restarted server outlived its daemon"


def test_the_api_imports_neither_the_cli_nor_the_service() -> None:
    """api -> cli -> ... -> api was a cycle; registration lives in its own module now."""
    import sys

    code = ("import sys, codequarry.api, codequarry.mcp_server; "
            "print(sorted(m for m in ('codequarry.cli', 'codequarry.service') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ---- remove is complete --------------------------------------------------------------


@pytest.mark.usefixtures("seeded_store")
def test_remove_then_remove_purge_deletes_the_orphaned_index_and_status_never_lists_it_as_registered(
        tmp_path: Path, process_env: dict[str, str]) -> None:  # noqa: F811
    root = write_files(tmp_path / "repo", {"hull.py": "def hull_plating():\n    return 1\n"})
    with OllamaStandIn() as ollama:
        write_process_config(tmp_path / "config.toml", ollama.url, {})
        assert _run(["index", str(root), "--project", "gone"], process_env).returncode == 0
        assert _run(["remove", "gone"], process_env).returncode == 0
        status = json.loads(_run(["status", "--json"], process_env).stdout)
        assert status["projects"] == []
        assert [o["project"] for o in status["orphaned"]] == ["gone"]
        table = _run(["status"], process_env).stdout
        assert "codequarry remove --purge gone" in table

        purge = _run(["remove", "gone", "--purge"], process_env)
        assert purge.returncode == 0, purge.stderr
        assert "deleted the indexed data of gone" in purge.stderr
        status = json.loads(_run(["status", "--json"], process_env).stdout)
        assert (status["projects"], status["orphaned"]) == ([], [])
        again = _run(["remove", "gone", "--purge"], process_env)
        assert again.returncode == 2
        assert "no project or index named 'gone'" in again.stderr


@pytest.mark.usefixtures("seeded_store")
def test_remove_and_purge_through_a_running_daemon(
        tmp_path: Path, process_env: dict[str, str]) -> None:  # noqa: F811
    root = write_files(tmp_path / "repo", {"mast.py": "def mast_height():\n    return 9\n"})
    with OllamaStandIn() as ollama:
        settings = write_process_config(tmp_path / "config.toml", ollama.url, {"sail": root})
        daemon = start_daemon(process_env, tmp_path / "logs" / "daemon.log")
        try:
            client = DaemonClient(settings.socket_path)
            wait_for(client.running, 90, "the daemon socket", daemon)
            wait_for(lambda: _hits(process_env, "mast_height", "sail") == {"mast.py"}, 60, "the index",
                     daemon)
            assert _run(["remove", "sail"], process_env).returncode == 0

            def orphaned() -> bool:
                status = client.get("/api/status")
                orphans = [o["project"] for o in status["orphaned"]]
                return bool(status["projects"] == [] and orphans == ["sail"])

            wait_for(orphaned, 20, "the removed project to show as an orphaned index", daemon)
            purge = _run(["remove", "sail", "--purge"], process_env)
            assert purge.returncode == 0, purge.stderr
            status = client.get("/api/status")
            assert (status["projects"], status["orphaned"]) == ([], [])
            assert daemon.poll() is None
        finally:
            _stop(daemon)
