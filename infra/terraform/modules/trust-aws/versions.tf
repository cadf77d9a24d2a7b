terraform {
  # Cross-variable references in `validation` blocks need 1.9.
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # `thumbprint_list` of aws_iam_openid_connect_provider is optional in the 6.x provider
      # (required before 5.81); 6.0 is also what modules/federation-lambda asks for.
      version = ">= 6.0"
    }
  }
}
