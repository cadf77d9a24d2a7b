# Inputs of the Vault / OpenBao side of the federation's own login (`auth.jwt.selfIssued` in a
# `vault` SecretStore): a JWT auth method that trusts the federation's issuer, one role on it that
# admits exactly the subject `esi-federation` with the store's server as audience, and optionally
# a policy for what the store's generators do.

variable "issuer_url" {
  description = "The federation's OIDC issuer URL, exactly the `issuer_url` given to modules/federation-lambda or modules/federation-kubernetes (the `iss` of every token it signs; a trailing `/` is dropped, as the federation drops it). Vault fetches `<issuer_url>/.well-known/openid-configuration` when it configures the auth method and refuses the configuration if the federation does not serve it yet: create this module after the federation serves its issuer, for instance by passing the URL through a resource that depends on the federation module (`terraform_data.federation_issuer` in infra/README.md, under Trusting the federation's own logins). Unlike the other trust modules' outputs, `secret_store_provider` holds only this module's other inputs, so the federation's configuration may hold it without a dependency cycle."
  type        = string

  validation {
    condition     = can(regex("^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$", var.issuer_url))
    error_message = "The issuer_url must be an https URL (Vault fetches the issuer's keys from it over TLS): https://host[:port][/path], without query, fragment or credentials."
  }
}

variable "server" {
  description = "The Vault or OpenBao server as the federation reaches it, `https://host[:port]` (`https://vault.example.com:8200`): the store's `server`, and, without a trailing `/`, the audience the federation's token carries and the role's `bound_audiences`, so that a token sent to another server does not log in here. Plain `http://` only on a loopback host (`http://127.0.0.1:8200`): the federation sends its login token over it."
  type        = string

  validation {
    condition     = can(regex("^(https://([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\\[[0-9A-Fa-f:.]+\\])|http://(localhost|127\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}|\\[::1\\]))(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$", var.server))
    error_message = "The server must be an https URL of the Vault server, https://host[:port][/path], without query, fragment or credentials (http:// only on a loopback host): the federation sends its login token to it."
  }
}

variable "namespace" {
  description = "Vault Enterprise or OpenBao namespace of the auth method, role and policy (relative to the `vault` provider's namespace), and the store's `namespace` (the `X-Vault-Namespace` the federation sends, relative to the root namespace): configure the provider at the root namespace so that both name the same one. Null: the provider's namespace, and none in the store."
  type        = string
  default     = null

  validation {
    condition     = var.namespace == null || can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", coalesce(var.namespace, "-")))
    error_message = "The namespace must be a Vault namespace path such as team-a or admin/team-a, without leading or trailing '/'."
  }
}

variable "path" {
  description = "Mount path of the JWT auth method created for the federation's own login: the store's `auth.jwt.path`. The mount is the federation's alone; an auth method for workloads' `IdentityToken`s trusting the same issuer belongs on another path."
  type        = string
  default     = "esi-federation"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.path)) && var.path != "token"
    error_message = "The path must be a mount path such as esi-federation or jwt/esi, without leading or trailing '/', and not token."
  }
}

variable "role_name" {
  description = "Name of the auth method's role the federation logs in as: the store's `auth.jwt.role`."
  type        = string
  default     = "esi-federation"

  validation {
    condition     = can(regex("^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,126}[A-Za-z0-9_])?$", var.role_name))
    error_message = "The role_name must be 1-128 letters, digits, '_', '.' or '-', starting and ending with a letter, digit or '_'."
  }
}

variable "token_policies" {
  description = "Existing Vault policies the federation's token gets (besides Vault's `default` policy, which lets it look up and renew itself): what the store's generators may do. `policy_paths` makes one more. Give at least one of the two."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.token_policies : can(regex("^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$", p)) && p != "root"])
    error_message = "Each of token_policies must be a policy name in lowercase (Vault lowercases them) and not root."
  }

  validation {
    condition     = length(distinct(var.token_policies)) == length(var.token_policies)
    error_message = "The token_policies must be distinct."
  }
}

variable "policy_paths" {
  description = "A policy made for the federation, named `policy_name` and added to `token_policies`: the capabilities it has on each Vault API path, e.g. `{ \"database/creds/payments-api\" = [\"read\"], \"sys/leases/renew\" = [\"update\"], \"sys/leases/revoke\" = [\"update\"] }` for a `VaultDynamicSecret` whose leases the federation renews down to an Authorization's `maxTTL` and revokes (`/v1/revoke`). Every caller an Authorization lets use the store's generators acts with these capabilities. Empty: no policy is made."
  type        = map(list(string))
  default     = {}

  validation {
    condition     = alltrue([for p in keys(var.policy_paths) : can(regex("^[A-Za-z0-9_.+*{}-][A-Za-z0-9_.+*{}/-]*$", p))])
    error_message = "Each key of policy_paths must be a Vault API path without a leading '/' (database/creds/app, secret/data/+/config, kv/data/app/*)."
  }

  validation {
    condition = alltrue([for caps in values(var.policy_paths) : length(caps) > 0 && length(distinct(caps)) == length(caps) && alltrue([
      for c in caps : contains(["create", "read", "update", "patch", "delete", "list", "sudo", "deny", "subscribe", "recover"], c)
    ])])
    error_message = "Each value of policy_paths must be a non-empty list of distinct capabilities among create, read, update, patch, delete, list, sudo, deny, subscribe and recover."
  }

  validation {
    condition     = length(var.policy_paths) > 0 || length(var.token_policies) > 0
    error_message = "Give token_policies or policy_paths: with Vault's default policy alone, the federation's token can read no secret."
  }
}

variable "policy_name" {
  description = "Name of the policy made from `policy_paths`. An existing policy of that name is overwritten."
  type        = string
  default     = "esi-federation"

  validation {
    condition     = can(regex("^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$", var.policy_name)) && !contains(["root", "default"], var.policy_name)
    error_message = "The policy_name must be a policy name in lowercase (Vault lowercases them), and neither root nor default."
  }
}

variable "token_ttl" {
  description = "TTL of the federation's Vault token, in seconds; the federation renews it once two thirds have passed, when it next uses it. Vault revokes every lease a token created when the token expires, so a credential the federation hands out lives at most until its token expires: at least a third of this TTL after it is issued if the federation instance that issued it is never used again (a Lambda environment that is not invoked again). Make it at least three times the longest `maxTTL` of the Authorizations allowing the store's generators."
  type        = number
  default     = 3600

  validation {
    condition     = var.token_ttl >= 60 && floor(var.token_ttl) == var.token_ttl
    error_message = "The token_ttl must be a whole number of seconds, at least 60."
  }
}

variable "token_max_ttl" {
  description = "Longest life of the federation's Vault token, in seconds, renewals included. Once a renewal grants less than the login did (the token nears this limit), the federation logs in again, so a lease is never created under a token with less than a third of `token_ttl` left; keep it well above `token_ttl`, or the federation logs in at almost every renewal. Null: the auth method's or Vault's maximum (32 days unless tuned)."
  type        = number
  default     = 86400

  validation {
    condition     = var.token_max_ttl == null || try(var.token_max_ttl >= var.token_ttl && floor(var.token_max_ttl) == var.token_max_ttl, false)
    error_message = "The token_max_ttl must be a whole number of seconds, at least token_ttl, or null."
  }
}
