output "backend_path" {
  description = "Mount path of the `aws` auth method (`auth/<path>/login` is where the federation logs in)."
  value       = vault_auth_backend.this.path
}

output "backend_accessor" {
  description = "Accessor of the `aws` auth method, for identity entity aliases and policies templated on it."
  value       = vault_auth_backend.this.accessor
}

output "role_name" {
  description = "Name of the role the federation logs in as."
  value       = vault_aws_auth_backend_role.this.role
}

output "bound_principal_arn" {
  description = "The IAM principal the role admits: `federation_role_arn` without its IAM path, as Vault names an assumed role's caller."
  value       = local.bound_principal_arn
}

output "server_id" {
  description = "The `X-Vault-AWS-IAM-Server-ID` value the mount requires and the store's `serverId`: `server_id`, or the host of `server`."
  value       = local.server_id
}

output "sts_endpoint" {
  description = "The STS endpoint the federation signs its request for and Vault sends it to (the mount's `sts_endpoint`): `sts_endpoint` without a trailing `/`, else `https://sts.<region>.amazonaws.com` (`https://sts.amazonaws.com` for `us-east-1`)."
  value       = local.sts_endpoint
}

output "policy_name" {
  description = "Name of the policy made from `policy_paths`; null when it is empty."
  value       = length(var.policy_paths) == 0 ? null : vault_policy.this[0].name
}

output "secret_store_provider" {
  description = "The `provider` of a `vault` SecretStore logging in with the federation's AWS identity, to pass as `secret_stores = { \"ns/vault\" = { provider = module.<this>.secret_store_provider } }` to modules/federation-lambda or modules/federation-kubernetes (whose role is `federation_role_arn`): `{ vault = { server, namespace, auth = { iam = { path, role, serverId, sts = { region, endpoint } } } } }`, `namespace` only with `namespace`, `endpoint` only with `sts_endpoint`. `sts` names no credentials: the federation signs with its default chain (its Lambda execution role, IRSA, Pod Identity). Holds no secret."
  value = {
    vault = merge(
      { server = var.server },
      var.namespace == null ? {} : { namespace = var.namespace },
      {
        auth = {
          iam = {
            path     = var.path
            role     = var.role_name
            serverId = local.server_id
            sts      = merge({ region = var.region }, var.sts_endpoint == null ? {} : { endpoint = local.sts_endpoint })
          }
        }
      },
    )
  }

  # The federation's configuration (which holds this value) waits for Vault's role. No cycle:
  # the role waits for the federation's IAM role only, which does not wait for its configuration.
  depends_on = [vault_aws_auth_backend_role.this]
}
