# The target cluster's side of a `kubernetes` SecretStore: the RBAC the federation's generators
# need there, least privilege, applied with a `kubernetes` provider configured for that cluster.
# One Role and one RoleBinding per namespace named in `service_accounts` or `readable_secrets`,
# bound to `federation_user`:
#
#   - KubernetesServiceAccountToken: `create` on `serviceaccounts/token` for the listed
#     ServiceAccounts (POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token);
#   - with `revocable`: `create` and `delete` on `secrets` (the Secret each token is bound to);
#   - KubernetesSecret: `get` on `secrets` for the listed Secrets
#     (GET /api/v1/namespaces/{ns}/secrets/{name}).
#
# With revocable tokens (and `confine_secret_writes`), a ValidatingAdmissionPolicy and its binding
# hold that `create` and `delete` on Secrets to the binding Secrets the federation makes.
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

  # Each namespace's Role: those of these rules that apply to it, in this order, all in the core
  # API group "".
  rules = { for ns in local.namespaces : ns => [
    for r in [
      # KubernetesServiceAccountToken: the TokenRequest subresource, for the listed names only.
      {
        when           = contains(keys(local.tokens), ns)
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
        resources      = ["secrets"]
        resource_names = null
        verbs          = ["create", "delete"]
      },
      # KubernetesSecret: the listed Secrets by name; without `list` nothing else is seen.
      {
        when           = contains(keys(local.secrets), ns)
        resources      = ["secrets"]
        resource_names = try(sort(local.secrets[ns]), null)
        verbs          = ["get"]
      },
    ] : { api_groups = [""], resources = r.resources, resource_names = r.resource_names, verbs = r.verbs } if r.when
  ] }

  # The RoleBindings' one subject. RBAC defaults apiGroup to "" for a ServiceAccount and to
  # rbac.authorization.k8s.io for a User; a User has no namespace.
  subject = {
    kind      = var.federation_user.kind
    name      = var.federation_user.name
    namespace = var.federation_user.kind == "ServiceAccount" ? var.federation_user.namespace : null
    api_group = var.federation_user.kind == "ServiceAccount" ? "" : "rbac.authorization.k8s.io"
  }

  # Where the Role grants create and delete on every Secret (revocable tokens): there the
  # ValidatingAdmissionPolicy below holds the federation to its binding Secrets.
  revocable_namespaces  = sort([for ns, e in local.tokens : ns if e.revocable])
  confine_secret_writes = var.confine_secret_writes && length(local.revocable_namespaces) > 0

  # The RoleBindings' subject as the API server names the caller (`request.userInfo.username`):
  # a User by its name, a ServiceAccount as system:serviceaccount:<namespace>:<name>. Then as a
  # CEL string literal, for the policy's match condition: a User's name may hold `'` or `\`.
  username     = local.subject.kind == "ServiceAccount" ? "system:serviceaccount:${local.subject.namespace}:${local.subject.name}" : local.subject.name
  username_cel = "'${replace(replace(local.username, "\\", "\\\\"), "'", "\\'")}'"

  # The only Secrets the federation writes (backends/src/kubernetes_token.rs, create_binding and
  # delete_binding): it creates `{ generateName: esi-token-, labels: {app.kubernetes.io/managed-by:
  # esi-federation}, type: esi.dev/token-binding, immutable: true }` without data, and deletes
  # Secrets of that type (by UID). RBAC cannot say so (a create has no name to match, and Roles
  # see no fields), so each rule is a CEL validation; a request the policy cannot evaluate is
  # refused too (failurePolicy Fail). The name is checked as the API server has it at validation,
  # or as generateName before it generates one.
  secret_writes_validations = [
    {
      expression = "request.operation != 'CREATE' || (has(object.type) && object.type == 'esi.dev/token-binding')"
      message    = "the federation may create only Secrets of type esi.dev/token-binding, the ones its revocable tokens are bound to"
    },
    {
      expression = "request.operation != 'CREATE' || (has(object.immutable) && object.immutable == true)"
      message    = "the federation may create only immutable Secrets (immutable: true)"
    },
    {
      expression = "request.operation != 'CREATE' || ((!has(object.data) || size(object.data) == 0) && (!has(object.stringData) || size(object.stringData) == 0))"
      message    = "the federation may create only Secrets without data or stringData"
    },
    {
      expression = "request.operation != 'CREATE' || (has(object.metadata.labels) && 'app.kubernetes.io/managed-by' in object.metadata.labels && object.metadata.labels['app.kubernetes.io/managed-by'] == 'esi-federation')"
      message    = "the federation may create only Secrets labelled app.kubernetes.io/managed-by=esi-federation"
    },
    {
      expression = "request.operation != 'CREATE' || ((has(object.metadata.name) && size(object.metadata.name) > 0) ? object.metadata.name : (has(object.metadata.generateName) ? object.metadata.generateName : '')).startsWith('esi-token-')"
      message    = "the federation may create only Secrets named esi-token-*"
    },
    {
      expression = "request.operation != 'DELETE' || (has(oldObject.type) && oldObject.type == 'esi.dev/token-binding')"
      message    = "the federation may delete only Secrets of type esi.dev/token-binding, the ones its revocable tokens are bound to"
    },
  ]

  # Cluster-scoped, named like the Roles whose grant they narrow. The policy matches the
  # federation's own Secret writes only (matchConditions); the binding denies what fails, in the
  # revocable namespaces only (the API server labels every namespace with its name).
  secret_writes_policy = {
    apiVersion = "admissionregistration.k8s.io/v1"
    kind       = "ValidatingAdmissionPolicy"
    metadata   = { name = local.role_name, labels = local.labels }
    spec = {
      failurePolicy = "Fail"
      matchConstraints = {
        resourceRules = [{ apiGroups = [""], apiVersions = ["v1"], operations = ["CREATE", "DELETE"], resources = ["secrets"] }]
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
