# The central federation as a Kubernetes Deployment, the same objects as deploy/federation
# (kustomize base) but with the configuration rendered from module inputs. Replicas are
# stateless: the lease-sealing key is shared through one Secret, nothing else is.
#
# Server settings are flags and environment variables of `esi-federation serve`: ESI_LISTEN,
# ESI_CONFIG (folder of manifests), ESI_CONFIG_SOURCE=kubernetes (CRD mode),
# `--lease-keys-file` (mounted from a Secret, never an env var), ESI_TLS_CERT / ESI_TLS_KEY,
# ESI_LOG_FORMAT, and as an OIDC issuer ESI_ISSUER_URL with ESI_ISSUER_KEYS_FILE (mounted from a
# Secret too).

locals {
  crds_dir = coalesce(var.crds_dir, "${path.module}/../../../../deploy/crds")
  labels = merge({
    "app.kubernetes.io/name"       = "esi-federation"
    "app.kubernetes.io/instance"   = var.name
    "app.kubernetes.io/part-of"    = "esi"
    "app.kubernetes.io/managed-by" = "terraform"
  }, var.labels)
  selector = {
    "app.kubernetes.io/name"     = "esi-federation"
    "app.kubernetes.io/instance" = var.name
  }
  namespace = var.create_namespace ? kubernetes_namespace_v1.this[0].metadata[0].name : var.namespace
  tls       = var.tls_secret_name != null
  issuer    = var.issuer_url != null
  # Where the issuer's keys are mounted (ESI_ISSUER_KEYS_FILE).
  issuer_keys_dir = "/etc/esi/issuer-keys"

  env = merge(var.environment, {
    ESI_LISTEN     = "0.0.0.0:8080"
    ESI_LOG_FORMAT = "json"
    }, var.config_source == "configmap" ? {
    ESI_CONFIG = "/etc/esi/config"
    } : {
    ESI_CONFIG_SOURCE = "kubernetes"
    }, local.tls ? {
    ESI_TLS_CERT = "/etc/esi/tls/tls.crt"
    ESI_TLS_KEY  = "/etc/esi/tls/tls.key"
    } : {}, local.issuer ? {
    ESI_ISSUER_URL       = var.issuer_url
    ESI_ISSUER_KEYS_FILE = "${local.issuer_keys_dir}/keys"
  } : {})
}

module "config" {
  source = "../federation-config"

  cluster_manifests = var.cluster_manifests
  secret_stores     = var.secret_stores
  generators        = var.generators
  authorizations    = var.authorizations
  extra_manifests   = var.extra_manifests
}

resource "kubernetes_namespace_v1" "this" {
  count = var.create_namespace ? 1 : 0

  metadata {
    name   = var.namespace
    labels = merge(local.labels, { "pod-security.kubernetes.io/enforce" = "restricted" })
  }
}

# ---------------------------------------------------------------------------------------------
# Configuration: a ConfigMap of manifests, or the CRDs and custom resources.

resource "kubernetes_config_map_v1" "config" {
  count = var.config_source == "configmap" ? 1 : 0

  metadata {
    name      = "${var.name}-config"
    namespace = local.namespace
    labels    = local.labels
  }
  data = module.config.files
}

resource "kubernetes_manifest" "crd" {
  for_each = var.install_crds ? fileset(local.crds_dir, "*.yaml") : toset([])

  manifest = yamldecode(file("${local.crds_dir}/${each.value}"))
}

resource "kubernetes_manifest" "resource" {
  for_each = var.config_source == "crd" ? {
    for o in module.config.objects : "${o.kind}/${try(o.metadata.namespace, "")}/${o.metadata.name}" => o
  } : {}

  manifest = each.value

  depends_on = [kubernetes_manifest.crd]
}

# ---------------------------------------------------------------------------------------------
# Identity and RBAC: read the esi.dev resources (CRD mode) and report their status.

