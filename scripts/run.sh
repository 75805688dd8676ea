#!/bin/sh
# Run cxapi with the simulated host on a local state directory.
# The root password is made on first start and kept in $STATE/root-password.
set -e
STATE=${STATE:-$PWD/state}
BUILD=${BUILD:-build}
HTTP_PORT=${HTTP_PORT:-8080}
HTTPS_PORT=${HTTPS_PORT:-8443}
mkdir -p "$STATE"
chmod 700 "$STATE"
if [ ! -s "$STATE/root-password" ]; then
	(umask 077; openssl rand -base64 12 | tr -d '/+=\n' > "$STATE/root-password")
fi
PW=$(cat "$STATE/root-password")
echo "cxapi (sim backend), state in $STATE"
echo "  URL:   http://127.0.0.1:$HTTP_PORT/   https://127.0.0.1:$HTTPS_PORT/ (self-signed)"
echo "  login: root / $PW"
echo "  e.g.   /usr/bin/python3 -c \"from os_xenapi.client import XenAPI; s=XenAPI.Session('http://127.0.0.1:$HTTP_PORT'); s.login_with_password('root','$PW'); print(s.xenapi.VM.get_all())\""
exec "$BUILD/src/xapi/xapi" --state-dir="$STATE" --bind=127.0.0.1 \
	--http-port="$HTTP_PORT" --https-port="$HTTPS_PORT" --root-password="$PW" "$@"
