"""The config file (codequarry.config) and the places derived from the environment
(codequarry.paths): defaults, errors that name file/line/key, safe edits, precedence."""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from pathlib import Path

import pytest

from codequarry import paths
from codequarry.config import (
    Config,
    DaemonConfig,
    DatabaseConfig,
    EmbedderConfig,
    IndexConfig,
    McpConfig,
    ProjectConfig,
    add_project,
    load_config,
    load_settings,
    parse_config,
    remove_project,
    write_starter_config,
)
from codequarry.errors import ConfigError, UnknownProject, UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG = Path("/etc/cq/config.toml")  # only a name for messages; parse_config reads no file


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, CONFIG)
    return str(caught.value)


# ------------------------------------------------------------------ defaults and errors


def test_missing_file_means_all_defaults_and_no_projects(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.toml")
    assert config == Config()
    assert config.projects == []
    assert config.database.url == "embedded"
    assert config.embedder.kind == "local"
    assert config.index.max_file_bytes == 1_000_000
    assert config.mcp.http is None


def test_missing_file_puts_data_under_the_xdg_default_of_home(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "absent.toml")
    assert settings.data_dir == Path.home() / ".local" / "share" / "codequarry"
    assert settings.pgdata == settings.data_dir / "pg"
    assert settings.token_path == settings.data_dir / "mcp-token"


def test_malformed_toml_names_the_file_and_the_line() -> None:
    message = _error('data_dir = "/x"\n[embedder\nkind = "local"\n')
    assert message.startswith(f"{CONFIG}: invalid TOML")
    assert "line 2" in message


def test_unreadable_config_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'data_dir = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path)


def test_unknown_top_level_key_names_file_line_and_key() -> None:
    message = _error('data_dir = "/x"\n\nfoo = 1\n')
    assert message == f"{CONFIG}:3: unknown key 'foo'"


def test_unknown_key_in_a_table_names_file_line_and_dotted_key() -> None:
    text = '[index]\nexclude = []\n\n[embedder]\nkind = "local"\nfoo = 1\n'
    assert _error(text) == f"{CONFIG}:6: unknown key 'embedder.foo'"


def test_unknown_key_in_the_second_project_names_its_line_and_index() -> None:
    text = (
        '[[projects]]\nid = "a"\npath = "/src/a"\n\n'
        '[[projects]]\nid = "b"\npath = "/src/b"\nbogus = 2\n'
    )
    assert _error(text) == f"{CONFIG}:8: unknown key 'projects[1].bogus'"


def test_bad_value_names_file_line_key_and_the_problem() -> None:
    message = _error('[embedder]\nkind = "local"\nbatch_size = 0\n')
    assert message.startswith(f"{CONFIG}:3: embedder.batch_size: ")
    assert "greater than or equal to 1" in message


@pytest.mark.parametrize(
    "bad_id",
    ["MyRepo", "-repo", "repo-", "my--repo", "a" * 51, "", "my_repo", "my repo", "répo"],
)
def test_invalid_project_id_is_rejected_with_the_rule(bad_id: str) -> None:
    text = f'[[projects]]\nid = "{bad_id}"\npath = "/src/x"\n'
    message = _error(text)
    assert message.startswith(f"{CONFIG}:2: projects[0].id: invalid project id {bad_id!r}")
    assert "lowercase letters, digits and single inner hyphens, 1-50 characters" in message


@pytest.mark.parametrize("good_id", ["a", "repo2", "my-repo", "a-b-c", "9" * 50])
def test_valid_project_ids_are_accepted(good_id: str) -> None:
    config = parse_config(f'[[projects]]\nid = "{good_id}"\npath = "/src/x"\n', CONFIG)
    assert config.project(good_id).path == Path("/src/x")


def test_duplicate_project_ids_are_rejected() -> None:
    text = '[[projects]]\nid = "a"\npath = "/src/a"\n[[projects]]\nid = "a"\npath = "/src/b"\n'
    message = _error(text)
    assert str(CONFIG) in message
    assert "project id 'a' is registered twice" in message


@pytest.mark.parametrize(
    "fields",
    ['url = "http://localhost:1234/v1"', 'model = "text-embedding-3-small"', ""],
)
def test_openai_embedder_needs_both_url_and_model(fields: str) -> None:
    message = _error(f'[embedder]\nkind = "openai"\n{fields}\n')
    assert message.startswith(f"{CONFIG}:1: embedder: ")
    assert 'kind = "openai" needs both url and model' in message


def test_openai_embedder_with_url_and_model_is_accepted() -> None:
    text = '[embedder]\nkind = "openai"\nurl = "http://h/v1"\nmodel = "m"\napi_key_env = "K"\n'
    assert parse_config(text, CONFIG).embedder.model == "m"


@pytest.mark.parametrize("address", ["0.0.0.0:8765", "192.168.1.5:8765", "example.com:80",
                                     "127.0.0.1", "127.0.0.1:http"])
def test_mcp_http_must_be_a_loopback_host_and_port(address: str) -> None:
    message = _error(f'[mcp]\nhttp = "{address}"\n')
    assert message.startswith(f"{CONFIG}:2: mcp.http: must be a loopback address")


@pytest.mark.parametrize("address", ["127.0.0.1:8765", "localhost:9000", "[::1]:8765"])
def test_mcp_http_on_loopback_is_accepted(address: str) -> None:
    assert parse_config(f'[mcp]\nhttp = "{address}"\n', CONFIG).mcp.http == address


def test_database_url_must_be_embedded_or_a_postgres_dsn() -> None:
    message = _error('[database]\nurl = "mysql://x/y"\n')
    assert message.startswith(f"{CONFIG}:2: database.url: ")
    ok = parse_config('[database]\nurl = "postgresql://me@h:5432/db"\n', CONFIG)
    assert ok.database.url == "postgresql://me@h:5432/db"


def test_unknown_project_lookup_lists_the_known_ids() -> None:
    config = parse_config('[[projects]]\nid = "alpha"\npath = "/src/a"\n', CONFIG)
    with pytest.raises(UnknownProject, match=r"unknown project 'beta' \(known: alpha\)"):
        config.project("beta")


# ------------------------------------------------------------------ config.example.toml

_COMMENTED_KEY = re.compile(r"^#\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\S.*)$")
_TABLE = re.compile(r"^\[\[?\s*([A-Za-z_.]+)\s*\]\]?\s*$")


def _uncomment_examples(text: str) -> str:
    """Turn every `# key = value` example line (and the `# [[projects]]` block) into a real
    line. Where an example repeats a key set on another line of its table (url in
    [database]), the example wins and the other line is dropped."""
    out: list[str | None] = []
    table = ""
    seen: dict[tuple[str, str], tuple[int, bool]] = {}  # (table, key) -> (line, is_example)
    for line in text.splitlines():
        stripped = line.strip()
        example = False
        if stripped == "# [[projects]]":
            line = stripped = "[[projects]]"
        elif _COMMENTED_KEY.match(stripped):
            line = stripped = stripped.lstrip("#").strip()
            example = True
        header = _TABLE.match(stripped)
        if header:
            table = header.group(1)
            seen = {k: v for k, v in seen.items() if k[0] != table}  # a new [[projects]] entry
        elif "=" in stripped and not stripped.startswith("#"):
            key = stripped.split("=", 1)[0].strip()
            previous = seen.get((table, key))
            if previous is not None:
                index, previous_is_example = previous
                if previous_is_example:
                    continue  # keep the example, drop this active line
                out[index] = None
            seen[table, key] = (len(out), example)
        out.append(line)
    return "\n".join(line for line in out if line is not None) + "\n"


def test_example_config_parses_as_it_is() -> None:
    path = REPO_ROOT / "config.example.toml"
    config = parse_config(path.read_text(encoding="utf-8"), path)
    assert config.projects == []


def test_example_config_with_every_example_uncommented_still_validates() -> None:
    path = REPO_ROOT / "config.example.toml"
    text = _uncomment_examples(path.read_text(encoding="utf-8"))
    config = parse_config(text, path)
    assert [p.id for p in config.projects] == ["myrepo"]
    assert config.mcp.http is not None
    assert config.embedder.model is not None


def test_example_config_documents_every_key_of_every_section() -> None:
    path = REPO_ROOT / "config.example.toml"
    document = tomllib.loads(_uncomment_examples(path.read_text(encoding="utf-8")))
    sections = {"database": DatabaseConfig, "embedder": EmbedderConfig, "index": IndexConfig,
                "daemon": DaemonConfig, "mcp": McpConfig}
    assert set(document) == set(Config.model_fields)
    for name, model in sections.items():
        assert set(document[name]) == set(model.model_fields), name
    assert set(document["projects"][0]) == set(ProjectConfig.model_fields)


def test_starter_config_is_valid_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.toml"
    write_starter_config(path)
    written = path.read_text()
    assert load_config(path).embedder.kind == "local"
    with pytest.raises(UsageError, match="already exists"):
        write_starter_config(path)
    assert path.read_text() == written


# ------------------------------------------------------------------ add / remove projects

COMMENTED = """\
# my settings
data_dir = "/var/cq"   # keep me

[embedder]
# the default model, on purpose
kind = "local"

# my repositories below
[[projects]]
id = "first"   # the first one
path = "{first}"
"""


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    return first, second


def test_add_project_keeps_comments_and_other_content(
    tmp_path: Path, repos: tuple[Path, Path]
) -> None:
    first, second = repos
    path = tmp_path / "config.toml"
    original = COMMENTED.format(first=first)
    path.write_text(original)
    added = add_project(path, "second", second, exclude=["gen/"])
    text = path.read_text()
    assert text.startswith(original)  # everything before, byte for byte
    assert added == ProjectConfig(id="second", path=second, exclude=["gen/"])
    config = load_config(path)
    assert [(p.id, p.path) for p in config.projects] == [("first", first), ("second", second)]
    assert config.data_dir == Path("/var/cq")


def test_add_project_creates_a_missing_config_file(tmp_path: Path, repos: tuple[Path, Path]) -> None:
    path = tmp_path / "new" / "config.toml"
    add_project(path, "first", repos[0])
    assert load_config(path).project("first").path == repos[0]


def test_add_project_stores_an_absolute_path(
    tmp_path: Path, repos: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "config.toml"
    add_project(path, "first", Path("first"))
    assert load_config(path).project("first").path == repos[0]
    assert str(repos[0]) in path.read_text()


def test_add_project_twice_with_the_same_path_changes_nothing(
    tmp_path: Path, repos: tuple[Path, Path]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(COMMENTED.format(first=repos[0]))
    before = path.read_text()
    again = add_project(path, "first", repos[0])
    assert again.path == repos[0]
    assert path.read_text() == before


def test_add_project_refuses_another_path_for_an_existing_id(
    tmp_path: Path, repos: tuple[Path, Path]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(COMMENTED.format(first=repos[0]))
    before = path.read_text()
    with pytest.raises(UsageError, match=f"already registered for {re.escape(str(repos[0]))}"):
        add_project(path, "first", repos[1])
    assert path.read_text() == before


def test_add_project_refuses_a_path_that_is_not_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for target in (a_file, tmp_path / "missing"):
        with pytest.raises(UsageError, match="not a directory"):
            add_project(path, "x", target)
    assert not path.exists()


def test_add_project_refuses_an_invalid_id(tmp_path: Path, repos: tuple[Path, Path]) -> None:
    path = tmp_path / "config.toml"
    with pytest.raises(UsageError, match="invalid project id"):
        add_project(path, "Bad_Id", repos[0])
    assert not path.exists()


def test_add_project_refuses_to_edit_a_config_that_does_not_load(
    tmp_path: Path, repos: tuple[Path, Path]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[embedder]\nfoo = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'embedder\.foo'"):
        add_project(path, "first", repos[0])
    assert path.read_text() == "[embedder]\nfoo = 1\n"


def test_remove_project_keeps_comments_and_the_other_projects(
    tmp_path: Path, repos: tuple[Path, Path]
) -> None:
    first, second = repos
    path = tmp_path / "config.toml"
    path.write_text(COMMENTED.format(first=first))
    add_project(path, "second", second)
    removed = remove_project(path, "first")
    assert removed.path == first
    text = path.read_text()
    assert "# my settings" in text
    assert "# the default model, on purpose" in text
    assert 'data_dir = "/var/cq"   # keep me' in text
    assert [p.id for p in load_config(path).projects] == ["second"]


def test_removing_the_last_project_leaves_a_loadable_file_without_projects(
    tmp_path: Path, repos: tuple[Path, Path]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(COMMENTED.format(first=repos[0]))
    remove_project(path, "first")
    assert "projects" not in tomllib.loads(path.read_text())
    assert load_config(path).projects == []
    assert "# my repositories below" in path.read_text()


def test_remove_unknown_project_raises_and_leaves_the_file(
    tmp_path: Path, repos: tuple[Path, Path]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(COMMENTED.format(first=repos[0]))
    before = path.read_text()
    with pytest.raises(UnknownProject):
        remove_project(path, "other")
    assert path.read_text() == before


# ------------------------------------------------------------------ data dir and config path


def _config_with_data_dir(tmp_path: Path, data_dir: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'data_dir = "{data_dir}"\n')
    return path


def test_codequarry_home_wins_over_config_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEQUARRY_HOME", str(tmp_path / "from-env"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    settings = load_settings(_config_with_data_dir(tmp_path, str(tmp_path / "from-config")))
    assert settings.data_dir == tmp_path / "from-env"


def test_config_data_dir_wins_over_xdg_data_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    settings = load_settings(_config_with_data_dir(tmp_path, str(tmp_path / "from-config")))
    assert settings.data_dir == tmp_path / "from-config"


def test_xdg_data_home_is_the_default_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert load_settings(tmp_path / "absent.toml").data_dir == tmp_path / "xdg" / "codequarry"


def test_relative_xdg_data_home_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")
    assert paths.default_data_dir() == Path.home() / ".local" / "share" / "codequarry"


def test_codequarry_home_expands_a_tilde(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEQUARRY_HOME", "~/cqhome")
    assert load_settings(Path("/nonexistent/config.toml")).data_dir == Path.home() / "cqhome"


def test_config_data_dir_expands_a_tilde(tmp_path: Path) -> None:
    settings = load_settings(_config_with_data_dir(tmp_path, "~/cq"))
    assert settings.data_dir == Path.home() / "cq"


def test_codequarry_config_env_wins_over_xdg_config_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = tmp_path / "explicit.toml"
    monkeypatch.setenv("CODEQUARRY_CONFIG", str(explicit))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdgconf"))
    assert paths.default_config_path() == explicit
    explicit.write_text(f'data_dir = "{tmp_path / "d"}"\n')
    settings = load_settings()
    assert settings.config_path == explicit
    assert settings.data_dir == tmp_path / "d"


def test_xdg_config_home_then_home_dot_config_locate_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert paths.default_config_path() == Path.home() / ".config" / "codequarry" / "config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdgconf"))
    assert paths.default_config_path() == tmp_path / "xdgconf" / "codequarry" / "config.toml"


# ------------------------------------------------------------------ socket path


def test_socket_lives_under_the_data_dir_without_a_runtime_dir(tmp_path: Path) -> None:
    assert paths.socket_path(tmp_path / "data") == tmp_path / "data" / "run" / "mcp.sock"


def test_socket_under_xdg_runtime_dir_is_keyed_by_a_non_default_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # short, like a real one (/run/user/1000): pytest's tmp_path under xdist is so long that
    # a socket below it would take the too-long fallback, which is another test's subject
    with tempfile.TemporaryDirectory(prefix="cqrt-", dir="/tmp") as short:
        runtime = Path(short)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        default = paths.socket_path(paths.default_data_dir())
        assert default == runtime / "codequarry" / "mcp.sock"
        one, two = paths.socket_path(tmp_path / "one"), paths.socket_path(tmp_path / "two")
        assert len({default, one, two}) == 3
        assert one.parent.parent == runtime / "codequarry"


def test_socket_falls_back_to_a_short_path_when_the_usual_one_is_too_long(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    usual = deep / "run" / "mcp.sock"
    assert len(os.fsencode(usual)) > 104  # too long for sun_path on macOS and Linux
    fallback = paths.socket_path(deep)
    assert fallback != usual
    assert len(os.fsencode(fallback)) <= 100
    assert fallback.name == "mcp.sock"
    assert paths.socket_path(deep / "other") != fallback  # still one socket per data dir


def test_configured_socket_is_used_and_also_shortened_when_too_long(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[mcp]\nsocket = "/tmp/cq-x.sock"\n')
    assert load_settings(config).socket_path == Path("/tmp/cq-x.sock")
    long_socket = "/tmp/" + "s" * 120 + ".sock"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[mcp]\nsocket = "{long_socket}"\n')
    assert len(os.fsencode(load_settings(config).socket_path)) <= 100
