#!/bin/bash
# An edit made during a large change: how long until words find it.
# usage: CQ_BENCH_DIR=/tmp/mine bench/burst.sh NAME local|dead [CORPUS]
# Cold-indexes a copy of CORPUS (default: the medium corpus) with a daemon, then for N =
# 10, 30, 100 appends a comment line to N Python files plus a probe function to one more
# and times until `search --mode lexical` finds the probe (polled every 50 ms; 20 s
# between bursts). `dead` points the embedder at a closed port: words only. Prints one
# line per burst and appends it as JSON to $CQ_BENCH_DIR/burst.jsonl. CQ (the codequarry
# script) defaults to this checkout's .venv; PYTHONPATH may point at another tree's
# daemon/ to time other code with the same environment.
# The whole tree is registered twice, as in QA's original script (projects `burst` and
# `repo`, since `index` registers the path again): both index every burst.
set -u
NAME=$1; KIND=$2
CORPUS=${3:-/tmp/cq-idx/corpora/medium}
OUT=${CQ_BENCH_DIR:?set CQ_BENCH_DIR}
B=$OUT/$NAME
CQ=${CQ:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/codequarry}
rm -rf "$B"; mkdir -p "$B/run"; chmod 700 "$B/run"
cp -r "$CORPUS" "$B/repo"
export CODEQUARRY_HOME=$B/data CODEQUARRY_CONFIG=$B/config.toml XDG_RUNTIME_DIR=$B/run
if [ "$KIND" = dead ]; then printf '[embedder]\nkind = "ollama"\nurl = "http://127.0.0.1:9"\nmax_retries = 0\n' > "$B/config.toml"; fi
"$CQ" add --project burst "$B/repo" >/dev/null
"$CQ" daemon --log-file "$B/daemon.log" 2>/dev/null &
DPID=$!
sleep 3
timeout 300 "$CQ" index "$B/repo" >/dev/null 2>&1; echo "index rc=$?"
sleep 2
for N in 10 30 100; do
  files=$(cd "$B/repo" && git ls-files '*.py' | head -"$N")
  start=$(date +%s.%N)
  for f in $files; do echo "# touched $N" >> "$B/repo/$f"; done
  echo "def zebra_probe_$N(): pass" >> "$B/repo/$(cd "$B/repo" && git ls-files '*.py' | tail -1)"
  until "$CQ" search "zebra_probe_$N" --mode lexical --project burst --limit 1 2>/dev/null | grep -q "zebra_probe_$N"; do
    sleep 0.05
  done
  end=$(date +%s.%N)
  seconds=$(echo "$end - $start" | bc)
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "$NAME N=$N lexical after $seconds s (load $load)"
  printf '{"name": "%s", "embedder": "%s", "files": %d, "seconds": %s, "load1": %s}\n' \
    "$NAME" "$KIND" "$N" "$seconds" "$load" >> "$OUT/burst.jsonl"
  sleep 20
done
kill -TERM $DPID; wait $DPID 2>/dev/null
