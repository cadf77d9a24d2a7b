//! The JWKS cache: one [`JwksSource`] per key location, shared by every cluster (and every
//! configuration snapshot) that uses it.
//!
//! - Parsed keys are kept ready to verify ([`KeyRing`]); the hot path is an `ArcSwap` load and
//!   a hash lookup, no lock and no I/O.
//! - Refreshes are single-flight (one fetch at a time per source; waiters reuse its result).
//! - An unknown `kid` triggers a refresh at most once per cooldown per source, and unknown kids
//!   are remembered in a bounded negative cache, so a flood of random kids cannot force a fetch
//!   storm against the issuer.
//! - Keys older than `max_age` are refreshed in the background while still being served;
//!   when the issuer is unreachable the last good keys keep working (stale-if-error).
//! - Fetches have a timeout and a response size limit; the CA bundle comes from the server's
//!   configuration only, never from a client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use esi_backends::error_chain;
use esi_backends::http::{Trust, tls_config};
use serde::Deserialize;

use super::keys::KeyRing;
use crate::metrics::Metrics;

/// Tunables of the JWKS cache.
#[derive(Clone, Debug)]
pub struct JwksSettings {
    /// Minimum time between two fetches triggered by unknown kids (or failures).
    pub cooldown: Duration,
    /// Age after which keys are refreshed in the background.
    pub max_age: Duration,
    /// Timeout of one HTTP fetch (connect + body).
    pub timeout: Duration,
    /// Largest discovery or JWKS document accepted.
    pub max_bytes: usize,
    /// Entries kept in the negative cache of unknown kids, per source.
    pub negative_capacity: usize,
}

impl Default for JwksSettings {
    fn default() -> Self {
        JwksSettings {
            cooldown: Duration::from_secs(30),
            max_age: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
            max_bytes: 256 * 1024,
            negative_capacity: 4096,
        }
    }
}

/// Where a source fetches its keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// OIDC discovery of this issuer.
    Discovery(String),
    /// An explicit JWKS URL.
    JwksUri(String),
}

/// Identity of a source in the registry: location and CA bundle.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// Where the keys are.
    pub location: Location,
    /// PEM trusted for the fetch, if not the system roots.
    pub ca_bundle: Option<String>,
}

/// Why keys could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The issuer could not be reached or answered garbage, and no keys were cached.
    #[error("keys of issuer unavailable: {0}")]
    Unavailable(String),
}

/// A fetched key ring and when it was fetched: one allocation holding the keys (see
/// [`KeyRing`]), the time first, as a verification reads it first.
#[derive(Debug)]
#[repr(C)]
pub struct Fetched {
    /// When they were fetched (or parsed, for inline keys).
    pub at: Instant,
    /// The keys.
    pub ring: KeyRing,
}

/// Keys of one location, fetched lazily and cached.
///
/// The fields a verification reads come first (`repr(C)`: the current keys, the hit counter
/// and the settings, for `max_age`), to share as few cache lines as they can when the source
/// is one of many and not in the caches (see [`crate::token::ClusterVerifier`]).
#[repr(C)]
pub struct JwksSource {
    current: ArcSwapOption<Fetched>,
    // Resolved once: the hot path only bumps an atomic (no label allocation or family lookup).
    hits: prometheus_client::metrics::counter::Counter,
    settings: JwksSettings,
    misses: prometheus_client::metrics::counter::Counter,
    key: SourceKey,
    label: String,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    refresh: tokio::sync::Mutex<()>,
    last_attempt: Mutex<Option<Instant>>,
    negative: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("location", &self.key.location)
            .finish()
    }
}

impl JwksSource {
    /// The label used in metrics and logs (the first cluster that registered the source).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Keys able to verify a token with this `kid` (or any key, without kid), fetching or
    /// refreshing as the rules above allow. Returns the ring to search; the caller looks the
    /// key up (it may still be missing).
    pub async fn ring_for(self: &Arc<Self>, kid: Option<&str>) -> Result<Arc<Fetched>, JwksError> {
        let Some(cur) = self.current.load_full() else {
            return self.refresh_now(None).await.ok_or_else(|| {
                JwksError::Unavailable(format!("no keys could be fetched from {}", self.describe()))
            });
        };
        if cur.at.elapsed() > self.settings.max_age && self.may_attempt() {
            let this = Arc::clone(self);
            tokio::spawn(async move {
                this.refresh_now(None).await;
            });
        }
        let Some(kid) = kid else { return Ok(cur) };
        if cur.ring.get(kid).is_some() {
            self.hits.inc();
            return Ok(cur);
        }
        self.misses.inc();
        if self.negatively_cached(kid) || !self.may_attempt() {
            self.remember_unknown(kid);
            return Ok(cur);
        }
        let fresh = self.refresh_now(Some(&cur)).await.unwrap_or(cur);
        if fresh.ring.get(kid).is_none() {
            self.remember_unknown(kid);
        }
        Ok(fresh)
    }

