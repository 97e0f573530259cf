#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (as root), or says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
need() { command -v "$1" >/dev/null 2>&1 || [ -x "$2" ] || packages+=("$3"); }
need redis-server /usr/bin/redis-server redis-server
need nginx /usr/sbin/nginx nginx-light
need promtool /usr/bin/promtool prometheus
need chromium /usr/bin/chromium chromium
need wrk /usr/bin/wrk wrk
need openssl /usr/bin/openssl openssl
need tinyproxy /usr/bin/tinyproxy tinyproxy
need node /usr/bin/node nodejs
need npm /usr/bin/npm npm
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
dpkg -s libpq-dev >/dev/null 2>&1 || packages+=(libpq-dev)
dpkg -s libsqlite3-dev >/dev/null 2>&1 || packages+=(libsqlite3-dev)
dpkg -s libssl-dev >/dev/null 2>&1 || packages+=(libssl-dev pkg-config)

if [ ${#packages[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing ${packages[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
        # The Debian services start on install; the tests start their own on free ports.
        for svc in redis-server nginx prometheus postgresql tinyproxy; do
            systemctl stop "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
        done
    else
        echo "setup: missing Debian packages: ${packages[*]}"
        echo "setup: run as root or: sudo apt-get install ${packages[*]}"
        exit 1
    fi
fi

VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r tests/py/requirements.txt

# tests/js: the official JavaScript SDKs, Claude Code and the Codex CLI, exactly as the
# lockfile pins them; installed again only when the lockfile changed.
JS=tests/js
if ! cmp -s "$JS/package-lock.json" "$JS/node_modules/.package-lock.json.installed"; then
    echo "setup: npm ci in $JS"
    (cd "$JS" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$JS/package-lock.json" "$JS/node_modules/.package-lock.json.installed"
fi
echo "setup: ok"
