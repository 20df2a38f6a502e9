"""The login service: the systemd unit and launchd agent rendered from code, the
install/uninstall/status plans run against a recording service manager, sd_notify over
a real datagram socket, and `codequarry init`."""

from __future__ import annotations

import configparser
import os
import plistlib
import shlex
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import anyio
import pytest
import tomlkit

from codequarry.cli import main
from codequarry.client import DaemonClient
from codequarry.config import STARTER_CONFIG, Settings, load_config, load_settings
from codequarry.errors import CodequarryError
from codequarry.service import sd_notify
from codequarry.units import (
    LAUNCHD_LABEL,
    REFERENCE_PLIST,
    REFERENCE_UNIT,
    UNIT_NAME,
    render_plist,
    render_unit,
    service_command,
)

from .conftest import running_daemon, until
from .fakes import HashEmbedder

ROOT = Path(__file__).resolve().parent.parent
EXECUTABLE = str(Path(sys.executable).with_name("codequarry"))  # what `service install` finds
UID = os.getuid()


def parse_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


class Recorder:
    """A service manager stand-in: records each command; answers 0 unless told otherwise."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str]] | None = None,
                 stdout: str = "") -> None:
        self.commands: list[list[str]] = []
        self.answers = answers or {}
        self.stdout = stdout

    def __call__(self, command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.commands.append(list(command))
        code, stderr = self.answers.get(tuple(command), (0, ""))
        return subprocess.CompletedProcess(list(command), code, self.stdout, stderr)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A real config file (drain timeout 25 s); no database is needed to plan a service."""
    path = tmp_path / "conf dir" / "config.toml"
    path.parent.mkdir()
    path.write_text(tomlkit.dumps({"data_dir": str(tmp_path / "data"),
                                   "daemon": {"drain_timeout_seconds": 25}}))
    return load_settings(path)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "user home"
    path.mkdir()
    return path


# ---- the systemd unit ------------------------------------------------------------------


def test_the_unit_is_an_ini_file_with_a_notify_service_restarted_on_failure() -> None:
    unit = parse_unit(render_unit("/opt/cq/bin/codequarry", "/etc/cq/config.toml", {}, 45))
    assert unit["Unit"]["Description"].startswith("codequarry")
    service = unit["Service"]
    assert shlex.split(service["ExecStart"]) == ["/opt/cq/bin/codequarry", "daemon", "--config",
                                                 "/etc/cq/config.toml"]
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    assert int(service["TimeoutStopSec"]) == 45
    assert service["NoNewPrivileges"] == "yes"
    assert "Environment" not in service
    assert unit["Install"]["WantedBy"] == "default.target"


def test_unit_paths_with_spaces_and_quotes_survive_systemd_word_splitting() -> None:
    executable, config = "/home/a b/my tools/codequarry", '/home/a b/odd "name"\\dir/config.toml'
    unit = parse_unit(render_unit(executable, config, {"CODEQUARRY_HOME": "/data/with space"}, 30))
    assert shlex.split(unit["Service"]["ExecStart"]) == [executable, "daemon", "--config", config]
    assert shlex.split(unit["Service"]["Environment"]) == ["CODEQUARRY_HOME=/data/with space"]


def test_the_installed_unit_waits_longer_than_the_drain_timeout_and_names_absolute_paths(
        settings: Settings, home: Path) -> None:
    assert service_command("install", settings, home=home, run=Recorder(), platform="systemd") == 0
    service = parse_unit((home / ".config/systemd/user" / UNIT_NAME).read_text())["Service"]
    assert int(service["TimeoutStopSec"]) >= settings.config.daemon.drain_timeout_seconds
    words = shlex.split(service["ExecStart"])
    assert words == [EXECUTABLE, "daemon", "--config", str(settings.config_path.resolve())]
    assert os.path.isabs(words[0])
    assert os.access(words[0], os.X_OK)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed, so the unit cannot be checked by systemd")
