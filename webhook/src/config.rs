//! The webhook's configuration: injection policy (federation URLs, audiences, token lifetime
//! bounds, the esi-cli image and its resources, excluded namespaces) read from a YAML file,
//! with every field defaulted so an empty file is a valid (if unhelpful) configuration.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read webhook config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML does not match the schema.
    #[error("invalid webhook config {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid webhook config: {0}")]
    Invalid(String),
}

/// Injection policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Where esi-cli reaches the federation.
    pub federation: FederationConfig,
    /// The projected ServiceAccount token esi-cli presents.
    pub token: TokenConfig,
    /// The esi-cli containers the webhook adds.
    pub cli: CliConfig,
    /// Namespaces whose Pods are never mutated (admitted unchanged, with a warning). The
    /// `MutatingWebhookConfiguration`'s `namespaceSelector` should exclude them too.
    pub excluded_namespaces: Vec<String>,
    /// Where `esi-init` goes among existing init containers: `first` (default; required when
    /// init containers get credentials) or `last` (after a service mesh's init containers).
    pub init_container_position: InitPosition,
    /// Reading the entrypoint of a container without `command` from its image's configuration
    /// in the registry (off unless registries are listed).
    pub entrypoint_lookup: EntrypointLookupConfig,
}

/// Reading images' entrypoints from their registries, for containers that get env vars and
/// have no `command` (without it, or when it fails, such a Pod needs
/// `esi.dev/entrypoint.<container>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EntrypointLookupConfig {
    /// The registries (`host` or `host:port` as the image reference names it, `docker.io` for
    /// Docker Hub; `*` matches any run of characters, e.g. `*.dkr.ecr.*.amazonaws.com`) the
    /// webhook may read image configurations from. Empty (the default): no lookup. A Pod names
    /// its images, so the list keeps it from making the webhook call arbitrary hosts.
    pub registries: Vec<String>,
    /// Bound on one admission's lookups, seconds (the webhook configuration gives the whole
    /// admission 5).
    pub timeout_seconds: u64,
    /// How long a tag's entrypoint is reused, seconds; an image pinned by digest is reused for
    /// as long as the webhook runs (bounded in number).
    pub cache_seconds: u64,
    /// A Docker `config.json` (the `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson`
    /// Secret) with credentials for private registries, read at each lookup; anonymous
    /// otherwise. The Pod's own `imagePullSecrets` are never read.
    pub credentials_file: Option<String>,
    /// A PEM bundle trusted for registries in addition to the system roots.
    pub ca_file: Option<String>,
    /// The platforms (`os/architecture[/variant]`, e.g. `linux/amd64`) the cluster's nodes
    /// run. A Pod gets the command an image index's images agree on for those its
    /// `nodeSelector` and required node affinity allow (or for the platforms it pins itself),
    /// and is denied when they differ.
    /// Empty (the default): the webhook's own platform.
    pub platforms: Vec<String>,
}

impl Default for EntrypointLookupConfig {
    fn default() -> Self {
        Self {
            registries: Vec::new(),
            timeout_seconds: 2,
            cache_seconds: 600,
            credentials_file: None,
            ca_file: None,
            platforms: Vec::new(),
        }
    }
}

impl EntrypointLookupConfig {
    /// Whether lookups are on.
    pub fn enabled(&self) -> bool {
        !self.registries.is_empty()
    }

    /// `platforms`, read; the webhook's own when there are none.
    pub fn platforms(&self) -> Result<Vec<crate::entrypoint::Platform>, String> {
        if self.platforms.is_empty() {
            return Ok(vec![crate::entrypoint::Platform::own()]);
        }
        let mut out: Vec<crate::entrypoint::Platform> = Vec::new();
        for p in &self.platforms {
            let platform = p.parse()?;
            if out.contains(&platform) {
                return Err(format!("{p} is listed twice"));
            }
            out.push(platform);
        }
        Ok(out)
    }

