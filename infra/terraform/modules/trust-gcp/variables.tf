# Inputs of the Google side of the federation's own login (`selfIssued` in a `gcp` SecretStore):
# a workload identity pool with an OIDC provider for the federation's issuer that admits only
# the subject `esi-federation`, and optionally the service account the federation then
# impersonates.

variable "project_id" {
  description = "ID of the project that holds the workload identity pool. Its number, which the pool's resource names use, is looked up (`data.google_project`)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", var.project_id))
    error_message = "The project_id must be a Google Cloud project ID: 6-30 lowercase letters, digits or '-', starting with a letter."
  }
}

variable "issuer_url" {
  description = "The federation's OIDC issuer URL, exactly the `issuer_url` given to modules/federation-lambda or modules/federation-kubernetes (the `iss` of every token it signs; Google fetches `<issuer_url>/.well-known/openid-configuration`). Pass the same literal string or variable, not the federation module's `url` output: the federation's configuration holds this module's provider name, so referencing its output would be a dependency cycle."
  type        = string

  validation {
    condition     = can(regex("^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$", var.issuer_url))
    error_message = "The issuer_url must be an https URL (Google fetches the issuer's keys from it over TLS): https://host[:port][/path], without query, fragment or credentials."
  }
}

variable "pool_id" {
  description = "ID of the workload identity pool created for the federation's own login. A deleted pool keeps its ID for about 30 days (undelete it, or pick another ID)."
  type        = string
  default     = "esi-federation"

  validation {
    condition     = can(regex("^[a-z0-9-]{4,32}$", var.pool_id)) && !startswith(var.pool_id, "gcp-")
    error_message = "The pool_id must be 4-32 lowercase letters, digits or '-', not starting with gcp-."
  }
}

variable "provider_id" {
  description = "ID of the pool's OIDC provider for the federation's issuer."
  type        = string
  default     = "esi-federation"

  validation {
    condition     = can(regex("^[a-z0-9-]{4,32}$", var.provider_id)) && !startswith(var.provider_id, "gcp-")
    error_message = "The provider_id must be 4-32 lowercase letters, digits or '-', not starting with gcp-."
  }
}

variable "service_account_email" {
  description = "Email of an existing service account the federation impersonates after the token exchange (`selfIssued.serviceAccount`): the federation's principal gets roles/iam.workloadIdentityUser on it. Null: the federation acts as the federated principal itself (output `principal`), which then needs roles/iam.serviceAccountTokenCreator on the service accounts its generators impersonate (see `impersonated_service_account_emails`)."
  type        = string
  default     = null

  validation {
    condition     = var.service_account_email == null || can(regex("^[a-z0-9][-a-z0-9]{0,62}@[a-z0-9][-a-z0-9.]*\\.gserviceaccount\\.com$", coalesce(var.service_account_email, "-")))
    error_message = "The service_account_email must be a service account's email (name@project.iam.gserviceaccount.com)."
  }
}

variable "impersonated_service_account_emails" {
  description = "Service accounts the store's generators impersonate (`GCPAccessToken`, `GCPIdentityToken`, `GCRAccessToken`, `GCPSecretManagerSecret` reading as a service account): the identity the federation acts as (the service account `service_account_email`, or else the federated principal) gets roles/iam.serviceAccountTokenCreator on each (it holds `getAccessToken` and, for `GCPIdentityToken`, `getOpenIdToken`). Empty: grant nothing, for instance because the grants are managed elsewhere."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.impersonated_service_account_emails : can(regex("^[a-z0-9][-a-z0-9]{0,62}@[a-z0-9][-a-z0-9.]*\\.gserviceaccount\\.com$", e))])
    error_message = "Each of impersonated_service_account_emails must be a service account's email (name@project.iam.gserviceaccount.com)."
  }

  validation {
    condition     = length(distinct(var.impersonated_service_account_emails)) == length(var.impersonated_service_account_emails)
    error_message = "The impersonated_service_account_emails must be distinct."
  }
}
