variable "name" {
  description = "Name of the webhook Deployment, Service and Secret."
  type        = string
  default     = "esi-webhook"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?$", var.name))
    error_message = "The name must be a DNS-1123 label of at most 52 characters."
  }
}

variable "namespace" {
  description = "Namespace of the webhook; always excluded from injection."
  type        = string
  default     = "esi-system"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace)) && var.namespace != "default"
    error_message = "The namespace must be a DNS-1123 label other than `default`."
  }
}

variable "create_namespace" {
  description = "Create the namespace."
  type        = bool
  default     = true
}

variable "image" {
  description = "The esi-webhook image, pinned by digest: `registry/name@sha256:<64 hex>` (a tag may precede the digest). Every replica and every cluster then runs the same build."
  type        = string

  validation {
    condition     = can(regex("^[^\\s@]+@sha256:[0-9a-f]{64}$", var.image))
    error_message = "Pin the image by digest: `registry/name[:tag]@sha256:<64 hex digits>`."
  }
}

variable "cli_image" {
  description = "The esi-cli image the webhook injects as init container (it runs in every opted-in Pod), pinned by digest: `registry/name@sha256:<64 hex>` (a tag may precede the digest). Every replica and every cluster then runs the same build."
  type        = string

  validation {
    condition     = can(regex("^[^\\s@]+@sha256:[0-9a-f]{64}$", var.cli_image))
    error_message = "Pin the cli_image by digest: `registry/name[:tag]@sha256:<64 hex digits>`."
  }
}

variable "federation_url" {
  description = "Default federation URL for Pods that do not name one (the `url` output of federation-lambda, or the public URL of federation-kubernetes)."
  type        = string

  validation {
    condition     = can(regex("^https://[^\\s/]+(/[^\\s]*)?$", var.federation_url))
    error_message = "The federation_url must be an https URL: ServiceAccount tokens travel to it."
  }
}

variable "allowed_federation_urls" {
  description = "Further federation URLs Pods may name in their annotation (the default is always allowed). Anything else is denied at admission: annotations cannot send tokens elsewhere."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for u in var.allowed_federation_urls : can(regex("^https://[^\\s]+$", u))])
    error_message = "Allowed federation URLs must be https URLs."
  }
}

variable "audience" {
  description = "Audience of the projected ServiceAccount token given to esi-cli; must be in the registered Cluster's `audiences`."
  type        = string
  default     = "esi"

  validation {
    condition     = length(trimspace(var.audience)) > 0
    error_message = "The audience must not be empty."
  }
}

variable "token_expiration_seconds" {
  description = "Lifetime of the projected token esi-cli presents. Kubernetes' minimum is 600; keep it short, a JWKS check cannot see that a Pod was deleted."
  type        = number
  default     = 600

  validation {
    condition     = var.token_expiration_seconds >= 600 && var.token_expiration_seconds <= 86400
    error_message = "The token_expiration_seconds must be between 600 (Kubernetes' minimum) and 86400."
  }
}

variable "excluded_namespaces" {
  description = "Namespaces never sent to the webhook, in addition to its own."
  type        = list(string)
  default     = ["kube-system", "kube-public", "kube-node-lease"]
}

variable "replicas" {
  description = "Webhook replicas. At least 2: with failurePolicy Fail an unavailable webhook blocks opted-in Pods."
  type        = number
  default     = 2

  validation {
    condition     = var.replicas >= 2
    error_message = "Run at least 2 replicas of the webhook."
  }
}

variable "timeout_seconds" {
  description = "Admission timeout. Short: the API server waits this long before failing an opted-in Pod's creation. Must exceed `service_account_lookup.timeout`."
  type        = number
  default     = 5

  validation {
    condition     = var.timeout_seconds >= 1 && var.timeout_seconds <= 30
    error_message = "The timeout_seconds must be between 1 and 30."
  }
}

variable "cert_validity_hours" {
  description = "Validity of the generated CA and serving certificate. Re-apply within `cert_early_renewal_hours` of expiry to rotate (the webhook reloads its files without restart)."
  type        = number
  default     = 8760
}

variable "cert_early_renewal_hours" {
  description = "How long before expiry a `terraform apply` renews the certificates."
  type        = number
  default     = 720
}

variable "extra_config" {
  description = "Further webhook settings merged into its config file (see webhook/README.md for the keys: resources of the injected containers, token expiry bounds, ...)."
  type        = any
  default     = {}
}

variable "resources" {
  description = "Webhook container resources."
  type = object({
    requests = map(string)
    limits   = map(string)
  })
  default = {
    requests = { cpu = "50m", memory = "32Mi" }
    limits   = { cpu = "500m", memory = "128Mi" }
  }
}

variable "labels" {
  description = "Extra labels on every object."
  type        = map(string)
  default     = {}
}

variable "service_account_defaults" {
  description = "Read each opted-in Pod's ServiceAccount for `esi.dev/` annotations used as defaults (the Pod's own win). Grants the webhook `get` on serviceaccounts cluster-wide and mounts its API token; when the API server cannot be read, opted-in Pods are denied (retryable). `false` removes the permission and the token."
  type        = bool
  default     = true
}

