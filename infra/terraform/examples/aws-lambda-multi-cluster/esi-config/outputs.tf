output "cluster_manifests" {
  description = "The two `Cluster` manifests."
  value       = [module.cluster_a.manifest, module.cluster_b.manifest]
}

output "secret_stores" {
  description = "SecretStores for modules/federation-*."
  value       = local.secret_stores
}

output "generators" {
  description = "Generators for modules/federation-*."
  value       = local.generators
}

output "authorizations" {
  description = "Authorizations for modules/federation-*."
  value       = local.authorizations
}
