# Inputs of the Vault / OpenBao side of the federation's login with its AWS identity (`auth.iam`
# in a `vault` SecretStore): an `aws` auth method whose client configuration names the STS
# endpoint the federation signs for and the server ID it must sign, one `iam` role on it that
# admits exactly the federation's IAM role, and optionally a policy for what the store's
# generators do.

variable "federation_role_arn" {
  description = "ARN of the federation's IAM role, whose credentials sign its login: modules/federation-lambda's `role_arn` output (its execution role), or the role of the federation's ServiceAccount on EKS (IRSA, Pod Identity). The Vault role binds it (without its IAM path, as Vault names an assumed role's caller: `arn:<partition>:iam::<account>:role/<name>`). Referring to the federation module's output is no dependency cycle: `secret_store_provider` does not depend on this input, and the federation module's role does not depend on its configuration."
  type        = string

  validation {
    condition     = can(regex("^arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/([A-Za-z0-9+=,.@_-]+/)*[A-Za-z0-9+=,.@_-]{1,64}$", var.federation_role_arn))
    error_message = "The federation_role_arn must be an IAM role ARN, arn:<partition>:iam::<12-digit account>:role/[<path>/]<name>, without wildcard (not an assumed-role session, a user or an instance profile)."
  }
}

variable "server" {
  description = "The Vault or OpenBao server as the federation reaches it, `https://host[:port]` (`https://vault.example.com:8200`): the store's `server`, and its host the default `server_id`. Plain `http://` only on a loopback host (`http://127.0.0.1:8200`): the federation sends its signed login request over it, which anyone who reads it can replay for a token while the signature is valid."
  type        = string

  validation {
    condition     = can(regex("^(https://([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\\[[0-9A-Fa-f:.]+\\])|http://(localhost|127\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}|\\[::1\\]))(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$", var.server))
    error_message = "The server must be an https URL of the Vault server, https://host[:port][/path], without query, fragment or credentials (http:// only on a loopback host): the federation sends its signed login request to it."
  }
}

variable "region" {
  description = "The region the federation signs its STS request for: the store's `sts.region`, and the mount's `sts_region`. Without `sts_endpoint` the request goes to that region's STS endpoint, `https://sts.<region>.amazonaws.com` (the global `https://sts.amazonaws.com` for `us-east-1`), which Vault must reach over HTTPS. Usually the federation's own region."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]+(-[a-z0-9]+)*$", var.region))
    error_message = "The region must be an AWS region name such as eu-west-1 (lowercase letters, digits and '-')."
  }
}

variable "sts_endpoint" {
  description = "The STS endpoint to sign for and send the request to instead of the region's, `https://host[:port]` (an STS VPC endpoint's DNS name, say): the store's `sts.endpoint` and the mount's `sts_endpoint` (a trailing `/` dropped there). Both the federation and Vault must reach it, and it must answer for `region`. Plain `http://` only on a loopback host (a local STS stand-in). Null: the region's endpoint."
  type        = string
  default     = null

  validation {
    condition     = var.sts_endpoint == null || can(regex("^(https://([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\\[[0-9A-Fa-f:.]+\\])|http://(localhost|127\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}|\\[::1\\]))(:[0-9]{1,5})?/?$", coalesce(var.sts_endpoint, "-")))
    error_message = "The sts_endpoint must be an https URL without path, https://host[:port], without query, fragment or credentials (http:// only on a loopback host): the signed request goes to it, and Vault appends the request's path itself."
  }
}

variable "server_id" {
  description = "The `X-Vault-AWS-IAM-Server-ID` header the federation signs into its request and the mount requires (`iam_server_id_header_value`): the store's `serverId`. A request signed for one Vault then does not log in at another that requires its own ID. Null: the host of `server` (`vault.example.com`)."
  type        = string
  default     = null

  validation {
    condition     = var.server_id == null || can(regex("^[!-~]{1,256}$", var.server_id))
    error_message = "The server_id must be 1 to 256 printable ASCII characters without spaces (a header value)."
  }
}

variable "resolve_aws_unique_ids" {
  description = "Whether Vault resolves `federation_role_arn` to the role's unique ID when it writes the role (`resolve_aws_unique_ids`, Vault's default), so that a role deleted and made again under the same name does not log in as the federation. Vault calls `iam:GetRole` for it with its own AWS credentials: its default chain (environment, instance profile, ECS task role, IRSA; this module sets no keys on the mount), which need `iam:GetRole` on the role (in its account), or the apply fails writing the role. False: Vault binds the role by name (`arn:<partition>:iam::<account>:role/<name>`) and needs no AWS credentials. Changing it re-creates the Vault role."
  type        = bool
  default     = true
  nullable    = false
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
  description = "Mount path of the `aws` auth method created for the federation's login: the store's `auth.iam.path`. The mount is the federation's alone: this module writes its client configuration (STS endpoint, server ID), which would overwrite an existing mount's, so the default is not Vault's `aws`."
  type        = string
  default     = "esi-federation-aws"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.path)) && var.path != "token"
    error_message = "The path must be a mount path such as esi-federation-aws or aws/esi, without leading or trailing '/', and not token."
  }
}

variable "role_name" {
  description = "Name of the auth method's role the federation logs in as: the store's `auth.iam.role`."
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
