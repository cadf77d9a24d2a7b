# The Vault / OpenBao side of the federation's own login (`auth.jwt.selfIssued` in a `vault`
# SecretStore): the federation signs a token for itself (`iss` = issuer_url, `sub` =
# `esi-federation`, `aud` = the store's `server` without a trailing `/`, five minutes) and logs in
# with it at `auth/<path>/login` as `role_name`. The auth method is the federation's alone: it
# trusts the federation's issuer, and its one role binds that subject and that audience exactly,
# so no workload's `IdentityToken` (whose `sub` always names its cluster and ServiceAccount) logs
# in as the federation, and a token the federation sent to another server does not log in here.
#
# Vault reads `<issuer_url>/.well-known/openid-configuration` when the auth method is configured:
# the federation must already serve it then (see issuer_url in variables.tf). A federation with
# an AWS identity (Lambda, IRSA, EKS Pod Identity) can log in with it instead and needs no
# issuer: modules/trust-vault-aws.

locals {
  # The federation writes `iss` without a trailing `/`, and the discovery document's `issuer`
  # likewise, which Vault compares with oidc_discovery_url; its token's `aud` is the store's
  # `server` without a trailing `/`. Vault compares all three character for character.
  issuer   = replace(var.issuer_url, "/\\/+$/", "")
  audience = replace(var.server, "/\\/+$/", "")
}

resource "vault_jwt_auth_backend" "this" {
  namespace   = var.namespace
  type        = "jwt"
  path        = var.path
  description = "The esi federation's own login (selfIssued)"

  # As federation-fn/tests/openbao.rs configures OpenBao: the keys by discovery, so Vault follows
  # the issuer's key rotations by itself (it fetches the JWKS again for a `kid` it does not
  # know), and the issuer bound.
  oidc_discovery_url = local.issuer
  bound_issuer       = local.issuer
}

# What the store's generators may do, from `policy_paths` (optional).
resource "vault_policy" "this" {
  count = length(var.policy_paths) == 0 ? 0 : 1

  namespace = var.namespace
  name      = var.policy_name
  # JSON, which Vault reads as it reads HCL: no path can break out of its string.
  policy = jsonencode({ path = { for p, capabilities in var.policy_paths : p => { capabilities = capabilities } } })
}

resource "vault_jwt_auth_backend_role" "this" {
  namespace = var.namespace
  backend   = vault_jwt_auth_backend.this.path
  role_name = var.role_name
  role_type = "jwt"

  user_claim      = "sub"
  bound_subject   = "esi-federation"
  bound_audiences = [local.audience]

  token_policies = distinct(concat(var.token_policies, vault_policy.this[*].name))
  token_ttl      = var.token_ttl
  token_max_ttl  = var.token_max_ttl
  # The federation renews its token, which a batch token cannot be, whatever the mount's
  # tuning says.
  token_type = "service"
}