    /// The keys currently cached, without any fetch.
    pub fn cached(&self) -> Option<Arc<Fetched>> {
        self.current.load_full()
    }

    fn describe(&self) -> String {
        match &self.key.location {
            Location::Discovery(issuer) => format!("{issuer}/.well-known/openid-configuration"),
            Location::JwksUri(uri) => uri.clone(),
        }
    }

    fn may_attempt(&self) -> bool {
        let last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
        last.is_none_or(|t| t.elapsed() >= self.settings.cooldown)
    }

    fn negatively_cached(&self, kid: &str) -> bool {
        let neg = self.negative.lock().unwrap_or_else(|p| p.into_inner());
        neg.get(kid)
            .is_some_and(|t| t.elapsed() < self.settings.cooldown)
    }

    fn remember_unknown(&self, kid: &str) {
        let mut neg = self.negative.lock().unwrap_or_else(|p| p.into_inner());
        if neg.len() >= self.settings.negative_capacity {
            let cooldown = self.settings.cooldown;
            neg.retain(|_, t| t.elapsed() < cooldown);
            if neg.len() >= self.settings.negative_capacity {
                neg.clear();
            }
        }
        // Bound the key length so hostile kids cannot grow memory beyond capacity * 256 bytes.
        let kid: String = kid.chars().take(256).collect();
        // Never extend an entry: a kid polled continuously must become fetchable again once the
        // cooldown has passed (a rotated key is being used before our next fetch).
        let cooldown = self.settings.cooldown;
        neg.entry(kid)
            .and_modify(|t| {
                if t.elapsed() >= cooldown {
                    *t = Instant::now();
                }
            })
            .or_insert_with(Instant::now);
    }

    /// Fetches now unless another task did so since `seen` was observed (single flight).
    /// Returns the new ring, or `None` when the fetch failed (the old ring stays).
    async fn refresh_now(&self, seen: Option<&Arc<Fetched>>) -> Option<Arc<Fetched>> {
        let _flight = self.refresh.lock().await;
        let now = self.current.load_full();
        let changed = match (&now, seen) {
            (Some(now), Some(seen)) => !Arc::ptr_eq(now, seen),
            (Some(_), None) => self.current_is_fresh_enough(),
            (None, _) => false,
        };
        if changed {
            return now;
        }
        if !self.may_attempt() {
            return None;
        }
        *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        match self.fetch().await {
            Ok(ring) => {
                tracing::info!(cluster = %self.label, keys = ring.len(), skipped = ring.skipped, "fetched JWKS");
                self.metrics.jwks_fetch(&self.label, "ok");
                let fetched = Arc::new(Fetched {
                    ring,
                    at: Instant::now(),
                });
                self.current.store(Some(fetched.clone()));
                self.negative
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                Some(fetched)
            }
            Err(e) => {
                tracing::warn!(cluster = %self.label, error = %e, "JWKS fetch failed; keeping cached keys if any");
                self.metrics.jwks_fetch(&self.label, "error");
                None
            }
        }
    }

