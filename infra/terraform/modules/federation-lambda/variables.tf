variable "name" {
  description = "Function name; also names the role, log group, layer and API."
  type        = string
  default     = "esi-federation"

  validation {
    condition     = can(regex("^[A-Za-z0-9-_]{1,56}$", var.name))
    error_message = "The name must be 1-56 letters, digits, '-' or '_' (room is kept for suffixes)."
  }
}

variable "package_path" {
  description = "Path to the function zip holding the `bootstrap` executable (the `esi-federation` binary built for provided.al2023, e.g. `cargo lambda build --release --output-format zip`, or extracted from the federation image; see federation-fn/README.md)."
  type        = string

  validation {
    condition     = endswith(var.package_path, ".zip")
    error_message = "The package_path must point to a .zip file containing `bootstrap`."
  }
}

variable "architecture" {
  description = "Instruction set of the `bootstrap` binary: `arm64` (cheaper per GB-second) or `x86_64`."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "The architecture must be arm64 or x86_64."
  }
}

variable "memory_size" {
  description = "Memory in MB. Lambda allocates CPU in proportion; 512 MB keeps RS256 verification and TLS handshakes to backends fast."
  type        = number
  default     = 512

  validation {
    condition     = var.memory_size >= 128 && var.memory_size <= 10240
    error_message = "The memory_size must be between 128 and 10240 MB."
  }
}

variable "timeout" {
  description = "Function timeout in seconds. Keep it above the slowest backend call; API Gateway caps requests at 30 s."
  type        = number
  default     = 15

  validation {
    condition     = var.timeout >= 3 && var.timeout <= 900
    error_message = "The timeout must be between 3 and 900 seconds."
  }
}

variable "endpoint_type" {
  description = "How clients reach the function: `function_url` (a Lambda Function URL with auth NONE; the federation authenticates every caller by its ServiceAccount token) or `http_api` (API Gateway HTTP API v2, for custom domains, WAF and throttling)."
  type        = string
  default     = "function_url"

  validation {
    condition     = contains(["function_url", "http_api"], var.endpoint_type)
    error_message = "The endpoint_type must be function_url or http_api."
  }

  validation {
    condition     = var.endpoint_type != "http_api" || var.timeout <= 30
    error_message = "API Gateway HTTP APIs time out after 30 s: set timeout to 30 or less with endpoint_type = http_api."
  }
}

variable "reserved_concurrency" {
  description = "Reserved concurrent executions: caps the federation's scale-out (and the load it can put on backends). -1 leaves it unreserved."
  type        = number
  default     = 100

  validation {
    condition     = var.reserved_concurrency == -1 || var.reserved_concurrency >= 1
    error_message = "The reserved_concurrency must be -1 (unreserved) or at least 1."
  }
}

variable "log_retention_days" {
  description = "Retention of the function's CloudWatch log group (audit lines: who got what, allowed or denied and why)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "The log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653)."
  }
}

variable "log_level" {
  description = "Application log level passed as Lambda's `AWS_LAMBDA_LOG_LEVEL` (the federation honours it)."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"], var.log_level)
    error_message = "The log_level must be one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the lease-keys secret in Secrets Manager, the function's environment and its log group (the function's role gets kms:Decrypt on it). Null uses the AWS managed keys (`aws/secretsmanager`, `aws/lambda`, and CloudWatch Logs' own). The key policy must let IAM policies grant its use (the default key policy does), and allow `logs.<region>.amazonaws.com`; whoever applies this module needs kms:GenerateDataKey and kms:Decrypt on it."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "The kms_key_arn must be a KMS key ARN."
  }
}

variable "tracing_mode" {
  description = "X-Ray tracing mode: `PassThrough` (no extra permissions) or `Active` (adds the X-Ray write policy)."
  type        = string
  default     = "PassThrough"

  validation {
    condition     = contains(["PassThrough", "Active"], var.tracing_mode)
    error_message = "The tracing_mode must be PassThrough or Active."
  }
}

variable "code_signing_config_arn" {
  description = "Optional Lambda code-signing configuration; when set, only packages signed by its profiles deploy."
  type        = string
  default     = null
}

