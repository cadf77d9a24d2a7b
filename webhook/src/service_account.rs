//! ServiceAccount defaults: the `esi.dev/` annotations of a Pod's ServiceAccount act as defaults
//! for the Pod's own (the Pod wins key by key, see
//! [`esi_api::inject::merge_service_account_defaults`]), the way the EKS Pod Identity webhook
//! reads its role from the ServiceAccount.
//!
//! The webhook reads one ServiceAccount per admission with a plain `GET` (RBAC: `get` on
//! `serviceaccounts`, nothing else), bounded by a short timeout, and keeps the answer — the
//! `esi.dev/` annotations, or "no such ServiceAccount" — in a small TTL cache: ServiceAccounts
//! change rarely and admission must stay fast. A watch-based cache (informer) would need
//! `list`/`watch` on every ServiceAccount of the cluster and memory for all of them; a TTL
//! cache needs neither and bounds staleness to the TTL.
//!
//! When the API server cannot be asked (timeout, connection refused, 403, 5xx), the caller
//! denies the Pod: what the Pod gets must not depend on whether the API server answered, and a
//! Pod's own annotations cannot tell which defaults it relies on (a federation URL, an
//! audience, revoke-on-exit). `failurePolicy: Fail` already makes the webhook's own outage deny
//! opted-in Pods; this is the same behaviour one hop further.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use esi_api::inject::{is_dns_label, is_dns_subdomain};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;

/// Default bound on one ServiceAccount lookup (the `MutatingWebhookConfiguration` gives the
/// whole admission 5 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time a looked-up ServiceAccount is reused.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Default bound on the number of cached ServiceAccounts.
pub const DEFAULT_MAX_ENTRIES: usize = 4096;

/// How lookups behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Bound on one API call (connect + response).
    pub timeout: Duration,
    /// How long an answer (found or not found) is reused. Errors are never cached.
    pub ttl: Duration,
    /// Most entries kept; when full, expired entries are dropped, then everything.
    pub max_entries: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            ttl: DEFAULT_TTL,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// The `esi.dev/` annotations of one ServiceAccount; `None` when it does not exist.
pub type Defaults = Option<Arc<BTreeMap<String, String>>>;

/// Where an answer came from (a bounded metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// From the cache.
    Cached,
    /// From the API server: the ServiceAccount exists.
    Found,
    /// From the API server: no such ServiceAccount (404).
    NotFound,
}

impl Source {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cached => "cached",
            Self::Found => "found",
            Self::NotFound => "not_found",
        }
    }
}

/// Why a ServiceAccount could not be read. The `Display` text is shown to the user who created
/// the Pod: it says what happened, never the API server's internals (those are logged).
#[derive(Debug)]
pub enum LookupError {
    /// No answer within the timeout.
    Timeout(Duration),
    /// The API server refused the webhook (401/403): its RBAC is missing.
    Forbidden(u16),
    /// The API server answered with another error status.
    Status(u16),
    /// The API server could not be reached; the detail is for logs.
    Unreachable(String),
    /// The namespace or the ServiceAccount name is not a Kubernetes name: not asked about
    /// (it would become part of the request's URL), and the Pod would fail validation anyway.
    InvalidName,
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(t) => write!(f, "the API server did not answer within {t:?}"),
            Self::Forbidden(code) => write!(
                f,
                "the API server refused the webhook ({code}); it needs `get` on serviceaccounts"
            ),
            Self::Status(code) => write!(f, "the API server answered {code}"),
            Self::Unreachable(_) => write!(f, "the API server is unreachable"),
            Self::InvalidName => write!(
                f,
                "the namespace or the ServiceAccount name is not a valid Kubernetes name"
            ),
        }
    }
}

impl std::error::Error for LookupError {}

impl LookupError {
    /// A bounded label for logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Forbidden(_) => "forbidden",
            Self::Status(_) => "status",
            Self::Unreachable(_) => "unreachable",
            Self::InvalidName => "invalid_name",
        }
    }

    /// Detail for logs (not shown to users).
    pub fn detail(&self) -> String {
        match self {
            Self::Unreachable(d) => d.clone(),
            other => other.to_string(),
        }
    }
}

