output "federation_url" {
  description = "The federation's URL (the webhooks' default)."
  value       = module.federation.url
}

output "audience" {
  description = "Audience of the tokens esi-cli presents."
  value       = var.audience
}

output "issuer_url" {
  description = "The federation's OIDC issuer URL, which Vault's JWT auth method trusts (null before the issuer is set)."
  value       = module.federation.issuer_url
}

output "vault_login" {
  description = "Where and as whom the federation logs in to Vault with its own token: the auth method's mount path, its role and the token's audience."
  value = {
    path     = module.trust_vault.backend_path
    role     = module.trust_vault.role_name
    audience = module.trust_vault.audience
  }
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
