#!/bin/sh
# Run the benchmarks against the release-like build (debugoptimized by default).
set -e
BUILD=${BUILD:-build}
exec /usr/bin/python3 "$(dirname "$0")/bench.py" --xapi "$BUILD/src/xapi/xapi" "$@"
