terraform {
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.0"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.31"
    }
    http = {
      source  = "hashicorp/http"
      version = ">= 3.4"
    }
    tls = {
      source  = "hashicorp/tls"
      version = ">= 4.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5"
    }
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.4"
    }
    vault = {
      source  = "hashicorp/vault"
      version = ">= 4.0"
    }
  }
}

provider "aws" {
  region = var.region
}

# Vault, where modules/trust-vault-aws sets up the federation's own login. Terraform's own Vault
# credentials come from the environment (VAULT_TOKEN, or a login the provider is configured for);
# they need to enable auth methods and write policies, and never reach the federation.
provider "vault" {
  address = var.vault_address
}

# One kubernetes provider per workload cluster, authenticated with short-lived EKS tokens.
provider "kubernetes" {
  alias                  = "a"
  host                   = data.aws_eks_cluster.a.endpoint
  cluster_ca_certificate = base64decode(data.aws_eks_cluster.a.certificate_authority[0].data)
  token                  = data.aws_eks_cluster_auth.a.token
}

provider "kubernetes" {
  alias                  = "b"
  host                   = data.aws_eks_cluster.b.endpoint
  cluster_ca_certificate = base64decode(data.aws_eks_cluster.b.certificate_authority[0].data)
  token                  = data.aws_eks_cluster_auth.b.token
}
