# Inputs of the AWS side of the federation's own login (`selfIssued` in an `aws` SecretStore):
# an IAM OIDC provider for the federation's issuer and a role that trusts it for exactly one
# subject, `esi-federation`, and one audience, `sts.amazonaws.com`.

variable "issuer_url" {
  description = "The federation's OIDC issuer URL, exactly the `issuer_url` given to modules/federation-lambda or modules/federation-kubernetes (the `iss` of every token it signs). Pass the same literal string or variable, not the federation module's `url` output: the federation's configuration holds this module's role ARN, so referencing its output would be a dependency cycle. IAM wants it without a port, and the trust policy's condition keys are this URL without `https://`, so no trailing `/` either."
  type        = string

  validation {
    condition     = can(regex("^https://[A-Za-z0-9.-]+(/[A-Za-z0-9._~-]+)*$", var.issuer_url))
    error_message = "The issuer_url must be an https URL without port, trailing '/', query, fragment or credentials (https://host[/path]): IAM OIDC providers take no port, and the trust policy's condition keys are the URL without https://."
  }
}

variable "oidc_provider_arn" {
  description = "ARN of an IAM OIDC provider that already exists for `issuer_url` in this account (IAM allows one per issuer URL and account, for instance one registered for workloads' `IdentityToken`s). Its client ID list must contain `sts.amazonaws.com`. Null: the module creates the provider."
  type        = string
  default     = null

  validation {
    condition     = var.oidc_provider_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/[^\\s]+$", var.oidc_provider_arn))
    error_message = "The oidc_provider_arn must be an IAM OIDC provider ARN (arn:aws:iam::123456789012:oidc-provider/esi.example.com)."
  }

  validation {
    condition     = var.oidc_provider_arn == null || try(endswith(var.oidc_provider_arn, ":oidc-provider/${trimprefix(var.issuer_url, "https://")}"), false)
    error_message = "The oidc_provider_arn must be the provider of issuer_url: its ARN ends in :oidc-provider/<issuer_url without https://>."
  }
}

variable "thumbprint_list" {
  description = "SHA-1 thumbprints (40 hex digits) of the issuer's server certificate chain for a provider this module creates. Null: IAM works it out when the provider is created (it records the top intermediate CA's thumbprint; for some well-known issuers AWS checks against its own trusted root CAs instead). Ignored with `oidc_provider_arn`."
  type        = list(string)
  default     = null

  validation {
    condition     = var.thumbprint_list == null || try(length(var.thumbprint_list) >= 1 && length(var.thumbprint_list) <= 5 && alltrue([for t in var.thumbprint_list : can(regex("^[0-9A-Fa-f]{40}$", t))]), false)
    error_message = "The thumbprint_list must hold 1 to 5 SHA-1 thumbprints of 40 hex digits each, or be null."
  }
}

variable "role_name" {
  description = "Name of the role the federation assumes with `AssumeRoleWithWebIdentity`."
  type        = string
  default     = "esi-federation"

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,64}$", var.role_name))
    error_message = "The role_name must be 1-64 letters, digits or any of +=,.@_-."
  }
}

variable "role_path" {
  description = "Path of the role."
  type        = string
  default     = "/"

  validation {
    condition     = can(regex("^/([!-~]{0,510}/)?$", var.role_path))
    error_message = "The role_path must start and end with '/' (for example / or /esi/)."
  }
}

variable "max_session_duration" {
  description = "Longest session the role allows, in seconds (3600 to 43200). The federation asks for the default hour and asks again before it runs out; `AWSAssumeRole` generators chained from this role get at most an hour whatever this says."
  type        = number
  default     = 3600

  validation {
    condition     = var.max_session_duration >= 3600 && var.max_session_duration <= 43200
    error_message = "The max_session_duration must be between 3600 and 43200 seconds."
  }
}

variable "permissions_boundary_arn" {
  description = "ARN of a managed policy to set as the role's permissions boundary. Null: none."
  type        = string
  default     = null

  validation {
    condition     = var.permissions_boundary_arn == null || can(regex("^arn:aws[a-z-]*:iam::([0-9]{12}|aws):policy/.+$", var.permissions_boundary_arn))
    error_message = "The permissions_boundary_arn must be an IAM managed policy ARN."
  }
}

variable "policy_arns" {
  description = "Managed policies attached to the role, keyed by a name of your choice (the keys must be known at plan time, the ARNs need not be): what the store's generators may do as the role, e.g. `{ assume = aws_iam_policy.assume_app_roles.arn }` for `AWSAssumeRole` generators (role chaining: the target roles trust this role)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, arn in var.policy_arns : can(regex("^arn:aws[a-z-]*:iam::([0-9]{12}|aws):policy/.+$", arn))])
    error_message = "Each value of policy_arns must be an IAM managed policy ARN."
  }
}

variable "inline_policy_json" {
  description = "An inline policy (JSON text, e.g. `data.aws_iam_policy_document.x.json`) put on the role as `<role_name>-inline`. Null: none."
  type        = string
  default     = null

  validation {
    condition     = var.inline_policy_json == null || try(length(jsondecode(var.inline_policy_json).Statement) > 0, false)
    error_message = "The inline_policy_json must be an IAM policy document as JSON text, with a non-empty Statement."
  }
}

variable "region" {
  description = "The region whose STS endpoint the `aws` store calls (`region` in the store)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]+$", var.region))
    error_message = "The region must be an AWS region name such as eu-west-1."
  }
}

variable "session_name" {
  description = "Role session name the store uses (`selfIssued.sessionName`); null leaves it out, and the federation uses `esi-federation`."
  type        = string
  default     = null

  validation {
    condition     = var.session_name == null || can(regex("^[A-Za-z0-9+=,.@_-]{2,64}$", coalesce(var.session_name, "-")))
    error_message = "The session_name must be 2-64 letters, digits or any of +=,.@_-."
  }
}

variable "tags" {
  description = "Tags for the role and the OIDC provider."
  type        = map(string)
  default     = {}
}
