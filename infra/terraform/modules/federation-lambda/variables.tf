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
  description = "Customer-managed KMS key for the lease-keys (and issuer-keys) secret in Secrets Manager, the function's environment and its log group (the function's role gets kms:Decrypt on it). Null uses the AWS managed keys (`aws/secretsmanager`, `aws/lambda`, and CloudWatch Logs' own). The key policy must let IAM policies grant its use (the default key policy does), and allow `logs.<region>.amazonaws.com`; whoever applies this module needs kms:GenerateDataKey and kms:Decrypt on it."
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

# AWS generators that call AWS with the function's own role (no `roleArn`). Each grant is
# opt-in and scoped; the tag-scoped alternative is `roleArn` plus `assumable_role_arns`.

variable "ecr_authorization_token" {
  description = "Let `ECRAuthorizationToken` generators without `roleArn` work: adds `ecr:GetAuthorizationToken` on `*` (the action has no resource-level permission, so `*` is the only resource IAM accepts). Alone it yields a registry login that can pull nothing: the token carries the function role's ECR permissions, so the role also needs pull permissions on the repositories (`ecr_pull_repository_arns`, or repository policies that trust `role_arn`). Every caller authorized for such a generator gets the same permissions; to scope them per namespace, give the generator a `roleArn` (listed in `assumable_role_arns`) whose repository policies key on its session tags."
  type        = bool
  default     = false
}