struct Entry {
    at: Instant,
    defaults: Defaults,
}

/// A TTL cache of ServiceAccount defaults keyed by namespace and name.
struct Cache {
    ttl: Duration,
    max_entries: usize,
    entries: HashMap<(String, String), Entry>,
}

impl Cache {
    fn get(&self, key: &(String, String), now: Instant) -> Option<Defaults> {
        let e = self.entries.get(key)?;
        (now.saturating_duration_since(e.at) < self.ttl).then(|| e.defaults.clone())
    }

    fn put(&mut self, key: (String, String), defaults: Defaults, now: Instant) {
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&key) {
            let ttl = self.ttl;
            self.entries
                .retain(|_, e| now.saturating_duration_since(e.at) < ttl);
            // Still full of fresh entries: the oldest goes (emptying the whole cache would let
            // a stream of made-up names turn every real lookup into a call).
            if self.entries.len() >= self.max_entries
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.at)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, Entry { at: now, defaults });
    }
}

/// Reads ServiceAccounts through the Kubernetes API, with a timeout and a TTL cache.
pub struct ServiceAccounts {
    client: kube::Client,
    timeout: Duration,
    cache: Mutex<Cache>,
    /// Calls to the API server at once ([`MAX_CONCURRENT_LOOKUPS`]): whoever reaches the
    /// webhook chooses the names, and must not be able to flood the API server with them
    /// (whose priority and fairness would then throttle the webhook's real lookups too).
    calls: tokio::sync::Semaphore,
}

/// How many ServiceAccount lookups run at once; more wait, within their timeout.
pub const MAX_CONCURRENT_LOOKUPS: usize = 16;

impl ServiceAccounts {
    /// Lookups through `client`.
    pub fn new(client: kube::Client, settings: Settings) -> Self {
        Self {
            client,
            timeout: settings.timeout,
            cache: Mutex::new(Cache {
                ttl: settings.ttl,
                max_entries: settings.max_entries.max(1),
                entries: HashMap::new(),
            }),
            calls: tokio::sync::Semaphore::new(MAX_CONCURRENT_LOOKUPS),
        }
    }

    /// The `esi.dev/` annotations of ServiceAccount `namespace/name` (`None`: it does not
    /// exist), from the cache when fresh, else from the API server.
    pub async fn defaults(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(Defaults, Source), LookupError> {
        if !(is_dns_label(namespace) && is_dns_subdomain(name)) {
            return Err(LookupError::InvalidName);
        }
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(hit) = self.lock().get(&key, Instant::now()) {
            return Ok((hit, Source::Cached));
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let call = async {
            // The semaphore is never closed.
            let _permit = self.calls.acquire().await;
            api.get_opt(name).await
        };
        let fetched = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| LookupError::Timeout(self.timeout))?
            .map_err(classify)?;
        let (defaults, source) = match fetched {
            Some(sa) => (
                Some(Arc::new(esi_annotations(sa.metadata.annotations))),
                Source::Found,
            ),
            None => (None, Source::NotFound),
        };
        self.lock().put(key, defaults.clone(), Instant::now());
        Ok((defaults, source))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        crate::locked(&self.cache)
    }
}

/// Keeps only the `esi.dev/` annotations (the rest is of no use and could be large, e.g.
/// `kubectl.kubernetes.io/last-applied-configuration`).
pub(crate) fn esi_annotations(all: Option<BTreeMap<String, String>>) -> BTreeMap<String, String> {
    all.unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with(esi_api::inject::PREFIX))
        .collect()
}

fn classify(e: kube::Error) -> LookupError {
    match e {
        kube::Error::Api(status) => match status.code {
            401 | 403 => LookupError::Forbidden(status.code),
            code => LookupError::Status(code),
        },
        other => LookupError::Unreachable(other.to_string()),
    }
}

