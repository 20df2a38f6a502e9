"""Start the daemon at login: a systemd user unit (Linux) or a launchd agent (macOS).

The unit and plist are rendered here, from code, with the absolute path of the installed
`codequarry` and of the config file. The files under systemd/ and launchd/ at the
repository root are these renderings for a pipx-style install (a test keeps them equal).
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from codequarry.config import Settings
from codequarry.errors import CodequarryError, UsageError

UNIT_NAME = "codequarry.service"
LAUNCHD_LABEL = "io.github.codequarry"
Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


def render_unit(executable: str, config: str, environment: dict[str, str], stop_timeout: int) -> str:
    env_lines = "".join(f'Environment="{key}={value}"\n' for key, value in sorted(environment.items()))
    return f"""[Unit]
Description=codequarry: always-fresh local code search (index daemon + MCP socket)
Documentation=https://github.com/codequarry/codequarry

[Service]
Type=notify
NotifyAccess=main
ExecStart={_quote(executable)} daemon --config {_quote(config)}
{env_lines}Restart=on-failure
RestartSec=5
# the daemon drains in-flight work for [daemon] drain_timeout_seconds, then stops Postgres
TimeoutStopSec={stop_timeout}
KillMode=mixed
# logs go to the journal: journalctl --user -u codequarry
StandardOutput=journal
StandardError=journal
NoNewPrivileges=yes
# no PrivateTmp: the CLI must share the embedded PostgreSQL's lock file and socket
Nice=5

