//! The federation's own resource kinds: `Cluster` and `Authorization`.
//!
//! Each is a kube `CustomResource` so that the CRD YAML and the file format come from the same
//! type. Generator kinds and `SecretStore` live in `esi-backends`.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A remote Kubernetes cluster, registered by its ServiceAccount token issuer.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "Cluster",
    status = "esi_backends::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// The exact `iss` of the cluster's ServiceAccount tokens (`kubectl get --raw
    /// /.well-known/openid-configuration | jq -r .issuer`).
    pub issuer: String,
    /// Where the verification keys come from. Defaults to OIDC discovery when the issuer is an
    /// `https://` URL.
    #[serde(default)]
    pub keys: Option<KeySource>,
    /// PEM bundle trusted for the discovery and JWKS fetches (instead of the system roots).
    #[serde(default)]
    pub ca_bundle: Option<String>,
    /// Accepted `aud` values; a token must carry at least one of them.
    pub audiences: Vec<String>,
    /// Signature algorithms accepted from this cluster (default `RS256`, `ES256`).
    #[serde(default)]
    pub algorithms: Option<Vec<Algorithm>>,
    /// Clock-skew allowances (Vault-like defaults).
    #[serde(default)]
    pub leeway: Option<Leeway>,
}

/// Where a cluster's keys come from: exactly one field set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySource {
    /// OIDC discovery at `{issuer}/.well-known/openid-configuration` (`discovery: {}`).
    #[serde(default)]
    pub discovery: Option<Discovery>,
    /// An explicit JWKS URL (`kubectl get --raw /openid/v1/jwks` is served here).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// An inline JWKS document, for private clusters whose issuer is not reachable.
    #[serde(default)]
    #[schemars(schema_with = "any_object")]
    pub jwks: Option<serde_json::Value>,
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Marker for OIDC discovery; it has no fields today.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Discovery {}

/// Allowances for clocks that disagree, as humantime durations (`150s`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Leeway {
    /// Accept a token this long after its `exp` (default 150s).
    #[serde(default)]
    pub expiration: Option<String>,
    /// Accept a token this long before its `nbf` (default 150s).
    #[serde(default)]
    pub not_before: Option<String>,
    /// Accept an `iat` this far in the future (default 60s).
    #[serde(default)]
    pub issued_at: Option<String>,
}

/// Asymmetric JWS algorithms the federation verifies. `none` and HMAC are not representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (Kubernetes' default).
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
}

impl Algorithm {
    /// Every supported algorithm.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::ES256,
        Algorithm::ES384,
    ];

    /// The JOSE name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
        }
    }

    /// Parses a JOSE `alg`; `None` for anything not supported (including `none` and `HS*`).
    pub fn parse(alg: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == alg)
    }

    /// Bit for an [`AlgorithmSet`].
    pub const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A small set of algorithms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlgorithmSet(u8);

impl AlgorithmSet {
    /// Whether `alg` is in the set.
    pub fn contains(self, alg: Algorithm) -> bool {
        self.0 & alg.bit() != 0
    }

    /// Adds `alg`.
    pub fn insert(&mut self, alg: Algorithm) {
        self.0 |= alg.bit();
    }
}

impl FromIterator<Algorithm> for AlgorithmSet {
    fn from_iter<I: IntoIterator<Item = Algorithm>>(iter: I) -> Self {
        let mut set = AlgorithmSet::default();
        for alg in iter {
            set.insert(alg);
        }
        set
    }
}

/// Who may use which generators. Deny by default: a request is allowed only when some
/// Authorization has a subject matching the caller and a generator pattern matching the target.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "Authorization",
    status = "esi_backends::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationSpec {
    /// The callers this rule covers; any one matching is enough.
    pub subjects: Vec<Subject>,
    /// Generators the subjects may call, as `namespace/kind/name` with `*`/`?` globs.
    pub generators: Vec<String>,
    /// The longest credential lifetime handed out under this rule (`1h`); generators that can
    /// choose a TTL ask for no more.
    #[serde(default, rename = "maxTTL")]
    pub max_ttl: Option<String>,
    /// Per-subject request rate limit, enforced by each federation instance on its own.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// One caller pattern; every field given must match. Fields left out match anything, but at
/// least one must constrain (a subject matching every workload of every cluster is rejected).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subject {
    /// Cluster names (globs).
    #[serde(default)]
    pub clusters: Option<Vec<String>>,
    /// A label selector over Cluster labels.
    #[serde(default)]
    pub cluster_selector: Option<LabelSelector>,
    /// Namespaces (globs).
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    /// ServiceAccount names (globs).
    #[serde(default)]
    pub service_accounts: Option<Vec<String>>,
}

/// A Kubernetes-style label selector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based selector requirement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: SelectorOperator,
    /// Values for `In`/`NotIn`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// Selector operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is not one of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// A token-bucket rate limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Burst size (default: `perMinute`, at least 1).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Parses a humantime duration, naming the field at fault.
pub(crate) fn parse_duration(field: &str, value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("{field}: {value:?} is not a duration ({e}); use e.g. 90s, 15m, 1h"))
}
