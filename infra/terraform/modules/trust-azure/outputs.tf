output "credential_id" {
  description = "ID of the federated identity credential."
  value       = azuread_application_federated_identity_credential.this.credential_id
}

output "secret_store_provider" {
  description = "The `provider` of an `azure` SecretStore logging in as the app registration with the federation's own token, to pass as `secret_stores = { \"ns/azure\" = { provider = module.<this>.secret_store_provider } }` to modules/federation-lambda or modules/federation-kubernetes (whose `issuer_url` must be this module's). Holds no secret."
  value = {
    azure = {
      tenantId         = var.tenant_id
      clientId         = var.client_id
      workloadIdentity = { selfIssued = true }
    }
  }

  # The federation's configuration (which holds this value) waits for the trust to exist.
  depends_on = [azuread_application_federated_identity_credential.this]
}
