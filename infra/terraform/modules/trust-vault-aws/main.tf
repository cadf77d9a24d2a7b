# The Vault / OpenBao side of the federation's login with its AWS identity (`auth.iam` in a
# `vault` SecretStore): the federation signs an STS `GetCallerIdentity` request with the
# credentials of its AWS role (a Lambda's execution role, IRSA, EKS Pod Identity), the header
# `X-Vault-AWS-IAM-Server-ID: <server_id>` signed with it, and hands it to Vault at
# `auth/<path>/login`; Vault sends it to STS, which says who signed, and logs in `role_name` if
# that is `federation_role_arn`. No secret and no issuer: nothing to create before this module
# but the federation's IAM role, so one apply sets up both sides.
#
# The mount is the federation's alone (default path `esi-federation-aws`): its client
# configuration (the STS endpoint, the server ID) is written here, and would overwrite an
# existing `aws` mount's.

locals {
  # The STS endpoint the federation signs its request for (backends/src/vault.rs,
  # iam_login_request): `sts_endpoint`, else the region's in its partition (`.amazonaws.com.cn`
  # in China), the global one for us-east-1 (Vault's
  # own default). Vault sends the request there and nowhere else, so both must name the same
  # endpoint; without a trailing `/` here, as Vault appends the request's path itself.
  sts_endpoint = var.sts_endpoint != null ? replace(var.sts_endpoint, "/\\/+$/", "") : (
    var.region == "us-east-1" ? "https://sts.amazonaws.com" : "https://sts.${var.region}.${startswith(var.region, "cn-") ? "amazonaws.com.cn" : "amazonaws.com"}"
  )

  # The server ID: given, or the host of `server` (as Vault's documentation suggests), which
  # binds a signed request to this Vault: another server requiring its own ID refuses it.
  server_id = coalesce(var.server_id, regex("^https?://(\\[[^\\]]*\\]|[^/:]+)", var.server)[0])

  # The role as Vault names the caller: STS answers with the assumed-role session
  # (`arn:aws:sts::<account>:assumed-role/<name>/<session>`), which carries no IAM path, and
  # Vault compares `arn:<partition>:iam::<account>:role/<name>` with the bound ARN when it does
  # not resolve unique IDs (resolving, it looks the role up by that name). So the bound ARN is
  # the role's without its path.
  role_arn_parts      = regex("^arn:([^:]+):iam::([0-9]{12}):role/(?:.*/)?([^/]+)$", var.federation_role_arn)
  bound_principal_arn = "arn:${local.role_arn_parts[0]}:iam::${local.role_arn_parts[1]}:role/${local.role_arn_parts[2]}"
}

resource "vault_auth_backend" "this" {
  namespace   = var.namespace
  type        = "aws"
  path        = var.path
  description = "The esi federation's own login (its AWS identity)"
}

# Only what the IAM login needs: no AWS keys (Vault uses its own identity, see
# resolve_aws_unique_ids), the STS endpoint the federation's requests are signed for, and the
# server ID they must carry, signed.
resource "vault_aws_auth_backend_client" "this" {
  namespace                  = var.namespace
  backend                    = vault_auth_backend.this.path
  sts_endpoint               = local.sts_endpoint
  sts_region                 = var.region
  iam_server_id_header_value = local.server_id
}

# What the store's generators may do, from `policy_paths` (optional).
resource "vault_policy" "this" {
  count = length(var.policy_paths) == 0 ? 0 : 1

  namespace = var.namespace
  name      = var.policy_name
  # JSON, which Vault reads as it reads HCL: no path can break out of its string.
  policy = jsonencode({ path = { for p, capabilities in var.policy_paths : p => { capabilities = capabilities } } })
}

resource "vault_aws_auth_backend_role" "this" {
  namespace = var.namespace
  backend   = vault_auth_backend.this.path
  role      = var.role_name
  auth_type = "iam"

  bound_iam_principal_arns = [local.bound_principal_arn]
  # With true (Vault's default), Vault resolves the ARN to the role's unique ID now, with its own
  # AWS credentials (iam:GetRole), so a role deleted and made again under the same name does not
  # log in.
  resolve_aws_unique_ids = var.resolve_aws_unique_ids

  token_policies = distinct(concat(var.token_policies, vault_policy.this[*].name))
  token_ttl      = var.token_ttl
  token_max_ttl  = var.token_max_ttl
  # The federation renews its token, which a batch token cannot be, whatever the mount's
  # tuning says.
  token_type = "service"

  # Vault resolves the bound ARN with the mount's client configuration.
  depends_on = [vault_aws_auth_backend_client.this]
}