resource "kubernetes_service_account_v1" "this" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }
  # The API token is only needed to watch the CRDs.
  automount_service_account_token = var.config_source == "crd"
}

resource "kubernetes_cluster_role_v1" "this" {
  count = var.config_source == "crd" ? 1 : 0

  metadata {
    name   = "${var.name}-reader"
    labels = local.labels
  }
  rule {
    api_groups = ["esi.dev"]
    resources  = ["*"]
    verbs      = ["get", "list", "watch"]
  }
  rule {
    api_groups = ["esi.dev"]
    resources  = ["*/status"]
    verbs      = ["get", "patch", "update"]
  }
  rule {
    api_groups = [""]
    resources  = ["events"]
    verbs      = ["create", "patch"]
  }
}

resource "kubernetes_cluster_role_binding_v1" "this" {
  count = var.config_source == "crd" ? 1 : 0

  metadata {
    name   = "${var.name}-reader"
    labels = local.labels
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "ClusterRole"
    name      = kubernetes_cluster_role_v1.this[0].metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.this.metadata[0].name
    namespace = local.namespace
  }
}

# ---------------------------------------------------------------------------------------------
# Lease-sealing key, shared by every replica.

resource "random_bytes" "lease_key" {
  length  = 32
  keepers = { rotation = var.lease_key_rotation }
}

locals {
  lease_key_entries = concat(["k${var.lease_key_rotation}=${random_bytes.lease_key.base64}"], var.previous_lease_keys)
  # The key ids only (never key material), to roll the Pods when the ring changes: the
  # federation reads the file at start-up.
  lease_key_ids = nonsensitive(join(",", concat(["k${var.lease_key_rotation}"], [for k in var.previous_lease_keys : split("=", k)[0]])))
}

resource "kubernetes_secret_v1" "lease_keys" {
  metadata {
    name      = "${var.name}-lease-keys"
    namespace = local.namespace
    labels    = local.labels
  }
  data = {
    # `id=base64` entries, one per line; the first seals, all open (LeaseKeys::parse in
    # federation-fn/src/lease.rs): the current key, then the retired ones still to be opened.
    keys = join("", [for k in local.lease_key_entries : "${k}\n"])
  }
}

# ---------------------------------------------------------------------------------------------
# OIDC issuer signing keys (optional, with issuer_url), shared by every replica: the PEM text
# given by the operator, mounted as a file, never an env var.

resource "kubernetes_secret_v1" "issuer_keys" {
  count = local.issuer ? 1 : 0

  metadata {
    name      = "${var.name}-issuer-keys"
    namespace = local.namespace
    labels    = local.labels
  }
  data = {
    # PEM private keys; the first signs, all are published (esi_backends::identity::Issuer).
    keys = var.issuer_keys_pem
  }
}

locals {
  # The federation reads the keys at start-up, so the Pods must roll when they change. A
  # SHA-256 of the PEM text tells nothing about keys of 256 bits of entropy or more, and the
  # thumbprints (`kid`) relying parties see cannot be computed here.
  issuer_annotations = local.issuer ? {
    "esi.dev/issuer-keys-sha256" = nonsensitive(sha256(var.issuer_keys_pem))
  } : {}
}

