"""Draw bench/results/summary.png from the benchmark JSON files and print issue 6's table
(target and measured) as markdown for README.md.

    pip install -e '.[bench]'     # matplotlib
    python bench/plot.py [--results bench/results] [--out bench/results/summary.png]
                         [--update README.md bench/README.md]

Reads index.json, daemon.json, search.json, mcp.json and eval.json; a missing file leaves
its panel empty and its rows "not measured". Panels: search latency p50/p95 by mode and
path (in-process without and with the query embedding, MCP socket, stdio bridge);
cold-index throughput next to the raw embedder's, by corpus size; edit->searchable
p50/p95; MRR@10 per labelled set and mode. daemon.json is searched by key words (any
{p50, p95} summary whose key path mentions "edit" or "searchable"; table rows by words
such as idle/lexical/p95), so the plot follows its layout without depending on it.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use(): no display needed
from matplotlib.axes import Axes

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = ("index", "daemon", "search", "mcp", "eval")
MODES = ("lexical", "semantic", "hybrid")


def load(results: Path) -> dict[str, dict[str, Any]]:
    """{name: figures} for the result files present."""
    out = {}
    for name in NAMES:
        path = results / f"{name}.json"
        if path.exists():
            document = json.loads(path.read_text())
            out[name] = document.get("figures", document)
            out[name]["_machine"] = document.get("machine", {})
    return out


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted lowercase key path, value) of every scalar leaf."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}".lower().lstrip("."))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, f"{path}.{index}")
    else:
        yield path, value


def find(figures: dict[str, Any] | None, *words: str) -> tuple[str, float] | None:
    """The first numeric leaf whose key path contains every word."""
    for path, value in leaves(figures or {}):
        if isinstance(value, int | float) and not isinstance(value, bool) and all(w in path for w in words):
            return path, float(value)
    return None


# daemon_bench.py's keys (dotted paths into daemon.json's figures); words as a fallback
DAEMON: dict[str, tuple[str, tuple[str, ...]]] = {
    "idle_lexical_p95": ("idle.lexical_ms.p95", ("idle", "lexical", "p95")),
    "idle_semantic_p95": ("idle.semantic_ms.p95", ("idle", "semantic", "p95")),
    "backlog_semantic_p95": ("backlog.semantic_ms.p95", ("backlog", "semantic", "p95")),
    "branch_back": ("branch.embeddings_back", ("branch", "back")),
    "rss_idle": ("idle.idle_memory.daemon_rss_mb", ("rss", "idle")),
    "rss_burst": ("idle.burst.peak_daemon_rss_mb", ("peak", "rss")),
    "burst_files": ("parameters.burst_files", ("burst_files",)),
}
# edit->searchable p95 targets in ms, by (phase, search)
FRESHNESS_TARGETS_MS = {("idle", "lexical"): 300.0, ("idle", "semantic"): 1000.0,
                        ("backlog", "semantic"): 1500.0}


def daemon_figure(daemon: dict[str, Any] | None, key: str) -> tuple[str, float] | None:
    exact, words = DAEMON[key]
    value = dict(leaves(daemon or {})).get(exact)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return exact, float(value)
    return find(daemon, *words)


def summaries(value: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(key path, summary) of every nested {p50, p95, ...} dict."""
    if isinstance(value, dict):
        if "p50" in value and "p95" in value:
            yield path, value
            return
        for key, item in value.items():
            yield from summaries(item, f"{path}.{key}".lstrip("."))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from summaries(item, f"{path}.{index}")


def unit(path: str) -> str:
    """The unit a key path names: ..._ms, ..._mb, ..._s or ...seconds."""
    parts = re.split(r"[._]", path)
    if "ms" in parts:
        return " ms"
    if "mb" in parts:
        return " MB"
    if "s" in parts or any(part.startswith("second") for part in parts):
        return " s"
    return ""


# ---- panels ----------------------------------------------------------------------------


