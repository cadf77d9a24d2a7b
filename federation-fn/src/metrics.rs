//! Prometheus metrics of the federation: `esi_federation_<name>_<unit>[_total]`, labels only from
//! bounded sets (route templates, error codes, configured cluster names).
//!
//! The per-request series (route and result code) are looked up in their family once, on their
//! first use, and kept: a request bumps atomics instead of hashing its labels into a family's
//! map under its lock, which every core would otherwise share.

use std::sync::OnceLock;

use esi_api::ErrorCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The route template a request matched, as its `route` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteLabel {
    /// `POST /v1/generators/{namespace}/{kind}/{name}`.
    Generate,
    /// `POST /generators/{namespace}/{kind}/{name}` (External Secrets webhook shape).
    EseGenerate,
    /// `POST /v1/revoke`.
    Revoke,
    /// `GET /v1/whoami`.
    Whoami,
    /// `POST /v1/authorize`.
    Authorize,
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /metrics`.
    Metrics,
    /// The federation's OIDC discovery document and JWKS (when it is an issuer).
    Oidc,
    /// Anything else.
    Other,
}

impl RouteLabel {
    /// The label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteLabel::Generate => "generate",
            RouteLabel::EseGenerate => "ese_generate",
            RouteLabel::Revoke => "revoke",
            RouteLabel::Whoami => "whoami",
            RouteLabel::Authorize => "authorize",
            RouteLabel::Healthz => "healthz",
            RouteLabel::Readyz => "readyz",
            RouteLabel::Metrics => "metrics",
            RouteLabel::Oidc => "oidc",
            RouteLabel::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Index of a result code among the cached series: 0 for `ok`, then [`ErrorCode::ALL`]'s order.
fn code_index(code: Option<ErrorCode>) -> usize {
    code.and_then(|c| ErrorCode::ALL.iter().position(|&a| a == c))
        .map_or(0, |i| i + 1)
}

fn code_label(code: Option<ErrorCode>) -> &'static str {
    code.map_or("ok", ErrorCode::as_str)
}

const CODES: usize = 1 + ErrorCode::ALL.len();
/// `Other` is the last variant.
const ROUTES: usize = RouteLabel::Other as usize + 1;

/// Series of a family kept after their first lookup, by index.
struct Cached<M, const N: usize>([OnceLock<M>; N]);

impl<M: Clone, const N: usize> Cached<M, N> {
    fn new() -> Self {
        Cached(std::array::from_fn(|_| OnceLock::new()))
    }

    fn get(&self, index: usize, lookup: impl FnOnce() -> M) -> &M {
        self.0[index].get_or_init(lookup)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCode {
    route: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Decision {
    decision: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterResult {
    cluster: String,
    result: &'static str,
}

/// A `result` label alone (configuration reloads, undelivered credentials).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The federation's metric families and their registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteCode, Counter>,
    latency: Family<Route, Histogram, fn() -> Histogram>,
    decisions: Family<Decision, Counter>,
    jwks_fetches: Family<ClusterResult, Counter>,
    jwks_cache: Family<ClusterResult, Counter>,
    reloads: Family<ResultLabel, Counter>,
    undelivered: Family<ResultLabel, Counter>,
    config_loaded: Gauge,
    invalid_resources: Gauge,
    connections: esi_serving::ConnectionMetrics,
    /// `requests` by route and code: `ROUTES * CODES` entries.
    requests_by: Cached<Counter, { ROUTES * CODES }>,
    latency_by: Cached<Histogram, ROUTES>,
    /// `decisions` by code (`ok` is the allowed one).
    decisions_by: Cached<Counter, CODES>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~4 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("esi_federation");
        let requests = Family::<RouteCode, Counter>::default();
        let latency =
            Family::<Route, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let decisions = Family::<Decision, Counter>::default();
        let jwks_fetches = Family::<ClusterResult, Counter>::default();
        let jwks_cache = Family::<ClusterResult, Counter>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        let undelivered = Family::<ResultLabel, Counter>::default();
        let config_loaded = Gauge::default();
        let invalid_resources = Gauge::default();
        registry.register(
            "requests",
            "HTTP requests by route template and result code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "HTTP request latency by route template",
            latency.clone(),
        );
        registry.register(
            "decisions",
            "Authorization decisions by outcome and code",
            decisions.clone(),
        );
        registry.register(
            "jwks_fetches",
            "JWKS fetches by cluster and result",
            jwks_fetches.clone(),
        );
        registry.register(
            "jwks_cache_lookups",
            "JWKS key lookups by cluster and hit/miss",
            jwks_cache.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            reloads.clone(),
        );
        registry.register(
            "undelivered_credentials",
            "Credentials minted for a request that was no longer waiting (its client left, or \
             its deadline passed), by what became of them: revoked, revoke_failed, not_revocable",
            undelivered.clone(),
        );
        registry.register(
            "config_loaded",
            "1 when a configuration is loaded and serving",
            config_loaded.clone(),
        );
        registry.register(
            "invalid_resources",
            "Resources left out of the configuration because they are invalid (Kubernetes mode)",
            invalid_resources.clone(),
        );
        let connections = esi_serving::ConnectionMetrics::default();
        connections.register(&mut registry);
        Metrics {
            registry,
            connections,
            requests,
            latency,
            decisions,
            jwks_fetches,
            jwks_cache,
            reloads,
            undelivered,
            config_loaded,
            invalid_resources,
            requests_by: Cached::new(),
            latency_by: Cached::new(),
            decisions_by: Cached::new(),
        }
    }

    /// The serving guard's metrics (open connections, closed by a deadline or refused).
    pub fn connections(&self) -> esi_serving::ConnectionMetrics {
        self.connections.clone()
    }

    /// Counts one request on `route` that ended with `code` (`None`: ok) and observes its
    /// latency.
    pub fn request(&self, route: RouteLabel, code: Option<ErrorCode>, seconds: f64) {
        let index = route.index() * CODES + code_index(code);
        self.requests_by
            .get(index, || {
                self.requests
                    .get_or_create(&RouteCode {
                        route: route.as_str(),
                        code: code_label(code),
                    })
                    .clone()
            })
            .inc();
        self.latency_by
            .get(route.index(), || {
                self.latency
                    .get_or_create(&Route {
                        route: route.as_str(),
                    })
                    .clone()
            })
            .observe(seconds);
    }

    /// Counts one authorization decision: allowed (`None`) or denied with `code`.
    pub fn decision(&self, code: Option<ErrorCode>) {
        self.decisions_by
            .get(code_index(code), || {
                let decision = if code.is_none() { "allowed" } else { "denied" };
                self.decisions
                    .get_or_create(&Decision {
                        decision,
                        code: code_label(code),
                    })
                    .clone()
            })
            .inc();
    }

    /// Counts one credential minted for a request that was no longer waiting, by `result`
    /// (`revoked`, `revoke_failed`, `not_revocable`).
    pub fn undelivered(&self, result: &'static str) {
        self.undelivered
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts one JWKS fetch.
    pub fn jwks_fetch(&self, cluster: &str, result: &'static str) {
        self.jwks_fetches
            .get_or_create(&ClusterResult {
                cluster: cluster.to_owned(),
                result,
            })
            .inc();
    }

    /// The counter of JWKS cache lookups by kid for `cluster` and `result` (`hit`/`miss`), to
    /// keep and bump without a lookup per request.
    pub fn jwks_cache_counter(&self, cluster: &str, result: &'static str) -> Counter {
        self.jwks_cache
            .get_or_create(&ClusterResult {
                cluster: cluster.to_owned(),
                result,
            })
            .clone()
    }

    /// Counts one configuration reload.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        if ok {
            self.config_loaded.set(1);
        }
    }

    /// Sets the number of invalid resources left out of the configuration.
    pub fn invalid_resources(&self, count: usize) {
        self.invalid_resources
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
