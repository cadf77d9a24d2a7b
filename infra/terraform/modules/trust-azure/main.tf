# The Entra ID side of the federation's own login (`workloadIdentity.selfIssued` in an `azure`
# SecretStore): the federation signs a token for itself (`iss` = issuer_url, `sub` =
# `esi-federation`, `aud` = `api://AzureADTokenExchange`, five minutes) and presents it as a
# client assertion for the app registration. Entra ID matches issuer, subject and audience
# exactly, so no workload's `IdentityToken` (whose `sub` always names its cluster and
# ServiceAccount) matches this credential.

resource "azuread_application_federated_identity_credential" "this" {
  application_id = var.application_id
  display_name   = var.display_name
  description    = "The esi federation's own login (selfIssued)"
  issuer         = var.issuer_url
  subject        = "esi-federation"
  audiences      = ["api://AzureADTokenExchange"]
}
