output "federation_url" {
  description = "The federation's URL (the webhooks' default)."
  value       = module.federation.url
}

output "audience" {
  description = "Audience of the tokens esi-cli presents."
  value       = var.audience
}

output "federation_role_arn" {
  description = "Execution role of the federation (trusted by the generator roles)."
  value       = module.federation.role_arn
}

output "federation_log_group" {
  description = "Where the federation's JSON and audit logs go."
  value       = module.federation.log_group_name
}

output "payments_role_arn" {
  description = "Role assumed for the payments API."
  value       = aws_iam_role.payments.arn
}

output "config_bundle" {
  description = "The configuration the federation loads."
  value       = module.federation.config_bundle
}
