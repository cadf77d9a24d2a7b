# Test harness, not a deployment: renders the example's federation configuration with the real
# Terraform engine, offline (no providers: every module called here is provider-free). Run by
# infra/tests/infra_checks.py, which writes the `files` output to
# $ESI_PEERS_DIR/rendered-config/ for the federation's loader test.
#
# The issuers are stand-ins for the EKS data sources of the example; cluster B's JWKS is a
# fixed RSA public key (cluster-b-jwks.json) so the inline-keys path is exercised. The Vault
# store's provider stands in for modules/trust-vault-aws's output, which needs the vault provider.

module "esi_config" {
  source = "../../terraform/examples/aws-lambda-multi-cluster/esi-config"

  audience   = "esi"
  aws_region = "eu-west-1"
  # What modules/trust-vault-aws's secret_store_provider is with server =
  # "https://vault.example.internal:8200", region = "eu-west-1" and its defaults (the trust stage
  # evaluates that output).
  vault_store_provider = {
    vault = {
      server = "https://vault.example.internal:8200"
      auth = {
        iam = {
          path     = "esi-federation-aws"
          role     = "esi-federation"
          serverId = "vault.example.internal"
          sts      = { region = "eu-west-1" }
        }
      }
    }
  }
  payments_role_arn = "arn:aws:iam::123456789012:role/esi-payments-api"
  payments_database = {
    host = "payments.cluster-c1a2b3d4e5f6.eu-west-1.rds.amazonaws.com"
    port = 5432
  }
  cluster_a_eks_name     = "prod-eu-a"
  cluster_a_eks_endpoint = "https://AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.gr7.eu-west-1.eks.amazonaws.com"
  # A stand-in certificate: the federation checks only that this is base64 of a PEM block.
  cluster_a_eks_ca_data = base64encode("-----BEGIN CERTIFICATE-----\nMIIBstandin\n-----END CERTIFICATE-----\n")

  cluster_a = {
    name   = "eks-a"
    issuer = "https://oidc.eks.eu-west-1.amazonaws.com/id/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
  }
  cluster_b = {
    name   = "eks-b"
    issuer = "https://oidc.eks.eu-west-1.amazonaws.com/id/BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
    jwks   = file("${path.module}/cluster-b-jwks.json")
  }
}

# The same module, with the same inputs, that modules/federation-lambda and
# modules/federation-kubernetes call.
module "config" {
  source = "../../terraform/modules/federation-config"

  cluster_manifests = module.esi_config.cluster_manifests
  secret_stores     = module.esi_config.secret_stores
  generators        = module.esi_config.generators
  authorizations    = module.esi_config.authorizations
}

output "files" {
  value = module.config.files
}

output "sha256" {
  value = module.config.sha256
}