def test_systemd_analyze_verify_accepts_the_rendered_unit(tmp_path: Path) -> None:
    config = tmp_path / "with space" / "config.toml"
    config.parent.mkdir()
    config.write_text("")
    unit = tmp_path / UNIT_NAME
    unit.write_text(render_unit(EXECUTABLE, str(config), {"CODEQUARRY_HOME": str(tmp_path / "d d")}, 30))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert UNIT_NAME not in result.stderr  # no warnings about our unit either


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed, so the unit cannot be checked by systemd")
def test_an_installation_path_with_a_percent_sign_reaches_systemd_literally(
        settings: Settings, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed = tmp_path / "100%done" / "bin"
    installed.mkdir(parents=True)
    (installed / "codequarry").symlink_to(EXECUTABLE)
    monkeypatch.setattr(sys, "executable", str(installed / "python"))  # codequarry installed here
    service_command("install", settings, home=home, run=Recorder(), platform="systemd")
    unit = home / ".config" / "systemd" / "user" / UNIT_NAME
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_the_committed_reference_unit_and_plist_equal_the_renderings() -> None:
    assert (ROOT / "systemd" / "codequarry.service").read_text() == render_unit(*REFERENCE_UNIT, {}, 30)
    executable, config, home = REFERENCE_PLIST
    assert (ROOT / "launchd" / f"{LAUNCHD_LABEL}.plist").read_bytes() == render_plist(
        executable, config, {}, home)


# ---- the launchd agent -----------------------------------------------------------------


def test_the_plist_starts_the_daemon_at_login_keeps_it_alive_and_logs_under_library_logs() -> None:
    plist = plistlib.loads(render_plist("/Users/a b/bin/codequarry", "/Users/a b/cq.toml",
                                        {"CODEQUARRY_HOME": "/Users/a b/data"}, "/Users/a b"))
    assert plist["Label"] == LAUNCHD_LABEL
    assert plist["ProgramArguments"] == ["/Users/a b/bin/codequarry", "daemon", "--config",
                                         "/Users/a b/cq.toml"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert plist[key].startswith("/Users/a b/Library/Logs/")
    assert plist["EnvironmentVariables"] == {"CODEQUARRY_HOME": "/Users/a b/data"}
    assert "EnvironmentVariables" not in plistlib.loads(render_plist("/x", "/y", {}, "/Users/z"))


# ---- service install / uninstall / status ----------------------------------------------


def test_systemd_install_writes_the_user_unit_then_reloads_and_enables_it(
        settings: Settings, home: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CODEQUARRY_HOME", str(home / "cq data"))
    recorder = Recorder()
    assert service_command("install", settings, home=home, run=recorder, platform="systemd") == 0
    unit = home / ".config" / "systemd" / "user" / UNIT_NAME
    assert unit.read_text() == render_unit(EXECUTABLE, str(settings.config_path.resolve()),
                                           {"CODEQUARRY_HOME": str(home / "cq data")}, 45)
    assert recorder.commands == [["systemctl", "--user", "show-environment"],
                                 ["systemctl", "--user", "daemon-reload"],
                                 ["systemctl", "--user", "enable", "--now", UNIT_NAME]]
    assert f"installed and started: {unit}" in capsys.readouterr().err


def test_systemd_install_follows_xdg_config_home(settings: Settings, home: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    service_command("install", settings, home=home, run=Recorder(), platform="systemd")
    assert (tmp_path / "xdg" / "systemd" / "user" / UNIT_NAME).is_file()
    assert not (home / ".config").exists()


def test_systemd_uninstall_disables_the_unit_removes_the_file_and_reloads(
        settings: Settings, home: Path) -> None:
    service_command("install", settings, home=home, run=Recorder(), platform="systemd")
    recorder = Recorder()
    assert service_command("uninstall", settings, home=home, run=recorder, platform="systemd") == 0
    assert not (home / ".config" / "systemd" / "user" / UNIT_NAME).exists()
    assert recorder.commands == [["systemctl", "--user", "show-environment"],
                                 ["systemctl", "--user", "disable", "--now", UNIT_NAME],
                                 ["systemctl", "--user", "daemon-reload"]]


def test_systemd_status_asks_systemctl_and_prints_its_answer(
        settings: Settings, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recorder = Recorder(stdout="codequarry.service - codequarry\n   Active: active (running)\n")
    assert service_command("status", settings, home=home, run=recorder, platform="systemd") == 0
    assert recorder.commands == [["systemctl", "--user", "show-environment"],
                                 ["systemctl", "--user", "status", "--no-pager", UNIT_NAME]]
    assert "Active: active (running)" in capsys.readouterr().out
    stopped = Recorder({("systemctl", "--user", "status", "--no-pager", UNIT_NAME): (3, "inactive")})
    assert service_command("status", settings, home=home, run=stopped, platform="systemd") == 1


def test_launchd_install_writes_the_agent_then_boots_it_out_and_in(
        settings: Settings, home: Path) -> None:
    agent = home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    not_loaded = Recorder({("launchctl", "bootout", f"gui/{UID}", str(agent)): (3, "No such process")})
    assert service_command("install", settings, home=home, run=not_loaded, platform="launchd") == 0
    plist = plistlib.loads(agent.read_bytes())
    config = str(settings.config_path.resolve())
    assert plist["ProgramArguments"] == [EXECUTABLE, "daemon", "--config", config]
    assert plist["StandardOutPath"] == f"{home}/Library/Logs/codequarry.log"
    assert not_loaded.commands == [["launchctl", "bootout", f"gui/{UID}", str(agent)],
                                   ["launchctl", "bootstrap", f"gui/{UID}", str(agent)]]


def test_launchd_uninstall_boots_the_agent_out_and_removes_it(settings: Settings, home: Path) -> None:
    service_command("install", settings, home=home, run=Recorder(), platform="launchd")
    agent = home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    recorder = Recorder()
    assert service_command("uninstall", settings, home=home, run=recorder, platform="launchd") == 0
    assert not agent.exists()
    assert recorder.commands == [["launchctl", "bootout", f"gui/{UID}", str(agent)]]


def test_launchd_status_prints_the_agent(settings: Settings, home: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    recorder = Recorder(stdout=f"gui/{UID}/{LAUNCHD_LABEL} = {{\n\tstate = running\n}}\n")
    assert service_command("status", settings, home=home, run=recorder, platform="launchd") == 0
    assert recorder.commands == [["launchctl", "print", f"gui/{UID}/{LAUNCHD_LABEL}"]]
    assert "state = running" in capsys.readouterr().out


@pytest.mark.parametrize(("platform", "written", "commands"), [
    ("systemd", f".config/systemd/user/{UNIT_NAME}",
     ["systemctl --user daemon-reload", f"systemctl --user enable --now {UNIT_NAME}"]),
    ("launchd", f"Library/LaunchAgents/{LAUNCHD_LABEL}.plist", [f"launchctl bootstrap gui/{UID}"]),
])
def test_a_dry_run_writes_and_runs_nothing_but_prints_the_file_and_the_commands(
        settings: Settings, home: Path, capsys: pytest.CaptureFixture[str], platform: str,
        written: str, commands: list[str]) -> None:
    recorder = Recorder()
    assert service_command("install", settings, dry_run=True, home=home, run=recorder,
                           platform=platform) == 0
    assert recorder.commands == []
    assert list(home.iterdir()) == []
    out = capsys.readouterr().out
    assert f"would write {home / written}:" in out
    assert EXECUTABLE in out
    for command in commands:
        assert f"would run: {command}" in out


def test_the_cli_dry_run_prints_the_absolute_executable_and_the_systemctl_commands(
        settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the CLI picks systemd on Linux only")
    with pytest.raises(SystemExit) as exit_:
        main(["service", "install", "--dry-run", "--config", str(settings.config_path)])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"ExecStart={EXECUTABLE} daemon --config" in out
    assert f"would run: systemctl --user enable --now {UNIT_NAME}" in out
    assert not (Path(os.environ["HOME"]) / ".config" / "systemd").exists()


def test_without_a_systemd_user_manager_install_fails_clearly_and_writes_nothing(
        settings: Settings, home: Path) -> None:
    recorder = Recorder({("systemctl", "--user", "show-environment"):
                         (1, "Failed to connect to bus: No medium found\n")})
    with pytest.raises(CodequarryError) as error:
        service_command("install", settings, home=home, run=recorder, platform="systemd")
    message = str(error.value)
    assert "the systemd user manager is not running (Failed to connect to bus: No medium found)" in message
    assert "nothing was installed" in message
    assert "codequarry daemon" in message
    assert recorder.commands == [["systemctl", "--user", "show-environment"]]
    assert list(home.iterdir()) == []
    with pytest.raises(CodequarryError, match="systemd user manager is not running"):
        service_command("status", settings, home=home, run=recorder, platform="systemd")


# ---- sd_notify -------------------------------------------------------------------------


@pytest.fixture
def notify_socket(runtime_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """What systemd listens on for Type=notify services: a datagram socket in NOTIFY_SOCKET."""
    path = runtime_dir / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def test_sd_notify_sends_a_datagram_to_the_notify_socket(notify_socket: socket.socket) -> None:
    assert sd_notify("READY=1") is True
    assert notify_socket.recv(1024) == b"READY=1"


def test_sd_notify_reaches_an_abstract_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"codequarry-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify("STOPPING=1") is True
        assert sock.recv(1024) == b"STOPPING=1"


def test_sd_notify_is_a_no_op_outside_systemd_and_never_raises(
        runtime_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "NOTIFY_SOCKET" not in os.environ
    assert sd_notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(runtime_dir / "nobody-listens"))
    assert sd_notify("READY=1") is False


async def test_the_daemon_notifies_ready_once_it_serves_and_stopping_when_it_stops(
        make_settings: Callable[..., Settings], tmp_path: Path, notify_socket: socket.socket,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings()
    notify_socket.setblocking(False)
    received: list[bytes] = []

    async def datagram() -> bool:
        try:
            received.append(notify_socket.recv(1024))
        except BlockingIOError:
            return False
        return True

    async with running_daemon(settings, hash_embedder) as daemon:
        await until(datagram, 10, "READY=1")
        assert received == [b"READY=1"]
        assert daemon.ready.is_set()
        assert await anyio.to_thread.run_sync(DaemonClient(settings.socket_path).running)
    await until(datagram, 10, "STOPPING=1")
    assert received == [b"READY=1", b"STOPPING=1"]


# ---- codequarry init -------------------------------------------------------------------


def test_init_writes_a_starter_config_and_refuses_to_overwrite_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "fresh" / "config.toml"
    with pytest.raises(SystemExit) as exit_:
        main(["init", "--config", str(path)])
    assert exit_.value.code == 0
    assert path.read_text() == STARTER_CONFIG
    assert load_config(path).embedder.kind == "local"
    assert str(path) in capsys.readouterr().err

    path.write_text("# my own settings\n")
    with pytest.raises(SystemExit) as exit_:
        main(["init", "--config", str(path)])
    assert exit_.value.code == 2
    assert "already exists" in capsys.readouterr().err
    assert path.read_text() == "# my own settings\n"
