# The target cluster's side of a `kubernetes` SecretStore: the RBAC the federation's generators
# need there, least privilege, applied with a `kubernetes` provider configured for that cluster.
# One Role and one RoleBinding per namespace named in `service_accounts` or `readable_secrets`,
# bound to `federation_user`:
#
#   - KubernetesServiceAccountToken: `create` on `serviceaccounts/token` for the listed
#     ServiceAccounts (POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token);
#   - with `revocable`: `create` and `delete` on `secrets` (the Secret each token is bound to),
#     and `create`, `get` and `delete` on `leases` (coordination.k8s.io): the daily anchors
#     `esi-token-bindings-YYYYMMDD` that own those Secrets, so that Kubernetes' garbage collector
#     deletes the Secrets of tokens never revoked once the federation deletes a past day's anchor;
#   - KubernetesSecret: `get` on `secrets` for the listed Secrets
#     (GET /api/v1/namespaces/{ns}/secrets/{name}).
#
# With revocable tokens (and `confine_secret_writes`), a ValidatingAdmissionPolicy and its binding
# hold that `create` and `delete` on Secrets to the binding Secrets the federation makes, and on
# Leases to its anchors.
#
# Nothing else: no ClusterRole, no list or watch, no ServiceAccount or namespace made here. How
# the API server knows the federation is the caller's business, one of three ways (the store's
# `auth`): with the default federation_user (`esi:esi-federation`, the federation's own token,
# `auth.selfIssued`) its `--authentication-config` needs the `authentication_config` output
# (Kubernetes 1.30+); with another subject, the federation reads that subject's bearer token
# (`token`, `auth.token`), or presents a client certificate whose common name is that User
# (`client_certificate`, `auth.cert`; the API server trusts its CA through `--client-ca-file`).