[Install]
WantedBy=default.target
"""


def _systemd_literal(value: str) -> str:
    """systemd expands %-specifiers and $VARIABLES in ExecStart; a path must stay literal."""
    return value.replace("%", "%%").replace("$", "$$")


def _quote(value: str) -> str:
    """systemd splits command lines on spaces unless the word is double-quoted."""
    if any(c.isspace() for c in value) or '"' in value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


# The reference renderings under systemd/ and launchd/ (for an install with pipx).
REFERENCE_UNIT = ("%h/.local/bin/codequarry", "%h/.config/codequarry/config.toml")
REFERENCE_PLIST = ("/Users/you/.local/bin/codequarry", "/Users/you/.config/codequarry/config.toml",
                   "/Users/you")


def render_plist(executable: str, config: str, environment: dict[str, str], home: str) -> bytes:
    plist: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": [executable, "daemon", "--config", config],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # restart after a crash, not after a clean stop
        "ProcessType": "Background",
        "ExitTimeOut": 30,
        "StandardOutPath": f"{home}/Library/Logs/codequarry.log",
        "StandardErrorPath": f"{home}/Library/Logs/codequarry.log",
    }
    if environment:
        plist["EnvironmentVariables"] = dict(sorted(environment.items()))
    return plistlib.dumps(plist, sort_keys=False)


@dataclass(frozen=True)
class Plan:
    """What `service install/uninstall` writes, removes and runs."""

    path: Path
    content: bytes | None  # None: remove the file
    commands: list[list[str]]


def _platform() -> str:
    if sys.platform == "darwin":
        return "launchd"
    if sys.platform.startswith("linux"):
        return "systemd"
    raise UsageError(f"no login service support on {sys.platform}; run `codequarry daemon` yourself")


def _executable() -> str:
    """The `codequarry` script of this installation (next to its interpreter in a venv)."""
    beside = Path(sys.executable).with_name("codequarry")
    if beside.exists():
        return str(beside)
    found = shutil.which("codequarry")
    if found is None:
        raise CodequarryError("cannot find the installed `codequarry` executable")
    return os.path.abspath(found)


def _environment() -> dict[str, str]:
    """Variables that moved the data dir: the service must see the same ones."""
    return {key: os.environ[key] for key in ("CODEQUARRY_HOME",) if os.environ.get(key)}


def install_plan(settings: Settings, home: Path, platform: str) -> Plan:
    executable, config = _executable(), str(settings.config_path.resolve())
    if platform == "systemd":
        unit_dir = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "systemd" / "user"
        stop_timeout = int(settings.config.daemon.drain_timeout_seconds) + 20
        environment = {key: value.replace("%", "%%") for key, value in _environment().items()}
        content = render_unit(_systemd_literal(executable), _systemd_literal(config), environment,
                              stop_timeout).encode()
        return Plan(unit_dir / UNIT_NAME, content, [
            ["systemctl", "--user", "daemon-reload"],
            ["systemctl", "--user", "enable", "--now", UNIT_NAME]])
    path = home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    domain = f"gui/{os.getuid()}"
    return Plan(path, render_plist(executable, config, _environment(), str(home)), [
        ["launchctl", "bootout", domain, str(path)],
        ["launchctl", "bootstrap", domain, str(path)]])


def uninstall_plan(home: Path, platform: str) -> Plan:
    if platform == "systemd":
        unit_dir = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "systemd" / "user"
        return Plan(unit_dir / UNIT_NAME, None, [
            ["systemctl", "--user", "disable", "--now", UNIT_NAME],
            ["systemctl", "--user", "daemon-reload"]])
    path = home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    return Plan(path, None, [["launchctl", "bootout", f"gui/{os.getuid()}", str(path)]])


def _run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, check=False, timeout=60)


def _manager_available(platform: str, run: Runner) -> str | None:
    """None if the service manager can be used, else why not."""
    tool = "systemctl" if platform == "systemd" else "launchctl"
    if run is _run and shutil.which(tool) is None:
        return f"{tool} is not installed"
    if platform == "systemd":
        probe = run(["systemctl", "--user", "show-environment"])
        if probe.returncode != 0:
            reason = (probe.stderr or probe.stdout).strip().splitlines()[:1]
            return "the systemd user manager is not running" + (f" ({reason[0]})" if reason else "")
    return None


def service_command(action: str, settings: Settings, dry_run: bool = False, home: Path | None = None,
                    run: Runner = _run, platform: str | None = None) -> int:
    platform = platform or _platform()
    home = home or Path.home()
    if action == "status":
        command = (["systemctl", "--user", "status", "--no-pager", UNIT_NAME] if platform == "systemd"
                   else ["launchctl", "print", f"gui/{os.getuid()}/{LAUNCHD_LABEL}"])
        why_not = _manager_available(platform, run)
        if why_not:
            raise CodequarryError(f"{why_not}; is the daemon running? try `codequarry status`")
        result = run(command)
        print((result.stdout or result.stderr).rstrip())
        return 0 if result.returncode == 0 else 1
    plan = install_plan(settings, home, platform) if action == "install" else uninstall_plan(home, platform)
    if dry_run:
        verb = "write" if plan.content is not None else "remove"
        print(f"would {verb} {plan.path}" + (":" if plan.content else ""))
        if plan.content is not None:
            print(plan.content.decode())
        for command in plan.commands:
            print("would run: " + " ".join(command))
        return 0
    why_not = _manager_available(platform, run)
    if why_not:
        raise CodequarryError(f"{why_not} (inside a container?); nothing was installed. "
                              "Run the daemon yourself with `codequarry daemon`, or see "
                              "`codequarry service install --dry-run`")
    if plan.content is not None:
        plan.path.parent.mkdir(parents=True, exist_ok=True)
        plan.path.write_bytes(plan.content)
    else:
        plan.path.unlink(missing_ok=True)
    for command in plan.commands:
        result = run(command)
        benign = command[:2] == ["launchctl", "bootout"] or "disable" in command
        if result.returncode != 0 and not benign:
            raise CodequarryError(f"`{' '.join(command)}` failed: {(result.stderr or result.stdout).strip()}")
    done = "installed and started" if plan.content is not None else "stopped and removed"
    print(f"codequarry service {done}: {plan.path}", file=sys.stderr)
    return 0