def latency_rows(data: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    rows: list[tuple[str, dict[str, Any]]] = []
    search = data.get("search")
    if search:
        chunks = f"{search['chunks'] / 1000:.0f}k" if search["chunks"] >= 1000 else str(search["chunks"])
        for mode, s in search["search_excluding_embedding_ms"].items():
            rows.append((f"{mode.replace('_', ' ')}, no embedding ({chunks})", s))
        rows.append((f"hybrid incl. embedding ({chunks})", search["hybrid_end_to_end_ms"]))
    mcp = data.get("mcp")
    if mcp:
        chunks = f"{mcp['chunks'] / 1000:.0f}k" if mcp["chunks"] >= 1000 else str(mcp["chunks"])
        for key, label in (("in_process_ms", "in-process"), ("socket_ms", "MCP socket"),
                           ("bridge_ms", "stdio bridge")):
            for clients, s in mcp.get(key, {}).items():
                rows.append((f"{label}, {clients} client{'s' if clients != '1' else ''} ({chunks})", s))
    return rows


def bars_p50_p95(ax: Axes, rows: list[tuple[str, dict[str, Any]]], xlabel: str,
                 targets: list[float | None] | None = None) -> None:
    """Horizontal bars: p95 (light) behind p50 (dark), values written at the bar ends, and
    the p95 target of a row (if any) as a red tick."""
    labels = [label for label, _ in rows]
    y = list(range(len(rows)))
    p95 = [float(s["p95"]) for _, s in rows]
    p50 = [float(s["p50"]) for _, s in rows]
    ax.barh(y, p95, color="#9ecae1", label="p95")
    ax.barh(y, p50, color="#3182bd", label="p50")
    for i, (a, b) in enumerate(zip(p50, p95, strict=True)):
        ax.text(b, i, f" {a:g} / {b:g}", va="center", fontsize=7)
    for i, target in enumerate(targets or []):
        if target is not None:
            ax.plot([target, target], [i - 0.45, i + 0.45], color="red", linewidth=1.5)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_xlim(0, max(p95 + [t for t in targets or [] if t is not None]) * 1.45 if p95 else 1)
    ax.legend(fontsize=7, loc="best")


def panel_latency(ax: Axes, data: dict[str, dict[str, Any]]) -> None:
    rows = latency_rows(data)
    ax.set_title("search latency, p50 / p95 (ms)\ntargets: hybrid no embedding 15/50 at 100k; "
                 "socket p95 100 with 10 clients", fontsize=8)
    if not rows:
        empty(ax, "search.json / mcp.json")
        return
    bars_p50_p95(ax, rows, "ms")


def panel_throughput(ax: Axes, data: dict[str, dict[str, Any]]) -> None:
    ax.set_title("cold index throughput vs raw embedder (chunks/s)\ntarget ratio >= 0.9", fontsize=8)
    corpora = sorted(data.get("index", {}).get("corpora", []), key=lambda c: c["chunks"])
    if not corpora:
        empty(ax, "index.json")
        return
    x = list(range(len(corpora)))
    pipeline = [c["chunks_per_second"] for c in corpora]
    raw = [c["raw_embedder_chunks_per_second"] for c in corpora]
    ax.bar([i - 0.2 for i in x], pipeline, width=0.4, color="#31a354", label="index pipeline")
    ax.bar([i + 0.2 for i in x], raw, width=0.4, color="#bdbdbd", label="raw embedder, same chunks")
    for i, c in enumerate(corpora):
        ax.text(i, max(pipeline[i], raw[i]), f"ratio {c['throughput_ratio']:.2f}", ha="center",
                va="bottom", fontsize=7)
    ax.set_xticks(x, [f"{c['corpus']}\n{c['chunks']:,} chunks" for c in corpora], fontsize=7)
    ax.set_ylabel("chunks/s")
    ax.set_ylim(0, max(pipeline + raw) * 1.2)
    ax.legend(fontsize=7, loc="lower right")


def panel_freshness(ax: Axes, data: dict[str, dict[str, Any]]) -> None:
    ax.set_title("edit -> searchable (found by a search), p50 / p95 (ms)\nred: p95 targets, idle "
                 "lexical 300, semantic 1000; semantic during a backlog 1500", fontsize=8)
    daemon = data.get("daemon", {})
    rows: list[tuple[str, dict[str, Any]]] = []
    targets: list[float | None] = []
    for phase in ("idle", "backlog"):
        for kind in ("lexical", "semantic"):
            summary = (daemon.get(phase) or {}).get(f"{kind}_ms")
            if isinstance(summary, dict) and "p95" in summary:
                label = "daemon idle" if phase == "idle" else "during a cold backlog"
                rows.append((f"{kind}, {label}", summary))
                targets.append(FRESHNESS_TARGETS_MS.get((phase, kind)))
    if not rows:  # another layout: any summary named after edits
        rows = [(path.replace("_", " ").replace(".", " / "), s) for path, s in summaries(daemon)
                if "edit" in path.lower() or "searchable" in path.lower()]
        targets = []
    if not rows:
        empty(ax, "daemon.json")
        return
    bars_p50_p95(ax, rows, "ms", targets)


def panel_quality(ax: Axes, data: dict[str, dict[str, Any]]) -> None:
    ax.set_title("retrieval quality, MRR@10 (goal 0.6 on questions)", fontsize=8)
    sets = data.get("eval", {}).get("sets", {})
    if not sets:
        empty(ax, "eval.json")
        return
    names = list(sets)
    width = 0.8 / len(MODES)
    colors = {"lexical": "#fdae6b", "semantic": "#9e9ac8", "hybrid": "#e6550d"}
    for j, mode in enumerate(MODES):
        values = [sets[n]["modes"].get(mode, {}).get("mrr@10", 0.0) for n in names]
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(names))]
        ax.bar(xs, values, width=width, color=colors[mode], label=mode)
        for x, v in zip(xs, values, strict=True):
            ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.axhline(0.6, color="black", linestyle="--", linewidth=0.8)
    wrapped = {n: n.replace("questions-", "questions-\n") for n in names}  # long names overlap
    labels = [f"{wrapped[n]}\n({sets[n].get('role', '?')}, {sets[n].get('queries', '?')} q)" for n in names]
    ax.set_xticks(range(len(names)), labels, fontsize=6)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="upper right", ncols=3)


