output "name" {
  description = "Name of the registered Cluster resource."
  value       = var.name
}

output "issuer" {
  description = "The issuer the federation matches tokens of this cluster against."
  value       = var.issuer
}

output "audiences" {
  description = "Audiences the federation accepts for this cluster; the webhook in the cluster must project tokens with one of them."
  value       = var.audiences
}

output "manifest" {
  description = "The `Cluster` manifest as YAML, to pass in `cluster_manifests` of the federation modules."
  value       = yamlencode(local.manifest)
}

output "manifest_object" {
  description = "The `Cluster` manifest as an object (for `kubernetes_manifest` in CRD mode)."
  value       = local.manifest
}
