# Installs the esi mutating admission webhook into one workload cluster: the same objects as
# webhook/deploy (Deployment, Service, PDB, MutatingWebhookConfiguration), with its serving
# certificate issued by a CA generated here with the tls provider.
#
# Only Pods labelled `esi.dev/inject: "true"` ever reach the webhook (objectSelector), so
# failurePolicy Fail blocks nothing but opted-in Pods when the webhook is down, and those must
# not start without their credentials anyway.

locals {
  labels = merge({
    "app.kubernetes.io/name"       = "esi-webhook"
    "app.kubernetes.io/instance"   = var.name
    "app.kubernetes.io/part-of"    = "esi"
    "app.kubernetes.io/managed-by" = "terraform"
  }, var.labels)
  selector = {
    "app.kubernetes.io/name"     = "esi-webhook"
    "app.kubernetes.io/instance" = var.name
  }
  namespace = var.create_namespace ? kubernetes_namespace_v1.this[0].metadata[0].name : var.namespace
  dns_names = [
    var.name,
    "${var.name}.${var.namespace}",
    "${var.name}.${var.namespace}.svc",
  ]

  # Entrypoint lookups are on only with registries to read from (the webhook's own rule); the
  # credentials and the CA are mounted only then.
  entrypoint_lookup        = length(var.entrypoint_lookup.registries) > 0
  registry_credentials     = local.entrypoint_lookup && var.entrypoint_lookup.credentials_secret != null
  registry_ca              = local.entrypoint_lookup && var.entrypoint_lookup.ca_pem != null
  registry_credentials_dir = "/etc/esi-webhook/registry"
  registry_ca_dir          = "/etc/esi-webhook/registry-ca"

  # The webhook's config file (webhook/src/config.rs, WebhookConfig); `extra_config` is merged
  # at the top level, so a key given there replaces the whole section.
  config = merge({
    federation = {
      defaultUrl  = var.federation_url
      allowedUrls = var.allowed_federation_urls
    }
    token = {
      audience             = var.audience
      expirationSeconds    = var.token_expiration_seconds
      minExpirationSeconds = 600
      maxExpirationSeconds = max(3600, var.token_expiration_seconds)
    }
    cli = {
      image           = var.cli_image
      imagePullPolicy = "IfNotPresent"
    }
    excludedNamespaces = distinct(concat(var.excluded_namespaces, [var.namespace]))
    }, local.entrypoint_lookup ? {
    # Files not mounted are left out rather than written as null: the webhook takes a missing
    # field for its default.
    entrypointLookup = { for k, v in {
      registries      = var.entrypoint_lookup.registries
      timeoutSeconds  = var.entrypoint_lookup.timeout_seconds
      cacheSeconds    = var.entrypoint_lookup.cache_seconds
      credentialsFile = local.registry_credentials ? "${local.registry_credentials_dir}/config.json" : null
      caFile          = local.registry_ca ? "${local.registry_ca_dir}/ca.crt" : null
      platforms       = length(var.entrypoint_lookup.platforms) > 0 ? var.entrypoint_lookup.platforms : null
    } : k => v if v != null }
  } : {}, var.extra_config)
}

resource "kubernetes_namespace_v1" "this" {
  count = var.create_namespace ? 1 : 0

  metadata {
    name   = var.namespace
    labels = merge(local.labels, { "pod-security.kubernetes.io/enforce" = "restricted" })
  }
}

# ---------------------------------------------------------------------------------------------
# TLS: a private CA trusted only by this webhook configuration.

resource "tls_private_key" "ca" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "ca" {
  private_key_pem       = tls_private_key.ca.private_key_pem
  is_ca_certificate     = true
  validity_period_hours = var.cert_validity_hours
  early_renewal_hours   = var.cert_early_renewal_hours
  allowed_uses          = ["cert_signing", "crl_signing", "digital_signature"]

  subject {
    common_name  = "${var.name}.${var.namespace} CA"
    organization = "esi"
  }
}

resource "tls_private_key" "serving" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "serving" {
  private_key_pem = tls_private_key.serving.private_key_pem
  dns_names       = local.dns_names

  subject {
    common_name = local.dns_names[2]
  }
}

resource "tls_locally_signed_cert" "serving" {
  cert_request_pem      = tls_cert_request.serving.cert_request_pem
  ca_private_key_pem    = tls_private_key.ca.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca.cert_pem
  validity_period_hours = var.cert_validity_hours
  early_renewal_hours   = var.cert_early_renewal_hours
  allowed_uses          = ["digital_signature", "key_encipherment", "server_auth"]
}

