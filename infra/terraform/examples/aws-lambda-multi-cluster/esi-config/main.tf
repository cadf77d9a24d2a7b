# The example's federation configuration, kept provider-free so that infra/tests renders exactly
# these manifests offline with the real Terraform engine and feeds them to the federation's
# loader. The root module passes the outputs to modules/federation-lambda.

module "cluster_a" {
  source = "../../../modules/cluster"

  name      = var.cluster_a.name
  issuer    = var.cluster_a.issuer
  audiences = [var.audience]
  labels    = { env = "prod", exposure = "public-issuer" }
}

module "cluster_b" {
  source = "../../../modules/cluster"

  name       = var.cluster_b.name
  issuer     = var.cluster_b.issuer
  jwks       = var.cluster_b.jwks
  audiences  = [var.audience]
  algorithms = ["RS256"]
  labels     = { env = "prod", exposure = "private-issuer" }
  leeway     = { expiration = "60s", not_before = "60s" }
}

locals {
  secret_stores = {
    # The federation's own login (auth.iam): an STS request signed with the function's
    # execution role, which the Vault role of modules/trust-vault-aws admits. No Vault secret
    # anywhere.
    "payments/vault" = { provider = var.vault_store_provider }
    # Credentials from the function's own execution role (SDK default chain).
    "payments/aws" = { provider = { aws = { region = var.aws_region } } }
  }

  generators = {
    "payments/db" = {
      kind = "VaultDynamicSecret"
      spec = {
        secretStoreRef = { name = "vault" }
        path           = "database/creds/payments-api"
        method         = "GET"
        resultType     = "Data"
      }
    }
    "payments/s3-reader" = {
      kind = "AWSAssumeRole"
      spec = {
        secretStoreRef  = { name = "aws" }
        roleArn         = var.payments_role_arn
        durationSeconds = 900
        # Session tags cluster/namespace/service account/pod from the verified token (default).
        identityTags = true
      }
    }
    "payments/session-secret" = {
      kind = "Password"
      spec = { length = 48, digits = 8, symbols = 0, noUpper = false, allowRepeat = true }
    }
    # Without roleArn these call AWS (or sign) as the federation's own role, which the root
    # module grants exactly this: ecr_authorization_token with ecr_pull_repository_arns,
    # readable_secret_arns (apps/payments/*), readable_parameter_arns (apps/payments/*, by
    # name), readable_parameter_paths (apps/payments/settings, by path), rds_connect_arns (the
    # database user payments_app) and, in cluster A, an EKS access entry.
    "payments/registry" = {
      kind = "ECRAuthorizationToken"
      spec = { secretStoreRef = { name = "aws" } }
    }
    "payments/api-keys" = {
      kind = "SecretsManagerSecret"
      spec = {
        secretStoreRef = { name = "aws" }
        # The caller's namespace under a fixed prefix: never a bare placeholder, which a
        # namespace named like the federation's lease-keys secret could aim at it.
        secretId = "apps/{{namespace}}/api-keys"
      }
    }
    "payments/config" = {
      kind = "SSMParameter"
      spec = {
        secretStoreRef = { name = "aws" }
        # Under the same fixed prefix: /apps/payments/config for the payments namespace. A JSON
        # object becomes one key per member, any other value the key `value`.
        name = "/apps/{{namespace}}/config"
      }
    }
    # Every parameter under a hierarchy, one key each: /apps/payments/settings/LOG_LEVEL is the
    # key LOG_LEVEL. The grant is readable_parameter_paths (apps/payments/settings), which
    # opens every parameter below the path at any depth (`recursive = true` here would need no
    # other grant to read deeper): keep under it only what this generator's callers may read.
    "payments/settings" = {
      kind = "SSMParameter"
      spec = {
        secretStoreRef = { name = "aws" }
        path           = "/apps/{{namespace}}/settings"
      }
    }
    # A login token for the payments database user (IAM authentication): the password the app
    # connects with, valid 15 minutes for new connections. Signed in the federation, no AWS call.
    "payments/db-iam" = {
      kind = "RDSAuthToken"
      spec = {
        secretStoreRef = { name = "aws" }
        host           = var.payments_database.host
        port           = var.payments_database.port
        # payments_app: GRANT rds_iam (PostgreSQL) or AWSAuthenticationPlugin (MySQL).
        username = "{{namespace}}_app"
      }
    }
    # A bearer token for cluster A's Kubernetes API, what `aws eks get-token` prints. EKS maps
    # the signing role through an access entry (the root module's): without roleArn every
    # caller acts there as the federation's role, with the rights that entry gives it.
    "payments/eks-a" = {
      kind = "EKSToken"
      spec = {
        secretStoreRef = { name = "aws" }
        clusterName    = var.cluster_a_eks_name
        # A ready kubeconfig (the `kubeconfig` key) besides the token.
        endpoint                 = var.cluster_a_eks_endpoint
        certificateAuthorityData = var.cluster_a_eks_ca_data
      }
    }
  }

  authorizations = {
    # The payments API, in any production cluster, gets a database user and AWS credentials.
    "payments-api" = {
      subjects = [{
        clusterSelector = { matchLabels = { env = "prod" } }
        namespaces      = ["payments"]
        serviceAccounts = ["api"]
      }]
      generators = [
        "payments/VaultDynamicSecret/db",
        "payments/AWSAssumeRole/s3-reader",
        "payments/Password/session-secret",
        "payments/SecretsManagerSecret/api-keys",
        "payments/SSMParameter/config",
        "payments/SSMParameter/settings",
        "payments/RDSAuthToken/db-iam",
      ]
      maxTTL    = "1h"
      rateLimit = { perMinute = 60, burst = 10 }
    }
    # Batch workers only in the first cluster, only the database.
    "payments-workers" = {
      subjects = [{
        clusters        = [var.cluster_a.name]
        namespaces      = ["payments"]
        serviceAccounts = ["worker-*"]
      }]
      generators = ["payments/VaultDynamicSecret/db"]
      maxTTL     = "15m"
    }
    # The image builder pulls base images from the payments repositories. ECR tokens live 12 h
    # and cannot be shortened: a shorter maxTTL would refuse every request.
    "payments-image-builder" = {
      subjects = [{
        clusterSelector = { matchLabels = { env = "prod" } }
        namespaces      = ["payments"]
        serviceAccounts = ["image-builder"]
      }]
      generators = ["payments/ECRAuthorizationToken/registry"]
      maxTTL     = "12h"
    }
    # The deploy job applies the payments manifests to cluster A, from either cluster. EKS
    # accepts a token for 15 minutes after signing and it cannot be shortened: a maxTTL under
    # its 14 minutes would refuse every request.
    "payments-deployer" = {
      subjects = [{
        clusterSelector = { matchLabels = { env = "prod" } }
        namespaces      = ["payments"]
        serviceAccounts = ["deployer"]
      }]
      generators = ["payments/EKSToken/eks-a"]
      maxTTL     = "15m"
    }
  }
}