variable "service_account_lookup" {
  description = "Bounds of ServiceAccount reads: `timeout` per read, shorter than `timeout_seconds` (the whole admission's budget), and `cache_ttl`, how long an answer is reused. Durations like `2s`, `1m`, both more than zero (the webhook refuses to start on `0s`)."
  type = object({
    timeout   = optional(string, "2s")
    cache_ttl = optional(string, "30s")
  })
  default = {}

  validation {
    condition = alltrue([
      for d in [var.service_account_lookup.timeout, var.service_account_lookup.cache_ttl] :
      can(regex("^[0-9]+(s|m|h)$", d)) && !can(regex("^0+[smh]$", d))
    ])
    error_message = "service_account_lookup durations must look like `2s`, `1m` or `1h` and be more than zero: the webhook refuses to start on `0s`."
  }

  # The API server waits timeout_seconds for the whole admission: a read allowed to take as long
  # would time the admission out (an opaque failure) instead of denying it with a reason.
  validation {
    condition = try(
      tonumber(regex("^([0-9]+)[smh]$", var.service_account_lookup.timeout)[0])
      * lookup({ s = 1, m = 60, h = 3600 }, substr(var.service_account_lookup.timeout, -1, 1))
      < var.timeout_seconds,
      true # a malformed duration is reported by the rule above
    )
    error_message = "service_account_lookup.timeout must be shorter than timeout_seconds, the API server's budget for the whole admission."
  }
}

variable "entrypoint_lookup" {
  description = "Read the ENTRYPOINT (and CMD, when the Pod sets no args) of an opted-in container that gets env vars and has no `command` from its image's configuration in the registry, instead of denying the Pod. `registries`: the registry hosts the webhook may read from (`host` or `host:port` as image references name them, `docker.io` for Docker Hub, `*` as a wildcard, e.g. `*.dkr.ecr.*.amazonaws.com`); Pods name their images, so this list is what keeps them from having the webhook call any host. Empty (the default): off. `timeout_seconds` bounds one admission's lookups (1 to 4, and shorter than `timeout_seconds`); `cache_seconds` is how long a tag's entrypoint is reused (an image pinned by digest, as long as the webhook runs). `credentials_secret`: the name of an existing `kubernetes.io/dockerconfigjson` Secret in the webhook's namespace for private registries, mounted and read at each lookup (anonymous without it; Pods' `imagePullSecrets` are never read). `ca_pem`: PEM CA certificates trusted for the registries besides the system roots. `platforms`: the platforms (`os/architecture[/variant]`, e.g. `linux/amd64`) the cluster's nodes run; a Pod gets the command an image index's images agree on for those of them its nodeSelector and required node affinity (`kubernetes.io/arch`, `kubernetes.io/os`) allow, and is denied when they differ (empty, the default: the webhook's own platform). The webhook then needs outbound HTTPS to the registries."
  type = object({
    registries         = optional(list(string), [])
    timeout_seconds    = optional(number, 2)
    cache_seconds      = optional(number, 600)
    credentials_secret = optional(string)
    ca_pem             = optional(string)
    platforms          = optional(list(string), [])
  })
  default  = {}
  nullable = false

  # The webhook's own rules (webhook/src/config.rs): it refuses to start on anything else.
  validation {
    condition     = alltrue([for r in var.entrypoint_lookup.registries : can(regex("^[^/ ]+$", r))])
    error_message = "Each entrypoint_lookup.registries entry must be a registry host: `host` or `host:port`, `*` as a wildcard, no scheme, path or space."
  }

  validation {
    condition = (
      var.entrypoint_lookup.timeout_seconds >= 1 && var.entrypoint_lookup.timeout_seconds <= 4
      && floor(var.entrypoint_lookup.timeout_seconds) == var.entrypoint_lookup.timeout_seconds
    )
    error_message = "entrypoint_lookup.timeout_seconds must be a whole number from 1 to 4: the webhook refuses anything else."
  }

  # As for service_account_lookup.timeout: lookups allowed the whole admission's budget would
  # time the admission out (an opaque failure) instead of denying it with a reason.
  validation {
    condition     = length(var.entrypoint_lookup.registries) == 0 || var.entrypoint_lookup.timeout_seconds < var.timeout_seconds
    error_message = "entrypoint_lookup.timeout_seconds must be shorter than timeout_seconds, the API server's budget for the whole admission."
  }

  validation {
    condition     = var.entrypoint_lookup.cache_seconds >= 0 && floor(var.entrypoint_lookup.cache_seconds) == var.entrypoint_lookup.cache_seconds
    error_message = "entrypoint_lookup.cache_seconds must be a whole number of seconds, 0 or more."
  }

  validation {
    condition = var.entrypoint_lookup.credentials_secret == null || (
      length(coalesce(var.entrypoint_lookup.credentials_secret, "-")) <= 253
      && can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$", coalesce(var.entrypoint_lookup.credentials_secret, "-")))
    )
    error_message = "entrypoint_lookup.credentials_secret must be the name of a Secret (a DNS-1123 subdomain) in the webhook's namespace."
  }

  validation {
    condition = (
      alltrue([for p in var.entrypoint_lookup.platforms : can(regex("^[a-z0-9_]{1,32}/[a-z0-9_]{1,32}(/[a-z0-9_]{1,32})?$", p))])
      && length(distinct(var.entrypoint_lookup.platforms)) == length(var.entrypoint_lookup.platforms)
    )
    error_message = "entrypoint_lookup.platforms must be distinct platforms os/architecture[/variant] in lowercase letters and digits, e.g. linux/amd64 or linux/arm/v7."
  }

  validation {
    condition     = var.entrypoint_lookup.ca_pem == null || length(regexall("-----BEGIN CERTIFICATE-----", coalesce(var.entrypoint_lookup.ca_pem, "-"))) >= 1
    error_message = "entrypoint_lookup.ca_pem must hold PEM certificates (-----BEGIN CERTIFICATE----- blocks), such as the registry's CA."
  }
}
