"""Ready-to-paste MCP client configs, and the link that puts `codequarry` on PATH.

GUI clients do not read the shell's PATH, so every config names the absolute path of the
installed executable; the environment variables that choose a non-default data dir or
config (CODEQUARRY_HOME, CODEQUARRY_CONFIG) are passed along when they are set.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from codequarry.errors import CodequarryError, UsageError

CLIENTS = ("claude-desktop", "claude-code", "cursor", "codex", "inspector")
PASSED_ENV = ("CODEQUARRY_HOME", "CODEQUARRY_CONFIG")


def executable() -> Path:
    """The absolute path of the installed `codequarry` (beside this interpreter, else on PATH)."""
    beside = Path(sys.executable).with_name("codequarry")
    if beside.exists():
        return beside.absolute()
    found = shutil.which("codequarry")
    if found:
        return Path(found).resolve()
    raise CodequarryError("cannot find the installed `codequarry` executable")


def client_config(client: str, command: Path, env: dict[str, str]) -> str:
    """The text to paste for `client` (one of CLIENTS), with where it goes as a comment line."""
    server: dict[str, object] = {"command": str(command), "args": ["mcp"]}
    if env:
        server["env"] = env
    entry = json.dumps({"mcpServers": {"codequarry": server}}, indent=2)
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    if client == "claude-desktop":
        where = ("~/Library/Application Support/Claude/claude_desktop_config.json"
                 if sys.platform == "darwin" else "~/.config/Claude/claude_desktop_config.json")
        return f"# Claude Desktop: merge into {where}, then restart Claude Desktop\n{entry}"
    if client == "cursor":
        return f"# Cursor: merge into ~/.cursor/mcp.json (or .cursor/mcp.json in a project)\n{entry}"
    if client == "claude-code":
        flags = " ".join(f"-e {shlex.quote(f'{k}={v}')}" for k, v in env.items())
        return ("# Claude Code: run once (--scope user: in every project); `claude mcp list` shows it\n"
                f"claude mcp add --scope user{' ' + flags if flags else ''} codequarry -- "
                f"{shlex.quote(str(command))} mcp")
    if client == "codex":
        lines = ["# Codex: append to ~/.codex/config.toml", "[mcp_servers.codequarry]",
                 f"command = {json.dumps(str(command))}", 'args = ["mcp"]']
        if env:
            lines.append("env = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items()) + " }")
        return "\n".join(lines)
    if client == "inspector":
        run = f"{prefix + ' ' if prefix else ''}npx @modelcontextprotocol/inspector"
        return ("# MCP Inspector: the web UI, or the CLI listing the tools\n"
                f"{run} {shlex.quote(str(command))} mcp\n"
                f"{run} --cli {shlex.quote(str(command))} mcp --method tools/list")
    raise UsageError(f"unknown client {client!r}; known: {', '.join(CLIENTS)}")


def print_client_configs(clients: list[str]) -> int:
    command = executable()
    env = {key: os.path.abspath(os.path.expanduser(os.environ[key])) for key in PASSED_ENV
           if os.environ.get(key)}
    texts = [client_config(client, command, env) for client in (clients or list(CLIENTS))]
    print("\n\n".join(texts))
    return 0


def install_link(bin_dir: Path | None = None) -> int:
    """Link `codequarry` into ~/.local/bin (or `bin_dir`) and say whether that is on PATH."""
    target = executable()
    directory = (bin_dir or Path.home() / ".local" / "bin").expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / "codequarry"
    if link.is_symlink() or link.exists():
        if link.resolve() == target.resolve():
            print(f"{link} already points to {target}", file=sys.stderr)
            return _path_advice(directory)
        if not link.is_symlink():
            raise UsageError(f"{link} exists and is not a link; remove it first")
        link.unlink()
    link.symlink_to(target)
    print(f"linked {link} -> {target}", file=sys.stderr)
    return _path_advice(directory)


def _path_advice(directory: Path) -> int:
    on_path = any(Path(p).expanduser().resolve() == directory.resolve()
                  for p in os.environ.get("PATH", "").split(os.pathsep) if p)
    if not on_path:
        print(f"{directory} is not on your PATH; add it, e.g. to ~/.profile:\n"
              f'  export PATH="{directory}:$PATH"', file=sys.stderr)
    print("MCP client configs with the absolute path: codequarry client-config", file=sys.stderr)
    return 0
