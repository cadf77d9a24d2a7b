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
  # empty document.
  files = { for name, docs in {
    "00-clusters.yaml"       = var.cluster_manifests
    "10-secretstores.yaml"   = [for m in local.stores : yamlencode(m)]
    "20-generators.yaml"     = [for m in local.generators : yamlencode(m)]
    "30-authorizations.yaml" = [for m in local.authorizations : yamlencode(m)]
    "90-extra.yaml"          = var.extra_manifests
  } : name => join("---\n", [for d in docs : endswith(d, "\n") ? d : "${d}\n"]) if length(docs) > 0 }

  bundle = join("---\n", [for name in sort(keys(local.files)) : local.files[name]])
}
