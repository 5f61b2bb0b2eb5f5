#!/bin/sh
# Puts promtool (Prometheus's rule checker and tester) at BIN_DIR/promtool, for the alert
# rules' tests in `make test` (tests/ops/test_alert_rules.py).
#
# From PATH when it is there; otherwise from Debian's `prometheus` package, fetched with
# `apt-get download` and unpacked in a temporary folder, keeping promtool alone: nothing is
# installed system-wide and no Prometheus server is set up or started. When neither works
# this says so loudly and exits 0: the tests then skip with the same message.
set -eu
dest=${1:?usage: sh ops/install-promtool.sh BIN_DIR}
dest=$(cd "$dest" && pwd)

if [ -x "$dest/promtool" ] && "$dest/promtool" --version >/dev/null 2>&1; then
    exit 0
fi
if command -v promtool >/dev/null 2>&1; then
    ln -sf "$(command -v promtool)" "$dest/promtool"
    exit 0
fi

warn() {
    echo "*** install-promtool: $1" >&2
    echo "*** the alert rules' promtool tests will SKIP until promtool is on PATH or in $dest" >&2
    exit 0
}

command -v apt-get >/dev/null 2>&1 || warn "no apt-get here to fetch Debian's prometheus package"
command -v dpkg-deb >/dev/null 2>&1 || warn "no dpkg-deb here to unpack Debian's prometheus package"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus >/dev/null 2>&1; then
    # A fresh image may have no package lists yet: read them (root only), then try again.
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq >/dev/null 2>&1 || true
    fi
    apt-get download prometheus >/dev/null 2>&1 || warn "apt-get download prometheus failed"
fi
dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool ||
    warn "the prometheus package holds no usr/bin/promtool"
install -m 0755 usr/bin/promtool "$dest/promtool"
"$dest/promtool" --version 2>&1 | head -n 1