    /// Whether images of `registry` may be looked up.
    pub fn registry_allowed(&self, registry: &str) -> bool {
        self.registries
            .iter()
            .any(|pattern| wildmatch::WildMatch::new(pattern).matches(registry))
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            federation: FederationConfig::default(),
            token: TokenConfig::default(),
            cli: CliConfig::default(),
            excluded_namespaces: vec![
                "kube-system".into(),
                "kube-public".into(),
                "kube-node-lease".into(),
            ],
            init_container_position: InitPosition::First,
            entrypoint_lookup: EntrypointLookupConfig::default(),
        }
    }
}

/// Position of the `esi-init` container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InitPosition {
    /// Before every existing init container.
    First,
    /// After every existing init container.
    Last,
}

/// The federation esi-cli calls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FederationConfig {
    /// URL used when a Pod does not name one; always allowed.
    pub default_url: Option<String>,
    /// Further URLs Pods may name with `esi.dev/federation-url` (exact match after removing a
    /// trailing `/`). Anything else is denied, so annotations cannot point esi-cli (and the
    /// Pod's token) at an arbitrary server.
    pub allowed_urls: Vec<String>,
    /// Allow `http://` URLs (tests and loopback only).
    pub allow_http: bool,
    /// PEM bundle esi-cli trusts for the federation, in addition to the system roots.
    pub ca_pem: Option<String>,
}

/// The projected token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Audience used when a Pod does not name one; always allowed.
    pub audience: String,
    /// Further audiences Pods may request with `esi.dev/token-audience`.
    pub allowed_audiences: Vec<String>,
    /// Lifetime used when a Pod does not say (seconds).
    pub expiration_seconds: i64,
    /// Shortest lifetime a Pod may ask for (at least 600, Kubernetes' minimum).
    pub min_expiration_seconds: i64,
    /// Longest lifetime a Pod may ask for.
    pub max_expiration_seconds: i64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            audience: "esi".into(),
            allowed_audiences: Vec::new(),
            expiration_seconds: 600,
            min_expiration_seconds: 600,
            max_expiration_seconds: 3600,
        }
    }
}

/// The esi-cli containers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CliConfig {
    /// The esi-cli image (pin it by digest in production).
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
    /// Path of the binary inside the image.
    pub binary_path: String,
    /// Resource requests of the esi-cli containers (`cpu`, `memory`).
    pub requests: BTreeMap<String, String>,
    /// Resource limits of the esi-cli containers.
    pub limits: BTreeMap<String, String>,
}

impl Default for CliConfig {
    fn default() -> Self {
        Self {
            image: "ghcr.io/esi-dev/esi-cli:0.1.0".into(),
            image_pull_policy: "IfNotPresent".into(),
            binary_path: esi_api::inject::IMAGE_BINARY_PATH.into(),
            requests: [
                ("cpu".to_owned(), "10m".to_owned()),
                ("memory".to_owned(), "16Mi".to_owned()),
            ]
            .into(),
            limits: [
                ("cpu".to_owned(), "100m".to_owned()),
                ("memory".to_owned(), "32Mi".to_owned()),
            ]
            .into(),
        }
    }
}

