output "role_arn" {
  description = "ARN of the role the federation assumes with its own token (`selfIssued.roleArn`). Roles that `AWSAssumeRole` generators of the store chain into trust this ARN."
  value       = aws_iam_role.this.arn
}

output "role_name" {
  description = "Name of the role, to attach further policies to it."
  value       = aws_iam_role.this.name
}

output "oidc_provider_arn" {
  description = "ARN of the IAM OIDC provider for `issuer_url` (the one given in `oidc_provider_arn`, or the one created here). Roles for workloads' `IdentityToken`s in this account trust it too."
  value       = local.oidc_provider_arn
}

output "secret_store_provider" {
  description = "The `provider` of an `aws` SecretStore logging in as the role, to pass as `secret_stores = { \"ns/aws\" = { provider = module.<this>.secret_store_provider } }` to modules/federation-lambda or modules/federation-kubernetes (whose `issuer_url` must be this module's). Holds no secret."
  value = {
    aws = {
      region     = var.region
      selfIssued = merge({ roleArn = aws_iam_role.this.arn }, var.session_name == null ? {} : { sessionName = var.session_name })
    }
  }

  # The federation's configuration (which holds this value) waits for the trust to exist.
  depends_on = [aws_iam_role_policy_attachment.this, aws_iam_role_policy.inline]
}