    fn current_is_fresh_enough(&self) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|c| c.at.elapsed() < self.settings.max_age)
    }

    async fn fetch(&self) -> Result<KeyRing, String> {
        let jwks_uri = match &self.key.location {
            Location::JwksUri(uri) => uri.clone(),
            Location::Discovery(issuer) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let body = self.get_limited(&url).await?;
                #[derive(Deserialize)]
                struct Discovery {
                    issuer: String,
                    jwks_uri: String,
                }
                let doc: Discovery = serde_json::from_slice(&body)
                    .map_err(|e| format!("{url}: not an OIDC discovery document: {e}"))?;
                // OpenID Connect Discovery 1.0 §4.3: the issuer must be the one asked for.
                if doc.issuer != *issuer {
                    return Err(format!(
                        "{url}: discovery names issuer {:?}, expected {issuer:?}",
                        doc.issuer
                    ));
                }
                check_followed(&url, &doc.jwks_uri)?;
                doc.jwks_uri
            }
        };
        let body = self.get_limited(&jwks_uri).await?;
        KeyRing::from_jwks(&body).map_err(|e| format!("{jwks_uri}: {e}"))
    }

    async fn get_limited(&self, url: &str) -> Result<Vec<u8>, String> {
        let fut = async {
            let mut resp = self
                .client
                .get(url)
                .header(http::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| format!("{url}: {}", error_chain(&e)))?;
            if !resp.status().is_success() {
                return Err(format!("{url}: HTTP {}", resp.status()));
            }
            let max = self.settings.max_bytes;
            if resp.content_length().is_some_and(|l| l > max as u64) {
                return Err(format!("{url}: document larger than {max} bytes"));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| format!("{url}: {}", error_chain(&e)))?
            {
                if body.len() + chunk.len() > max {
                    return Err(format!("{url}: document larger than {max} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        tokio::time::timeout(self.settings.timeout, fut)
            .await
            .map_err(|_| format!("{url}: timed out after {:?}", self.settings.timeout))?
    }
}

/// Only `https://`, or `http://` to a loopback address (local issuers in tests and dev mode).
pub fn check_url_scheme(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Ok(());
    }
    if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        let host = if host.starts_with('[') {
            host.split(']').next().map(|h| &h[1..]).unwrap_or("")
        } else {
            host.split(':').next().unwrap_or("")
        };
        if host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
        {
            return Ok(());
        }
        return Err(format!(
            "{url:?}: plain http is allowed only to loopback addresses; use https"
        ));
    }
    Err(format!("{url:?} is not an https URL"))
}

/// Whether a fetch from `from` may go on to `to` (a discovered `jwks_uri`, a redirect):
/// `to` must pass [`check_url_scheme`], and what began over https stays on https. Else an
/// issuer's host could send the federation's key fetch to plain http (keys an on-path
/// attacker can replace) or to a loopback service of the federation's own (on Lambda, the
/// runtime API at `127.0.0.1:9001`).
pub fn check_followed(from: &str, to: &str) -> Result<(), String> {
    check_url_scheme(to)?;
    if from.starts_with("https://") && !to.starts_with("https://") {
        return Err(format!(
            "{from:?} leads to {to:?}: a key fetch that began over https stays on https"
        ));
    }
    Ok(())
}

/// How far a key fetch follows redirects: three hops, each checked by [`check_followed`].
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let from = attempt.previous().last().map(|u| u.as_str().to_owned());
        if attempt.previous().len() > 3 {
            return attempt.error("more than 3 redirects");
        }
        match from.map(|from| check_followed(&from, attempt.url().as_str())) {
            Some(Err(why)) => attempt.error(why),
            _ => attempt.follow(),
        }
    })
}

/// All sources, keyed by location and CA, shared across configuration reloads so a reload
/// does not refetch every issuer.
pub struct JwksRegistry {
    settings: JwksSettings,
    metrics: Arc<Metrics>,
    sources: Mutex<HashMap<SourceKey, Weak<JwksSource>>>,
    /// HTTP clients by CA bundle (`None`: the system roots). Building a client loads and parses
    /// its whole root store, which costs milliseconds and ~150 KB each: with 1,000 clusters a
    /// client per source made configuration loads take seconds and ~150 MB. Sources with the
    /// same trust share one client (and its connection pool); settings are registry-wide.
    clients: Mutex<HashMap<Option<String>, reqwest::Client>>,
}

impl std::fmt::Debug for JwksRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksRegistry")
            .field("settings", &self.settings)
            .finish()
    }
}

