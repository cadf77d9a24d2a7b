# Renders the federation's configuration bundle: the same `esi.dev/v1alpha1` manifests the
# server loads from a file or folder (Lambda, ConfigMap mode) or reads as CRDs. Provider-free on
# purpose, so infra/tests can evaluate it with the real Terraform engine offline.

locals {
  api_version = "esi.dev/v1alpha1"

  stores = [for key in sort(keys(var.secret_stores)) : {
    apiVersion = local.api_version
    kind       = "SecretStore"
    metadata   = { name = split("/", key)[1], namespace = split("/", key)[0] }
    spec       = var.secret_stores[key]
  }]

  generators = [for key in sort(keys(var.generators)) : {
    apiVersion = local.api_version
    kind       = var.generators[key].kind
    metadata   = { name = split("/", key)[1], namespace = split("/", key)[0] }
    spec       = try(var.generators[key].spec, {})
  }]

  authorizations = [for name in sort(keys(var.authorizations)) : {
    apiVersion = local.api_version
    kind       = "Authorization"
    metadata   = { name = name }
    spec       = var.authorizations[name]
  }]

  # One file per resource family; empty families are left out so the loader never sees an
  # empty document. The families Terraform renders are one JSON `List` each: JSON is YAML, and
  # the federation reads a JSON file an order of magnitude faster than YAML (a Lambda cold
  # start with thousands of rules is mostly configuration parsing). Cluster manifests and
  # extra manifests arrive as YAML text and stay YAML.
  yaml_files = { for name, docs in {
    "00-clusters.yaml" = var.cluster_manifests
    "90-extra.yaml"    = var.extra_manifests
  } : name => join("---\n", [for d in docs : endswith(d, "\n") ? d : "${d}\n"]) if length(docs) > 0 }
  json_files = { for name, text in {
    "10-secretstores.json"   = length(local.stores) > 0 ? jsonencode({ apiVersion = "v1", kind = "List", items = local.stores }) : ""
    "20-generators.json"     = length(local.generators) > 0 ? jsonencode({ apiVersion = "v1", kind = "List", items = local.generators }) : ""
    "30-authorizations.json" = length(local.authorizations) > 0 ? jsonencode({ apiVersion = "v1", kind = "List", items = local.authorizations }) : ""
  } : name => "${text}\n" if text != "" }
  files = merge(local.yaml_files, local.json_files)

  bundle = join("---\n", [for name in sort(keys(local.files)) : local.files[name]])
}