impl WebhookConfig {
    /// Reads and validates a YAML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: shown,
                message,
            },
            other => other,
        })
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
                path: "<inline>".into(),
                message: e.to_string(),
            })?
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.token;
        if t.min_expiration_seconds < esi_api::inject::MIN_TOKEN_EXPIRATION_SECONDS {
            return Err(ConfigError::Invalid(format!(
                "token.minExpirationSeconds {} is below Kubernetes' minimum of 600",
                t.min_expiration_seconds
            )));
        }
        if t.max_expiration_seconds < t.min_expiration_seconds
            || !(t.min_expiration_seconds..=t.max_expiration_seconds)
                .contains(&t.expiration_seconds)
        {
            return Err(ConfigError::Invalid(
                "token.expirationSeconds must lie within minExpirationSeconds..=maxExpirationSeconds".into(),
            ));
        }
        if t.audience.is_empty() {
            return Err(ConfigError::Invalid(
                "token.audience must not be empty".into(),
            ));
        }
        for url in self
            .federation
            .default_url
            .iter()
            .chain(&self.federation.allowed_urls)
        {
            let ok = url.starts_with("https://")
                || (self.federation.allow_http && url.starts_with("http://"));
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "federation URL {url:?} must be https:// (or set federation.allowHttp)"
                )));
            }
        }
        if !["Always", "IfNotPresent", "Never"].contains(&self.cli.image_pull_policy.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "cli.imagePullPolicy {:?} must be Always, IfNotPresent or Never",
                self.cli.image_pull_policy
            )));
        }
        if self.cli.image.is_empty() || !self.cli.binary_path.starts_with('/') {
            return Err(ConfigError::Invalid(
                "cli.image must be set and cli.binaryPath absolute".into(),
            ));
        }
        for (kind, map) in [
            ("requests", &self.cli.requests),
            ("limits", &self.cli.limits),
        ] {
            for (resource, quantity) in map {
                esi_api::inject::parse_quantity(quantity)
                    .map_err(|e| ConfigError::Invalid(format!("cli.{kind}.{resource}: {e}")))?;
            }
        }
        if let Some(resource) =
            esi_api::inject::request_above_limit(&self.cli.requests, &self.cli.limits)
        {
            let (request, limit) = (&self.cli.requests[resource], &self.cli.limits[resource]);
            return Err(ConfigError::Invalid(format!(
                "cli.requests.{resource} {request} is more than cli.limits.{resource} {limit}"
            )));
        }
        let lookup = &self.entrypoint_lookup;
        if !(1..=4).contains(&lookup.timeout_seconds) {
            return Err(ConfigError::Invalid(format!(
                "entrypointLookup.timeoutSeconds {} must be 1 to 4 (the whole admission has 5)",
                lookup.timeout_seconds
            )));
        }
        if let Some(bad) = lookup
            .registries
            .iter()
            .find(|r| r.is_empty() || r.contains(['/', ' ']) || r.contains("://"))
        {
            return Err(ConfigError::Invalid(format!(
                "entrypointLookup.registries: {bad:?} is not a registry host (host or host:port, `*` as a wildcard, no scheme or path)"
            )));
        }
        lookup
            .platforms()
            .map_err(|e| ConfigError::Invalid(format!("entrypointLookup.platforms: {e}")))?;
        for (field, path) in [
            ("credentialsFile", &lookup.credentials_file),
            ("caFile", &lookup.ca_file),
        ] {
            if path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                return Err(ConfigError::Invalid(format!(
                    "entrypointLookup.{field} must be an absolute path"
                )));
            }
        }
        Ok(())
    }

    /// Whether `url` (normalized without trailing `/`) may be used.
    pub fn url_allowed(&self, url: &str) -> bool {
        let norm = |u: &str| u.trim_end_matches('/').to_owned();
        let url = norm(url);
        self.federation
            .default_url
            .iter()
            .chain(&self.federation.allowed_urls)
            .any(|a| norm(a) == url)
    }

    /// Whether `aud` may be requested.
    pub fn audience_allowed(&self, aud: &str) -> bool {
        self.token.audience == aud || self.token.allowed_audiences.iter().any(|a| a == aud)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults_and_unknown_fields_fail() {
        assert_eq!(
            WebhookConfig::from_yaml("").unwrap(),
            WebhookConfig::default()
        );
        let e = WebhookConfig::from_yaml("federation:\n  defaultURL: https://x\n").unwrap_err();
        assert!(e.to_string().contains("defaultURL"), "{e}");
    }

    #[test]
    fn rejects_out_of_range_values() {
        for (yaml, want) in [
            ("token: {minExpirationSeconds: 60}", "600"),
            ("token: {expirationSeconds: 99999}", "within"),
            ("federation: {defaultUrl: 'http://x'}", "https"),
            ("cli: {imagePullPolicy: Sometimes}", "imagePullPolicy"),
            ("entrypointLookup: {timeoutSeconds: 5}", "1 to 4"),
            ("entrypointLookup: {timeoutSeconds: 0}", "1 to 4"),
            (
                "entrypointLookup: {registries: ['https://ghcr.io']}",
                "not a registry host",
            ),
            (
                "entrypointLookup: {registries: ['ghcr.io/team']}",
                "not a registry host",
            ),
            (
                "entrypointLookup: {registries: ['']}",
                "not a registry host",
            ),
            (
                "entrypointLookup: {caFile: ca.crt}",
                "caFile must be an absolute path",
            ),
            (
                "entrypointLookup: {credentialsFile: x}",
                "credentialsFile must be",
            ),
            ("entrypointLookup: {registry: [ghcr.io]}", "registry"),
            (
                "entrypointLookup: {platforms: [amd64]}",
                "entrypointLookup.platforms: \"amd64\" is not a platform",
            ),
            (
                "entrypointLookup: {platforms: [Linux/AMD64]}",
                "\"Linux/AMD64\" is not a platform",
            ),
            (
                "entrypointLookup: {platforms: [linux/arm/v7/x]}",
                "is not a platform",
            ),
            (
                "entrypointLookup: {platforms: ['linux//v7']}",
                "is not a platform",
            ),
            (
                "entrypointLookup: {platforms: [linux/amd64, linux/amd64]}",
                "linux/amd64 is listed twice",
            ),
            (
                "cli: {limits: {memory: 32MB}}",
                "cli.limits.memory: \"32MB\" is not a Kubernetes quantity",
            ),
            (
                "cli: {requests: {cpu: '-10m'}}",
                "cli.requests.cpu: \"-10m\" is negative",
            ),
            (
                "cli: {requests: {memory: 64Mi}}",
                "cli.requests.memory 64Mi is more than cli.limits.memory 32Mi",
            ),
            (
                "cli: {requests: {cpu: '1'}, limits: {cpu: 500m}}",
                "cli.requests.cpu 1 is more than cli.limits.cpu 500m",
            ),
        ] {
            let e = WebhookConfig::from_yaml(yaml).unwrap_err();
            assert!(e.to_string().contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn parses_a_full_config() {
        let cfg = WebhookConfig::from_yaml(
            "federation:\n  defaultUrl: https://esi.example.com\n  allowedUrls: [https://esi-eu.example.com/]\n\
             token: {audience: esi, allowedAudiences: [esi-eu], expirationSeconds: 900}\n\
             cli: {image: 'reg/esi-cli@sha256:abc', requests: {cpu: 5m}}\n\
             excludedNamespaces: [kube-system, esi-system]\ninitContainerPosition: last\n",
        )
        .unwrap();
        assert!(cfg.url_allowed("https://esi-eu.example.com"));
        assert!(cfg.url_allowed("https://esi.example.com/"));
        assert!(!cfg.url_allowed("https://evil.example.com"));
        assert!(cfg.audience_allowed("esi-eu") && !cfg.audience_allowed("sts.amazonaws.com"));
        assert_eq!(cfg.init_container_position, InitPosition::Last);
        assert!(!cfg.entrypoint_lookup.enabled());
        let with_lookup = WebhookConfig::from_yaml(
            "entrypointLookup: {registries: [ghcr.io, 'registry.internal:5000', '*.dkr.ecr.*.amazonaws.com']}\n",
        )
        .unwrap();
        let lookup = &with_lookup.entrypoint_lookup;
        assert!(lookup.enabled() && lookup.timeout_seconds == 2 && lookup.cache_seconds == 600);
        assert_eq!(
            lookup.platforms().unwrap(),
            [crate::entrypoint::Platform::own()]
        );
        let mixed = WebhookConfig::from_yaml(
            "entrypointLookup: {registries: [ghcr.io], platforms: [linux/amd64, linux/arm/v7]}\n",
        )
        .unwrap();
        let platforms = mixed.entrypoint_lookup.platforms().unwrap();
        assert_eq!(
            platforms
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["linux/amd64", "linux/arm/v7"]
        );
        assert_eq!(platforms[1].variant.as_deref(), Some("v7"));
        for (registry, allowed) in [
            ("ghcr.io", true),
            ("registry.internal:5000", true),
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", true),
            ("ghcr.io.evil.example", false),
            ("registry.internal", false),
            ("docker.io", false),
        ] {
            assert_eq!(lookup.registry_allowed(registry), allowed, "{registry}");
        }
        assert_eq!(cfg.cli.requests["cpu"], "5m");
    }
}
