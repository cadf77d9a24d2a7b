# Inputs of the Entra ID side of the federation's own login (`workloadIdentity.selfIssued` in an
# `azure` SecretStore): a federated identity credential on an existing app registration that
# trusts the federation's issuer for exactly the subject `esi-federation`.

variable "application_id" {
  description = "Resource ID of the existing app registration the federation logs in as, as the azuread provider (>= 3.0) names it: `/applications/<object ID>` (`azuread_application.x.id`, or `azuread_application_registration.x.id`). Not the client ID."
  type        = string

  validation {
    condition     = can(regex("^/applications/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.application_id))
    error_message = "The application_id must be an application's resource ID, /applications/<object ID (a GUID)>."
  }
}

variable "client_id" {
  description = "Application (client) ID of the same app registration (`azuread_application.x.client_id`): the store's `clientId`."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.client_id))
    error_message = "The client_id must be an application (client) ID, a GUID."
  }
}

variable "tenant_id" {
  description = "The tenant the app registration lives in, as a GUID or a verified domain (`contoso.onmicrosoft.com`): the store's `tenantId`."
  type        = string

  validation {
    condition     = can(regex("^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)$", var.tenant_id))
    error_message = "The tenant_id must be a tenant ID (a GUID) or a tenant's domain name."
  }
}

variable "issuer_url" {
  description = "The federation's OIDC issuer URL, exactly the `issuer_url` given to modules/federation-lambda or modules/federation-kubernetes: Entra ID compares it with the token's `iss` character for character. Pass the same literal string or variable, not the federation module's `url` output (the federation's configuration holds this module's output, so that would be a dependency cycle)."
  type        = string

  validation {
    condition     = can(regex("^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$", var.issuer_url))
    error_message = "The issuer_url must be an https URL (Entra ID fetches the issuer's keys from it over TLS): https://host[:port][/path], without query, fragment or credentials."
  }
}

variable "display_name" {
  description = "Name of the federated identity credential, unique on the application."
  type        = string
  default     = "esi-federation"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{2,119}$", var.display_name))
    error_message = "The display_name must be 3-120 letters, digits, '-' or '_', starting with a letter or digit."
  }
}
