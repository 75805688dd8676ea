#!/usr/bin/env bash
# peer.sh - run one of Debian's Xen 4.17 xenstore daemons (the reference
# "peer" for cxapi's xenstored tests and benchmarks) on a host without a Xen
# hypervisor, serving only a Unix socket in DIR.
#
#   tests/xs/peer.sh start c|ocaml|ours DIR [extra daemon args]
#       prints "XENSTORED_PATH=DIR/socket PID=<daemon pid>" and returns once
#       the socket accepts connections.
#   tests/xs/peer.sh stop DIR
#       SIGTERM to DIR/daemon.pid (SIGKILL after 5 s).
#
# c     /usr/lib/xen-4.17/bin/xenstored -N, with LD_PRELOAD=peer_shim.so
#       (tests/xs/peer_shim.c, compiled into DIR/peer_shim.so on first use).
#       Socket from XENSTORED_PATH/XENSTORED_RUNDIR.  Its log: DIR/daemon.log.
# ocaml /usr/lib/xen-4.17/bin/oxenstored --no-fork --no-domain-init, same shim.
#       Its socket path is compiled in (/var/run/xenstored/socket), so it runs
#       in a private mount namespace (unshare -m; needs CAP_SYS_ADMIN) with a
#       tmpfs on /run and DIR bind-mounted on /run/xenstored.  Config:
#       DIR/oxenstored.conf (Debian's, with pid/log files moved into DIR).
# ours  build/src/xs/xenstored --socket DIR/socket --rundir DIR (per-domain sockets
#       DIR/domain/<domid>/socket, dump DIR/xenstored.dump); XS_BIN or BUILD override.
#
# Env: PEER_SHIM (a prebuilt peer_shim.so to use instead), XEN_BIN_DIR (default /usr/lib/xen-4.17/bin), CC (default cc),
#      XS_BIN (our daemon; default $ROOT/${BUILD:-build}/src/xs/xenstored).
# Clients then use: XENSTORED_PATH=DIR/socket xenstore-ls ...
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
XEN_BIN_DIR=${XEN_BIN_DIR:-/usr/lib/xen-4.17/bin}

usage() { echo "usage: $0 start c|ocaml|ours DIR [daemon args] | stop DIR" >&2; exit 2; }

build_shim() { # DIR -> path of the shim
	if [ -n "${PEER_SHIM:-}" ]; then echo "$PEER_SHIM"; return; fi
	local so=$1/peer_shim.so
	if [ ! -f "$so" ] || [ "$HERE/peer_shim.c" -nt "$so" ]; then
		${CC:-cc} -O2 -shared -fPIC -o "$so.tmp" "$HERE/peer_shim.c" -ldl
		mv "$so.tmp" "$so"
	fi
	echo "$so"
}

wait_socket() { # DIR
	local i
	for i in $(seq 200); do
		if [ -S "$1/socket" ] && [ -s "$1/daemon.pid" ] &&
		   python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' "$1/socket" 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	echo "daemon did not start; $1/daemon.log:" >&2
	cat "$1/daemon.log" >&2 || true
	return 1
}

cmd=${1:-}; [ -n "$cmd" ] || usage; shift
case $cmd in
start)
	[ $# -ge 2 ] || usage
	kind=$1; dir=$2; shift 2
	mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
	rm -f "$dir/socket" "$dir/daemon.pid"
	case $kind in
	c)
		shim=$(build_shim "$dir")
		XENSTORED_RUNDIR=$dir XENSTORED_PATH=$dir/socket LD_PRELOAD=$shim \
			setsid "$XEN_BIN_DIR/xenstored" -N -F "$dir/daemon.pid" "$@" \
			>"$dir/daemon.log" 2>&1 </dev/null &
		;;
	ocaml)
		shim=$(build_shim "$dir")
		conf=$dir/oxenstored.conf
		sed -e "s|^pid-file = .*|pid-file = $dir/oxenstored.pid|" \
		    -e "s|^# *xenstored-log-file = .*|xenstored-log-file = $dir/xenstored.log|" \
		    -e "s|^# *access-log-file = .*|access-log-file = $dir/access.log|" \
		    /etc/xen/oxenstored.conf >"$conf"
		setsid unshare -m --propagation private sh -c '
			mount -t tmpfs xs-peer-run /run && mkdir -p /run/xenstored &&
			mount --bind "$1" /run/xenstored && shift &&
			echo $$ >/run/xenstored/daemon.pid &&
			exec env LD_PRELOAD="$0" "$@"' \
			"$shim" "$dir" "$XEN_BIN_DIR/oxenstored" --no-fork --no-domain-init \
			--config-file "$conf" "$@" >"$dir/daemon.log" 2>&1 </dev/null &
		;;
	ours)
		bin=${XS_BIN:-$ROOT/${BUILD:-build}/src/xs/xenstored}
		[ -x "$bin" ] || { echo "$bin not built (ninja -C build)" >&2; exit 1; }
		setsid sh -c 'echo $$ >"$1/daemon.pid"; shift; exec "$@"' sh "$dir" \
			"$bin" --socket "$dir/socket" --rundir "$dir" "$@" >"$dir/daemon.log" 2>&1 </dev/null &
		;;
	*) usage;;
	esac
	wait_socket "$dir"
	echo "XENSTORED_PATH=$dir/socket PID=$(cat "$dir/daemon.pid")"
	;;
stop)
	[ $# -ge 1 ] || usage
	dir=$1
	if [ -s "$dir/daemon.pid" ]; then
		pid=$(cat "$dir/daemon.pid")
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
		kill -9 "$pid" 2>/dev/null || true
		rm -f "$dir/daemon.pid"
	fi
	;;
*) usage;;
esac
