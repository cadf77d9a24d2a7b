variable "name" {
  description = "Name of the Deployment, Service and related objects."
  type        = string
  default     = "esi-federation"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?$", var.name))
    error_message = "The name must be a DNS-1123 label of at most 52 characters."
  }
}

variable "namespace" {
  description = "Namespace of the federation."
  type        = string
  default     = "esi-system"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace)) && var.namespace != "default"
    error_message = "The namespace must be a DNS-1123 label other than `default`."
  }
}

variable "create_namespace" {
  description = "Create the namespace (false when it is managed elsewhere)."
  type        = bool
  default     = true
}

variable "image" {
  description = "The esi-federation image, pinned by digest: `registry/name@sha256:<64 hex>` (a tag may precede the digest). Every replica and every cluster then runs the same build."
  type        = string

  validation {
    condition     = can(regex("^[^\\s@]+@sha256:[0-9a-f]{64}$", var.image))
    error_message = "Pin the image by digest: `registry/name[:tag]@sha256:<64 hex digits>`."
  }
}

variable "config_source" {
  description = "Where the federation reads its configuration: `configmap` (the rendered manifests mounted as files, reloaded when the ConfigMap changes) or `crd` (the esi.dev custom resources, listed and watched through the API server; invalid resources are reported in their status and ignored)."
  type        = string
  default     = "configmap"

  validation {
    condition     = contains(["configmap", "crd"], var.config_source)
    error_message = "The config_source must be configmap or crd."
  }
}

variable "install_crds" {
  description = "Apply the esi.dev CRDs from `crds_dir` (needed for config_source = crd; with kubernetes_manifest the CRDs must exist before the resources that use them are planned: apply once with `-target` on the CRDs, see infra/README.md)."
  type        = bool
  default     = false
}

variable "crds_dir" {
  description = "Folder of the generated CRD YAML files. Null means the repository's deploy/crds."
  type        = string
  default     = null
}

variable "replicas" {
  description = "Minimum replicas: the HPA's floor and the Deployment's first replica count. After that the HPA owns the count (the Deployment ignores changes to `replicas`; raising this raises the floor). Two or more: replicas are stateless and interchangeable."
  type        = number
  default     = 2

  validation {
    condition     = var.replicas >= 2
    error_message = "Run at least 2 replicas: a single one makes every rollout and node drain an outage for Pod starts in every cluster."
  }
}

variable "max_replicas" {
  description = "The HPA's ceiling."
  type        = number
  default     = 10

  validation {
    condition     = var.max_replicas >= 2
    error_message = "The max_replicas must be at least 2."
  }
}

variable "target_cpu_utilization" {
  description = "Average CPU utilization (percent of requests) the HPA keeps."
  type        = number
  default     = 70

  validation {
    condition     = var.target_cpu_utilization > 0 && var.target_cpu_utilization <= 100
    error_message = "The target_cpu_utilization must be between 1 and 100."
  }
}

variable "resources" {
  description = "Container resources."
  type = object({
    requests = map(string)
    limits   = map(string)
  })
  default = {
    requests = { cpu = "100m", memory = "64Mi" }
    limits   = { cpu = "1", memory = "256Mi" }
  }
}

variable "service_type" {
  description = "Service type: `ClusterIP` behind an Ingress/Gateway that terminates TLS, or `LoadBalancer` / `NodePort`, which reach the federation from outside the cluster and so need `tls_secret_name` (the federation serves HTTPS) or `tls_terminated_upstream = true`."
  type        = string
  default     = "ClusterIP"

  validation {
    condition     = contains(["ClusterIP", "LoadBalancer", "NodePort"], var.service_type)
    error_message = "The service_type must be ClusterIP, LoadBalancer or NodePort."
  }

  # ServiceAccount tokens are bearer credentials: a Service reachable from outside the cluster
  # must not carry them in cleartext.
  validation {
    condition     = var.service_type == "ClusterIP" || var.tls_secret_name != null || var.tls_terminated_upstream
    error_message = "A LoadBalancer or NodePort Service without tls_secret_name would carry ServiceAccount tokens in cleartext: set tls_secret_name so the federation serves HTTPS, or tls_terminated_upstream = true if a load balancer in front of it terminates TLS."
  }
}

variable "tls_secret_name" {
  description = "Optional `kubernetes.io/tls` Secret (in `namespace`) for the federation to serve HTTPS itself; it reloads the files when the Secret rotates. Null serves plain HTTP for a TLS-terminating Ingress (or, with `tls_terminated_upstream`, load balancer)."
  type        = string
  default     = null
}

variable "tls_terminated_upstream" {
  description = "Declares that TLS is terminated in front of a `LoadBalancer` or `NodePort` Service (e.g. a cloud load balancer with a certificate), which then may serve plain HTTP without `tls_secret_name`. Leave false otherwise: tokens would travel in cleartext."
  type        = bool
  default     = false
}

variable "lease_key_rotation" {
  description = "Generation of the lease-sealing key (key id `k<generation>`). Change it to generate a new key; leases sealed with the old one stop opening (cannot be revoked) unless it is kept in `previous_lease_keys`."
  type        = string
  default     = "1"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,31}$", var.lease_key_rotation))
    error_message = "The lease_key_rotation must be 1-31 characters of [A-Za-z0-9_-] (it becomes part of the key id)."
  }
}

