# Inputs of the target cluster's side of the `kubernetes` SecretStore: who the federation is in
# that cluster and how it proves it (its own token, a bearer token or a client certificate), what
# its generators may do there (RBAC, one Role per namespace), and the API server's address and
# trust, for the store's `provider` and the API server's authentication configuration.

variable "federation_user" {
  description = <<-EOT
    Who the federation is in the target cluster, the subject of every RoleBinding:
    `{ kind = "User", name = "..." }` or `{ kind = "ServiceAccount", name = "...", namespace = "..." }`.
    The default, the User `esi:esi-federation`, is the federation's own token (`auth.selfIssued`):
    `sub` `esi-federation` mapped with the prefix `esi:` by the JWT authenticator of the
    `authentication_config` output. Any other subject is one the federation proves with a
    credential it reads: either a bearer token (`auth.token`, set `token`), typically of a
    ServiceAccount of the target cluster made elsewhere (this module makes no ServiceAccount), or
    a client certificate (`auth.cert`, set `client_certificate`), whose common name (CN) the API
    server takes as the user name: then a User named exactly that CN, such as
    `{ kind = "User", name = "esi-federation" }`, outside the `esi:` prefix of the federation's
    own token.
  EOT
  type = object({
    kind      = string
    name      = string
    namespace = optional(string)
  })
  default = { kind = "User", name = "esi:esi-federation" }

  validation {
    condition     = contains(["User", "ServiceAccount"], var.federation_user.kind)
    error_message = "The federation_user's kind must be User or ServiceAccount."
  }

  validation {
    condition     = (var.federation_user.kind == "ServiceAccount") == (var.federation_user.namespace != null)
    error_message = "A ServiceAccount federation_user needs its namespace, and a User takes none (users are not namespaced)."
  }

  validation {
    condition     = var.federation_user.kind != "ServiceAccount" || (length(var.federation_user.name) <= 253 && can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$", var.federation_user.name)) && can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", coalesce(var.federation_user.namespace, "-"))))
    error_message = "A ServiceAccount federation_user's name must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters) and its namespace a DNS-1123 label (1-63 lowercase letters, digits or '-')."
  }

  validation {
    condition     = length(var.federation_user.name) <= 1024 && can(regex("^[^[:space:][:cntrl:]]+$", var.federation_user.name))
    error_message = "The federation_user's name must be 1 to 1024 characters without whitespace or control characters."
  }
}

variable "token" {
  description = "Where the federation reads its bearer token for the target cluster, for a `federation_user` other than `esi:esi-federation` that it proves with a token: `{ file = \"/var/run/secrets/prod-eu/token\" }` (re-read on every call, so a rotated file needs no restart) or `{ env = \"PROD_EU_TOKEN\" }`, the store's `auth.token`. The token itself never goes here. Null (the default) with the default `federation_user`, whose login is the federation's own token (`auth.selfIssued`), and with `client_certificate` (`auth.cert`): exactly one of `token` and `client_certificate` for any other `federation_user`."
  type = object({
    file = optional(string)
    env  = optional(string)
  })
  default = null

  validation {
    condition     = var.token == null || (try(length(var.token.file) > 0, false) != try(length(var.token.env) > 0, false))
    error_message = "The token must name exactly one of file or env, not empty (where the federation reads the bearer token, never the token itself)."
  }

  # One login per store (KubernetesAuth takes exactly one key): the default user's is the
  # federation's own token, any other's a credential the federation reads.
  validation {
    condition     = (var.federation_user.kind == "User" && var.federation_user.name == "esi:esi-federation") ? (var.token == null && var.client_certificate == null) : ((var.token == null) != (var.client_certificate == null))
    error_message = "Set exactly one of token and client_certificate when federation_user is not the User esi:esi-federation, and neither with that user: it is the federation's own token (auth.selfIssued, nothing to read), any other is a subject whose bearer token the federation reads from token's file or env (auth.token) or whose client certificate it presents (client_certificate, auth.cert)."
  }
}