locals {
  # The federation's own token: `sub` esi-federation (backends/src/identity.rs), mapped to the
  # user `esi:esi-federation` by the JWT authenticator below. The variables' validation rules
  # and the default federation_user spell out the same name.
  user_prefix      = "esi:"
  self_issued_user = "${local.user_prefix}esi-federation"
  self_issued      = var.federation_user.kind == "User" && var.federation_user.name == local.self_issued_user

  # The federation writes its issuer without a trailing `/` (`iss`), and its token's default
  # audience is `server` without one: the API server compares both character for character.
  issuer   = var.issuer_url == null ? null : replace(var.issuer_url, "/\\/+$/", "")
  audience = coalesce(var.audience, replace(var.server, "/\\/+$/", ""))

  # By namespace (the validation rules make each namespace appear once per input).
  tokens     = { for e in values(var.service_accounts) : e.namespace => e }
  secrets    = { for e in values(var.readable_secrets) : e.namespace => e.names }
  namespaces = toset(concat(keys(local.tokens), keys(local.secrets)))

  role_name = "${var.role_name_prefix}-generators"
  labels = {
    "app.kubernetes.io/name"       = "esi-federation-target"
    "app.kubernetes.io/part-of"    = "esi"
    "app.kubernetes.io/managed-by" = "terraform"
  }

  # Each namespace's Role: those of these rules that apply to it, in this order, each in its own
  # API groups (the core group "" but for the anchors' Leases).
  rules = { for ns in local.namespaces : ns => [
    for r in [
      # KubernetesServiceAccountToken: the TokenRequest subresource, for the listed names only.
      {
        when           = contains(keys(local.tokens), ns)
        api_groups     = [""]
        resources      = ["serviceaccounts/token"]
        resource_names = try(sort(local.tokens[ns].names), null)
        verbs          = ["create"]
      },
      # Revocable tokens: each is bound to an empty Secret `esi-token-<random>` the federation
      # creates, then deletes to revoke the token. `create` cannot be narrowed by resourceNames
      # (Kubernetes authorizes a create without the new object's name), and `delete` only by
      # exact names, which are random, so both cover every Secret of the namespace. No `get`,
      # `list` or `watch`: the federation never reads a Secret here (readable_secrets is refused
      # in such a namespace).
      {
        when           = try(local.tokens[ns].revocable, false)
        api_groups     = [""]
        resources      = ["secrets"]
        resource_names = null
        verbs          = ["create", "delete"]
      },
      # Revocable tokens: the anchors of their binding Secrets. Each binding Secret is owned
      # (metadata.ownerReferences) by a Lease `esi-token-bindings-YYYYMMDD`, one per namespace and
      # UTC day, the day its token expires; the federation creates that Lease with its first
      # binding of the day and deletes the anchors of past days, and Kubernetes' garbage collector
      # then deletes the Secrets they own: those of tokens never revoked, expired by then. `get`
      # only to learn the UID of an anchor another replica created first (its create answers 409),
      # which an ownerReference must name. Names are by date, so no resourceNames; no `list` or
      # `watch`. A Lease holds no secret (this one no holder either: an empty spec).
      {
        when           = try(local.tokens[ns].revocable, false)
        api_groups     = ["coordination.k8s.io"]
        resources      = ["leases"]
        resource_names = null
        verbs          = ["create", "get", "delete"]
      },
      # KubernetesSecret: the listed Secrets by name; without `list` nothing else is seen.
      {
        when           = contains(keys(local.secrets), ns)
        api_groups     = [""]
        resources      = ["secrets"]
        resource_names = try(sort(local.secrets[ns]), null)
        verbs          = ["get"]
      },
    ] : { api_groups = r.api_groups, resources = r.resources, resource_names = r.resource_names, verbs = r.verbs } if r.when
  ] }

  # The RoleBindings' one subject. RBAC defaults apiGroup to "" for a ServiceAccount and to
  # rbac.authorization.k8s.io for a User; a User has no namespace.
  subject = {
    kind      = var.federation_user.kind
    name      = var.federation_user.name
    namespace = var.federation_user.kind == "ServiceAccount" ? var.federation_user.namespace : null
    api_group = var.federation_user.kind == "ServiceAccount" ? "" : "rbac.authorization.k8s.io"
  }

  # Where the Role grants create and delete on every Secret and Lease (revocable tokens): there
  # the ValidatingAdmissionPolicy below holds the federation to its binding Secrets and anchors.
  revocable_namespaces  = sort([for ns, e in local.tokens : ns if e.revocable])
  confine_secret_writes = var.confine_secret_writes && length(local.revocable_namespaces) > 0

  # The RoleBindings' subject as the API server names the caller (`request.userInfo.username`):
  # a User by its name, a ServiceAccount as system:serviceaccount:<namespace>:<name>. Then as a
  # CEL string literal, for the policy's match condition: a User's name may hold `'` or `\`.
  username     = local.subject.kind == "ServiceAccount" ? "system:serviceaccount:${local.subject.namespace}:${local.subject.name}" : local.subject.name
  username_cel = "'${replace(replace(local.username, "\\", "\\\\"), "'", "\\'")}'"

  # The only Secrets and Leases the federation writes (backends/src/kubernetes_token.rs):
  #   - create_binding and delete_binding: it creates `{ generateName: esi-token-, labels:
  #     {app.kubernetes.io/managed-by: esi-federation}, type: esi.dev/token-binding, immutable:
  #     true }` without data, owned (ownerReferences, when it could make the anchor) by the Lease
  #     of its token's expiry day, and deletes Secrets of that type (by UID);
  #   - create_anchor and the daily clean-up: it creates the Lease `esi-token-bindings-YYYYMMDD`
  #     (ANCHOR_PREFIX and the UTC day) labelled app.kubernetes.io/managed-by: esi-federation, and
  #     deletes the Leases of past days so that the garbage collector deletes the Secrets they own.
  # RBAC cannot say so (a create has no name to match, and Roles see no fields), so each rule is a
  # CEL validation; a request the policy cannot evaluate is refused too (failurePolicy Fail). The
  # policy takes both resources, so each validation first names the one it is about
  # (`request.resource.resource`) and lets the other through: a Lease has no `type` and a Secret
  # is no anchor. (The API server type-checks every expression against both kinds, so its
  # status.typeChecking may warn about a Secret field on a Lease; the guard keeps such a field
  # from being read.) A Secret may name only anchors as its owners, so that its lifetime is tied
  # to nothing else of the namespace. The Secret's name is checked as the API server has it at
  # validation, or as generateName before it generates one; an anchor's name is given, never
  # generated.
  secret_writes_validations = [
    {
      expression = "request.resource.resource != 'secrets' || request.operation != 'CREATE' || (has(object.type) && object.type == 'esi.dev/token-binding')"
      message    = "the federation may create only Secrets of type esi.dev/token-binding, the ones its revocable tokens are bound to"
    },
    {
      expression = "request.resource.resource != 'secrets' || request.operation != 'CREATE' || (has(object.immutable) && object.immutable == true)"
      message    = "the federation may create only immutable Secrets (immutable: true)"
    },
    {
      expression = "request.resource.resource != 'secrets' || request.operation != 'CREATE' || ((!has(object.data) || size(object.data) == 0) && (!has(object.stringData) || size(object.stringData) == 0))"
      message    = "the federation may create only Secrets without data or stringData"
    },
    {
      expression = "request.resource.resource != 'secrets' || request.operation != 'CREATE' || (has(object.metadata.labels) && 'app.kubernetes.io/managed-by' in object.metadata.labels && object.metadata.labels['app.kubernetes.io/managed-by'] == 'esi-federation')"
      message    = "the federation may create only Secrets labelled app.kubernetes.io/managed-by=esi-federation"
    },
    {
      expression = "request.resource.resource != 'secrets' || request.operation != 'CREATE' || ((has(object.metadata.name) && size(object.metadata.name) > 0) ? object.metadata.name : (has(object.metadata.generateName) ? object.metadata.generateName : '')).startsWith('esi-token-')"
      message    = "the federation may create only Secrets named esi-token-*"
    },
    {
      expression = "request.resource.resource != 'secrets' || request.operation != 'CREATE' || !has(object.metadata.ownerReferences) || object.metadata.ownerReferences.all(r, r.kind == 'Lease' && r.apiVersion == 'coordination.k8s.io/v1' && r.name.matches('^esi-token-bindings-[0-9]{8}$'))"
      message    = "the federation may create only Secrets whose owners (ownerReferences) are its anchors, Leases of coordination.k8s.io/v1 named esi-token-bindings-YYYYMMDD"
    },
    {
      expression = "request.resource.resource != 'secrets' || request.operation != 'DELETE' || (has(oldObject.type) && oldObject.type == 'esi.dev/token-binding')"
      message    = "the federation may delete only Secrets of type esi.dev/token-binding, the ones its revocable tokens are bound to"
    },
    {
      expression = "request.resource.resource != 'leases' || request.operation != 'CREATE' || (has(object.metadata.name) && object.metadata.name.matches('^esi-token-bindings-[0-9]{8}$'))"
      message    = "the federation may create only Leases named esi-token-bindings-YYYYMMDD (8 digits), the anchors of its token binding Secrets"
    },
    {
      expression = "request.resource.resource != 'leases' || request.operation != 'CREATE' || (has(object.metadata.labels) && 'app.kubernetes.io/managed-by' in object.metadata.labels && object.metadata.labels['app.kubernetes.io/managed-by'] == 'esi-federation')"
      message    = "the federation may create only Leases labelled app.kubernetes.io/managed-by=esi-federation"
    },
    {
      expression = "request.resource.resource != 'leases' || request.operation != 'DELETE' || (has(oldObject.metadata.name) && oldObject.metadata.name.matches('^esi-token-bindings-[0-9]{8}$'))"
      message    = "the federation may delete only Leases named esi-token-bindings-YYYYMMDD (8 digits), the anchors of its token binding Secrets"
    },
  ]

  # Cluster-scoped, named like the Roles whose grant they narrow. The policy matches the
  # federation's own Secret and Lease writes only (matchConditions); the binding denies what
  # fails, in the revocable namespaces only (the API server labels every namespace with its name).
  secret_writes_policy = {
    apiVersion = "admissionregistration.k8s.io/v1"
    kind       = "ValidatingAdmissionPolicy"
    metadata   = { name = local.role_name, labels = local.labels }
    spec = {
      failurePolicy = "Fail"
      matchConstraints = {
        resourceRules = [
          { apiGroups = [""], apiVersions = ["v1"], operations = ["CREATE", "DELETE"], resources = ["secrets"] },
          { apiGroups = ["coordination.k8s.io"], apiVersions = ["v1"], operations = ["CREATE", "DELETE"], resources = ["leases"] },
        ]
      }
      matchConditions = [{ name = "federation", expression = "request.userInfo.username == ${local.username_cel}" }]
      validations     = local.secret_writes_validations
    }
  }
  secret_writes_binding = {
    apiVersion = "admissionregistration.k8s.io/v1"
    kind       = "ValidatingAdmissionPolicyBinding"
    metadata   = { name = local.role_name, labels = local.labels }
    spec = {
      policyName        = local.secret_writes_policy.metadata.name
      validationActions = ["Deny"]
      matchResources = {
        namespaceSelector = {
          matchExpressions = [{ key = "kubernetes.io/metadata.name", operator = "In", values = local.revocable_namespaces }]
        }
      }
    }
  }

  # The store's `auth`: exactly one key (backends/src/kubernetes_token.rs, KubernetesAuth), the
  # one login the validation rules let through (the federation's own token for the default
  # federation_user, else `token` or `client_certificate`). Candidates filtered, not a
  # conditional: Terraform cannot unify the three shapes into one result type. Each SecretRef
  # keeps only the one of file and env that is set.
  auth_candidates = {
    selfIssued = local.self_issued ? (var.audience == null ? {} : { audience = var.audience }) : null
    token      = var.token == null ? null : { for k in ["file", "env"] : k => var.token[k] if try(var.token[k], null) != null }
    cert = var.client_certificate == null ? null : {
      clientCert = { for k in ["file", "env"] : k => var.client_certificate.cert[k] if try(var.client_certificate.cert[k], null) != null }
      clientKey  = { for k in ["file", "env"] : k => var.client_certificate.key[k] if try(var.client_certificate.key[k], null) != null }
    }
  }
  auth = { for k, v in local.auth_candidates : k => v if v != null }

  # One JWT authenticator of the target API server's AuthenticationConfiguration.
  jwt_authenticator = {
    issuer = {
      url       = local.issuer
      audiences = [local.audience]
    }
    claimMappings = {
      username = { claim = "sub", prefix = local.user_prefix }
    }
  }
}

