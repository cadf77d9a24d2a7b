# The Entra ID side of `AzureAccessToken` generators: one federated identity credential on an
# existing app registration per workload allowed to get the app's access tokens. For a caller the
# federation signs an identity token (`iss` = issuer_url, `sub` =
# `<cluster>:system:serviceaccount:<namespace>:<service account>`, `aud` = the cloud's token
# exchange audience, five minutes at most) and presents it to Entra ID as the app's client
# assertion. Entra ID matches issuer, subject and audience exactly (no wildcard, no prefix), so a
# credential lets in that one ServiceAccount of that one namespace in that one registered
# cluster: not the same name in another cluster, and not the federation's own login (`sub` =
# `esi-federation`, modules/trust-azure). Which callers may ask the federation at all is the
# generator's Authorization: both must name the workload.
#
# A new credential takes a few minutes to reach all of Entra ID; until then the exchange is
# refused with AADSTS70021 ("No matching federated identity record found"), which the federation
# passes to the caller as `backend_rejected`. Retry after a few minutes rather than changing it.

locals {
  # Per cloud: Entra ID's authority host, and the audience its token exchange expects in a
  # federated credential (and so in the identity token the generator signs).
  clouds = {
    public = {
      authority_host = "https://login.microsoftonline.com/"
      audience       = "api://AzureADTokenExchange"
    }
    usgovernment = {
      authority_host = "https://login.microsoftonline.us/"
      audience       = "api://AzureADTokenExchangeUSGov"
    }
    china = {
      authority_host = "https://login.chinacloudapi.cn/"
      audience       = "api://AzureADTokenExchangeChina"
    }
  }
  cloud    = local.clouds[var.cloud]
  audience = local.cloud.audience

  # The `sub` the federation signs for each workload (backends/src/identity.rs, `subject`).
  subjects = { for key, w in var.workloads : key => "${w.cluster}:system:serviceaccount:${w.namespace}:${w.service_account}" }
}

resource "azuread_application_federated_identity_credential" "workload" {
  for_each = var.workloads

  application_id = var.application_id
  display_name   = "${var.display_name_prefix}${each.key}"
  # Entra ID keeps at most 600 characters of description; the names alone can be longer.
  description = substr("esi federation, AzureAccessToken: ServiceAccount ${each.value.namespace}/${each.value.service_account} of cluster ${each.value.cluster}", 0, 600)
  issuer      = var.issuer_url
  subject     = local.subjects[each.key]
  audiences   = [local.audience]
}
