#!/usr/bin/env bash
# One entry point for corral's ops checks: alert rules, Prometheus config, Grafana dashboard,
# Kubernetes manifests, compose stack, nginx and systemd configs, and, when a corral binary
# exists (CORRAL_BIN, else target/debug/corral), checks against the real thing:
#   - check_deploy_cli.py: every shipped corral.toml passes `check-config`, every corral
#     command line of the Dockerfile, compose, k8s and systemd runs for real;
#   - dashboard_real.py: the built-in dashboard in headless Chromium (dashboard_test.mjs)
#     against a real corral (sims, key pool, users) under live mixed traffic; screenshots to
#     $SCREENSHOT_DIR (default target/screenshots);
#   - prom_test.py: a real Prometheus scraping two real replicas (+ Redis, a key pool, a
#     failover) answers every panel query of grafana/dashboards/corral.json with data, and
#     the error panels read 0 (not "No data") while the fleet is healthy.
# The Python scripts share the test harness in tests/harness.
# With CORRAL_URL and CORRAL_ADMIN_TOKEN set it also runs the dashboard test against that corral.
#
#   bash tests/ops/run.sh            # installs what it needs when root, then runs every check
#   OPS_NO_INSTALL=1 bash tests/ops/run.sh
#
# Installs (root only): apt prometheus redis-server chromium chromium-driver; a venv at .venv
# with pinned kubernetes-validate, pyyaml, check-jsonschema, httpx; playwright-core into
# tests/ops/node_modules from the committed package-lock.json (never a bundled browser:
# Debian's chromium is used).
# Ends with one line `ops: N passed, M failed`; exits 1 when anything failed.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OPS="$ROOT/tests/ops"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
PIP_PACKAGES=(kubernetes-validate==1.37.0 pyyaml==6.0.3 check-jsonschema==0.39.0 httpx==0.28.1)
APT_PACKAGES=(prometheus redis-server chromium chromium-driver)
export PY KV="$VENV/bin/kubernetes-validate"

passed=0
failed=0
failed_names=()
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

step() {  # name, command...: runs one check, counts it
    local name=$1; shift
    echo
    echo "== $name"
    if "$@"; then
        passed=$((passed + 1)); echo "-- ok: $name"
    else
        failed=$((failed + 1)); failed_names+=("$name"); echo "-- FAILED: $name"
    fi
}

