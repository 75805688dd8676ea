#!/bin/bash
# The whole test suite: C unit tests (cmocka), integration tests (pytest with
# Debian's XenAPI module and raw JSON-RPC against a real daemon), bounded
# libFuzzer runs of every parser, and the unit + integration tests again under
# ASan+UBSan.  Ends with one line "N passed, N failed".
set -u
BUILD=${BUILD:-build}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RESULTS=$(mktemp -d)
trap 'rm -rf "$RESULTS"' EXIT
PY=/usr/bin/python3

stage() { echo; echo "=== $*"; }

run_unit() { # build-dir tag
	meson test -C "$1" --print-errorlogs >"$RESULTS/unit-$2.log" 2>&1
	tail -n 12 "$RESULTS/unit-$2.log"
	cp "$1/meson-logs/testlog.json" "$RESULTS/unit-$2.json" 2>/dev/null || true
}

run_pytest() { # build-dir tag: every binary the tests run comes from that build
	BUILD="$1" XAPI_BIN="$ROOT/$1/src/xapi/xapi" VHD_CHECK_BIN="$ROOT/$1/src/vhd/vhd-check" \
		$PY -m pytest -q -p no:cacheprovider --junitxml="$RESULTS/it-$2.xml" tests/integration 2>&1 | tail -n 15
}

# Xen Orchestra's client for tests/integration/test_xo.py, from the npm registry
# at the versions tests/xo/package-lock.json pins; skipped while node_modules
# matches the lock file, so an offline re-run works.
xo_deps() {
	local lock=tests/xo/package-lock.json stamp=tests/xo/node_modules/.cxapi-lock
	if [ -f tests/xo/node_modules/xen-api/package.json ] && cmp -s "$lock" "$stamp"; then
		return 0
	fi
	if npm ci --prefix tests/xo --no-audit --no-fund --loglevel=error >"$RESULTS/npm.log" 2>&1; then
		cp "$lock" "$stamp"
	else
		tail -n 20 "$RESULTS/npm.log"
		echo "npm ci --prefix tests/xo failed: the Xen Orchestra tests will fail"
	fi
}
xo_deps

stage "unit tests"
run_unit "$BUILD" plain
stage "integration tests"
run_pytest "$BUILD" plain

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
	stage "fuzzing (${FUZZ_SECONDS}s per target)"
	if [ ! -f build-fuzz/build.ninja ]; then
		CC=clang meson setup build-fuzz -Dfuzz=true -Db_lundef=false >/dev/null
	fi
	ninja -C build-fuzz >/dev/null 2>"$RESULTS/fuzz-build.log" || { cat "$RESULTS/fuzz-build.log"; echo "fuzz build failed" > "$RESULTS/fuzz-fail-build"; }
	for f in build-fuzz/fuzz/fuzz_*; do
		[ -f "$f" ] && [ -x "$f" ] || continue
		name=$(basename "$f")
		mkdir -p "$RESULTS/corpus-$name"
		if "$f" -max_total_time="$FUZZ_SECONDS" -max_len=65536 -rss_limit_mb=2048 \
			"$RESULTS/corpus-$name" fuzz/corpus/"${name#fuzz_}" >"$RESULTS/$name.log" 2>&1; then
			echo "$name: ok ($(grep -o 'stat::number_of_executed_units: [0-9]*' "$RESULTS/$name.log" | tail -1; tail -n 1 "$RESULTS/$name.log"))"
			touch "$RESULTS/fuzz-pass-$name"
		else
			tail -n 30 "$RESULTS/$name.log"
			echo "$name: FAILED"
			touch "$RESULTS/fuzz-fail-$name"
		fi
	done
fi

if [ "${SKIP_ASAN:-0}" != 1 ]; then
	stage "unit + integration tests under ASan+UBSan"
	if [ ! -f build-asan/build.ninja ]; then
		meson setup build-asan -Db_sanitize=address,undefined -Dbuildtype=debug >/dev/null
	fi
	if ninja -C build-asan >"$RESULTS/asan-build.log" 2>&1; then
		export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
		run_unit build-asan asan
		run_pytest build-asan asan
	else
		tail -n 30 "$RESULTS/asan-build.log"
		touch "$RESULTS/fuzz-fail-asan-build"
	fi
fi

$PY - "$RESULTS" <<'PYEOF'
import json, os, sys, glob
import xml.etree.ElementTree as ET
d = sys.argv[1]
passed = failed = skipped = 0
for f in glob.glob(os.path.join(d, "unit-*.json")):
    for line in open(f):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        if r.get("result") == "OK":
            passed += 1
        elif r.get("result") == "SKIP":
            skipped += 1
        else:
            failed += 1
for f in glob.glob(os.path.join(d, "it-*.xml")):
    root = ET.parse(f).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    for s in suites:
        t = int(s.get("tests", 0)); fl = int(s.get("failures", 0)) + int(s.get("errors", 0))
        sk = int(s.get("skipped", 0))
        passed += t - fl - sk; failed += fl; skipped += sk
expected_its = 2 if os.environ.get("SKIP_ASAN", "0") != "1" else 1
if len(glob.glob(os.path.join(d, "it-*.xml"))) < expected_its:
    failed += 1  # an integration run that produced no report
for f in glob.glob(os.path.join(d, "fuzz-pass-*")):
    passed += 1
for f in glob.glob(os.path.join(d, "fuzz-fail-*")):
    failed += 1
print()
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed or passed == 0 else 0)
PYEOF
