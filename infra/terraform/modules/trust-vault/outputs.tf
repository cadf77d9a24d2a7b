output "backend_path" {
  description = "Mount path of the JWT auth method (`auth/<path>/login` is where the federation logs in)."
  value       = vault_jwt_auth_backend.this.path
}

output "backend_accessor" {
  description = "Accessor of the JWT auth method, for identity entity aliases and policies templated on it."
  value       = vault_jwt_auth_backend.this.accessor
}

output "role_name" {
  description = "Name of the role the federation logs in as."
  value       = vault_jwt_auth_backend_role.this.role_name
}

output "audience" {
  description = "The audience of the federation's login token, which the role binds: `server` without a trailing `/`. No workload may get an `IdentityToken` for it (the federation refuses such a configuration)."
  value       = local.audience
}

output "policy_name" {
  description = "Name of the policy made from `policy_paths`; null when it is empty."
  value       = length(var.policy_paths) == 0 ? null : vault_policy.this[0].name
}

output "secret_store_provider" {
  description = "The `provider` of a `vault` SecretStore logging in with the federation's own token, to pass as `secret_stores = { \"ns/vault\" = { provider = module.<this>.secret_store_provider } }` to modules/federation-lambda or modules/federation-kubernetes (whose `issuer_url` must be this module's): `{ vault = { server, namespace, auth = { jwt = { path, role, selfIssued = true } } } }`, `namespace` only with `namespace`. Holds no secret."
  value = {
    vault = merge(
      { server = var.server },
      var.namespace == null ? {} : { namespace = var.namespace },
      { auth = { jwt = { path = var.path, role = var.role_name, selfIssued = true } } },
    )
  }

  # No depends_on, unlike the other trust modules' outputs: Vault checks the federation's
  # discovery document when the auth method is configured, so the order is the other way round.
  # The federation, configured with this value, must serve its issuer first; this value holds
  # only the module's inputs, so that the auth method can wait for the federation (issuer_url)
  # without a dependency cycle. Until the role exists the federation's logins are refused.
}
