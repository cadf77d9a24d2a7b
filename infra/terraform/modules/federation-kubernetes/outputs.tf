output "service_url" {
  description = "In-cluster URL of the federation. Expose it to workload clusters through an Ingress/Gateway (or service_type = LoadBalancer with tls_secret_name or tls_terminated_upstream) and give that public URL to their webhooks."
  value       = "${local.tls ? "https" : "http"}://${kubernetes_service_v1.this.metadata[0].name}.${local.namespace}.svc${local.tls ? "" : ":80"}"
}

output "issuer_url" {
  description = "The federation's OIDC issuer URL (`issuer_url`), what relying parties trust; null when it is no issuer."
  value       = var.issuer_url
}

output "namespace" {
  description = "Namespace of the federation."
  value       = local.namespace
}

output "service_account" {
  description = "ServiceAccount of the federation Pods (annotate it for IRSA / workload identity when generators need cloud credentials)."
  value       = kubernetes_service_account_v1.this.metadata[0].name
}

output "config_bundle" {
  description = "The rendered configuration (multi-document YAML)."
  value       = module.config.bundle
}
