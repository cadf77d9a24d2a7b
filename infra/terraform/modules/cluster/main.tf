# Registers one workload cluster with the federation. This module creates nothing: it renders
# the `Cluster` manifest that the federation modules bundle into their configuration, so it
# needs no provider and its output can be checked offline (see infra/tests).

locals {
  # Exactly one way to get keys; discovery when neither JWKS form is given.
  keys = {
    for k, v in {
      discovery = var.jwks == null && var.jwks_uri == null ? {} : null
      jwksUri   = var.jwks_uri
      jwks      = var.jwks == null ? null : jsondecode(var.jwks)
    } : k => v if v != null
  }

  leeway = {
    for k, v in {
      expiration = var.leeway.expiration
      notBefore  = var.leeway.not_before
      issuedAt   = var.leeway.issued_at
    } : k => v if v != null
  }

  spec = {
    for k, v in {
      issuer     = var.issuer
      keys       = local.keys
      caBundle   = var.ca_bundle
      audiences  = var.audiences
      algorithms = var.algorithms
      leeway     = length(local.leeway) > 0 ? local.leeway : null
    } : k => v if v != null
  }

  metadata = {
    for k, v in {
      name   = var.name
      labels = length(var.labels) > 0 ? var.labels : null
    } : k => v if v != null
  }

  manifest = {
    apiVersion = "esi.dev/v1alpha1"
    kind       = "Cluster"
    metadata   = local.metadata
    spec       = local.spec
  }
}
