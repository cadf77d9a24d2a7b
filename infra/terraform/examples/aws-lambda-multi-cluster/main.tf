# A central esi federation on AWS Lambda serving two EKS workload clusters:
#   - cluster A is registered by its public OIDC issuer (keys by discovery);
#   - cluster B is registered as a private cluster (its JWKS read through the API server and
#     registered inline), the way a cluster with an unreachable issuer is;
#   - a Vault store with a database generator, logging in with the function's own AWS identity,
#     its execution role (modules/trust-vault-aws: no Vault secret in the function), and an AWS
#     store with an AssumeRole generator, an ECR login, a Secrets Manager secret, a Parameter
#     Store parameter, an RDS login token and a token for cluster A's API (the last five as the
#     function's own role);
#   - the webhook in both clusters, and an annotated sample Deployment in cluster A.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_eks_cluster" "a" {
  name = var.cluster_a_name
}

data "aws_eks_cluster" "b" {
  name = var.cluster_b_name
}

data "aws_eks_cluster_auth" "a" {
  name = var.cluster_a_name
}

data "aws_eks_cluster_auth" "b" {
  name = var.cluster_b_name
}

# Cluster B's public keys, as the API server serves them to any authenticated client
# (`kubectl get --raw /openid/v1/jwks`). Re-apply after a service-account key rotation.
data "http" "cluster_b_jwks" {
  url         = "${data.aws_eks_cluster.b.endpoint}/openid/v1/jwks"
  ca_cert_pem = base64decode(data.aws_eks_cluster.b.certificate_authority[0].data)
  request_headers = {
    Accept        = "application/json"
    Authorization = "Bearer ${data.aws_eks_cluster_auth.b.token}"
  }

  lifecycle {
    postcondition {
      condition     = self.status_code == 200 && can(jsondecode(self.response_body).keys)
      error_message = "Could not read cluster B's JWKS from its API server."
    }
  }
}

locals {
  # Built from the name, not the resource, to break the cycle role <-> federation.
  payments_role_name = "esi-payments-api"
  payments_role_arn  = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:role/${local.payments_role_name}"
}

# ---------------------------------------------------------------------------------------------
# The federation configuration (provider-free: rendered offline by infra/tests)

module "esi_config" {
  source = "./esi-config"

  audience             = var.audience
  vault_store_provider = module.trust_vault_aws.secret_store_provider
  aws_region           = var.region
  payments_role_arn    = local.payments_role_arn
  payments_database = {
    host = var.payments_db_host
    port = var.payments_db_port
  }
  cluster_a_eks_name     = data.aws_eks_cluster.a.name
  cluster_a_eks_endpoint = data.aws_eks_cluster.a.endpoint
  cluster_a_eks_ca_data  = data.aws_eks_cluster.a.certificate_authority[0].data

  cluster_a = {
    name   = "eks-a"
    issuer = data.aws_eks_cluster.a.identity[0].oidc[0].issuer
  }
  cluster_b = {
    name   = "eks-b"
    issuer = data.aws_eks_cluster.b.identity[0].oidc[0].issuer
    jwks   = data.http.cluster_b_jwks.response_body
  }
}

# ---------------------------------------------------------------------------------------------
# The central federation

module "federation" {
  source = "../../modules/federation-lambda"

  name                = "esi-federation"
  package_path        = var.federation_package_path
  architecture        = var.architecture
  assumable_role_arns = [local.payments_role_arn]

  # For the generators that run as the function's own role (no roleArn): the ECR login for
  # payments/registry, good for pulling from the payments repositories only, the secrets
  # payments/api-keys reads, the parameters payments/config reads by name, the hierarchy
  # payments/settings reads by path (everything below it, at any depth), and the database user
  # payments/db-iam logs in as (by the database's resource id, not its name). Anyone an
  # Authorization allows gets these permissions. payments/eks-a needs no IAM permission: the
  # access entry below is its grant.
  ecr_authorization_token  = true
  ecr_pull_repository_arns = ["arn:${data.aws_partition.current.partition}:ecr:${var.region}:${data.aws_caller_identity.current.account_id}:repository/payments/*"]
  readable_secret_arns     = ["arn:${data.aws_partition.current.partition}:secretsmanager:${var.region}:${data.aws_caller_identity.current.account_id}:secret:apps/payments/*"]
  readable_parameter_arns  = ["arn:${data.aws_partition.current.partition}:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:parameter/apps/payments/*"]
  readable_parameter_paths = ["arn:${data.aws_partition.current.partition}:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:parameter/apps/payments/settings"]
  rds_connect_arns         = ["arn:${data.aws_partition.current.partition}:rds-db:${var.region}:${data.aws_caller_identity.current.account_id}:dbuser:${var.payments_db_resource_id}/payments_app"]

