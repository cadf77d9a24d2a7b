variable "name" {
  description = "Name of the Cluster resource in the federation. Authorizations match it with globs (`clusters: [\"prod-*\"]`) and it appears in audit logs and session tags."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.name))
    error_message = "The name must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', at most 253 characters."
  }
}

variable "issuer" {
  description = "The exact `iss` claim of the cluster's ServiceAccount tokens (`kubectl get --raw /.well-known/openid-configuration | jq -r .issuer`; on EKS `aws_eks_cluster.identity[0].oidc[0].issuer`). Several clusters may share one issuer string: the federation then tells them apart by the keys that verify the signature."
  type        = string

  validation {
    condition     = can(regex("^https?://[^\\s]+$", var.issuer))
    error_message = "The issuer must be an http(s) URL without whitespace, exactly as it appears in the token's `iss` claim."
  }
}

variable "jwks_uri" {
  description = "Explicit JWKS URL, for issuers whose discovery document is not served. Leave null (with `jwks` null) to use OIDC discovery at `{issuer}/.well-known/openid-configuration`."
  type        = string
  default     = null

  validation {
    condition     = var.jwks_uri == null || can(regex("^https://[^\\s]+$", var.jwks_uri))
    error_message = "The jwks_uri must be an https URL."
  }
}

variable "jwks" {
  description = "Inline JWKS (JSON text, `{\"keys\": [...]}`) for private clusters whose issuer the federation cannot reach. Read it from the cluster with `kubectl get --raw /openid/v1/jwks`, or in Terraform with the `http` data source against the API server. Re-apply after the cluster rotates its signing key."
  type        = string
  default     = null

  validation {
    condition     = var.jwks == null || try(length(jsondecode(var.jwks).keys) > 0, false)
    error_message = "The jwks must be a JSON object with a non-empty `keys` array."
  }

  validation {
    condition     = var.jwks == null || var.jwks_uri == null
    error_message = "Set at most one of `jwks` and `jwks_uri` (neither means OIDC discovery)."
  }
}

variable "ca_bundle" {
  description = "PEM bundle trusted (server-side) for the discovery and JWKS fetches of this cluster, for issuers served with a private CA. Null means the federation's system roots."
  type        = string
  default     = null

  validation {
    condition     = var.ca_bundle == null || can(regex("-----BEGIN CERTIFICATE-----", var.ca_bundle))
    error_message = "The ca_bundle must hold at least one PEM certificate."
  }
}

variable "audiences" {
  description = "Accepted `aud` values. The webhook projects ServiceAccount tokens with the federation's audience; it must be in this list."
  type        = list(string)
  default     = ["esi"]

  validation {
    condition     = length(var.audiences) > 0 && alltrue([for a in var.audiences : length(trimspace(a)) > 0])
    error_message = "At least one non-empty audience is required."
  }
}

variable "algorithms" {
  description = "Allowed signature algorithms. Null keeps the federation's default (all asymmetric algorithms it supports). `none` and HMAC are never accepted."
  type        = list(string)
  default     = null

  validation {
    condition     = var.algorithms == null || (length(coalesce(var.algorithms, [])) > 0 && alltrue([for a in coalesce(var.algorithms, []) : contains(["RS256", "RS384", "RS512", "ES256", "ES384"], a)]))
    error_message = "Algorithms must be a non-empty subset of RS256, RS384, RS512, ES256, ES384."
  }
}

variable "leeway" {
  description = "Clock-skew leeway as humantime durations (`150s`, `2m`). Omitted fields keep the federation's defaults (Vault-like: 150s for exp and nbf, 60s for iat)."
  type = object({
    expiration = optional(string)
    not_before = optional(string)
    issued_at  = optional(string)
  })
  default = {}

  validation {
    condition     = alltrue([for d in [var.leeway.expiration, var.leeway.not_before, var.leeway.issued_at] : d == null || can(regex("^[0-9]+(ms|s|m|h)$", d))])
    error_message = "Leeways must be durations such as `90s`, `2m` or `1h`."
  }
}

variable "labels" {
  description = "Labels on the Cluster resource; Authorizations select clusters with `clusterSelector.matchLabels`."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([for k, v in var.labels :
      can(regex("^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$", k)) &&
      can(regex("^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$", v))
    ])
    error_message = "Labels must be valid Kubernetes label keys and values (63 characters, alphanumerics, '-', '_', '.')."
  }
}
