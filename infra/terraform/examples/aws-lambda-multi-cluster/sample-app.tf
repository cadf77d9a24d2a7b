# An annotated workload in cluster A. The `esi.dev/inject` label sends the Pod to the webhook;
# the annotations say what to fetch and where to put it. The authoritative list of annotations
# is in webhook/README.md.

resource "kubernetes_namespace_v1" "payments" {
  provider = kubernetes.a

  metadata {
    name = "payments"
    labels = {
      "pod-security.kubernetes.io/enforce" = "restricted"
    }
  }
}

resource "kubernetes_service_account_v1" "api" {
  provider = kubernetes.a

  metadata {
    name      = "api"
    namespace = kubernetes_namespace_v1.payments.metadata[0].name
  }
  # esi-cli gets its own projected token with the federation audience; the app needs none.
  automount_service_account_token = false
}

resource "kubernetes_deployment_v1" "payments_api" {
  #checkov:skip=CKV_K8S_43:sample image is referenced by tag so the example needs no registry lookup; pin a digest in real deployments
  provider = kubernetes.a

  metadata {
    name      = "payments-api"
    namespace = kubernetes_namespace_v1.payments.metadata[0].name
  }

  spec {
    replicas = 2
    selector {
      match_labels = { app = "payments-api" }
    }

    template {
      metadata {
        labels = {
          app              = "payments-api"
          "esi.dev/inject" = "true" # opt in: only labelled Pods reach the webhook
        }
        annotations = {
          # Generators, as alias=namespace/kind/name.
          "esi.dev/generators" = "db=payments/VaultDynamicSecret/db,aws=payments/AWSAssumeRole/s3-reader"
          # Env vars from single keys, and every key of an alias.
          "esi.dev/env"      = "DATABASE_USER=db.username,DATABASE_PASSWORD=db.password"
          "esi.dev/env-from" = "aws"
          # Re-issue before expiry and revoke when the Pod ends.
          "esi.dev/refresh"        = "true"
          "esi.dev/revoke-on-exit" = "true"
        }
      }

      spec {
        service_account_name            = kubernetes_service_account_v1.api.metadata[0].name
        automount_service_account_token = false

        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name              = "api"
          image             = var.sample_app_image
          image_pull_policy = "Always"
          # An explicit command: the webhook rewrites it to `esi-cli exec -- <command>`.
          command = ["sh", "-c", "echo \"connected as $DATABASE_USER\"; exec sleep 3600"]

          resources {
            requests = { cpu = "10m", memory = "16Mi" }
            limits   = { cpu = "100m", memory = "64Mi" }
          }

          liveness_probe {
            exec {
              command = ["true"]
            }
          }

          readiness_probe {
            exec {
              command = ["true"]
            }
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            privileged                 = false
            capabilities {
              drop = ["ALL"]
            }
          }
        }
      }
    }
  }

  # The webhook must be in place before the first Pod is created.
  depends_on = [module.webhook_a]
}
