//! Shared state of the federation: the current configuration snapshot (swapped atomically on
//! reload), the JWKS registry, the lease keys and the metrics.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use futures_util::StreamExt as _;

use crate::config::{self, LoadError, Snapshot};
use crate::lease::LeaseKeys;
use crate::metrics::Metrics;
use crate::token::ClusterKeys;
use crate::token::jwks::{JwksRegistry, JwksSettings, JwksSource};

/// How many issuers a start fetches keys from at once ([`KeyFetch`], [`AppState::prefetch_keys`]).
pub const PREFETCH_CONCURRENCY: usize = 16;

/// How long a start waits for its issuers' keys once its configuration is compiled
/// ([`KeyFetch::wait`], [`AppState::prefetch_keys`]): an issuer that answers at all answers well
/// within it.
pub const PREFETCH_DEADLINE: Duration = Duration::from_secs(3);

/// What [`KeyFetch::wait`] or [`AppState::prefetch_keys`] had done by the time it returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prefetched {
    /// Issuers (distinct key sources) whose keys were not cached yet.
    pub issuers: usize,
    /// Of those, the ones whose keys are cached now.
    pub cached: usize,
}

/// Runtime settings that are not manifests.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a request waits on a backend: an issuance that waits (a mint, the key fetch
    /// before it) or a revoke. An issuance still running then is answered 503 and not
    /// cancelled; a credential it mints afterwards is revoked.
    pub backend_timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// JWKS cache tunables.
    pub jwks: JwksSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            backend_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            jwks: JwksSettings::default(),
        }
    }
}

/// The federation's state; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

/// Inside of [`AppState`].
#[derive(Debug)]
pub struct Inner {
    /// The configuration serving now; `None` until the first successful load.
    pub config: ArcSwapOption<Snapshot>,
    /// JWKS sources, shared across snapshots.
    pub jwks: JwksRegistry,
    /// Store connections (Vault logins, SDK configurations), shared across snapshots: a reload
    /// that leaves a store unchanged keeps its connection.
    pub stores: std::sync::Mutex<esi_backends::Shared>,
    /// Lease sealing keys.
    pub leases: LeaseKeys,
    /// The federation's own OIDC issuer (`--issuer-url`), if it is one: its discovery
    /// document and JWKS are served, and `IdentityToken` generators sign with it.
    pub issuer: Option<Arc<esi_backends::identity::Issuer>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: Settings,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// State with no configuration loaded yet, for checking a configuration (and for tests):
    /// generators that sign with the federation's issuer build, and refuse requests.
    pub fn new(settings: Settings, leases: LeaseKeys) -> Self {
        Starting::new(settings).state(leases, None, esi_backends::Shared::default())
    }

    /// State of a serving federation, with its OIDC issuer or none (then a configuration
    /// naming a generator that signs with it does not load).
    pub fn serving(
        settings: Settings,
        leases: LeaseKeys,
        issuer: Option<Arc<esi_backends::identity::Issuer>>,
    ) -> Self {
        Starting::new(settings).serving(leases, issuer)
    }

    /// The snapshot serving now.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.config.load_full()
    }

    /// Installs a snapshot.
    pub fn install(&self, snapshot: Snapshot) {
        tracing::info!(
            source = %snapshot.source,
            clusters = snapshot.clusters.len(),
            authorizations = snapshot.authorizer.len(),
            generators = snapshot.generators.len(),
            "configuration loaded"
        );
        self.config.store(Some(Arc::new(snapshot)));
        self.metrics.reload(true);
    }

    /// Fetches the keys of every registered issuer not cached yet, so that first requests do
    /// not pay for it, and returns when all are fetched or `deadline` has passed, whichever
    /// comes first.
    ///
    /// A start must not wait on the slowest issuer: one that does not answer holds a fetch for
    /// its timeout twice (discovery, then the JWKS), and a Lambda's whole initialization gets
    /// 10 s. Fetches still running at the deadline go on in the background; a request for
    /// their issuer waits for that fetch instead of starting another. At most
    /// [`PREFETCH_CONCURRENCY`] run at once, so that a registry of many clusters does not open
    /// a connection per issuer at the same moment. Failures are logged by the fetch and
    /// retried on demand after the cooldown.
    pub async fn prefetch_keys(&self, deadline: Duration) -> Prefetched {
        let Some(snap) = self.snapshot() else {
            return Prefetched::default();
        };
        let mut seen = HashSet::new();
        let sources: Vec<Arc<JwksSource>> = snap
            .clusters
            .values()
            .filter_map(|cluster| match &cluster.keys {
                ClusterKeys::Remote(source)
                    if source.cached().is_none() && seen.insert(Arc::as_ptr(source)) =>
                {
                    Some(source.clone())
                }
                _ => None,
            })
            .collect();
        KeyFetch::start(sources).wait(deadline).await
    }

    /// Loads `path` and installs it; on failure the previous snapshot keeps serving.
    pub fn reload_from(&self, path: &Path) -> Result<(), LoadError> {
        match config::load_path(path, self) {
            Ok(s) => {
                self.install(s);
                Ok(())
            }
            Err(e) => {
                self.metrics.reload(false);
                for problem in &e.0 {
                    tracing::error!(problem = %problem, "configuration problem");
                }
                tracing::error!(
                    "configuration reload failed; the last good configuration keeps serving"
                );
                Err(e)
            }
        }
    }
}

