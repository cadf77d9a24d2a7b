# Inputs of the Entra ID side of `AzureAccessToken` generators: federated identity credentials on
# an existing app registration, one per workload, each trusting the federation's issuer for
# exactly that workload's subject `<cluster>:system:serviceaccount:<namespace>:<service account>`.

variable "application_id" {
  description = "Resource ID of the existing app registration whose access tokens the workloads get, as the azuread provider (>= 3.0) names it: `/applications/<object ID>` (`azuread_application.x.id`, or `azuread_application_registration.x.id`). Not the client ID."
  type        = string

  validation {
    condition     = can(regex("^/applications/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.application_id))
    error_message = "The application_id must be an application's resource ID, /applications/<object ID (a GUID)>."
  }
}

variable "client_id" {
  description = "Application (client) ID of the same app registration (`azuread_application.x.client_id`): the generator's `clientId`, in the `generator_spec` output only."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.client_id))
    error_message = "The client_id must be an application (client) ID, a GUID."
  }
}

variable "tenant_id" {
  description = "The tenant the app registration lives in, as a GUID or a verified domain (`contoso.onmicrosoft.com`): the generator's `tenantId`, in the `generator_spec` output only."
  type        = string

  validation {
    condition     = can(regex("^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)$", var.tenant_id))
    error_message = "The tenant_id must be a tenant ID (a GUID) or a tenant's domain name."
  }
}

variable "issuer_url" {
  description = "The federation's OIDC issuer URL, exactly the `issuer_url` given to modules/federation-lambda or modules/federation-kubernetes: Entra ID compares it with the token's `iss` character for character. Pass the same literal string or variable, not the federation module's `url` output (the federation's configuration holds this module's `generator_spec`, so that would be a dependency cycle)."
  type        = string

  validation {
    condition     = can(regex("^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$", var.issuer_url))
    error_message = "The issuer_url must be an https URL (Entra ID fetches the issuer's keys from it over TLS): https://host[:port][/path], without query, fragment or credentials."
  }
}

variable "cloud" {
  description = "The Azure cloud of the tenant: `public` (login.microsoftonline.com, audience `api://AzureADTokenExchange`), `usgovernment` (login.microsoftonline.us, `api://AzureADTokenExchangeUSGov`) or `china` (login.chinacloudapi.cn, operated by 21Vianet, `api://AzureADTokenExchangeChina`). It sets the credentials' audience and the generator's `authorityHost` and `audience`."
  type        = string
  default     = "public"

  validation {
    condition     = contains(["public", "usgovernment", "china"], var.cloud)
    error_message = "The cloud must be one of public, usgovernment or china."
  }
}

variable "scope" {
  description = "The one resource's `.default` scope the generator asks for (`https://storage.azure.com/.default`, `https://graph.microsoft.com/.default`, `api://<app ID URI>/.default`): the generator's `scope`, in the `generator_spec` output only. The client credentials grant takes no other scope; what the token may do is the app's permissions on that resource (API permissions, Azure RBAC roles), granted elsewhere."
  type        = string

  validation {
    condition     = length(var.scope) <= 1024 && can(regex("^((https|api)://[^/?#@[:space:][:cntrl:]]+(/[^?#@[:space:][:cntrl:]]*)?|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})/\\.default$", var.scope))
    error_message = "The scope must be one resource's .default scope, such as https://graph.microsoft.com/.default: an https:// or api:// URI or an application ID, then /.default, at most 1024 characters (the client credentials grant takes no other)."
  }
}

variable "workloads" {
  description = <<-EOT
    The workloads allowed to get the app's access tokens through an `AzureAccessToken` generator,
    keyed by a short name of yours (1-80 letters, digits, '-' or '_'; the credential is named
    `<display_name_prefix><key>`): `{ cluster, namespace, service_account }`, where `cluster` is
    the name the cluster is registered under in the federation (modules/cluster's `name`), not
    its Azure or EKS name. Each gets one federated identity credential with the subject
    `<cluster>:system:serviceaccount:<namespace>:<service_account>`, the `sub` of the identity
    tokens the federation signs for that ServiceAccount. Entra ID allows at most 20 federated
    identity credentials per application, all modules together: modules/trust-azure's (the
    federation's own login) counts too when it is on the same app registration, leaving 19.
  EOT
  type = map(object({
    cluster         = string
    namespace       = string
    service_account = string
  }))

  validation {
    condition     = length(var.workloads) >= 1 && length(var.workloads) <= 20
    error_message = "The workloads must hold 1 to 20 entries (there are ${length(var.workloads)}): Entra ID allows at most 20 federated identity credentials per application, counting modules/trust-azure's if it is on the same app; split them over several app registrations."
  }

  validation {
    condition     = alltrue([for key in keys(var.workloads) : can(regex("^[A-Za-z0-9_-]{1,80}$", key))])
    error_message = "Each key of workloads must be 1-80 letters, digits, '-' or '_' (it names the workload's federated identity credential)."
  }

  validation {
    condition     = length(distinct([for key in keys(var.workloads) : lower(key)])) == length(var.workloads)
    error_message = "The keys of workloads must not differ only in letter case: each names a federated identity credential, and the names must be unique on the application."
  }

  validation {
    condition     = alltrue([for w in values(var.workloads) : length(w.cluster) <= 253 && can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$", w.cluster))])
    error_message = "Each workload's cluster must be a cluster's name in the federation: a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters), as modules/cluster takes it."
  }

  validation {
    condition     = alltrue([for w in values(var.workloads) : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", w.namespace))])
    error_message = "Each workload's namespace must be a DNS-1123 label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit."
  }

  validation {
    condition     = alltrue([for w in values(var.workloads) : length(w.service_account) <= 253 && can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$", w.service_account))])
    error_message = "Each workload's service_account must be a ServiceAccount name, a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', at most 253 characters."
  }

  # Implied by the three rules above today (at most 593 characters); kept so that loosening one
  # of them cannot let through a subject Entra ID refuses at apply time.
  validation {
    condition     = alltrue([for w in values(var.workloads) : length("${w.cluster}:system:serviceaccount:${w.namespace}:${w.service_account}") <= 600])
    error_message = "Each workload's subject, <cluster>:system:serviceaccount:<namespace>:<service_account>, must be at most 600 characters (Entra ID's limit for a federated identity credential's subject)."
  }

  # Entra ID takes an issuer and subject pair once per application: the second credential would
  # fail at apply time, after the first was made. (The subject is one-to-one with the three
  # names: none of them can hold a ':'.)
  validation {
    condition     = length(distinct(values(var.workloads))) == length(var.workloads)
    error_message = "The workloads ${join(", ", [for key, w in var.workloads : key if length([for other in values(var.workloads) : other if other == w]) > 1])} name the same cluster, namespace and service_account: Entra ID takes an issuer and subject once per application; keep one key per workload."
  }
}

variable "display_name_prefix" {
  description = "Prefix of the federated identity credentials' names: each is `<display_name_prefix><key>`, unique on the application. With the keys, it must make 3-120 letters, digits, '-' or '_', starting with a letter or digit (Entra ID's rule for the name)."
  type        = string
  default     = "esi-"

  validation {
    condition     = alltrue([for key in keys(var.workloads) : can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{2,119}$", "${var.display_name_prefix}${key}"))])
    error_message = "The display_name_prefix followed by each key of workloads must be a credential name: 3-120 letters, digits, '-' or '_', starting with a letter or digit."
  }
}
