terraform {
  # 1.9: a validation block may refer to another variable (token, issuer_url and audience depend
  # on federation_user; readable_secrets on service_accounts).
  required_version = ">= 1.9"

  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.31"
    }
  }
}