resource "kubernetes_secret_v1" "tls" {
  metadata {
    name      = "${var.name}-tls"
    namespace = local.namespace
    labels    = local.labels
  }
  type = "kubernetes.io/tls"
  data = {
    "tls.crt" = tls_locally_signed_cert.serving.cert_pem
    "tls.key" = tls_private_key.serving.private_key_pem
  }
}

# ---------------------------------------------------------------------------------------------
# Workload

resource "kubernetes_config_map_v1" "config" {
  metadata {
    name      = "${var.name}-config"
    namespace = local.namespace
    labels    = local.labels
  }
  data = {
    "config.yaml" = yamlencode(local.config)
  }
}

# Extra CAs for the registries of entrypoint lookups; public, so a ConfigMap.
resource "kubernetes_config_map_v1" "registry_ca" {
  count = local.registry_ca ? 1 : 0

  metadata {
    name      = "${var.name}-registry-ca"
    namespace = local.namespace
    labels    = local.labels
  }
  data = {
    "ca.crt" = var.entrypoint_lookup.ca_pem
  }
}

resource "kubernetes_service_account_v1" "this" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }
  # The token is mounted by the Deployment only (and only with ServiceAccount defaults).
  automount_service_account_token = false
}

# ServiceAccount defaults: the webhook reads the `esi.dev/` annotations of each opted-in Pod's
# ServiceAccount, by single GETs with a TTL cache; nothing else (no list/watch, no Secrets;
# admission requests carry the Pod).
resource "kubernetes_cluster_role_v1" "service_accounts" {
  count = var.service_account_defaults ? 1 : 0

  metadata {
    name   = "${var.name}-serviceaccount-reader"
    labels = local.labels
  }
  rule {
    api_groups = [""]
    resources  = ["serviceaccounts"]
    verbs      = ["get"]
  }
}

resource "kubernetes_cluster_role_binding_v1" "service_accounts" {
  count = var.service_account_defaults ? 1 : 0

  metadata {
    name   = "${var.name}-serviceaccount-reader"
    labels = local.labels
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "ClusterRole"
    name      = kubernetes_cluster_role_v1.service_accounts[0].metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.this.metadata[0].name
    namespace = local.namespace
  }
}

