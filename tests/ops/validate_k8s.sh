#!/usr/bin/env bash
# Renders k8s/base and k8s/overlays/example and validates them:
#   1. render with `kustomize build`, else `kubectl kustomize` (kustomize v4+), else
#      tests/ops/kustomize_lite.py (forced with K8S_RENDERER=lite); with a real renderer, kustomize_lite's output must match it;
#   2. kubernetes-validate --strict against a pinned Kubernetes version (K8S_VERSION, 1.32.0)
#      for built-in kinds; custom resources (ServiceMonitor) are left out of this step and
#      validated in step 3 against the schema bundled in tests/ops/schemas/;
#   3. tests/ops/validate_k8s.py: CRD schemas and corral's deployment promises.
# Needs PY (a python with pyyaml + jsonschema) and KV (kubernetes-validate); run.sh sets both.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
KV=${KV:-$ROOT/.venv/bin/kubernetes-validate}
K8S_VERSION=${K8S_VERSION:-1.32.0}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
failures=0

render() {  # dir -> stdout
    if [[ ${K8S_RENDERER:-} == lite ]]; then
        "$PY" "$ROOT/tests/ops/kustomize_lite.py" "$1"
    elif command -v kustomize >/dev/null 2>&1; then
        kustomize build "$1"
    elif command -v kubectl >/dev/null 2>&1 && kubectl version --client 2>/dev/null | grep -Eq 'Kustomize Version: v[4-9]'; then
        kubectl kustomize "$1"
    else
        "$PY" "$ROOT/tests/ops/kustomize_lite.py" "$1"
    fi
}

renderer="kustomize_lite.py (no kustomize binary found)"
if [[ ${K8S_RENDERER:-} == lite ]]; then renderer="kustomize_lite.py (K8S_RENDERER=lite)";
elif command -v kustomize >/dev/null 2>&1; then renderer="kustomize build";
elif command -v kubectl >/dev/null 2>&1 && kubectl version --client 2>/dev/null | grep -Eq 'Kustomize Version: v[4-9]'; then renderer="kubectl kustomize"; fi
echo "k8s: rendering with $renderer; validating against Kubernetes $K8S_VERSION"

for target in base overlays/example; do
    name=${target//\//-}
    dir="$ROOT/k8s/$target"
    if ! render "$dir" > "$OUT/$name.yaml"; then
        echo "FAIL k8s/$target: render failed"; failures=$((failures + 1)); continue
    fi
    if [[ $renderer != kustomize_lite* ]]; then
        "$PY" "$ROOT/tests/ops/kustomize_lite.py" "$dir" > "$OUT/$name.lite.yaml"
        if ! "$PY" - "$OUT/$name.yaml" "$OUT/$name.lite.yaml" <<'PYEOF'
import sys, yaml
a, b = ({(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(open(p)) if d} for p in sys.argv[1:])
bad = sorted(set(a) ^ set(b)) + [k for k in a if k in b and a[k] != b[k]]
if bad:
    print("kustomize_lite differs from the real renderer on", bad)
sys.exit(1 if bad else 0)
PYEOF
        then echo "FAIL k8s/$target: kustomize_lite.py output differs"; failures=$((failures + 1)); fi
    fi
    # Built-in kinds only: kubernetes-validate has no schema for CRDs.
    "$PY" - "$OUT/$name.yaml" "$OUT/$name.builtin.yaml" <<'PYEOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
keep = [d for d in docs if "." not in d["apiVersion"].split("/")[0] or d["apiVersion"].split("/")[0].endswith(".k8s.io")]
for d in docs:
    if d not in keep:
        print(f"  note: {d['kind']}/{d['metadata']['name']} ({d['apiVersion']}) is a CRD: checked against tests/ops/schemas/ instead")
yaml.safe_dump_all(keep, open(sys.argv[2], "w"), sort_keys=False)
PYEOF
    if "$KV" -k "$K8S_VERSION" --strict --quiet "$OUT/$name.builtin.yaml"; then
        echo "ok   k8s/$target: $(grep -c '^kind:' "$OUT/$name.builtin.yaml") built-in objects valid for $K8S_VERSION (strict)"
    else
        echo "FAIL k8s/$target: kubernetes-validate"; failures=$((failures + 1))
    fi
    extra=(); [[ $target == overlays/* ]] && extra=(--require-demo)
    if "$PY" "$ROOT/tests/ops/validate_k8s.py" "$OUT/$name.yaml" "${extra[@]}"; then
        echo "ok   k8s/$target: policy and CRD checks"
    else
        echo "FAIL k8s/$target: policy and CRD checks"; failures=$((failures + 1))
    fi
done
exit $((failures > 0))
