#!/usr/bin/env bash
# bench/xs/run.sh [ROUNDS=3] [SECS=2] - xenstored benchmark: our daemon
# alternated with Debian's C xenstored and oxenstored in one run.
#
# Each daemon runs on its own socket (tests/xs/peer.sh; Debian's daemons
# under the project's LD_PRELOAD shim tests/xs/peer_shim.c).  For ROUNDS
# rounds, each micro test (read write dir1000 txn watch; SECS seconds each)
# runs once per daemon, the daemon order rotating each round.  Then, on
# fresh daemons, the VM-creation transaction with and without 1,000
# introduced domains (VMTXN_ROUNDS times; two daemons of a kind side by
# side, transactions alternating between them) and the 100,000-node load
# with the daemon's RSS (LOAD_ROUNDS times).  Prints a Markdown table of the
# medians with the ratio ours / best Debian daemon and the issue's targets.
#
# Env:
#   DAEMONS       default "c ocaml ours" (also: ocaml-nolog = oxenstored
#                 --no-access-log).  "ours" is dropped, with a note, while
#                 build/src/xs/xenstored is missing or does not answer.
#   WAIT_OURS=S   first wait up to S seconds for our daemon to be built and
#                 to answer (default 0: don't wait)
#   OUT=DIR       where daemons' state, raw.txt and summary.md go
#                 (default a new /tmp/xsbench.XXXXXX)
#   NDOMS=1000 NODES=100000 VMTXN_ROUNDS=ROUNDS LOAD_ROUNDS=2 TESTS="read ..."
#   BUILD=build   our build directory (XS_BIN overrides the binary)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROUNDS=${1:-3}; SECS=${2:-2}
DAEMONS=${DAEMONS:-c ocaml ours}
NDOMS=${NDOMS:-1000}; NODES=${NODES:-100000}
VMTXN_ROUNDS=${VMTXN_ROUNDS:-$ROUNDS}; LOAD_ROUNDS=${LOAD_ROUNDS:-2}
TESTS=${TESTS:-read write dir1000 txn watch}
WAIT_OURS=${WAIT_OURS:-0}
PEER=$ROOT/tests/xs/peer.sh
XS_BIN=${XS_BIN:-$ROOT/${BUILD:-build}/src/xs/xenstored}
export XS_BIN
OUT=${OUT:-$(mktemp -d /tmp/xsbench.XXXXXX)}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
RAW=$OUT/raw.txt
BENCH=$OUT/xsbench
NOTES=()

${CC:-cc} -O2 -Wall -pthread -o "$BENCH" "$HERE/xsbench.c" -lxenstore || exit 2
ulimit -n 20000 2>/dev/null || true	# NDOMS guest connections

