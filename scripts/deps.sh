#!/bin/sh
# Install the Debian 12 packages cxapi needs to build, run and test, if missing.
set -e
PKGS="meson ninja-build gcc pkg-config libuv1-dev libssl-dev openssl libexpat1-dev
 libjansson-dev libsqlite3-dev sqlite3 libpam0g-dev libpam-pwdfile uuid-dev libcrypt-dev
 libcmocka-dev libhttp-parser-dev python3 python3-pytest python3-os-xenapi
 clang libclang-rt-14-dev wrk curl"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "installing:$missing"
	SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
