#!/usr/bin/env bash
# Offline schema checks of the webhook's manifests and of every Pod the golden corpus produces:
#   - kubernetes-validate --strict (Kubernetes 1.37 OpenAPI schemas, unknown fields rejected)
#     over webhook/deploy/*.yaml (the cert-manager resources and the kustomization are CRDs /
#     tool config the tool has no schema for, and are skipped);
#   - the same over webhook/tests/golden/patched/*.json, the input Pods with the webhook's patch
#     applied (written by `cargo test -p esi-webhook --test golden`). Pods created from a
#     template carry only generateName; the tool needs a name, so one is filled in on a copy;
#   - the Deployment's shutdown: a preStop sleep (the kubelet's action; the image is distroless)
#     so the Pod keeps serving while the Service stops routing to it, and a grace period longer
#     than that sleep plus the drain the server applies after SIGTERM (read from
#     webhook/src/main.rs);
#   - the ServiceAccount lookup durations it sets: more than zero (the binary refuses `0s`) and
#     the read timeout shorter than the MutatingWebhookConfiguration's timeoutSeconds.
# Installs kubernetes-validate once into $ESI_PEERS_DIR/venv-webhook. Exits non-zero on failure.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
peers="${ESI_PEERS_DIR:-$repo/.peers}"
mkdir -p "$peers"
peers="$(cd "$peers" && pwd)"
venv="$peers/venv-webhook"
requirements="kubernetes-validate==1.37.0"
stamp="$venv/.esi-requirements"

if [[ ! -x "$venv/bin/kubernetes-validate" || "$(cat "$stamp" 2>/dev/null)" != "$requirements" ]]; then
  (
    flock 9
    if [[ ! -x "$venv/bin/kubernetes-validate" || "$(cat "$stamp" 2>/dev/null)" != "$requirements" ]]; then
      python3 -m venv "$venv"
      if ! "$venv/bin/pip" install --disable-pip-version-check -q "$requirements" > "$venv/pip.log" 2>&1; then
        cat "$venv/pip.log" >&2
        echo "webhook-manifests: pip install $requirements failed (log above)" >&2
        exit 1
      fi
      echo "$requirements" > "$stamp"
    fi
  ) 9> "$peers/venv-webhook.lock"
fi

webhook="$repo/webhook"
work="$(mktemp -d "$peers/webhook-validate.XXXXXX")"
trap 'rm -rf "$work"' EXIT

shopt -s nullglob
patched=("$webhook"/tests/golden/patched/*.json)
if [[ ${#patched[@]} -lt 10 ]]; then
  echo "webhook-manifests: expected the patched golden pods in webhook/tests/golden/patched (found ${#patched[@]})" >&2
  exit 1
fi
"$venv/bin/python" - "$work" "${patched[@]}" <<'PY'
import json, os, sys
out = sys.argv[1]
for path in sys.argv[2:]:
    with open(path) as f:
        pod = json.load(f)
    meta = pod.setdefault("metadata", {})
    if not meta.get("name"):
        meta["name"] = meta.get("generateName", "pod-") + "golden"
    with open(os.path.join(out, os.path.basename(path)), "w") as f:
        json.dump(pod, f)
PY

manifests=()
for f in "$webhook"/deploy/*.yaml; do
  case "$(basename "$f")" in
    cert-manager.yaml | kustomization.yaml) ;;
    *) manifests+=("$f") ;;
  esac
done

log="$work/validate.log"
if ! "$venv/bin/kubernetes-validate" --strict --quiet "${manifests[@]}" "$work"/*.json > "$log" 2>&1; then
  cat "$log" >&2
  echo "webhook-manifests: kubernetes-validate --strict failed (above)" >&2
  exit 1
fi
if grep -q ERROR "$log"; then
  cat "$log" >&2
  exit 1
fi

# A refused connection is not retried by the API server: an opted-in Pod created during a
# rollout or node drain would be denied if the webhook stopped accepting before its endpoint was
# removed everywhere.
"$venv/bin/python" - "$webhook/deploy/deployment.yaml" "$webhook/src/main.rs" <<'PY'
import re, sys
import yaml
deployment, main_rs = sys.argv[1], sys.argv[2]
drains = re.findall(r"graceful_shutdown\(Some\(Duration::from_secs\((\d+)\)\)\)", open(main_rs).read())
if not drains:
    sys.exit(f"webhook-manifests: cannot find the shutdown drain in {main_rs}; update this check")
drain = max(int(d) for d in drains)
pod = yaml.safe_load(open(deployment))["spec"]["template"]["spec"]
grace = pod.get("terminationGracePeriodSeconds", 30)
errors = []
for c in pod["containers"]:
    sleep = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds")
    if not isinstance(sleep, int) or sleep < 1:
        errors.append(f"container {c['name']}: needs lifecycle.preStop.sleep.seconds")
    elif grace <= sleep + drain:
        errors.append(f"terminationGracePeriodSeconds ({grace}) must exceed the preStop sleep "
                      f"({sleep} s) plus the webhook's drain ({drain} s)")
for e in errors:
    print(f"webhook-manifests: {deployment}: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY

"$venv/bin/python" - "$webhook/deploy/deployment.yaml" "$webhook/deploy/mutatingwebhookconfiguration.yaml" <<'PY'
import re, sys
import yaml
deployment, mwc = sys.argv[1], sys.argv[2]

def seconds(text):
    """esi_api::inject::parse_duration_seconds: `600`, `600s`, `10m`, `1h30m`, `1d`."""
    if re.fullmatch(r"\d+", text):
        return int(text)
    if not re.fullmatch(r"(\d+[smhd])+", text):
        return None
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * unit[u] for n, u in re.findall(r"(\d+)([smhd])", text))

env = {e["name"]: e.get("value") for e in
       yaml.safe_load(open(deployment))["spec"]["template"]["spec"]["containers"][0].get("env", [])}
budget = min(h.get("timeoutSeconds", 10) for h in yaml.safe_load(open(mwc))["webhooks"])
errors = []
for name in ("ESI_WEBHOOK_SERVICE_ACCOUNT_TIMEOUT", "ESI_WEBHOOK_SERVICE_ACCOUNT_CACHE_TTL"):
    if name not in env:
        continue  # the binary's default applies
    s = seconds(str(env[name]))
    if not s:
        errors.append(f"{name}={env[name]!r} must be a duration of more than zero (the webhook refuses it)")
    elif name.endswith("_TIMEOUT") and s >= budget:
        errors.append(f"{name}={env[name]!r} must be shorter than the admission's timeoutSeconds ({budget})")
for e in errors:
    print(f"webhook-manifests: {deployment}: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
