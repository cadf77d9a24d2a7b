# Inputs are passed through to the manifests' `spec` unchanged (camelCase, as the server reads
# them): the federation's loader is the one schema, and it rejects unknown fields with the file,
# resource and field at fault. This module only checks the shape it relies on.

variable "cluster_manifests" {
  description = "`Cluster` manifests as YAML, usually `module.<cluster>.manifest` of modules/cluster."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.cluster_manifests : can(yamldecode(m).kind == "Cluster") && try(yamldecode(m).kind, "") == "Cluster"])
    error_message = "Every cluster manifest must be a YAML document of kind Cluster (the `manifest` output of modules/cluster)."
  }

  validation {
    condition     = length(distinct([for m in var.cluster_manifests : try(yamldecode(m).metadata.name, "")])) == length(var.cluster_manifests)
    error_message = "Cluster names must be unique."
  }
}

variable "secret_stores" {
  description = <<-EOT
    SecretStores keyed by `namespace/name`, each `{ provider = { <backend> = {...} } }` exactly as
    the `spec` of a SecretStore manifest, e.g.
    `{ "payments/vault" = { provider = { vault = { server = "https://vault.example:8200" } } } }`.
    Secrets for a store (tokens, AppRole secret ids) never go here: the store names the
    environment variable or file the federation reads them from.
  EOT
  type        = any
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.secret_stores : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", k)) && can(keys(v.provider)) && try(length(keys(v.provider)) == 1, false)])
    error_message = "Each secret store is keyed `namespace/name` (DNS-1123) and has a `provider` object with exactly one backend key."
  }
}

variable "generators" {
  description = <<-EOT
    Generators keyed by `namespace/name`, each `{ kind = "<Kind>", spec = {...} }` with `spec`
    exactly as in the manifest, e.g.
    `{ "payments/db" = { kind = "VaultDynamicSecret", spec = { storeRef = { name = "vault" }, path = "database/creds/api" } } }`.
  EOT
  type        = any
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.generators : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", k)) && can(regex("^[A-Z][A-Za-z0-9]*$", v.kind))])
    error_message = "Each generator is keyed `namespace/name` (DNS-1123) and has a `kind` such as Password, UUID, Fake, VaultDynamicSecret or AWSAssumeRole."
  }
}

variable "authorizations" {
  description = <<-EOT
    Authorizations keyed by name, each exactly the `spec` of an Authorization manifest:
    `{ subjects = [{ clusters = [...], namespaces = [...], serviceAccounts = [...] }], generators = ["ns/Kind/name"], maxTTL = "1h" }`.
    Deny by default: a generator no authorization names is unreachable.
  EOT
  type        = any
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.authorizations : can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", k)) && try(length(v.subjects) > 0 && length(v.generators) > 0, false)])
    error_message = "Each authorization is keyed by a DNS-1123 name and has non-empty `subjects` and `generators` lists."
  }
}

variable "extra_manifests" {
  description = "Further esi manifests as YAML text (any kind the federation reads), appended as they are."
  type        = list(string)
  default     = []
}