resource "kubernetes_deployment_v1" "this" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    replicas = var.replicas
    selector {
      match_labels = local.selector
    }
    strategy {
      type = "RollingUpdate"
      rolling_update {
        max_unavailable = "0"
        max_surge       = "1"
      }
    }

    template {
      metadata {
        labels = local.labels
        # The config names the registry CA's file, not its content, so the CA's own hash rolls
        # the Pods when it changes: the webhook need not read the file again while it runs. The
        # credentials are read at each lookup, so a changed Secret applies without a restart.
        annotations = merge({
          "esi.dev/config-sha256" = sha256(yamlencode(local.config))
          }, local.registry_ca ? {
          "esi.dev/registry-ca-sha256" = sha256(var.entrypoint_lookup.ca_pem)
        } : {})
      }

      spec {
        service_account_name            = kubernetes_service_account_v1.this.metadata[0].name
        automount_service_account_token = var.service_account_defaults
        # Longer than the server's shutdown delay (5 s, ESI_WEBHOOK_SHUTDOWN_DELAY below) plus
        # its 10 s drain after SIGTERM. The delay does what webhook/deploy's preStop sleep does:
        # the provider has no `sleep` handler (terraform-provider-kubernetes#2837) and the
        # distroless image no `sleep` binary for `exec`.
        termination_grace_period_seconds = 30

        security_context {
          run_as_non_root = true
          run_as_user     = 65532
          run_as_group    = 65532
          # Group of the mounted registry credentials (mode 0440).
          fs_group = 65532
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        topology_spread_constraint {
          max_skew           = 1
          topology_key       = "kubernetes.io/hostname"
          when_unsatisfiable = "ScheduleAnyway"
          label_selector {
            match_labels = local.selector
          }
        }

        container {
          name              = "webhook"
          image             = var.image
          image_pull_policy = "Always"

          env {
            # Keep serving for 5 s after SIGTERM, while the endpoint removal spreads.
            name  = "ESI_WEBHOOK_SHUTDOWN_DELAY"
            value = "5s"
          }
          env {
            name  = "ESI_WEBHOOK_CONFIG"
            value = "/etc/esi-webhook/config/config.yaml"
          }
          env {
            name  = "ESI_WEBHOOK_TLS_CERT"
            value = "/etc/esi-webhook/tls/tls.crt"
          }
          env {
            name  = "ESI_WEBHOOK_TLS_KEY"
            value = "/etc/esi-webhook/tls/tls.key"
          }
          env {
            name  = "ESI_WEBHOOK_SERVICE_ACCOUNT_DEFAULTS"
            value = tostring(var.service_account_defaults)
          }
          env {
            name  = "ESI_WEBHOOK_SERVICE_ACCOUNT_TIMEOUT"
            value = var.service_account_lookup.timeout
          }
          env {
            name  = "ESI_WEBHOOK_SERVICE_ACCOUNT_CACHE_TTL"
            value = var.service_account_lookup.cache_ttl
          }

          port {
            name           = "https"
            container_port = 8443
          }

          resources {
            requests = var.resources.requests
            limits   = var.resources.limits
          }

          readiness_probe {
            http_get {
              path   = "/readyz"
              port   = "https"
              scheme = "HTTPS"
            }
            period_seconds = 5
          }

          liveness_probe {
            http_get {
              path   = "/healthz"
              port   = "https"
              scheme = "HTTPS"
            }
            period_seconds = 10
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            privileged                 = false
            capabilities {
              drop = ["ALL"]
            }
          }

          volume_mount {
            name       = "config"
            mount_path = "/etc/esi-webhook/config"
            read_only  = true
          }

          volume_mount {
            name       = "tls"
            mount_path = "/etc/esi-webhook/tls"
            read_only  = true
          }

          dynamic "volume_mount" {
            for_each = local.registry_credentials ? [1] : []
            content {
              name       = "registry-credentials"
              mount_path = local.registry_credentials_dir
              read_only  = true
            }
          }

          dynamic "volume_mount" {
            for_each = local.registry_ca ? [1] : []
            content {
              name       = "registry-ca"
              mount_path = local.registry_ca_dir
              read_only  = true
            }
          }
        }

        volume {
          name = "config"
          config_map {
            name = kubernetes_config_map_v1.config.metadata[0].name
          }
        }

        volume {
          name = "tls"
          secret {
            secret_name = kubernetes_secret_v1.tls.metadata[0].name
          }
        }

        dynamic "volume" {
          for_each = local.registry_credentials ? [1] : []
          content {
            name = "registry-credentials"
            # The Docker config alone, whatever else the Secret holds.
            secret {
              secret_name  = var.entrypoint_lookup.credentials_secret
              default_mode = "0440"
              items {
                key  = ".dockerconfigjson"
                path = "config.json"
              }
            }
          }
        }

        dynamic "volume" {
          for_each = local.registry_ca ? [1] : []
          content {
            name = "registry-ca"
            config_map {
              name = kubernetes_config_map_v1.registry_ca[0].metadata[0].name
            }
          }
        }
      }
    }
  }
}

resource "kubernetes_service_v1" "this" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }
  spec {
    selector = local.selector
    port {
      name        = "https"
      port        = 443
      target_port = "https"
    }
  }
}

resource "kubernetes_pod_disruption_budget_v1" "this" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }
  spec {
    min_available = "1"
    selector {
      match_labels = local.selector
    }
  }
}

resource "kubernetes_mutating_webhook_configuration_v1" "this" {
  metadata {
    name   = "${var.name}.esi.dev"
    labels = local.labels
  }

  webhook {
    name                      = "inject.esi.dev"
    admission_review_versions = ["v1"]
    side_effects              = "None"
    failure_policy            = "Fail"
    match_policy              = "Equivalent"
    timeout_seconds           = var.timeout_seconds
    # Never: the webhook marks injected Pods and leaves them alone on re-admission, so a
    # reinvocation after later webhooks would change nothing.
    reinvocation_policy = "Never"

    client_config {
      ca_bundle = tls_self_signed_cert.ca.cert_pem
      service {
        name      = kubernetes_service_v1.this.metadata[0].name
        namespace = local.namespace
        path      = "/mutate"
        port      = 443
      }
    }

    rule {
      operations   = ["CREATE"]
      api_groups   = [""]
      api_versions = ["v1"]
      resources    = ["pods"]
      scope        = "Namespaced"
    }

    # Opt-in per Pod: nothing else is ever sent to the webhook.
    object_selector {
      match_labels = {
        "esi.dev/inject" = "true"
      }
    }

    namespace_selector {
      match_expressions {
        key      = "kubernetes.io/metadata.name"
        operator = "NotIn"
        values   = distinct(concat(var.excluded_namespaces, [var.namespace]))
      }
    }
  }

  # Admissions need the Deployment up and, with ServiceAccount defaults, its permission.
  depends_on = [kubernetes_deployment_v1.this, kubernetes_cluster_role_binding_v1.service_accounts]
}
