variable "region" {
  description = "AWS region of the federation and the two EKS clusters."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$", var.region))
    error_message = "The region must be an AWS region name such as eu-west-1."
  }
}

variable "cluster_a_name" {
  description = "Name of the first EKS cluster (public OIDC issuer: the federation uses discovery)."
  type        = string
}

variable "cluster_b_name" {
  description = "Name of the second EKS cluster (treated as private: its JWKS is read through the API server and registered inline)."
  type        = string
}

variable "federation_package_path" {
  description = "Zip with the `bootstrap` executable of esi-federation for provided.al2023."
  type        = string
}

variable "architecture" {
  description = "Architecture of the bootstrap binary (arm64 or x86_64)."
  type        = string
  default     = "arm64"
}

variable "webhook_image" {
  description = "esi-webhook image, pinned by digest."
  type        = string
}

variable "cli_image" {
  description = "esi-cli image, pinned by digest."
  type        = string
}

variable "vault_address" {
  description = "Address of the Vault/OpenBao server with the `database` engine and a `payments-api` role, as the federation reaches it (`https://vault.example.com:8200`): the Vault store's `server`, its host the server ID the federation signs into its login, and where the `vault` provider sets up that login (modules/trust-vault-aws)."
  type        = string

  validation {
    condition     = can(regex("^https://", var.vault_address))
    error_message = "The vault_address must be an https URL."
  }
}

variable "vault_resolve_aws_unique_ids" {
  description = "Whether Vault resolves the federation's role to its unique ID when the login's role is written (modules/trust-vault-aws, `resolve_aws_unique_ids`): Vault then needs AWS credentials of its own (environment, instance profile, task role, IRSA) allowed `iam:GetRole` on the federation's role `esi-federation-fn`, or the apply fails. False for a Vault without AWS credentials: it binds the role by name, and a role deleted and made again under that name would log in too."
  type        = bool
  default     = true
  nullable    = false
}

variable "payments_db_host" {
  description = "Endpoint host name of the payments database (RDS or Aurora with IAM authentication), as the app connects to it, e.g. `payments.cluster-c1a2b3d4e5f6.eu-west-1.rds.amazonaws.com`. RDSAuthToken `db-iam` signs logins for the user `payments_app` on it."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$", var.payments_db_host))
    error_message = "The payments_db_host must be the database endpoint's host name, without scheme or port (e.g. payments.cluster-c1a2b3d4e5f6.eu-west-1.rds.amazonaws.com)."
  }
}

variable "payments_db_port" {
  description = "Port of the payments database (5432 for PostgreSQL, 3306 for MySQL)."
  type        = number
  default     = 5432

  validation {
    condition     = var.payments_db_port >= 1 && var.payments_db_port <= 65535 && floor(var.payments_db_port) == var.payments_db_port
    error_message = "The payments_db_port must be a port number, 1 to 65535."
  }
}

variable "payments_db_resource_id" {
  description = "Resource id of the payments database, which IAM names in `rds-db:connect` (`arn:aws:rds-db:<region>:<account>:dbuser:<resource id>/<user>`): an Aurora cluster's `cluster-...` (`aws rds describe-db-clusters --query 'DBClusters[].DbClusterResourceId'`) or an instance's `db-...` (`DbiResourceId`), not its name."
  type        = string

  validation {
    condition     = can(regex("^(db|cluster)-[A-Za-z0-9]+$", var.payments_db_resource_id))
    error_message = "The payments_db_resource_id must be the database's resource id, `cluster-...` (Aurora) or `db-...` (an instance's DbiResourceId), not its name or ARN."
  }
}

variable "audience" {
  description = "Audience of the tokens esi-cli presents to the federation."
  type        = string
  default     = "esi"
}

variable "sample_app_image" {
  description = "Image of the sample payments API Deployment (its command is wrapped by esi-cli)."
  type        = string
  default     = "busybox:1.36.1"
}
