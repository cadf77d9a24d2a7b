//! Shared state of the federation: the current configuration snapshot (swapped atomically on
//! reload), the JWKS registry, the lease keys and the metrics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;

use crate::config::{self, LoadError, Snapshot};
use crate::lease::LeaseKeys;
use crate::metrics::Metrics;
use crate::token::jwks::{JwksRegistry, JwksSettings};

/// Runtime settings that are not manifests.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Deadline of one generator call (mint or revoke).
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
    /// State with no configuration loaded yet.
    pub fn new(settings: Settings, leases: LeaseKeys) -> Self {
        let metrics = Arc::new(Metrics::new());
        let jwks = JwksRegistry::new(settings.jwks.clone(), metrics.clone());
        AppState(Arc::new(Inner {
            config: ArcSwapOption::empty(),
            jwks,
            stores: Default::default(),
            leases,
            metrics,
            settings,
        }))
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

    /// Fetches the keys of every registered issuer now (concurrently, bounded by the fetch
    /// timeout), so the first request does not pay for it. Failures are logged and retried on
    /// demand later.
    pub async fn prefetch_keys(&self) {
        let Some(snap) = self.snapshot() else { return };
        let mut tasks = Vec::new();
        for cluster in snap.clusters.values() {
            if let crate::token::ClusterKeys::Remote(source) = &cluster.keys
                && source.cached().is_none()
            {
                let source = source.clone();
                tasks.push(tokio::spawn(async move {
                    let _ = source.ring_for(None).await;
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
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

/// A cheap fingerprint of a config file or folder (paths, sizes, mtimes) to notice changes.
pub fn fingerprint(path: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    fn walk(p: &Path, out: &mut Vec<(PathBuf, u64, Option<SystemTime>)>) {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if meta.is_dir() {
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
                walk(&e, out);
            }
        } else {
            out.push((p.to_path_buf(), meta.len(), meta.modified().ok()));
        }
    }
    walk(path, &mut out);
    out
}
