#!/bin/sh
# bench/storage/run.sh [bench.py options] - the storage figures of issue 5
# (snapshot, export, import over loopback HTTP); see bench/storage/README.md.
# BUILD (default build) picks the daemon; XAPI_BIN overrides the binary;
# BENCH_DIR (default /tmp) is where the temporary state goes (~7 GiB).
set -e
HERE=$(dirname "$0")
BUILD=${BUILD:-build}
exec /usr/bin/python3 "$HERE/bench.py" --xapi "${XAPI_BIN:-$BUILD/src/xapi/xapi}" "$@"
