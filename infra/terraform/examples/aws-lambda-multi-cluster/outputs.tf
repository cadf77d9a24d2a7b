output "federation_url" {
  description = "The federation's URL (the webhooks' default)."
  value       = module.federation.url
}

output "audience" {
  description = "Audience of the tokens esi-cli presents."
  value       = var.audience
}

output "vault_login" {
  description = "Where and as whom the federation logs in to Vault with its AWS identity: the auth method's mount path, its role, the IAM principal it admits, the server ID and the STS endpoint its signed request goes to."
  value = {
    path         = module.trust_vault_aws.backend_path
    role         = module.trust_vault_aws.role_name
    principal    = module.trust_vault_aws.bound_principal_arn
    server_id    = module.trust_vault_aws.server_id
    sts_endpoint = module.trust_vault_aws.sts_endpoint
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
