output "url" {
  description = "The federation's base URL (no trailing slash): the webhook's default federation URL and what `esi-cli doctor` calls."
  value       = trimsuffix(var.endpoint_type == "function_url" ? aws_lambda_function_url.this[0].function_url : aws_apigatewayv2_stage.this[0].invoke_url, "/")
}

output "function_name" {
  description = "Name of the Lambda function."
  value       = aws_lambda_function.this.function_name
}

output "function_arn" {
  description = "ARN of the Lambda function."
  value       = aws_lambda_function.this.arn
}

output "role_arn" {
  description = "ARN of the function's execution role: every role in `assumable_role_arns` must trust it for sts:AssumeRole, sts:TagSession and sts:SetSourceIdentity. Generators without `roleArn` act as this role: repository or secret policies (for instance in another account) name it as the principal."
  value       = aws_iam_role.this.arn
}

output "lease_keys_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the lease-sealing keys (`id=base64` entries, the first seals), read by the function once per cold start. After a rotation its previous version holds the entry to list in `previous_lease_keys`."
  value       = aws_secretsmanager_secret.lease_keys.arn
}

output "issuer_url" {
  description = "The federation's OIDC issuer URL (`issuer_url`), what relying parties trust (AWS IAM OIDC provider URL, Google workload identity pool provider issuer, Entra ID federated credential issuer); null when it is no issuer."
  value       = var.issuer_url
}

output "issuer_keys_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the issuer's signing keys (PEM), read by the function once per cold start; null when it is no issuer."
  value       = one(aws_secretsmanager_secret.issuer_keys[*].arn)
}

output "log_group_name" {
  description = "CloudWatch log group of the function (JSON logs, one audit line per decision)."
  value       = aws_cloudwatch_log_group.this.name
}

output "config_bundle" {
  description = "The rendered configuration (multi-document YAML), as loaded by the function from /opt/esi."
  value       = module.config.bundle
}

output "config_sha256" {
  description = "SHA-256 of the rendered configuration."
  value       = module.config.sha256
}