/// The ServiceAccount a Pod runs as: `spec.serviceAccountName`, else the deprecated
/// `spec.serviceAccount`, else `default` (what the ServiceAccount admission plugin sets).
pub fn pod_service_account(pod: &crate::pod::Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| {
            s.service_account_name
                .as_deref()
                .or(s.service_account.as_deref())
        })
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl: u64, max: usize) -> Cache {
        Cache {
            ttl: Duration::from_secs(ttl),
            max_entries: max,
            entries: HashMap::new(),
        }
    }

    fn key(n: &str) -> (String, String) {
        ("ns".to_owned(), n.to_owned())
    }

    #[test]
    fn cached_answers_expire_after_the_ttl() {
        let mut c = cache(30, 10);
        let t0 = Instant::now();
        let found: Defaults = Some(Arc::new(BTreeMap::from([(
            "esi.dev/refresh".to_owned(),
            "true".to_owned(),
        )])));
        c.put(key("a"), found.clone(), t0);
        c.put(key("gone"), None, t0);
        assert_eq!(c.get(&key("a"), t0 + Duration::from_secs(29)), Some(found));
        // A cached 404 is an answer too.
        assert_eq!(
            c.get(&key("gone"), t0 + Duration::from_secs(29)),
            Some(None)
        );
        assert_eq!(c.get(&key("a"), t0 + Duration::from_secs(30)), None);
        assert_eq!(c.get(&key("other"), t0), None);
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first_then_the_oldest() {
        let mut c = cache(10, 2);
        let t0 = Instant::now();
        c.put(key("old"), None, t0);
        c.put(key("new"), None, t0 + Duration::from_secs(5));
        // "old" has expired at t0+11: it goes, "new" stays.
        c.put(key("third"), None, t0 + Duration::from_secs(11));
        assert_eq!(c.entries.len(), 2);
        assert!(c.get(&key("new"), t0 + Duration::from_secs(11)).is_some());
        // Nothing expired: the oldest ("new") goes, rather than the cache growing or
        // starting over.
        let now = t0 + Duration::from_secs(12);
        c.put(key("fourth"), None, now);
        assert_eq!(c.entries.len(), 2);
        assert!(c.get(&key("new"), now).is_none());
        assert!(c.get(&key("third"), now).is_some());
        assert!(c.get(&key("fourth"), now).is_some());
    }

    #[test]
    fn only_esi_annotations_are_kept() {
        let kept = esi_annotations(Some(BTreeMap::from([
            ("esi.dev/refresh".to_owned(), "true".to_owned()),
            ("eks.amazonaws.com/role-arn".to_owned(), "arn".to_owned()),
        ])));
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["esi.dev/refresh"]);
        assert!(esi_annotations(None).is_empty());
    }

    #[test]
    fn the_pods_service_account_defaults_to_default() {
        let pod = |spec: serde_json::Value| -> crate::pod::Pod {
            serde_json::from_value(serde_json::json!({"spec": spec})).unwrap()
        };
        let containers = serde_json::json!([{"name": "a"}]);
        assert_eq!(
            pod_service_account(&pod(serde_json::json!({"containers": containers}))),
            "default"
        );
        assert_eq!(
            pod_service_account(&pod(
                serde_json::json!({"containers": containers, "serviceAccountName": "app"})
            )),
            "app"
        );
        assert_eq!(
            pod_service_account(&pod(
                serde_json::json!({"containers": containers, "serviceAccount": "legacy"})
            )),
            "legacy"
        );
    }

    #[test]
    fn errors_shown_to_users_carry_no_internal_detail() {
        let e = LookupError::Unreachable("tcp connect error: 10.0.0.1:443 refused".into());
        assert_eq!(e.to_string(), "the API server is unreachable");
        assert!(e.detail().contains("10.0.0.1"));
        assert!(
            LookupError::Forbidden(403)
                .to_string()
                .contains("get` on serviceaccounts")
        );
    }
}