def empty(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


# ---- the table ---------------------------------------------------------------------------


def table(data: dict[str, dict[str, Any]]) -> str:
    rows = [("figure", "target on this 2-core machine", "measured"), ("---", "---", "---")]
    index = data.get("index", {})
    corpora = sorted(index.get("corpora", []), key=lambda c: c["chunks"])
    daemon = data.get("daemon")

    def measured_daemon(key: str, seconds: bool = False) -> str:
        found = daemon_figure(daemon, key)
        if found is None:
            return "not measured"
        path, value = found
        if seconds and unit(path) == " ms":
            return f"{value / 1000:.2f} s"
        return f"{value:g}{unit(path)}"

    ratio = ", ".join(f"{c['throughput_ratio']:.2f} ({c['corpus']}, {c['chunks']:,} chunks)" for c in corpora)
    rows.append(("cold index throughput / raw embedder throughput on the same chunks, same run",
                 "≥ 0.9", ratio or "not measured"))
    biggest = next((c for c in corpora if c["corpus"] == "large"), corpora[-1] if corpora else None)
    rows.append(("time to first lexical hit after `index` starts on a 20k-chunk repo", "≤ 30 s",
                 f"{biggest['first_lexical_hit_seconds']} s ({biggest['corpus']}, "
                 f"{biggest['chunks']:,} chunks)" if biggest else "not measured"))
    rows.append(("second `index` of the unchanged repo (no embeddings computed)", "≤ 2 × `git status` time",  # noqa: RUF001
                 f"{biggest['reconcile_vs_git_status']}x ({biggest['unchanged_reconcile_seconds']} s vs "
                 f"{biggest['git_status_seconds']} s, {biggest['corpus']}; "
                 f"{biggest['unchanged_queued']} files queued)" if biggest else "not measured"))
    rows.append(("edit→searchable, daemon idle, p95 (lexical / semantic, local model)", "≤ 0.3 s / ≤ 1 s",
                 f"{measured_daemon('idle_lexical_p95', True)} / "
                 f"{measured_daemon('idle_semantic_p95', True)}"))
    rows.append(("edit→searchable while a cold backlog runs, p95 semantic", "≤ 1.5 s",
                 measured_daemon("backlog_semantic_p95", True)))
    rows.append(("branch switch of ~500 files and back: embeddings computed on the way back", "0",
                 measured_daemon("branch_back")))
    search = data.get("search")
    hybrid = "not measured"
    if search:
        s = search["search_excluding_embedding_ms"]["hybrid"]
        hybrid = (f"{s['p50']} / {s['p95']} ms ({search['chunks']:,} chunks; query embedding "
                  f"{search['query_embedding_ms']['p50']} / {search['query_embedding_ms']['p95']} ms more)")
    rows.append(("hybrid search latency, 100k chunks, excluding query embedding, p50 / p95", "≤ 15 / 50 ms",
                 hybrid))
    mcp = data.get("mcp")
    socket_text = "not measured"
    if mcp:
        n = str(mcp["clients"])
        sock = mcp["socket_ms"][n]
        bridge = mcp.get("bridge_ms", {}).get(n)
        socket_text = (f"{sock['p95']} ms (p50 {sock['p50']}; {mcp['chunks']:,} chunks, {n} clients"
                       + (f"; bridge p95 {bridge['p95']} ms" if bridge else "")
                       + f"; in-process p95 {mcp['in_process_ms'][n]['p95']} ms)")
    rows.append(("search_code through the MCP socket, 10 concurrent clients, p95", "≤ 100 ms",
                 socket_text))
    rows.append(("daemon RSS idle with the local model loaded / during a 2,000-file burst", "≤ 300 / 500 MB",
                 f"{measured_daemon('rss_idle')} / {measured_daemon('rss_burst')}" + (
                     f" (daemon process, PostgreSQL apart; burst of {measured_daemon('burst_files')} files)"
                     if daemon_figure(daemon, "burst_files") else "")))
    sets = data.get("eval", {}).get("sets", {})
    if sets:
        questions = [f"{s['modes']['hybrid']['mrr@10']:.3f} ({name})" for name, s in sets.items()
                     if name.startswith(("questions-", "asked-")) and "hybrid" in s["modes"]]
        rows.append(("MRR@10 of hybrid on natural-language questions", "≥ 0.6",
                     ", ".join(questions) or "not measured"))
        losers = [name for name, s in sets.items() if not s.get("hybrid_beats_both")]
        rows.append(("hybrid beats lexical-only and semantic-only (MRR@10) on every set", "yes",
                     f"yes, on all {len(sets)}" if not losers else f"no: {', '.join(losers)}"))
    return "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)


def quality_table(data: dict[str, dict[str, Any]]) -> str:
    """MRR@10 per labelled set and mode, with hybrid's Recall@10 and nDCG@10."""
    sets = data.get("eval", {}).get("sets", {})
    rows = [("set", "use", "queries", "chunks", "MRR@10 lexical", "BM25", "semantic", "hybrid [95% CI]",
             "hybrid - better half [95% CI]", "hybrid R@1", "hybrid R@10"), ("---",) * 11]
    for name, figures in sets.items():
        modes = figures["modes"]

        def mrr(mode: str, modes: dict[str, Any] = modes) -> str:
            return f"{modes[mode]['mrr@10']:.3f}" if mode in modes else "-"

        hybrid = modes.get("hybrid", {})
        ci = hybrid.get("mrr@10_ci")
        versus = figures.get("compared", {}).get("hybrid_vs_best_half")
        margin = (f"{versus['mean']:+.3f} [{versus['ci'][0]:+.3f}, {versus['ci'][1]:+.3f}] vs "
                  f"{versus['best_half']}" if versus else "-")
        rows.append((name, f"{figures['role']} ({figures['kind']})", str(figures["queries"]),
                     f"{figures['chunks']:,}", mrr("lexical"), mrr("bm25"), mrr("semantic"),
                     f"**{mrr('hybrid')}**" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""), margin,
                     f"{hybrid.get('recall@1', 0):.3f}", f"{hybrid.get('recall@10', 0):.3f}"))
    return "\n".join("| " + " | ".join(row) + " |" for row in rows) if sets else ""