variable "previous_lease_keys" {
  description = "Older lease-sealing keys as `id=base64` (a line of the lease keys Secret, e.g. the previous `k1=...`), still accepted for opening (revocation) after a rotation; new leases are sealed with the current key only. Keep one until every lease it sealed has expired. Read the old entry from the Secret before rotating: `kubectl get secret <name>-lease-keys -o jsonpath='{.data.keys}' | base64 -d`."
  type        = list(string)
  default     = []
  sensitive   = true

  validation {
    condition     = alltrue([for k in var.previous_lease_keys : can(regex("^[A-Za-z0-9_-]{1,32}=[A-Za-z0-9+/]{43}=$", k))])
    error_message = "Each previous lease key must be `id=base64` with the standard base64 text of 32 bytes."
  }

  # The federation refuses a key ring that names an id twice, and would not start.
  validation {
    condition     = length(distinct([for k in var.previous_lease_keys : split("=", k)[0]])) == length(var.previous_lease_keys) && !contains([for k in var.previous_lease_keys : split("=", k)[0]], "k${var.lease_key_rotation}")
    error_message = "Previous lease key ids must be distinct and differ from the current key id `k<lease_key_rotation>`."
  }
}

# The federation as an OIDC issuer (optional): relying parties (AWS IAM, Google workload
# identity federation, Entra ID) trust `issuer_url` once, and `IdentityToken` generators hand
# workloads tokens signed with `issuer_keys_pem` (federation-fn/README.md, "The federation as an
# OIDC issuer").

variable "issuer_url" {
  description = "Make the federation an OIDC issuer at this public `https://` URL (`ESI_ISSUER_URL`): its discovery document (`/.well-known/openid-configuration`) and keys (`/openid/v1/jwks`) are served there, and `IdentityToken` generators sign with `issuer_keys_pem`. Expose both paths without authentication at that URL (the Ingress or Gateway in front): relying parties fetch them anonymously. Relying parties trust this exact string, so changing it breaks every trust set up on it. Null: no issuer."
  type        = string
  default     = null

  validation {
    condition     = var.issuer_url == null || can(regex("^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$", var.issuer_url))
    error_message = "The issuer_url must be an https URL (relying parties fetch the issuer's keys from it over TLS): https://host[:port][/path], without query, fragment or credentials."
  }

  validation {
    condition     = (var.issuer_url == null) == (var.issuer_keys_pem == null)
    error_message = "Set issuer_url and issuer_keys_pem together, or neither: an issuer needs its signing keys, and the keys are published under the issuer URL."
  }
}

variable "issuer_keys_pem" {
  description = "The issuer's signing keys, PEM private keys one after the other (RSA of 2048 bits or more, or EC P-256; PKCS#8, PKCS#1 or SEC1). Make one with `esi-federation issuer-key`. The first key signs; every key is published in the JWKS (at most 8). Kept in the Secret `<name>-issuer-keys`, mounted as a file (`ESI_ISSUER_KEYS_FILE`), and in Terraform state; the Pods roll when it changes. Rotation: append the new key and apply (published, not signing); after relying parties' caches have expired (the JWKS says 5 minutes, but relying parties such as AWS keep their own copies for as long as they choose: a day is a safe wait), move it first and apply (it signs); once the last token signed by the old key has expired, drop the old key and apply."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.issuer_keys_pem == null || (length(regexall("-----BEGIN [A-Z ]*PRIVATE KEY-----", coalesce(var.issuer_keys_pem, "-"))) >= 1 && length(regexall("-----BEGIN [A-Z ]*PRIVATE KEY-----", coalesce(var.issuer_keys_pem, "-"))) <= 8)
    error_message = "The issuer_keys_pem must hold 1 to 8 PEM private keys (`-----BEGIN PRIVATE KEY-----` blocks, as `esi-federation issuer-key` prints them)."
  }
}

variable "environment" {
  description = "Extra environment variables (how SecretStores find their credentials)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.environment) : can(regex("^[A-Za-z_][A-Za-z0-9_]*$", k)) && !startswith(k, "ESI_")])
    error_message = "Environment names must be identifiers and must not start with ESI_ (reserved for the module)."
  }
}

variable "cluster_manifests" {
  description = "`Cluster` manifests (YAML), usually the `manifest` outputs of modules/cluster."
  type        = list(string)
  default     = []
}

variable "secret_stores" {
  description = "SecretStores keyed `namespace/name`; see modules/federation-config."
  type        = any
  default     = {}
}

variable "generators" {
  description = "Generators keyed `namespace/name`, each `{ kind, spec }`; see modules/federation-config."
  type        = any
  default     = {}
}

variable "authorizations" {
  description = "Authorizations keyed by name, each the manifest `spec`; see modules/federation-config."
  type        = any
  default     = {}
}

variable "extra_manifests" {
  description = "Further esi manifests (YAML, one document each) appended to the configuration."
  type        = list(string)
  default     = []
}

variable "labels" {
  description = "Extra labels on every object."
  type        = map(string)
  default     = {}
}