variable "ecr_pull_repository_arns" {
  description = "ECR repositories whose images the tokens of `ECRAuthorizationToken` generators without `roleArn` may pull: the function's role gets `ecr:BatchGetImage`, `ecr:GetDownloadUrlForLayer` and `ecr:BatchCheckLayerAvailability` on exactly these ARNs (wildcards allowed in the repository name, e.g. `arn:aws:ecr:eu-west-1:123456789012:repository/payments/*`). Needs `ecr_authorization_token = true`. Leave it empty when repository policies grant `role_arn` instead (for instance across accounts)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.ecr_pull_repository_arns : can(regex("^arn:aws[a-z-]*:ecr:[a-z0-9-]+:[0-9]{12}:repository/[a-z0-9._/*?-]+$", arn))])
    error_message = "Every ECR pull repository must be an ECR repository ARN (`arn:aws:ecr:<region>:<account>:repository/<name>`, wildcards only in the name)."
  }

  # The function never pulls images itself: these permissions only reach callers through the
  # token ecr_authorization_token lets it request.
  validation {
    condition     = length(var.ecr_pull_repository_arns) == 0 || var.ecr_authorization_token
    error_message = "The ecr_pull_repository_arns are only used by ECR tokens: set ecr_authorization_token = true as well."
  }
}

variable "readable_secret_arns" {
  description = "Secrets Manager secrets that `SecretsManagerSecret` generators without `roleArn` may read: the function's role gets `secretsmanager:GetSecretValue` on exactly these ARNs (no `DescribeSecret`: reading does not need it). Wildcards are allowed in the secret name, as IAM allows, e.g. `arn:aws:secretsmanager:eu-west-1:123456789012:secret:apps/*`; region and account must be given. Mind the random 6-character suffix Secrets Manager appends to each secret's ARN: name one secret as `.../secret:apps/db-??????` or `.../secret:apps/db*`. The role must read the module's own lease-keys secret `<name>-lease-keys` (and, as an issuer, `<name>-issuer-keys`) at every cold start, so it already can, whatever this list says: a generator without `roleArn` whose `secretId` resolves to one of them would hand out the federation's keys (the federation refuses such a `secretId`, at load and per request, but only for the secrets its variables name). Keep `secretId` templates under a fixed prefix (`apps/{{namespace}}/db`), never a bare placeholder. Patterns that could match `<name>-lease-keys` or `<name>-issuer-keys` are refused here, so that this grant never names them. Secrets encrypted with a customer managed key also need `secret_kms_key_arns`."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.readable_secret_arns : can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@*?-]+$", arn))])
    error_message = "Every readable secret must be a Secrets Manager secret ARN (`arn:aws:secretsmanager:<region>:<account>:secret:<name>`, wildcards only in the name; `*` alone is refused)."
  }

  # No false negatives for the names: a pattern that can match `<name>-lease-keys-XXXXXX` has a
  # literal prefix (up to its first wildcard) that is a prefix of `<name>-lease-keys-` or starts
  # with it, and every such pattern is refused; the same for `<name>-issuer-keys-` (the issuer's
  # signing keys, whether or not this module makes the federation an issuer). That includes
  # every name starting with a wildcard, which could match any secret. Region and account are
  # not compared (variables.tf cannot know the function's): a name refused here is one too broad
  # in any account.
  validation {
    condition = alltrue([
      for arn in var.readable_secret_arns : !can(regex("^arn:aws[a-z-]*:secretsmanager:[^:]*:[^:]*:secret:", arn)) || alltrue([
        for own in ["${var.name}-lease-keys-", "${var.name}-issuer-keys-"] : (
          !startswith(own, regex("^[^*?]*", replace(arn, "/^arn:[^:]*:secretsmanager:[^:]*:[^:]*:secret:/", ""))) &&
          !startswith(replace(arn, "/^arn:[^:]*:secretsmanager:[^:]*:[^:]*:secret:/", ""), own)
        )
      ])
    ])
    error_message = "A readable secret's name pattern could match the module's own lease-keys secret `<name>-lease-keys` or issuer-keys secret `<name>-issuer-keys` (it starts like one of those names, or starts with a wildcard): give it a fixed prefix of its own, such as `secret:apps/...`."
  }
}

variable "secret_kms_key_arns" {
  description = "Customer managed KMS keys that encrypt the secrets in `readable_secret_arns` (secrets under the AWS managed key `aws/secretsmanager` need none). The function's role gets `kms:Decrypt` on these keys only through Secrets Manager in the key's region (`kms:ViaService`; a secret and its key share a region) and only for those secrets (`kms:EncryptionContext:SecretARN`). `kms_key_arn` needs no repeating here: the role may already use it. The key policies must let IAM policies grant their use (the default key policy does)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.secret_kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", arn))])
    error_message = "Every secret KMS key must be a KMS key ARN (`arn:aws:kms:<region>:<account>:key/<key id>`; no aliases, no wildcards)."
  }

  validation {
    condition     = length(var.secret_kms_key_arns) == 0 || length(var.readable_secret_arns) > 0
    error_message = "The secret_kms_key_arns only decrypt the secrets in readable_secret_arns: list those secrets too."
  }
}

variable "readable_parameter_arns" {
  description = "Parameter Store parameters that `SSMParameter` generators without `roleArn` may read by `name`: the function's role gets `ssm:GetParameter` on exactly these ARNs (no `GetParameters`: reading one parameter, of any version or label, does not need it). Reading by `path` (`ssm:GetParametersByPath`) is not granted here but by `readable_parameter_paths`, so that a pattern here never opens what lies below it. A parameter's ARN names it without its leading `/`: `/apps/db` is `arn:aws:ssm:eu-west-1:123456789012:parameter/apps/db`. Wildcards are allowed in the name, as IAM allows, e.g. `arn:aws:ssm:eu-west-1:123456789012:parameter/apps/*`; region and account must be given. Give a fixed prefix of your own (`parameter/apps/*`) rather than a bare wildcard (`parameter/*`), which covers every parameter of the account in that region, and keep `name` templates under it (`/apps/{{namespace}}/db`). Names under `/aws/reference/` (Secrets Manager secrets served through Parameter Store) are refused by the federation, whatever this list says. SecureString parameters encrypted with a customer managed key also need `parameter_kms_key_arns`."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.readable_parameter_arns : can(regex("^arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{12}:parameter/[A-Za-z0-9_.*?-][A-Za-z0-9/_.*?-]*$", arn))])
    error_message = "Every readable parameter must be a Parameter Store parameter ARN (`arn:aws:ssm:<region>:<account>:parameter/<name>`, wildcards only in the name). The name follows `parameter/` without its leading `/`: `/apps/db` is `parameter/apps/db`."
  }
}

variable "readable_parameter_paths" {
  description = "Parameter Store hierarchies that `SSMParameter` generators without `roleArn` may read by `path`: the function's role gets `ssm:GetParametersByPath` on exactly these ARNs. IAM authorizes `GetParametersByPath` on the path's own ARN, not on the parameters it returns: an entry opens every parameter below its path, at every depth, whatever `readable_parameter_arns` says of them. `recursive` does not narrow the grant: depth is limited by the federation's request, not by IAM, so another generator (or a changed one) may read deeper. A path's ARN names it without its leading and trailing `/`: `path: /apps/payments` (or `/apps/payments/`) is `arn:aws:ssm:eu-west-1:123456789012:parameter/apps/payments`. Region and account must be given. Wildcards are allowed, as IAM allows (`parameter/apps/*/settings`), and each match opens everything below it too. Give fixed prefixes of your own, as narrow as the hierarchies your generators read (`parameter/apps/payments/settings` for `path: /apps/{{namespace}}/settings`), rather than a bare wildcard (`parameter/*`), which opens every parameter of the account in that region. Entries under `parameter/aws/reference` are refused (the federation refuses such paths too). SecureString parameters under a customer managed key also need `parameter_kms_key_arns`: its decryption is then allowed for `<path>/*`."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.readable_parameter_paths : can(regex("^arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{12}:parameter/[A-Za-z0-9_.*?-]+(/[A-Za-z0-9_.*?-]+)*/?$", arn))])
    error_message = "Every readable parameter path must be a Parameter Store parameter ARN (`arn:aws:ssm:<region>:<account>:parameter/<path>`, wildcards only in the path, no `//`). The path follows `parameter/` without its leading `/`: `/apps/payments` is `parameter/apps/payments`."
  }

  # GetParametersByPath is authorized on the path's ARN without its trailing `/` (Parameter
  # Store takes `/apps/payments/` for `/apps/payments`, and the federation drops the `/`): an
  # ARN ending in `/` would match no request.
  validation {
    condition     = alltrue([for arn in var.readable_parameter_paths : !endswith(arn, "/")])
    error_message = "A readable parameter path must not end in `/`: IAM matches `GetParametersByPath` on the path's ARN without it (`/apps/payments/` is `parameter/apps/payments`)."
  }

  # /aws/reference serves other services' secrets (Secrets Manager's, the federation's own keys
  # among them), not parameters: never a path to grant. A wildcard that could match it (say
  # `parameter/*`) is not refused here; the federation refuses such paths at load and per request.
  validation {
    condition     = alltrue([for arn in var.readable_parameter_paths : !can(regex("(?i)^arn:[^:]*:ssm:[^:]*:[^:]*:parameter/aws/reference", arn))])
    error_message = "A readable parameter path must not be under `/aws/reference` (Secrets Manager secrets served through Parameter Store): read secrets with `SecretsManagerSecret` and `readable_secret_arns`."
  }
}