resource "kubernetes_role_v1" "this" {
  for_each = local.namespaces

  metadata {
    name      = local.role_name
    namespace = each.key
    labels    = local.labels
  }

  dynamic "rule" {
    for_each = local.rules[each.key]
    content {
      api_groups     = rule.value.api_groups
      resources      = rule.value.resources
      resource_names = rule.value.resource_names
      verbs          = rule.value.verbs
    }
  }
}

resource "kubernetes_role_binding_v1" "this" {
  for_each = local.namespaces

  metadata {
    name      = local.role_name
    namespace = each.key
    labels    = local.labels
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.this[each.key].metadata[0].name
  }
  subject {
    kind      = local.subject.kind
    name      = local.subject.name
    namespace = local.subject.namespace
    api_group = local.subject.api_group
  }
}

# kubernetes_manifest, not a typed resource: the provider has `kubernetes_validating_admission_policy_v1`
# only from 3.0 (with a required `audit_annotations`) and no binding resource, and a policy needs its
# binding. kubernetes_manifest reads the API's schema at plan time, so `terraform plan` needs the
# cluster, and one older than 1.30 (no admissionregistration.k8s.io/v1 policies) fails the plan:
# set confine_secret_writes = false there.
resource "kubernetes_manifest" "secret_writes_policy" {
  count    = local.confine_secret_writes ? 1 : 0
  manifest = local.secret_writes_policy
}

resource "kubernetes_manifest" "secret_writes_binding" {
  count    = local.confine_secret_writes ? 1 : 0
  manifest = local.secret_writes_binding

  depends_on = [kubernetes_manifest.secret_writes_policy]
}
