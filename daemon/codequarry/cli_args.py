"""The global options and the arguments of `search`, `index` and `status`, defined once for
the full command line (codequarry.cli) and its fast front door (codequarry.fastcli).

Standard library only: the front door parses with these without importing the rest of
codequarry. Each function adds arguments to the parser it is given (of any
argparse.ArgumentParser class: the front door's never prints or exits).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """--config FILE and --log-level, accepted before and after the command word."""
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="config file (default: $CODEQUARRY_CONFIG, else "
                             "$XDG_CONFIG_HOME/codequarry/config.toml)")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"], help="log verbosity (stderr)")


def add_globs(parser: argparse.ArgumentParser) -> None:
    """--include/--exclude GLOB (repeatable) of `index` and `add`."""
    parser.add_argument("--include", action="append", default=[], metavar="GLOB",
                        help="only index files matching this glob (repeatable)")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="never index files matching this glob (repeatable)")


def add_index_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="repository directory")
    parser.add_argument("--project", help="project id (default: derived from the directory name)")
    add_globs(parser)


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query")
    parser.add_argument("--project", action="append", default=[], metavar="ID",
                        help="project to search (repeatable; default: all projects)")
    parser.add_argument("--mode", choices=["hybrid", "semantic", "lexical"], default="hybrid")
    parser.add_argument("--language", action="append", default=[], help="only this language (repeatable)")
    parser.add_argument("--path-glob", "--path", dest="path_glob", metavar="GLOB",
                        help="only paths matching this glob, e.g. 'src/**' or '*.py' (MCP's "
                             "path_glob; --path is the same option)")
    parser.add_argument("--limit", type=int, default=10, help="number of results, 1-50 (default 10)")
    parser.add_argument("--detail", choices=["paths", "snippet", "full"], default="snippet",
                        help="paths: locations only; snippet (default): each unit's most relevant "
                             "lines; full: whole units")
    parser.add_argument("--offset", type=int, default=0, help="skip this many results (next page)")
    parser.add_argument("--max-tokens", type=int, default=None, metavar="N",
                        help="budget for the answer's text, in tokens of 4 characters (default 2000)")
    parser.add_argument("--json", action="store_true", help="print JSON: {results, freshness}")


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", help="only this project")
    parser.add_argument("--json", action="store_true", help="print JSON")