START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def update_section(path: Path, tables: str) -> None:
    """Replace what lies between the bench markers of a markdown file with the tables. Only
    markers alone on their line count: prose quoting them (as bench/README.md does) stays."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SystemExit(f"{path}: {exc.strerror}") from None
    section = re.compile(rf"^{re.escape(START)}$.*?^{re.escape(END)}$", re.S | re.M)
    if not section.search(text):
        raise SystemExit(f"{path}: no {START} ... {END} section (each marker on its own line) to update")
    path.write_text(section.sub(lambda _: f"{START}\n{tables}\n{END}", text, count=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="directory of the JSON results")
    parser.add_argument("--out", type=Path, help="PNG to write (default: <results>/summary.png)")
    parser.add_argument("--update", type=Path, nargs="*", default=[], metavar="MARKDOWN",
                        help=f"write the tables between {START} and {END} in these files")
    args = parser.parse_args()
    data = load(args.results)
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    panel_latency(axes[0][0], data)
    panel_throughput(axes[0][1], data)
    panel_freshness(axes[1][0], data)
    panel_quality(axes[1][1], data)
    machine: dict[str, Any] = next((d["_machine"] for d in data.values() if d.get("_machine")), {})
    dates = sorted(d["_machine"]["date"] for d in data.values() if d.get("_machine", {}).get("date"))
    when = f"{dates[0]} to {dates[-1]}" if dates and dates[0] != dates[-1] else (dates or ["?"])[0]
    fig.suptitle(f"codequarry benchmarks — {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
                 f"Python {machine.get('python', '?')}, {when}", fontsize=10)
    fig.tight_layout()
    out = args.out or args.results / "summary.png"
    fig.savefig(out, dpi=120)
    tables = table(data) + ("\n\n" + quality if (quality := quality_table(data)) else "")
    print(tables)
    for path in args.update:
        update_section(path, tables)
    print(f"\nwrote {out} from {', '.join(f'{n}.json' for n in data) or 'no results'}")


if __name__ == "__main__":
    main()