  cluster_manifests = module.esi_config.cluster_manifests
  secret_stores     = module.esi_config.secret_stores
  generators        = module.esi_config.generators
  authorizations    = module.esi_config.authorizations
}

# payments/eks-a (EKSToken without roleArn) signs its tokens as the federation's role: cluster A
# maps that role through an access entry, with edit rights in the payments namespace only. Every
# caller the payments-deployer Authorization allows acts there as this one principal (the
# federation's audit log says who got which token); for other rights elsewhere, give another
# generator a roleArn of its own, mapped by an access entry of its own.
resource "aws_eks_access_entry" "federation_a" {
  cluster_name  = data.aws_eks_cluster.a.name
  principal_arn = module.federation.role_arn
  type          = "STANDARD"
}

resource "aws_eks_access_policy_association" "federation_a" {
  cluster_name  = aws_eks_access_entry.federation_a.cluster_name
  principal_arn = aws_eks_access_entry.federation_a.principal_arn
  policy_arn    = "arn:${data.aws_partition.current.partition}:eks::aws:cluster-access-policy/AmazonEKSEditPolicy"

  access_scope {
    type       = "namespace"
    namespaces = ["payments"]
  }
}

# The role the payments API gets credentials for. It trusts only the federation's role, and
# only with the session tags the federation sets from the verified token.
data "aws_iam_policy_document" "payments_trust" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]
    principals {
      type        = "AWS"
      identifiers = [module.federation.role_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/kubernetes-namespace"
      values   = ["payments"]
    }
  }
}

resource "aws_iam_role" "payments" {
  name                 = local.payments_role_name
  description          = "Credentials the esi federation issues to the payments API"
  assume_role_policy   = data.aws_iam_policy_document.payments_trust.json
  max_session_duration = 3600
}

data "aws_iam_policy_document" "payments" {
  statement {
    actions = ["s3:GetObject"]
    # Attribute-based: the session tag set by the federation from the verified token scopes
    # each cluster to its own prefix.
    resources = ["arn:${data.aws_partition.current.partition}:s3:::payments-reports/$${aws:PrincipalTag/esi-cluster}/*"]
  }
}

resource "aws_iam_role_policy" "payments" {
  name   = "reports"
  role   = aws_iam_role.payments.id
  policy = data.aws_iam_policy_document.payments.json
}

# ---------------------------------------------------------------------------------------------
# Vault's side of the federation's own login

# An `aws` auth method that admits the function's execution role: the function signs an STS
# GetCallerIdentity request with its role's credentials, Vault has STS check it. No issuer, so
# one apply: Vault's role waits only for the federation's IAM role, and the federation's
# configuration (which holds this module's secret_store_provider) waits for Vault's role.
module "trust_vault_aws" {
  source = "../../modules/trust-vault-aws"

  federation_role_arn = module.federation.role_arn
  server              = var.vault_address
  # The function's region: its requests are signed for https://sts.<region>.amazonaws.com, which
  # Vault must reach too.
  region = var.region
  # Vault resolves the role to its unique ID with its own AWS credentials (iam:GetRole on the
  # federation's role), unless told not to (see variables.tf).
  resolve_aws_unique_ids = var.vault_resolve_aws_unique_ids
  # payments/db reads database/creds/payments-api; the federation renews the leases down to an
  # Authorization's maxTTL and revokes them on request.
  policy_paths = {
    "database/creds/payments-api" = ["read"]
    "sys/leases/renew"            = ["update"]
    "sys/leases/revoke"           = ["update"]
  }
  # Vault revokes a token's leases when the token expires: three times payments-api's maxTTL
  # (1h), so that a database user lives its full hour even if the Lambda environment that
  # issued it is never invoked again.
  token_ttl = 10800
}

# ---------------------------------------------------------------------------------------------
# The webhook in each workload cluster

module "webhook_a" {
  source    = "../../modules/webhook"
  providers = { kubernetes = kubernetes.a }

  image          = var.webhook_image
  cli_image      = var.cli_image
  federation_url = module.federation.url
  audience       = var.audience
}

module "webhook_b" {
  source    = "../../modules/webhook"
  providers = { kubernetes = kubernetes.b }

  image          = var.webhook_image
  cli_image      = var.cli_image
  federation_url = module.federation.url
  audience       = var.audience
}
