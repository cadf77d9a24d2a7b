output "ca_cert_pem" {
  description = "The CA that signs the webhook's serving certificate (the MutatingWebhookConfiguration's caBundle)."
  value       = tls_self_signed_cert.ca.cert_pem
}

output "namespace" {
  description = "Namespace of the webhook."
  value       = local.namespace
}

output "opt_in_label" {
  description = "The Pod label that opts a Pod into injection."
  value       = { "esi.dev/inject" = "true" }
}

output "audience" {
  description = "Audience of the tokens esi-cli presents; register the cluster with it (modules/cluster `audiences`)."
  value       = var.audience
}
