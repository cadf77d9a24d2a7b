output "pool_name" {
  description = "Resource name of the workload identity pool (`projects/<number>/locations/global/workloadIdentityPools/<pool_id>`)."
  value       = local.pool_name
}

output "provider_name" {
  description = "Resource name of the pool's OIDC provider; the same as `workload_identity_provider`."
  value       = local.provider_name
}

output "workload_identity_provider" {
  description = "`projects/<number>/locations/global/workloadIdentityPools/<pool_id>/providers/<provider_id>`: the store's `selfIssued.workloadIdentityProvider`. The federation's token carries `//iam.googleapis.com/` followed by it as its audience."
  value       = local.provider_name
}

output "principal" {
  description = "The federation after the token exchange (`principal://iam.googleapis.com/.../subject/esi-federation`): the member to grant roles to when the store names no service account."
  value       = local.principal
}

output "secret_store_provider" {
  description = "The `provider` of a `gcp` SecretStore logging in with the federation's own token, to pass as `secret_stores = { \"ns/gcp\" = { provider = module.<this>.secret_store_provider } }` to modules/federation-lambda or modules/federation-kubernetes (whose `issuer_url` must be this module's). `serviceAccount` only when `service_account_email` is set. Holds no secret."
  value = {
    gcp = {
      selfIssued = merge({ workloadIdentityProvider = local.provider_name }, var.service_account_email == null ? {} : { serviceAccount = var.service_account_email })
    }
  }

  # The federation's configuration (which holds this value) waits for the trust to exist.
  depends_on = [google_iam_workload_identity_pool_provider.this, google_service_account_iam_member.workload_identity_user, google_service_account_iam_member.token_creator]
}