variable "parameter_kms_key_arns" {
  description = "Customer managed KMS keys that encrypt the SecureString parameters in `readable_parameter_arns` and below `readable_parameter_paths` (parameters under the AWS managed key `aws/ssm` need none). The function's role gets `kms:Decrypt` on these keys only through Parameter Store in the key's region (`kms:ViaService` = `ssm.<region>.amazonaws.com`; a parameter and its key share a region) and only for those parameters (`kms:EncryptionContext:PARAMETER_ARN`: exactly the patterns of `readable_parameter_arns`, and `<path>/*` for each of `readable_parameter_paths`, since each parameter a path returns is decrypted under its own ARN). `kms_key_arn` needs no repeating here: the role may already use it. The key policies must let IAM policies grant their use (the default key policy does)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.parameter_kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", arn))])
    error_message = "Every parameter KMS key must be a KMS key ARN (`arn:aws:kms:<region>:<account>:key/<key id>`; no aliases, no wildcards)."
  }

  validation {
    condition     = length(var.parameter_kms_key_arns) == 0 || length(var.readable_parameter_arns) + length(var.readable_parameter_paths) > 0
    error_message = "The parameter_kms_key_arns only decrypt the parameters in readable_parameter_arns and below readable_parameter_paths: list those parameters or paths too."
  }
}

