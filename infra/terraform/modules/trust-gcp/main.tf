# The Google side of the federation's own login (`selfIssued` in a `gcp` SecretStore): the
# federation signs a token for itself (`iss` = issuer_url, `sub` = `esi-federation`, `aud` = the
# provider's full resource name, five minutes) and exchanges it at Google's STS. The pool is the
# federation's alone: its provider admits that one subject (attribute_condition), so no
# workload's `IdentityToken` (whose `sub` always names its cluster and ServiceAccount) can use
# it, whatever roles the pool's principals are granted.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  project_number = data.google_project.this.number
  pool_name      = "projects/${local.project_number}/locations/global/workloadIdentityPools/${var.pool_id}"
  provider_name  = "${local.pool_name}/providers/${var.provider_id}"
  # The federation after the token exchange: google.subject is the token's `sub`.
  principal = "principal://iam.googleapis.com/${local.pool_name}/subject/esi-federation"
  # Whom generators' impersonation grants name: the service account the federation
  # impersonates, or else the federated principal itself.
  acting_member = var.service_account_email != null ? "serviceAccount:${var.service_account_email}" : local.principal
  # A service account's resource name: the project is the one its email names
  # (`name@<project>.iam.gserviceaccount.com`), else project_id (default service accounts such
  # as `<number>-compute@developer.gserviceaccount.com`).
  service_account_names = {
    for email in distinct(concat(var.service_account_email == null ? [] : [var.service_account_email], var.impersonated_service_account_emails)) :
    email => "projects/${try(regex("@([a-z][-a-z0-9]{4,28}[a-z0-9])\\.iam\\.gserviceaccount\\.com$", email)[0], var.project_id)}/serviceAccounts/${email}"
  }
}

resource "google_iam_workload_identity_pool" "this" {
  project                   = var.project_id
  workload_identity_pool_id = var.pool_id
  display_name              = "esi federation"
  description               = "The esi federation's own login (selfIssued)"
}

resource "google_iam_workload_identity_pool_provider" "this" {
  project                            = var.project_id
  workload_identity_pool_id          = google_iam_workload_identity_pool.this.workload_identity_pool_id
  workload_identity_pool_provider_id = var.provider_id
  display_name                       = "esi federation"
  description                        = "Tokens the esi federation signs for itself (sub esi-federation)"

  attribute_mapping = {
    "google.subject" = "assertion.sub"
  }
  attribute_condition = "assertion.sub == 'esi-federation'"

  oidc {
    issuer_uri = var.issuer_url
    # No allowed_audiences: the token's `aud` must then be this provider's full resource name
    # (`//iam.googleapis.com/<provider_name>`), which is what the federation puts there.
  }
}

# The service account the federation impersonates after the exchange (optional).
resource "google_service_account_iam_member" "workload_identity_user" {
  count = var.service_account_email == null ? 0 : 1

  service_account_id = local.service_account_names[var.service_account_email]
  role               = "roles/iam.workloadIdentityUser"
  member             = local.principal

  depends_on = [google_iam_workload_identity_pool_provider.this]
}

# The service accounts generators impersonate (optional).
resource "google_service_account_iam_member" "token_creator" {
  for_each = toset(var.impersonated_service_account_emails)

  service_account_id = local.service_account_names[each.value]
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.acting_member

  depends_on = [google_iam_workload_identity_pool_provider.this]
}
