output "role_names" {
  description = "The Role (and RoleBinding) made in each namespace, by namespace: `<role_name_prefix>-generators`."
  value       = { for ns, role in kubernetes_role_v1.this : ns => role.metadata[0].name }
}

output "authentication_config" {
  description = "For the default `federation_user` (the federation's own token, `auth.selfIssued`): the target API server's `AuthenticationConfiguration` (YAML, `apiserver.config.k8s.io/v1beta1`, read by Kubernetes 1.30 and later; `v1` from 1.34, same fields) with one JWT authenticator: issuer `issuer_url` without a trailing `/`, audience the store's (`audience`, or `server` without a trailing `/`), username from `sub` with the prefix `esi:`, so the federation is the user `esi:esi-federation` the RoleBindings name. Give it to the API server's `--authentication-config`, or add its `jwt` entry to the file it already reads. Null with another `federation_user` (a bearer token, `auth.token`, or a client certificate, `auth.cert`), which the API server must already authenticate (the token's issuer, or the certificate's CA in `--client-ca-file`)."
  value = local.self_issued ? yamlencode({
    apiVersion = "apiserver.config.k8s.io/v1beta1"
    kind       = "AuthenticationConfiguration"
    jwt        = [local.jwt_authenticator]
  }) : null
}

output "secret_store_spec" {
  description = "The `spec` of the `kubernetes` SecretStore for this cluster, to pass as `secret_stores = { \"ns/name\" = module.<this>.secret_store_spec }` to modules/federation-lambda or modules/federation-kubernetes: `{ provider = { kubernetes = { server, caBundle, auth } } }`, `caBundle` only with `ca_bundle` (then the only CAs trusted for the API server), `auth` one of `{ selfIssued = {} }` (`{ selfIssued = { audience } }` with `audience`) for the default `federation_user`, `{ token = { file } }` / `{ token = { env } }` with `token`, or `{ cert = { clientCert = { file }, clientKey = { file } } }` (each `file` or `env`) with `client_certificate`. Holds no secret: only where the federation reads its credential."
  value = {
    provider = {
      kubernetes = merge(
        { server = var.server },
        var.ca_bundle == null ? {} : { caBundle = var.ca_bundle },
        { auth = local.auth },
      )
    }
  }

  # The federation's configuration (which holds this value) waits for the grants to exist, and
  # for the policy that narrows them.
  depends_on = [kubernetes_role_binding_v1.this, kubernetes_manifest.secret_writes_binding]
}