variable "rds_connect_arns" {
  description = "Database users that `RDSAuthToken` generators without `roleArn` may sign IAM authentication tokens for: the function's role gets `rds-db:connect` on exactly these ARNs, `arn:aws:rds-db:<region>:<account>:dbuser:<DbiResourceId or cluster resource id>/<user>` (the resource id, `db-...` or `cluster-...`, not the instance or cluster name). Wildcards are allowed in the user name, as IAM allows: with a `username` template such as `{{namespace}}_app`, give `.../dbuser:cluster-ABC/*_app` or list each user. The token is signed in the federation without calling AWS; RDS checks this permission when the app logs in."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.rds_connect_arns : can(regex("^arn:aws[a-z-]*:rds-db:[a-z0-9-]+:[0-9]{12}:dbuser:[A-Za-z0-9-]+/[A-Za-z0-9_.*?-]+$", arn))])
    error_message = "Every RDS connect ARN must be a database user ARN (`arn:aws:rds-db:<region>:<account>:dbuser:<resource id>/<user>`; wildcards only in the user name)."
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

# The federation as an OIDC issuer (optional): relying parties (AWS IAM, Google workload
# identity federation, Entra ID) trust `issuer_url` once, and `IdentityToken` generators hand
# workloads tokens signed with `issuer_keys_pem` (federation-fn/README.md, "The federation as an
# OIDC issuer").

variable "issuer_url" {
  description = "Make the federation an OIDC issuer at this public `https://` URL (`ESI_ISSUER_URL`): its discovery document (`/.well-known/openid-configuration`) and keys (`/openid/v1/jwks`) are served there, and `IdentityToken` generators sign with `issuer_keys_pem`. The Function URL (or HTTP API) serves every path, but its address exists only after the first apply: apply once without the issuer, then set this to the `url` output (it stays the same while the function URL is kept), or put a custom domain in front. Relying parties trust this exact string, so changing it breaks every trust set up on it. Null: no issuer."
  type        = string
  default     = null

  validation {
    condition     = var.issuer_url == null || can(regex("^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$", var.issuer_url))
    error_message = "The issuer_url must be an https URL (relying parties fetch the issuer's keys from it over TLS): https://host[:port][/path], without query, fragment or credentials."
  }

  validation {
    condition     = (var.issuer_url == null) == (var.issuer_keys_pem == null)
    error_message = "Set issuer_url and issuer_keys_pem together, or neither: an issuer needs its signing keys, and the keys are published under the issuer URL."
  }
}

variable "issuer_keys_pem" {
  description = "The issuer's signing keys, PEM private keys one after the other (RSA of 2048 bits or more, or EC P-256; PKCS#8, PKCS#1 or SEC1). Make one with `esi-federation issuer-key`. The first key signs; every key is published in the JWKS (at most 8). Kept in the Secrets Manager secret `<name>-issuer-keys`, read by the function once per cold start (`ESI_ISSUER_KEYS_SECRET`, the version pinned), and in Terraform state. Rotation: append the new key and apply (published, not signing); after relying parties' caches have expired (the JWKS says 5 minutes, but relying parties such as AWS keep their own copies for as long as they choose: a day is a safe wait), move it first and apply (it signs); once the last token signed by the old key has expired, drop the old key and apply."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.issuer_keys_pem == null || (length(regexall("-----BEGIN [A-Z ]*PRIVATE KEY-----", coalesce(var.issuer_keys_pem, "-"))) >= 1 && length(regexall("-----BEGIN [A-Z ]*PRIVATE KEY-----", coalesce(var.issuer_keys_pem, "-"))) <= 8)
    error_message = "The issuer_keys_pem must hold 1 to 8 PEM private keys (`-----BEGIN PRIVATE KEY-----` blocks, as `esi-federation issuer-key` prints them)."
  }
}

variable "environment" {
  description = "Extra environment variables for the function, e.g. how a SecretStore finds its credentials (`VAULT_ROLE_ID`). Names starting with `ESI_LEASE_KEYS` (the lease keys come from the module's secret), `ESI_ISSUER` (the issuer's URL and keys come from `issuer_url` and `issuer_keys_pem`), `ESI_CONFIG` and `AWS_` are reserved."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.environment) : can(regex("^[A-Za-z_][A-Za-z0-9_]*$", k)) && !startswith(k, "ESI_LEASE_KEYS") && !startswith(k, "ESI_ISSUER") && !startswith(k, "ESI_CONFIG") && !startswith(k, "AWS_")])
    error_message = "Environment names must be identifiers and must not override ESI_LEASE_KEYS*, ESI_ISSUER*, ESI_CONFIG or AWS_* variables."
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