variable "client_certificate" {
  description = <<-EOT
    Where the federation reads the client certificate it presents to the target API server in
    the TLS handshake of every call (the store's `auth.cert`), for a User `federation_user` named
    exactly as the certificate's common name (CN), which the API server takes as the user name
    (its organizations, O, become the user's groups, which this module does not bind):
    `{ cert = { file = "/etc/esi/prod-eu/tls.crt" }, key = { file = "/etc/esi/prod-eu/tls.key" } }`
    (each `{ file = ... }` or `{ env = ... }`), typically a cert-manager Certificate's Secret
    mounted as files. `cert` is the certificate (PEM, then any intermediates), `key` its private
    key (PEM: PKCS#8, PKCS#1 or SEC1, unencrypted); both are re-read on every call, so a renewed
    certificate needs no restart. The certificate and key themselves never go here. The API
    server must trust the certificate's CA (`--client-ca-file`). Null (the default): no
    certificate; set exactly one of `token` and `client_certificate` for a `federation_user`
    other than `esi:esi-federation`.
  EOT
  type = object({
    cert = object({
      file = optional(string)
      env  = optional(string)
    })
    key = object({
      file = optional(string)
      env  = optional(string)
    })
  })
  default = null

  validation {
    condition     = var.client_certificate == null || alltrue([for r in [try(var.client_certificate.cert, null), try(var.client_certificate.key, null)] : try(length(r.file) > 0, false) != try(length(r.env) > 0, false)])
    error_message = "The client_certificate's cert and key must each name exactly one of file or env, not empty (where the federation reads the PEM certificate and its key, never the PEM itself)."
  }

  validation {
    condition     = try(var.client_certificate.cert.file != var.client_certificate.key.file || var.client_certificate.cert.env != var.client_certificate.key.env, true)
    error_message = "The client_certificate's cert and key name the same source: name two, one for the certificate (clientCert) and one for its private key (clientKey), such as the tls.crt and tls.key files of a mounted kubernetes.io/tls Secret."
  }

  # The API server names a certificate's caller by its common name: a user, never a
  # ServiceAccount (system:serviceaccount:... is what it calls a ServiceAccount's token).
  validation {
    condition     = var.client_certificate == null || var.federation_user.kind == "User"
    error_message = "A client_certificate needs a User federation_user named as the certificate's common name (CN): the API server takes the CN as the user name, so a certificate cannot be a ServiceAccount."
  }

  # `esi:` is the prefix the federation's own token is mapped with (authentication_config):
  # names under it belong to that authenticator, not to a certificate.
  validation {
    condition     = var.client_certificate == null || !startswith(var.federation_user.name, "esi:")
    error_message = "A client_certificate's federation_user must not start with esi:, the prefix the federation's own token is mapped with (auth.selfIssued, authentication_config; the default federation_user is that token): set federation_user to the User named as the certificate's common name (CN), such as esi-federation."
  }
}

variable "server" {
  description = "The target cluster's API server as the federation reaches it, `https://host[:port]` without a path (`https://api.prod-eu.example:6443`): the store's `server`, and, without `audience`, the audience of the federation's own token (the URL without a trailing `/`)."
  type        = string

  validation {
    condition     = can(regex("^https://([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\\[[0-9A-Fa-f:.]+\\])(:[0-9]{1,5})?/?$", var.server))
    error_message = "The server must be an https URL of an API server, https://host[:port], without path, query or credentials (the federation sends its credentials and the cluster's tokens over it, and a client certificate needs TLS)."
  }
}

variable "ca_bundle" {
  description = "The API server's CA certificates (PEM): the store's `caBundle`, then the only certificates the federation trusts for the API server (the system roots no longer are, as with a kubeconfig's `certificate-authority-data`), and handed to workloads in the kubeconfig of `KubernetesServiceAccountToken`. List every CA that may sign the API server's serving certificate (during a CA rotation, the old and the new). Null: the system roots only."
  type        = string
  default     = null

  validation {
    condition     = var.ca_bundle == null || length(regexall("-----BEGIN CERTIFICATE-----", coalesce(var.ca_bundle, "-"))) >= 1
    error_message = "The ca_bundle must hold PEM certificates (-----BEGIN CERTIFICATE----- blocks), such as the cluster's CA."
  }
}

variable "issuer_url" {
  description = "The federation's OIDC issuer URL, exactly the `issuer_url` given to modules/federation-lambda or modules/federation-kubernetes, for the default `federation_user` only: the `authentication_config` output's issuer (without a trailing `/`, as the federation writes `iss`). Pass the same literal string or variable, not the federation module's output (the federation's configuration holds this module's `secret_store_spec`, so that would be a dependency cycle)."
  type        = string
  default     = null

  validation {
    condition     = var.issuer_url == null || can(regex("^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$", coalesce(var.issuer_url, "-")))
    error_message = "The issuer_url must be an https URL (the API server fetches the issuer's keys from it over TLS): https://host[:port][/path], without query, fragment or credentials."
  }

  validation {
    condition     = (var.issuer_url != null) == (var.federation_user.kind == "User" && var.federation_user.name == "esi:esi-federation")
    error_message = "Set issuer_url exactly when federation_user is the User esi:esi-federation: the API server must trust the federation's issuer to take its own token (auth.selfIssued); with a bearer token (auth.token) or a client certificate (auth.cert) it plays no part."
  }
}

variable "audience" {
  description = "The audience of the federation's own token, which the API server's JWT authenticator lists, for the default `federation_user` only: the store's `auth.selfIssued.audience`. Null (the default): `server` without a trailing `/`, what the federation uses without it. No workload may get an `IdentityToken` for this audience (the federation refuses such a configuration)."
  type        = string
  default     = null

  validation {
    condition     = var.audience == null || can(regex("^[^[:space:][:cntrl:]]{1,512}$", coalesce(var.audience, "-")))
    error_message = "The audience must be 1 to 512 characters without whitespace or control characters."
  }

  validation {
    condition     = var.audience == null || (var.federation_user.kind == "User" && var.federation_user.name == "esi:esi-federation")
    error_message = "An audience is for the federation's own token only (federation_user esi:esi-federation, auth.selfIssued); a bearer token (auth.token) has the audience its issuer gave it, and a client certificate (auth.cert) has none."
  }
}

variable "service_accounts" {
  description = <<-EOT
    The ServiceAccounts the federation may mint tokens for (`KubernetesServiceAccountToken`),
    keyed by a short name of yours: `{ namespace, names = [...], revocable = false }`, one entry
    per namespace. Each namespace gets `create` on `serviceaccounts/token` for exactly those
    names (`resourceNames`); RBAC takes no templates, so a generator with a templated
    `serviceAccount` (`{{namespace}}`) needs each namespace and name it can render listed here.
    `revocable = true` (generators with `revocable: true` in that namespace) also grants
    `create` and `delete` on `secrets` there, for the empty Secret each token is bound to, and
    `create`, `get` and `delete` on `leases` (`coordination.k8s.io`), for the daily Lease
    `esi-token-bindings-YYYYMMDD` that owns those Secrets (the garbage collector deletes the
    Secrets of tokens never revoked once the federation deletes a past day's Lease), narrowed to
    those Secrets and Leases by a ValidatingAdmissionPolicy (`confine_secret_writes`).
    The ServiceAccounts and namespaces must exist; this module makes neither. `{}` for none.
  EOT
  type = map(object({
    namespace = string
    names     = list(string)
    revocable = optional(bool, false)
  }))

  validation {
    condition     = alltrue([for e in values(var.service_accounts) : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", e.namespace))])
    error_message = "Each service_accounts namespace must be a DNS-1123 label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit."
  }

  validation {
    condition     = alltrue([for e in values(var.service_accounts) : length(e.names) > 0])
    error_message = "Each service_accounts entry must list at least one ServiceAccount name: an empty resourceNames would grant every ServiceAccount of the namespace."
  }

  validation {
    condition     = alltrue(flatten([for e in values(var.service_accounts) : [for n in e.names : length(n) <= 253 && can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$", n))]]))
    error_message = "Each service_accounts name must be a ServiceAccount name, a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters). RBAC takes no templates: list the names a templated generator renders."
  }

  validation {
    condition     = alltrue([for e in values(var.service_accounts) : length(distinct(e.names)) == length(e.names)])
    error_message = "Each service_accounts entry must list a ServiceAccount name once."
  }

  validation {
    condition     = length(distinct([for e in values(var.service_accounts) : e.namespace])) == length(var.service_accounts)
    error_message = "The service_accounts entries ${join(", ", [for key, e in var.service_accounts : key if length([for other in values(var.service_accounts) : other if other.namespace == e.namespace]) > 1])} name the same namespace: one Role per namespace, so list all its ServiceAccounts in one entry."
  }
}

variable "readable_secrets" {
  description = "The Secrets the federation may read (`KubernetesSecret`), keyed by a short name of yours: `{ namespace, names = [...] }`, one entry per namespace. Each namespace gets `get` on `secrets` for exactly those names (`resourceNames`), no `list` or `watch`. Not in a namespace of a `revocable` service_accounts entry: there the federation may create and delete any Secret, and with `get` on a name it could make that name a Secret holding a token of any ServiceAccount of the namespace and read it. The Secrets and namespaces are not made here."
  type = map(object({
    namespace = string
    names     = list(string)
  }))
  default = {}

  validation {
    condition     = alltrue([for e in values(var.readable_secrets) : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", e.namespace))])
    error_message = "Each readable_secrets namespace must be a DNS-1123 label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit."
  }

  validation {
    condition     = alltrue([for e in values(var.readable_secrets) : length(e.names) > 0])
    error_message = "Each readable_secrets entry must list at least one Secret name: an empty resourceNames would grant every Secret of the namespace."
  }

  validation {
    condition     = alltrue(flatten([for e in values(var.readable_secrets) : [for n in e.names : length(n) <= 253 && can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$", n))]]))
    error_message = "Each readable_secrets name must be a Secret name, a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters). RBAC takes no templates or wildcards: list the names."
  }

  validation {
    condition     = alltrue([for e in values(var.readable_secrets) : length(distinct(e.names)) == length(e.names)])
    error_message = "Each readable_secrets entry must list a Secret name once."
  }

  validation {
    condition     = length(distinct([for e in values(var.readable_secrets) : e.namespace])) == length(var.readable_secrets)
    error_message = "The readable_secrets entries ${join(", ", [for key, e in var.readable_secrets : key if length([for other in values(var.readable_secrets) : other if other.namespace == e.namespace]) > 1])} name the same namespace: one Role per namespace, so list all its Secrets in one entry."
  }

  # `create` and `delete` on every Secret (revocable) plus `get` on a name: delete that Secret,
  # create one of that name of type kubernetes.io/service-account-token for any ServiceAccount
  # of the namespace, and read the token the API server writes into it.
  validation {
    condition     = length(setintersection(toset([for e in values(var.readable_secrets) : e.namespace]), toset([for e in values(var.service_accounts) : e.namespace if e.revocable]))) == 0
    error_message = "The namespaces ${join(", ", setintersection(toset([for e in values(var.readable_secrets) : e.namespace]), toset([for e in values(var.service_accounts) : e.namespace if e.revocable])))} have both revocable service_accounts and readable_secrets: create and delete on all Secrets plus get on some would let the federation read a token of any ServiceAccount there (a service-account-token Secret under a readable name). Keep readable Secrets in another namespace, or make those tokens not revocable."
  }

  validation {
    condition     = length(var.service_accounts) + length(var.readable_secrets) > 0
    error_message = "Both service_accounts and readable_secrets are empty: the module would grant nothing."
  }
}

variable "role_name_prefix" {
  description = "Prefix of the Role and RoleBinding made in each namespace, and of the cluster-scoped ValidatingAdmissionPolicy and its binding (`confine_secret_writes`): `<role_name_prefix>-generators`. Change it when two federations (or two instances of this module) grant in the same cluster."
  type        = string
  default     = "esi-federation"

  validation {
    condition     = length("${var.role_name_prefix}-generators") <= 253 && can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$", "${var.role_name_prefix}-generators"))
    error_message = "The role_name_prefix followed by -generators must be a Role name, a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', starting with a letter or digit, labels of at most 63 characters, at most 253 in all."
  }
}

variable "confine_secret_writes" {
  description = <<-EOT
    With `revocable` service_accounts, whose Roles grant `create` and `delete` on every Secret and
    Lease of their namespaces: also make a ValidatingAdmissionPolicy and its binding
    (`admissionregistration.k8s.io/v1`, Kubernetes 1.30 and later; cluster-scoped, named
    `<role_name_prefix>-generators`) that deny the federation's `federation_user`, in those
    namespaces only, any Secret it would create other than an empty (no `data` or `stringData`),
    immutable Secret of type `esi.dev/token-binding` labelled
    `app.kubernetes.io/managed-by: esi-federation`, named `esi-token-*` and owned by nothing but
    Leases `esi-token-bindings-YYYYMMDD` (`ownerReferences`), the deletion of any Secret of
    another type, any Lease it would create other than one named `esi-token-bindings-` and 8
    digits labelled `app.kubernetes.io/managed-by: esi-federation`, and the deletion of any Lease
    not so named. Made with `kubernetes_manifest`, so `terraform plan` needs the target cluster's
    API. `false` for a cluster older than 1.30: the Roles alone then let the federation create
    and delete any Secret and any Lease (such as a workload's leader-election Lease) in those
    namespaces. Ignored without revocable tokens.
  EOT
  type        = bool
  default     = true
  nullable    = false
}
