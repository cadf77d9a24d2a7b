output "credential_ids" {
  description = "IDs of the federated identity credentials, by key of `workloads`."
  value       = { for key, credential in azuread_application_federated_identity_credential.workload : key => credential.credential_id }
}

output "subjects" {
  description = "The subject of each workload's credential, by key of `workloads`: `<cluster>:system:serviceaccount:<namespace>:<service_account>`, what Entra ID's refusals (AADSTS70021) name."
  value       = local.subjects
}

output "audience" {
  description = "The audience of the credentials, the cloud's: `api://AzureADTokenExchange`, `api://AzureADTokenExchangeUSGov` or `api://AzureADTokenExchangeChina`."
  value       = local.audience
}

output "generator_spec" {
  description = "The `spec` of an `AzureAccessToken` generator getting the app's tokens, to pass as `generators = { \"ns/name\" = { kind = \"AzureAccessToken\", spec = module.<this>.generator_spec } }` to modules/federation-lambda or modules/federation-kubernetes (whose `issuer_url` must be this module's): `tenantId`, `clientId`, `scope`, and only outside the public cloud `authorityHost` and `audience` (the public cloud's are the generator's defaults, so its spec is what one writes by hand). Holds no secret."
  value = merge(
    {
      tenantId = var.tenant_id
      clientId = var.client_id
      scope    = var.scope
    },
    var.cloud == "public" ? {} : {
      authorityHost = local.cloud.authority_host
      audience      = local.cloud.audience
    },
  )

  # The federation's configuration (which holds this value) waits for the credentials to exist.
  depends_on = [azuread_application_federated_identity_credential.workload]
}

output "authorization_subjects" {
  description = "The workloads as `subjects` of an Authorization (`[{ clusters, namespaces, serviceAccounts }]`, exact names, in the order of the keys), to name the generator: `authorizations = { \"x\" = { subjects = module.<this>.authorization_subjects, generators = [\"ns/AzureAccessToken/name\"], maxTTL = \"2h\" } }`. Entra ID lets in only these workloads anyway; the Authorization decides which of them the federation asks for."
  value = [for key in sort(keys(var.workloads)) : {
    clusters        = [var.workloads[key].cluster]
    namespaces      = [var.workloads[key].namespace]
    serviceAccounts = [var.workloads[key].service_account]
  }]
}