declare -A SOCK PID
start() {	# NAME: a fresh daemon, state in OUT/NAME; NAME is KIND or KIND-b (a twin)
	local k=$1 v dir=$OUT/$1
	[ -n "${PID[$1]:-}" ] && stop "$k"
	rm -rf "$dir"
	case ${k%-b} in
	c)           v=$("$PEER" start c "$dir");;
	ocaml)       v=$("$PEER" start ocaml "$dir");;
	ocaml-nolog) v=$("$PEER" start ocaml "$dir" --no-access-log);;
	ours)        v=$("$PEER" start ours "$dir" --dump none);;
	*) echo "unknown daemon $k" >&2; return 1;;
	esac || return 1
	v=${v%%$'\n'*}
	SOCK[$k]=${v%% PID=*}; SOCK[$k]=${SOCK[$k]#XENSTORED_PATH=}
	PID[$k]=${v##*PID=}
	# answering?
	XENSTORED_PATH=${SOCK[$k]} timeout 10 xenstore-read /local/domain/0 >/dev/null 2>&1 ||
	XENSTORED_PATH=${SOCK[$k]} timeout 10 xenstore-ls / >/dev/null 2>&1
}
stop() { "$PEER" stop "$OUT/$1" >/dev/null 2>&1; PID[$1]=; }
domsock() { [ "$1" = ours ] && echo "$OUT/ours/domain/%u/socket"; }
alive() { [ -n "${PID[$1]:-}" ] && kill -0 "${PID[$1]}" 2>/dev/null; }

run1() {	# KIND TAG XSBENCH-ARGS... : one xsbench run, lines tagged into RAW
	local k=$1 tag=$2 out rc; shift 2
	out=$(XENSTORED_PATH=${SOCK[$k]} timeout "${TIMEOUT:-600}" "$BENCH" -p "${PID[$k]}" "$@" 2>"$OUT/err.txt"); rc=$?
	if [ $rc -ne 0 ] || [ -z "$out" ]; then
		out="test=${*: -1} FAILED rc=$rc $(tr '\n' ' ' <"$OUT/err.txt" | cut -c1-200)"
	fi
	while IFS= read -r l; do echo "daemon=$k $tag $l"; done <<<"$out" | tee -a "$RAW"
	if ! alive "$k"; then
		echo "daemon=$k $tag DIED during ${*: -1}; restarting" | tee -a "$RAW"
		NOTES+=("$k died during ${*: -1} ($tag)")
		start "$k" || true
	fi
	if [ -n "${TWIN:-}" ] && ! alive "$TWIN"; then
		echo "daemon=$k $tag twin $TWIN DIED during ${*: -1}" | tee -a "$RAW"
		NOTES+=("$TWIN (the no-domain twin) died during ${*: -1} ($tag)")
	fi
}

# our daemon: optionally wait for it to be built and to answer.  The run
# uses a copy, so that a rebuild during the run changes nothing.
OURS_ID=
if [[ " $DAEMONS " == *" ours "* ]]; then
	t_end=$(( $(date +%s) + WAIT_OURS ))
	SRC_BIN=$XS_BIN
	while :; do
		if [ -x "$SRC_BIN" ] && cp "$SRC_BIN" "$OUT/xenstored.ours" && XS_BIN=$OUT/xenstored.ours &&
		   start ours; then
			OURS_ID="ours=$(sha256sum "$XS_BIN" | cut -c1-12)@$(date -u -r "$SRC_BIN" +%FT%TZ)"
			break
		fi
		stop ours
		if [ "$(date +%s)" -ge "$t_end" ]; then
			NOTES+=("ours: $SRC_BIN missing or not answering; measured the peers only")
			DAEMONS=$(echo " $DAEMONS " | sed 's/ ours / /; s/^ *//; s/ *$//')
			break
		fi
		sleep 10
	done
fi

: >"$RAW"
echo "# $(date -u +%FT%TZ) $(uname -r) nproc=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg) rounds=$ROUNDS secs=$SECS daemons=$DAEMONS ndoms=$NDOMS nodes=$NODES $OURS_ID" | tee -a "$RAW"
trap 'for k in $DAEMONS; do stop $k; stop $k-b; done' EXIT
for k in $DAEMONS; do
	alive "$k" || start "$k" || { echo "cannot start $k" >&2; exit 1; }
done

set -- $DAEMONS; NK=$#
order() {	# ROUND: the daemons, rotated by ROUND
	echo $DAEMONS | tr ' ' '\n' | awk -v r="$1" -v n="$NK" '{a[NR-1]=$0} END{for(i=0;i<n;i++) print a[(i+r-1)%n]}'
}

for r in $(seq "$ROUNDS"); do
	# the kernel's share of one synchronous round trip (a do-nothing server)
	"$BENCH" -d "$SECS" floor | sed "s/^/daemon=floor round=$r /" | tee -a "$RAW"
	for t in $TESTS; do
		for k in $(order "$r"); do run1 "$k" "round=$r" -d "$SECS" "$t"; done
	done
done
for k in $DAEMONS; do XENSTORED_PATH=${SOCK[$k]} "$BENCH" cleanup 2>/dev/null; done

# VM-creation transaction, with and without NDOMS introduced domains: two
# fresh daemons of each kind, KIND (gets the domains) and KIND-b (stays
# empty); xsbench alternates transactions between them
for r in $(seq "$VMTXN_ROUNDS"); do
	for k in $(order "$r"); do
		start "$k" && start "$k-b" || { NOTES+=("$k would not restart for vmtxn"); stop "$k-b"; continue; }
		G=$(domsock "$k")
		TWIN=$k-b run1 "$k" "round=$r" -d "$SECS" -D "$NDOMS" ${G:+-G "$G"} \
			-S "${SOCK[$k-b]}" -q "${PID[$k-b]}" vmtxn
		stop "$k-b"
	done
done

# RSS growth over NODES new nodes: fresh daemons
for r in $(seq "$LOAD_ROUNDS"); do
	for k in $(order "$r"); do
		start "$k" || { NOTES+=("$k would not restart for load"); continue; }
		run1 "$k" "round=$r" -n "$NODES" load
	done
done

for n in "${NOTES[@]}"; do echo "note: $n" >>"$RAW"; done
python3 "$HERE/summarize.py" "$RAW" | tee "$OUT/summary.md"
echo
echo "raw figures: $RAW"