/// A serving state before its own keys are read: its metrics and its JWKS registry exist, so
/// that a cold start can fetch the registered issuers' keys ([`Starting::fetch_keys`]) while
/// the lease keys (and the issuer's keys) still come from Secrets Manager.
/// [`Starting::serving`] then makes the state, with the fetched keys in its registry.
pub struct Starting {
    settings: Settings,
    metrics: Arc<Metrics>,
    jwks: JwksRegistry,
}

impl Starting {
    /// The metrics and an empty JWKS registry.
    pub fn new(settings: Settings) -> Self {
        let metrics = Arc::new(Metrics::new());
        let jwks = JwksRegistry::new(settings.jwks.clone(), metrics.clone());
        Starting {
            settings,
            metrics,
            jwks,
        }
    }

    /// Starts fetching the keys of the clusters in `res` that fetch theirs (OIDC discovery or
    /// a `jwksUri`), from the sources the configuration's compilation will find in the
    /// registry. A cluster naming `own_issuer` (the federation's own URL, which the compilation
    /// refuses) is left out. Keep the returned fetch until the configuration is installed, then
    /// [`KeyFetch::wait`] for it: the registry keeps a source only while something holds it.
    pub fn fetch_keys(&self, res: &config::Resources, own_issuer: Option<&str>) -> KeyFetch {
        let sources = config::remote_key_sources(res, own_issuer)
            .into_iter()
            // A source that cannot be made (a bad `caBundle`) fails the compilation, which
            // says why.
            .filter_map(|(key, label)| self.jwks.source(key, label).ok())
            .collect();
        KeyFetch::start(sources)
    }

    /// The state of a serving federation, as [`AppState::serving`] makes it, around this
    /// registry and these metrics.
    pub fn serving(
        self,
        leases: LeaseKeys,
        issuer: Option<Arc<esi_backends::identity::Issuer>>,
    ) -> AppState {
        let stores = esi_backends::Shared::with_issuer(issuer.clone());
        self.state(leases, issuer, stores)
    }

    fn state(
        self,
        leases: LeaseKeys,
        issuer: Option<Arc<esi_backends::identity::Issuer>>,
        stores: esi_backends::Shared,
    ) -> AppState {
        AppState(Arc::new(Inner {
            config: ArcSwapOption::empty(),
            jwks: self.jwks,
            stores: std::sync::Mutex::new(stores),
            leases,
            issuer,
            metrics: self.metrics,
            settings: self.settings,
        }))
    }
}

/// Fetches of issuers' keys started together, at most [`PREFETCH_CONCURRENCY`] at once; it
/// holds their sources.
pub struct KeyFetch {
    sources: Vec<Arc<JwksSource>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl KeyFetch {
    fn start(sources: Vec<Arc<JwksSource>>) -> Self {
        let task = (!sources.is_empty()).then(|| {
            let sources = sources.clone();
            tokio::spawn(async move {
                futures_util::stream::iter(sources)
                    .for_each_concurrent(PREFETCH_CONCURRENCY, |source| async move {
                        let _ = source.ring_for(None).await;
                    })
                    .await;
            })
        });
        KeyFetch { sources, task }
    }

    /// Returns when every fetch has finished or `deadline` has passed, whichever comes first;
    /// fetches still running then go on in the background (see [`AppState::prefetch_keys`]).
    pub async fn wait(self, deadline: Duration) -> Prefetched {
        let Some(task) = self.task else {
            return Prefetched::default();
        };
        // Dropping the handle at the deadline detaches the task: its fetches go on.
        let finished = tokio::time::timeout(deadline, task).await.is_ok();
        let done = Prefetched {
            issuers: self.sources.len(),
            cached: self.sources.iter().filter(|s| s.cached().is_some()).count(),
        };
        if !finished {
            tracing::warn!(
                issuers = done.issuers,
                cached = done.cached,
                deadline_ms = deadline.as_millis() as u64,
                "not every issuer's keys were fetched before the start deadline; serving now, \
                 the rest are still being fetched"
            );
        }
        done
    }
}

/// What [`fingerprint`] returns: each file's path, size and modification time.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// A cheap fingerprint of a config file or folder (paths, sizes, mtimes) to notice changes.
pub fn fingerprint(path: &Path) -> Fingerprint {
    let mut out = Vec::new();
    fn walk(p: &Path, out: &mut Fingerprint, depth: usize) {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if meta.is_dir() {
            // A deeper folder fails the load; it is not walked (see MAX_FOLDER_DEPTH).
            if depth > config::MAX_FOLDER_DEPTH {
                return;
            }
            let Ok(rd) = std::fs::read_dir(p) else { return };
            let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            entries.sort();
            for e in entries {
                // ConfigMap mounts swap a hidden `..data` symlink; following the visible links
                // through metadata() sees the new targets' mtimes.
                if e.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                {
                    continue;
                }
                walk(&e, out, depth + 1);
            }
        } else {
            out.push((p.to_path_buf(), meta.len(), meta.modified().ok()));
        }
    }
    walk(path, &mut out, 0);
    out
}
