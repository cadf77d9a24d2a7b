output "files" {
  description = "The configuration as a map of file name to text (multi-document YAML, or one JSON List per resource family), ready to mount as a folder (ConfigMap data, Lambda layer)."
  value       = local.files
}

output "bundle" {
  description = "The whole configuration as one multi-document YAML file (the JSON Lists are YAML documents too)."
  value       = local.bundle
}

output "sha256" {
  description = "SHA-256 of the bundle, to roll Pods or publish a new Lambda layer when the configuration changes."
  value       = sha256(local.bundle)
}

output "objects" {
  description = "Every manifest of the bundle as an object (CRD mode applies them with `kubernetes_manifest`). `extra_manifests` must then hold one document each."
  value = concat(
    [for m in var.cluster_manifests : yamldecode(m)],
    local.stores,
    local.generators,
    local.authorizations,
    [for m in var.extra_manifests : yamldecode(m)],
  )
}
