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
  description = "Address of the Vault/OpenBao server with the `database` engine and a `payments-api` role, as the federation reaches it (`https://vault.example.com:8200`): the Vault store's `server`, the audience of the federation's login token, and where the `vault` provider sets up that login (modules/trust-vault)."
  type        = string

  validation {
    condition     = can(regex("^https://", var.vault_address))
    error_message = "The vault_address must be an https URL."
  }
}

variable "issuer_url" {
  description = "The federation's OIDC issuer URL: the function's `federation_url` output (or a custom domain in front of it). Null on the first apply, `terraform apply -target=module.federation`, which creates the function URL (see README.md); the full apply needs it, with `issuer_keys_pem`: the Vault store logs in with a token the federation signs as this issuer."
  type        = string
  default     = null

  validation {
    condition     = var.issuer_url == null || can(regex("^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$", coalesce(var.issuer_url, "-")))
    error_message = "The issuer_url must be an https URL: https://host[:port][/path], without query, fragment or credentials."
  }
}

variable "issuer_keys_pem" {
  description = "The issuer's signing keys, PEM private keys (`esi-federation issuer-key > issuer-keys.pem`), with `issuer_url`; not passed on while `issuer_url` is null. Kept in the function's Secrets Manager secret and in Terraform state; pass it through the environment (`TF_VAR_issuer_keys_pem`), not a file in git."
  type        = string
  default     = null
  sensitive   = true
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
