#!/usr/bin/env bash
# Install the peer proxies and wrk from Debian (run once, as root).
# The packages' system services are never used by the benchmark: run.sh starts
# each peer in the foreground from the configs in this folder. Any service the
# package starts is stopped and disabled again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# Do not let package scripts start services (policy-rc.d is honoured by invoke-rc.d).
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT

apt-get update
# Finish any half-done upgrade first, or apt refuses to install anything.
dpkg --configure -a || true
apt-get install -y -f
pkgs="nginx-light haproxy wrk openssl"
caddy_policy=$(apt-cache policy caddy)
if grep -q 'Candidate: [0-9]' <<<"$caddy_policy"; then
    pkgs="$pkgs caddy"
else
    echo "install.sh: caddy is not packaged for this release; run.sh will skip it" >&2
fi
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $pkgs

for svc in nginx haproxy caddy; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
done
for b in nginx haproxy caddy wrk; do
    command -v "$b" >/dev/null && echo "$b: $(command -v "$b")"
done
