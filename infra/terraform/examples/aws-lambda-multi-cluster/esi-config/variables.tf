variable "audience" {
  description = "Audience of the ServiceAccount tokens the webhooks project for esi-cli."
  type        = string
}

variable "cluster_a" {
  description = "First workload cluster: its name in the federation and its OIDC issuer (reachable: keys by discovery)."
  type = object({
    name   = string
    issuer = string
  })
}

variable "cluster_b" {
  description = "Second workload cluster: name, issuer and, for a private issuer, its JWKS (JSON text) read from the API server."
  type = object({
    name   = string
    issuer = string
    jwks   = optional(string)
  })
}

variable "vault_store_provider" {
  description = "The `provider` of the `payments/vault` store, on the Vault/OpenBao server holding the payments database engine: modules/trust-vault-aws's `secret_store_provider` in the root module, `{ vault = { server, auth = { iam = { path, role, serverId, sts = { region } } } } }`."
  type        = any

  validation {
    condition = try(
      length(var.vault_store_provider.vault.auth) == 1 && var.vault_store_provider.vault.auth.iam.role != ""
      && !can(var.vault_store_provider.vault.auth.iam.sts.credentials) && !can(var.vault_store_provider.vault.auth.iam.sts.selfIssued),
      false,
    )
    error_message = "The vault_store_provider must be a vault provider logging in with the function's own AWS identity (auth.iam, its sts without credentials or selfIssued: the execution role), as modules/trust-vault-aws's secret_store_provider is: the example hands the federation no Vault secret and makes it no issuer."
  }
}

variable "aws_region" {
  description = "Region of the STS endpoint the AWS store uses."
  type        = string
}

variable "payments_role_arn" {
  description = "IAM role the payments API receives credentials for (AWSAssumeRole)."
  type        = string
}

variable "payments_database" {
  description = "The payments database (RDS or Aurora, IAM authentication on) that RDSAuthToken `db-iam` signs logins for: the endpoint's host name the app connects to, and its port."
  type = object({
    host = string
    port = number
  })
}

variable "cluster_a_eks_name" {
  description = "Cluster A's name in EKS (not its name in the federation), whose Kubernetes API EKSToken `eks-a` signs tokens for."
  type        = string
}

variable "cluster_a_eks_endpoint" {
  description = "Cluster A's API server endpoint (`aws_eks_cluster`'s `endpoint`): EKSToken `eks-a` hands out a kubeconfig that reaches it."
  type        = string

  validation {
    condition     = can(regex("^https://[A-Za-z0-9.-]+(:[0-9]+)?/?$", var.cluster_a_eks_endpoint))
    error_message = "The cluster_a_eks_endpoint must be an https:// URL of a host, without a path."
  }
}

variable "cluster_a_eks_ca_data" {
  description = "Cluster A's CA as EKS gives it (`aws_eks_cluster`'s `certificate_authority[0].data`, base64 of a PEM certificate), trusted by that kubeconfig."
  type        = string

  validation {
    condition     = can(regex("^-----BEGIN CERTIFICATE-----", base64decode(var.cluster_a_eks_ca_data)))
    error_message = "The cluster_a_eks_ca_data must be base64 of a PEM certificate, as EKS gives it."
  }
}