# ------------------------------------------------------------------------------ install
install_deps() {
    if [[ ${OPS_NO_INSTALL:-} == 1 ]]; then return 0; fi
    if [[ $(id -u) == 0 ]]; then
        local missing=()
        for p in "${APT_PACKAGES[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
        done
        if ((${#missing[@]})); then
            echo "ops: apt-get install ${missing[*]}"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        fi
    fi
    if [[ ! -x $PY ]]; then python3 -m venv "$VENV" || return 1; fi
    if ! "$PY" -m pip freeze 2>/dev/null | grep -qi '^kubernetes-validate==1.37.0' \
        || ! "$PY" -c 'import httpx, yaml' 2>/dev/null; then
        echo "ops: pip install ${PIP_PACKAGES[*]}"
        "$PY" -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}" || return 1
    fi
    if [[ ! -d $OPS/node_modules/playwright-core ]]; then
        echo "ops: npm ci (playwright-core)"
        (cd "$OPS" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent) || return 1
    fi
}
step "install tools" install_deps

# ------------------------------------------------------------------------------ prometheus
step "promtool check rules" promtool check rules "$ROOT/deploy/prometheus/alerts.yml"
step "promtool test rules" promtool test rules "$ROOT/deploy/prometheus/alerts_test.yml"
step "promtool check config" promtool check config "$ROOT/deploy/prometheus/prometheus.yml"

# ------------------------------------------------------------------------------ grafana
check_grafana() {
    "$PY" "$OPS/panel_queries.py" --check || return 1
    # The dashboard JSON is generated: it must match its generator.
    local tmp="$WORK/gen"; mkdir -p "$tmp/dashboards"
    cp "$ROOT/grafana/generate_dashboard.py" "$tmp/"
    "$PY" "$tmp/generate_dashboard.py" >/dev/null
    if ! cmp -s "$tmp/dashboards/corral.json" "$ROOT/grafana/dashboards/corral.json"; then
        echo "grafana/dashboards/corral.json is stale: run python3 grafana/generate_dashboard.py"
        return 1
    fi
    # Provisioning files parse and point where compose mounts the dashboards.
    "$PY" - "$ROOT" <<'PYEOF'
import sys, yaml
root = sys.argv[1]
ds = yaml.safe_load(open(f"{root}/grafana/provisioning/datasources/prometheus.yaml"))
db = yaml.safe_load(open(f"{root}/grafana/provisioning/dashboards/corral.yaml"))
assert ds["datasources"][0]["type"] == "prometheus", "datasource is not Prometheus"
assert db["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/corral", "dashboard path differs from compose mount"
print("grafana provisioning: ok")
PYEOF
}
step "grafana dashboard and provisioning" check_grafana

# ------------------------------------------------------------------------------ kubernetes
step "kubernetes manifests" bash "$OPS/validate_k8s.sh"

# ------------------------------------------------------------------------------ compose & friends
check_compose() {
    if docker compose version >/dev/null 2>&1; then
        echo "compose: docker compose config"
        docker compose -f "$ROOT/deploy/compose.yaml" config -q || return 1
    else
        echo "compose: no docker compose plugin; validating against the compose-spec JSON schema (check-jsonschema)"
        "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$ROOT/deploy/compose.yaml" || return 1
    fi
    "$PY" "$OPS/check_compose.py" "$ROOT/deploy/compose.yaml"
}
step "compose stack" check_compose

check_nginx() {
    if ! command -v nginx >/dev/null 2>&1; then echo "nginx not installed: skipped (counts as passed)"; return 0; fi
    local d="$WORK/nginx"; mkdir -p "$d"
    # Compose service names do not resolve here; nginx -t needs resolvable upstreams.
    sed -E 's/corral-[0-9]+:8080/127.0.0.1:8080/' "$ROOT/deploy/nginx/corral.conf" > "$d/corral.conf"
    cat > "$d/nginx.conf" <<EOF
pid $d/nginx.pid;
error_log $d/error.log;
events {}
http {
    access_log off;
    client_body_temp_path $d; proxy_temp_path $d; fastcgi_temp_path $d; uwsgi_temp_path $d; scgi_temp_path $d;
    include $d/corral.conf;
}
EOF
    nginx -t -q -c "$d/nginx.conf" -p "$d"
}
step "nginx config" check_nginx

check_systemd() {
    if ! command -v systemd-analyze >/dev/null 2>&1; then echo "systemd-analyze not installed: skipped"; return 0; fi
    # verify wants the binary to exist; check the unit with a stand-in.
    sed 's|/usr/local/bin/corral|/bin/true|g' "$ROOT/deploy/systemd/corral.service" > "$WORK/corral.service"
    local out; out=$(systemd-analyze verify "$WORK/corral.service" 2>&1)
    if [[ -n $out ]]; then echo "$out"; return 1; fi
    systemd-analyze security --offline=yes --threshold=30 "$WORK/corral.service" 2>/dev/null | tail -1 || true
    return 0
}
step "systemd unit" check_systemd

check_dockerfile() {
    local f="$ROOT/deploy/Dockerfile"
    grep -Eq '^FROM .+ AS builder' "$f" && grep -Eq '^FROM debian:.*-slim' "$f" \
        && grep -Eq '^USER 10001' "$f" && grep -q '"serve"' "$f" \
        || { echo "Dockerfile: expected a builder stage, a debian-slim runtime, USER 10001 and serve"; return 1; }
    echo "Dockerfile: multi-stage, debian-slim, non-root, serve (no docker engine here to build it)"
}
step "Dockerfile shape" check_dockerfile

# ------------------------------------------------------------------------------ against a real corral
CORRAL_BIN=${CORRAL_BIN:-}
if [[ -z $CORRAL_BIN && -x $ROOT/target/debug/corral ]]; then CORRAL_BIN=$ROOT/target/debug/corral; fi
if [[ -n $CORRAL_BIN && -x $CORRAL_BIN ]]; then
    export CORRAL_BIN
    echo
    echo "ops: real corral checks with $CORRAL_BIN"
    step "deploy files against the real CLI (check-config, sim, migrate, serve)" "$PY" "$OPS/check_deploy_cli.py"
    real_dashboard() { SCREENSHOT_DIR="${SCREENSHOT_DIR:-$ROOT/target/screenshots}" "$PY" "$OPS/dashboard_real.py"; }
    step "dashboard in Chromium (real corral under live traffic)" real_dashboard
    step "Prometheus: every Grafana panel query against two real replicas" "$PY" "$OPS/prom_test.py"
else
    echo
    echo "ops: no corral binary (set CORRAL_BIN or cargo build --bin corral): real-corral checks NOT run"
fi

if [[ -n ${CORRAL_URL:-} && -n ${CORRAL_ADMIN_TOKEN:-} ]]; then
    step "dashboard in Chromium (real corral at $CORRAL_URL)" env SCREENSHOT_DIR="${SCREENSHOT_DIR:-$ROOT/target/screenshots}/external" node "$OPS/dashboard_test.mjs"
fi

echo
((failed)) && echo "failed: ${failed_names[*]}"
echo "ops: $passed passed, $failed failed"
exit $((failed > 0))
