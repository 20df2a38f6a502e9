#!/bin/sh
# Regenerate the four labelled retrieval sets of bench/data/ (see bench/data/README.md).
# The stripped corpora go to $OUT (default /tmp/cq-bench/<set>/corpus); the labels to bench/data/<set>.jsonl.
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-/tmp/cqvenv/bin/python}
OUT=${OUT:-/tmp/cq-bench}
STDLIB=${STDLIB:-$($PY -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')}
RICH=${RICH:-$($PY -c 'import os, rich; print(os.path.dirname(rich.__file__))')}
JAVA_SRC=${JAVA_SRC:-/usr/lib/jvm/temurin-25-jdk-amd64/lib/src.zip}
NPM=${NPM:-/usr/lib/node_modules/npm}

$PY bench/make_qrels.py "$STDLIB" "$OUT/stdlib-tune" --lang python --max-queries 600 --seed 0 \
    --include 'email/**' 'http/**' 'json/**' 'logging/**' 'urllib/**' 'xml/etree/**' 'importlib/**' \
    --qrels bench/data/stdlib-tune.jsonl "$@"

$PY bench/make_qrels.py "$RICH" "$OUT/rich-report" --lang python --max-queries 400 --seed 0 \
    --qrels bench/data/rich-report.jsonl "$@"

$PY bench/make_qrels.py "$JAVA_SRC" "$OUT/java-report" --lang java --max-queries 300 --seed 0 \
    --include 'java.base/java/util/concurrent/**' \
    --qrels bench/data/java-report.jsonl "$@"

$PY bench/make_qrels.py "$NPM" "$OUT/js-report" --lang javascript --max-queries 200 --seed 0 \
    --include 'lib/**' 'node_modules/undici/lib/**' 'node_modules/negotiator/**' 'node_modules/debug/src/**' \
        'node_modules/http-cache-semantics/**' 'node_modules/ip-address/dist/**' \
        'node_modules/lru-cache/dist/commonjs/index.js' 'node_modules/path-scurry/dist/commonjs/index.js' \
    --exclude 'node_modules/undici/lib/llhttp/**' \
    --qrels bench/data/js-report.jsonl "$@"

# the hand-written "asked" question sets over unmodified stdlib and java.net/java.util.zip sources
OUT="$OUT" $PY bench/make_asked.py corpus python && OUT="$OUT" $PY bench/make_asked.py build python
OUT="$OUT" $PY bench/make_asked.py corpus java && OUT="$OUT" $PY bench/make_asked.py build java