# ---------------------------------------------------------------------------------------------
# Workload

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
        annotations = merge({
          # Roll the Pods when the configuration or the key ring changes (ConfigMap mode also
          # reloads in place; this keeps replicas from drifting).
          "esi.dev/config-sha256" = module.config.sha256
          "esi.dev/lease-key-gen" = var.lease_key_rotation
          "esi.dev/lease-key-ids" = local.lease_key_ids
        }, local.issuer_annotations)
      }

      spec {
        service_account_name            = kubernetes_service_account_v1.this.metadata[0].name
        automount_service_account_token = var.config_source == "crd"
        # Longer than the server's shutdown delay (5 s, `--shutdown-delay` below) plus its 20 s
        # drain after SIGTERM. The delay does what deploy/federation's preStop sleep does: the
        # provider has no `sleep` handler (terraform-provider-kubernetes#2837) and the
        # distroless image no `sleep` binary for `exec`.
        termination_grace_period_seconds = 30

        security_context {
          run_as_non_root = true
          run_as_user     = 65532
          run_as_group    = 65532
          fs_group        = 65532
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
          name              = "federation"
          image             = var.image
          image_pull_policy = "Always"
          args              = ["serve", "--lease-keys-file", "/etc/esi/lease-keys/keys", "--shutdown-delay", "5s"]

          port {
            name           = "http"
            container_port = 8080
          }

          dynamic "env" {
            for_each = local.env
            content {
              name  = env.key
              value = env.value
            }
          }

          resources {
            requests = var.resources.requests
            limits   = var.resources.limits
          }

          readiness_probe {
            http_get {
              path   = "/readyz"
              port   = "http"
              scheme = local.tls ? "HTTPS" : "HTTP"
            }
            period_seconds = 5
          }

          liveness_probe {
            http_get {
              path   = "/healthz"
              port   = "http"
              scheme = local.tls ? "HTTPS" : "HTTP"
            }
            period_seconds    = 10
            failure_threshold = 3
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
            name       = "lease-keys"
            mount_path = "/etc/esi/lease-keys"
            read_only  = true
          }

          dynamic "volume_mount" {
            for_each = var.config_source == "configmap" ? [1] : []
            content {
              name       = "config"
              mount_path = "/etc/esi/config"
              read_only  = true
            }
          }

          dynamic "volume_mount" {
            for_each = local.tls ? [1] : []
            content {
              name       = "tls"
              mount_path = "/etc/esi/tls"
              read_only  = true
            }
          }

          dynamic "volume_mount" {
            for_each = local.issuer ? [1] : []
            content {
              name       = "issuer-keys"
              mount_path = local.issuer_keys_dir
              read_only  = true
            }
          }
        }

        volume {
          name = "lease-keys"
          secret {
            secret_name  = kubernetes_secret_v1.lease_keys.metadata[0].name
            default_mode = "0440"
          }
        }

        dynamic "volume" {
          for_each = var.config_source == "configmap" ? [1] : []
          content {
            name = "config"
            config_map {
              name = kubernetes_config_map_v1.config[0].metadata[0].name
            }
          }
        }

        dynamic "volume" {
          for_each = local.tls ? [1] : []
          content {
            name = "tls"
            secret {
              secret_name = var.tls_secret_name
            }
          }
        }

        dynamic "volume" {
          for_each = local.issuer ? [1] : []
          content {
            name = "issuer-keys"
            secret {
              secret_name  = kubernetes_secret_v1.issuer_keys[0].metadata[0].name
              default_mode = "0440"
            }
          }
        }
      }
    }
  }

  # The HPA below (always created) owns the replica count once the Deployment exists;
  # `replicas` only sets the first rollout. Without this every apply would scale the
  # Deployment back to the minimum. A changed var.replicas still applies, as the HPA's floor.
  lifecycle {
    ignore_changes = [spec[0].replicas]
  }
}

resource "kubernetes_service_v1" "this" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }
  spec {
    type     = var.service_type
    selector = local.selector
    port {
      name        = local.tls ? "https" : "http"
      port        = local.tls ? 443 : 80
      target_port = "http"
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

resource "kubernetes_horizontal_pod_autoscaler_v2" "this" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }
  spec {
    min_replicas = var.replicas
    max_replicas = max(var.max_replicas, var.replicas)
    scale_target_ref {
      api_version = "apps/v1"
      kind        = "Deployment"
      name        = kubernetes_deployment_v1.this.metadata[0].name
    }
    metric {
      type = "Resource"
      resource {
        name = "cpu"
        target {
          type                = "Utilization"
          average_utilization = var.target_cpu_utilization
        }
      }
    }
  }
}