impl JwksRegistry {
    /// An empty registry.
    pub fn new(settings: JwksSettings, metrics: Arc<Metrics>) -> Self {
        JwksRegistry {
            settings,
            metrics,
            sources: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client trusting `ca_bundle` (or the system roots), built on first use.
    ///
    /// Building one for a new bundle first lets go of those no live source uses (`live`): a
    /// Cluster whose `caBundle` is edited again and again would otherwise keep every client.
    fn client(
        &self,
        ca_bundle: Option<&String>,
        live: &HashMap<SourceKey, Weak<JwksSource>>,
    ) -> Result<reqwest::Client, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&ca_bundle.cloned()) {
            return Ok(c.clone());
        }
        clients.retain(|ca, _| ca.is_none() || live.keys().any(|k| k.ca_bundle == *ca));
        // A cluster's own CA bundle replaces the system's roots for its keys.
        let trust = match ca_bundle {
            Some(pem) => Trust::Only(pem),
            None => Trust::System { extra: None },
        };
        let client = reqwest::Client::builder()
            .timeout(self.settings.timeout)
            .connect_timeout(self.settings.timeout)
            .redirect(redirect_policy())
            .user_agent(concat!("esi-federation/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls_config(trust)?)
            .build()
            .map_err(|e| format!("cannot build HTTP client: {}", error_chain(&e)))?;
        clients.insert(ca_bundle.cloned(), client.clone());
        Ok(client)
    }

    /// The source for `key`, reusing the live one when a snapshot still holds it.
    pub fn source(&self, key: SourceKey, label: &str) -> Result<Arc<JwksSource>, String> {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = sources.get(&key).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        sources.retain(|_, w| w.strong_count() > 0);
        let client = self.client(key.ca_bundle.as_ref(), &sources)?;
        let source = Arc::new(JwksSource {
            key: key.clone(),
            label: label.to_owned(),
            client,
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
            hits: self.metrics.jwks_cache_counter(label, "hit"),
            misses: self.metrics.jwks_cache_counter(label, "miss"),
            current: ArcSwapOption::empty(),
            refresh: tokio::sync::Mutex::new(()),
            last_attempt: Mutex::new(None),
            negative: Mutex::new(HashMap::new()),
        });
        sources.insert(key, Arc::downgrade(&source));
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::{check_followed, check_url_scheme};

    #[test]
    fn a_ca_bundle_no_cluster_uses_any_more_lets_its_client_go() {
        use super::{JwksRegistry, JwksSettings, Location, SourceKey};
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let registry = JwksRegistry::new(
            JwksSettings::default(),
            std::sync::Arc::new(Default::default()),
        );
        let key = |n: &str| SourceKey {
            location: Location::JwksUri(format!("https://{n}.example/jwks")),
            ca_bundle: Some(esi_test_support::pki(n).unwrap().ca_pem),
        };
        let clients = || registry.clients.lock().unwrap().len();
        let first = registry.source(key("first"), "first").unwrap();
        let _system = registry
            .source(
                SourceKey {
                    location: Location::JwksUri("https://sys.example/jwks".into()),
                    ca_bundle: None,
                },
                "sys",
            )
            .unwrap();
        assert_eq!(clients(), 2);
        // The first cluster's bundle is edited: its old source (and client) is no longer used.
        drop(first);
        let _second = registry.source(key("second"), "second").unwrap();
        assert_eq!(
            clients(),
            2,
            "the system roots' client and the second bundle's"
        );
    }

    #[test]
    fn what_began_over_https_stays_on_https() {
        assert!(check_followed("https://a.example/", "https://b.example/jwks").is_ok());
        assert!(check_followed("http://127.0.0.1:1/", "http://127.0.0.1:2/jwks").is_ok());
        assert!(check_followed("http://127.0.0.1:1/", "https://b.example/jwks").is_ok());
        for to in [
            "http://127.0.0.1:9001/2018-06-01/runtime/invocation/next",
            "http://localhost/jwks",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            assert!(check_followed("https://a.example/", to).is_err(), "{to}");
        }
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_url_scheme("https://example.com/x").is_ok());
        assert!(check_url_scheme("http://127.0.0.1:8080/x").is_ok());
        assert!(check_url_scheme("http://localhost/x").is_ok());
        assert!(check_url_scheme("http://[::1]:9/x").is_ok());
        assert!(check_url_scheme("http://example.com/x").is_err());
        assert!(check_url_scheme("http://127.0.0.1.evil.com/x").is_err());
        assert!(check_url_scheme("http://user@10.0.0.1/x").is_err());
        assert!(check_url_scheme("ftp://127.0.0.1/x").is_err());
    }
}