variable "vpc_config" {
  description = "Run the function in these private subnets (with a NAT or VPC endpoints to reach STS, the clusters' issuers and the backends), e.g. to reach a Vault that is not public. Null runs it outside any VPC."
  type = object({
    subnet_ids         = list(string)
    security_group_ids = list(string)
  })
  default = null

  validation {
    condition     = var.vpc_config == null || try(length(var.vpc_config.subnet_ids) > 0 && length(var.vpc_config.security_group_ids) > 0, false)
    error_message = "The vpc_config needs at least one subnet and one security group."
  }
}

variable "assumable_role_arns" {
  description = "IAM roles the AWSAssumeRole generators may assume. The function's role gets exactly `sts:AssumeRole`, `sts:TagSession` and `sts:SetSourceIdentity` on these ARNs and nothing else in STS; each target role's trust policy must in turn trust `role_arn` (an output) for the same three actions."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.assumable_role_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$", arn))])
    error_message = "Every assumable role must be an IAM role ARN (wildcards are refused on purpose)."
  }
}

variable "lease_key_rotation" {
  description = "Generation of the lease-sealing key (its key id is `k<generation>`). Change it to generate a new key; leases sealed with the old key stop opening unless it is kept in `previous_lease_keys`."
  type        = string
  default     = "1"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,31}$", var.lease_key_rotation))
    error_message = "The lease_key_rotation must be 1-31 characters of [A-Za-z0-9_-] (it becomes part of the key id)."
  }
}

variable "previous_lease_keys" {
  description = "Older lease-sealing keys as `id=base64` (an entry of the lease-keys secret, e.g. the previous `k1=...`) still accepted for opening (revocation) after a rotation; new leases are sealed with the current key only."
  type        = list(string)
  default     = []
  sensitive   = true

  validation {
    condition     = alltrue([for k in var.previous_lease_keys : can(regex("^[A-Za-z0-9_-]{1,32}=[A-Za-z0-9+/]{43}=$", k))])
    error_message = "Each previous lease key must be `id=base64` with the standard base64 text of 32 bytes."
  }

  # The federation refuses a key ring that names an id twice, and the function would not start.
  validation {
    condition     = length(distinct([for k in var.previous_lease_keys : split("=", k)[0]])) == length(var.previous_lease_keys) && !contains([for k in var.previous_lease_keys : split("=", k)[0]], "k${var.lease_key_rotation}")
    error_message = "Previous lease key ids must be distinct and differ from the current key id `k<lease_key_rotation>`."
  }
}

variable "environment" {
  description = "Extra environment variables for the function, e.g. how a SecretStore finds its credentials (`VAULT_ROLE_ID`). Names starting with `ESI_LEASE_KEYS` (the lease keys come from the module's secret), `ESI_CONFIG` and `AWS_` are reserved."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.environment) : can(regex("^[A-Za-z_][A-Za-z0-9_]*$", k)) && !startswith(k, "ESI_LEASE_KEYS") && !startswith(k, "ESI_CONFIG") && !startswith(k, "AWS_")])
    error_message = "Environment names must be identifiers and must not override ESI_LEASE_KEYS, ESI_CONFIG or AWS_* variables."
  }
}

variable "cluster_manifests" {
  description = "`Cluster` manifests (YAML), usually the `manifest` outputs of modules/cluster."
  type        = list(string)
  default     = []
}

variable "secret_stores" {
  description = "SecretStores keyed `namespace/name`; see modules/federation-config."
  type        = any
  default     = {}
}

variable "generators" {
  description = "Generators keyed `namespace/name`, each `{ kind, spec }`; see modules/federation-config."
  type        = any
  default     = {}
}

variable "authorizations" {
  description = "Authorizations keyed by name, each the manifest `spec`; see modules/federation-config."
  type        = any
  default     = {}
}

variable "extra_manifests" {
  description = "Further esi manifests (YAML) appended to the bundle."
  type        = list(string)
  default     = []
}

variable "build_dir" {
  description = "Folder where the configuration layer zip is written before upload. Null means `<root module>/.esi-build`."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
