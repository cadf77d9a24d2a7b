//! The shared volume's layout and esi-cli's own state in it.
//!
//! ```text
//! <volume>/bin/esi-cli            the binary, copied by `init` (0555)
//! <volume>/env/<container>.json   one env bundle per container ([`Bundle`])
//! <volume>/files/...              file outputs (FileOutput::volume_path)
//! <volume>/state/spec.json        the InjectionSpec init ran with (exec re-fetch, revoke)
//! <volume>/state/credentials.json the current envelopes by alias (refresh re-renders from it)
//! <volume>/state/leases.json      the leases this Pod obtained that may need revoking ([`LeaseRecord`])
//! <volume>/state/leases.lock      empty; its `flock` serialises the edits of leases.json
//! <volume>/state/init.done        marker: credentials were fetched for this Pod start
//! <volume>/state/refresh.ready    written by `refresh` after its first successful write
//! ```
//!
//! Everything under the volume is written with [`crate::output::write_atomic`]; `state/` is
//! owner-only.
//!
//! Several esi-cli processes of one Pod edit leases.json (init, `exec` re-fetching, the
//! refresher, a `preStop` `revoke`), possibly at once: every edit goes through
//! [`Layout::update_leases`], which holds an exclusive lock from the load to the save, so no
//! edit overwrites another's (a lease just recorded lost, never revoked; a revoked one back).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use esi_api::Envelope;
use esi_api::inject::{BINARY_REL_PATH, ENV_DIR, InjectionSpec, Owner, STATE_DIR};
use serde::{Deserialize, Serialize};

use crate::output::{self, Credentials};

/// Paths inside the shared volume.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The volume's root.
    pub root: PathBuf,
}

impl Layout {
    /// The layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }
    /// The copied binary.
    pub fn binary(&self) -> PathBuf {
        self.root.join(BINARY_REL_PATH)
    }
    /// The env bundle of `container`.
    pub fn bundle(&self, container: &str) -> PathBuf {
        self.root.join(ENV_DIR).join(format!("{container}.json"))
    }
    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }
    /// The spec copy.
    pub fn spec(&self) -> PathBuf {
        self.state_dir().join("spec.json")
    }
    /// The current envelopes.
    pub fn credentials(&self) -> PathBuf {
        self.state_dir().join("credentials.json")
    }
    /// The lease records.
    pub fn leases(&self) -> PathBuf {
        self.state_dir().join("leases.json")
    }
    /// The lock file of the lease records (see [`Layout::update_leases`]).
    pub fn leases_lock(&self) -> PathBuf {
        self.state_dir().join("leases.lock")
    }
    /// The once-per-Pod-start marker.
    pub fn marker(&self) -> PathBuf {
        self.state_dir().join("init.done")
    }
    /// The refresher's readiness file.
    pub fn ready(&self) -> PathBuf {
        self.state_dir().join("refresh.ready")
    }
    /// Where a file output lives in the volume.
    pub fn volume_file(&self, volume_path: &str) -> PathBuf {
        self.root.join(volume_path)
    }
}

/// What `exec` loads: the env vars of one container. `Debug` shows names only.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bundle {
    /// Format version (1).
    pub version: u32,
    /// The container it is for.
    pub container: String,
    /// When the earliest credential in it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<jiff::Timestamp>,
    /// The variables.
    pub env: BTreeMap<String, String>,
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("container", &self.container)
            .field("expires_at", &self.expires_at)
            .field("names", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The envelopes by alias, as persisted. `Debug` comes from [`Envelope`] (keys only).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoredCredentials {
    /// Format version (1).
    pub version: u32,
    /// Envelopes by alias.
    pub aliases: Credentials,
}

/// One lease this Pod obtained. `Debug` hides the lease.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseRecord {
    /// The alias it was issued for.
    pub alias: String,
    /// `namespace/kind/name`.
    pub generator: String,
    /// The sealed lease handle.
    pub lease: String,
    /// When it was issued.
    pub issued_at: jiff::Timestamp,
    /// When it expires, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<jiff::Timestamp>,
    /// Whether `revoke` already revoked it.
    #[serde(default)]
    pub revoked: bool,
}

impl fmt::Debug for LeaseRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseRecord")
            .field("alias", &self.alias)
            .field("generator", &self.generator)
            .field("lease", &"<sealed>")
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// The lease records file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Leases {
    /// The leases, oldest first; revoked and expired ones are dropped at the next recording.
    pub leases: Vec<LeaseRecord>,
}

/// Owner-only state files: the credentials are secret, the leases let anyone holding the token
/// revoke them.
const STATE_MODE: u32 = 0o600;

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is corrupt", path.display()))
            .map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// An exclusive `flock` on [`Layout::leases_lock`], released when dropped (closing the file
/// releases it).
struct LeasesLock {
    _file: File,
}

impl LeasesLock {
    /// Waits for and takes the lock, creating the (always empty) lock file when missing.
    ///
    /// The wait is unbounded on purpose: holders keep the lock only for a load, an in-memory
    /// edit and an atomic write, never across a network call or an `.await` (see
    /// [`Layout::update_leases`]), and the kernel releases a `flock` when its holder exits,
    /// crash or `SIGKILL` included, so a waiter cannot be stranded by a dead process. A lock
    /// file rather than leases.json itself because leases.json is replaced by `rename`, which
    /// would leave a waiter locking the old inode.
    fn acquire(path: &Path, owner: &Owner) -> anyhow::Result<Self> {
        use rustix::fs::{FlockOperation, Mode, OFlags};
        let fd = rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(STATE_MODE),
        )
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        let file = File::from(fd);
        // Owned like leases.json: a lock file left by a root-run esi-cli would otherwise be
        // unopenable for the non-root ones that edit leases.json after it.
        output::apply_owner(&file, path, STATE_MODE, owner)?;
        loop {
            match rustix::fs::flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => return Ok(LeasesLock { _file: file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
            }
        }
    }
}

fn write_json<T: Serialize>(
    path: &Path,
    value: &T,
    mode: u32,
    owner: &Owner,
) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(value)?;
    output::write_atomic(path, &bytes, mode, owner)
}

impl Layout {
    /// Creates the state directory.
    pub fn ensure_state_dir(&self) -> anyhow::Result<()> {
        output::ensure_dir(&self.state_dir(), 0o700)
    }

    /// The spec copy, when present.
    pub fn load_spec(&self) -> anyhow::Result<Option<InjectionSpec>> {
        match std::fs::read_to_string(self.spec()) {
            Ok(text) => InjectionSpec::from_json(&text)
                .map(Some)
                .with_context(|| format!("{}", self.spec().display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.spec().display())),
        }
    }

    /// Saves the spec copy.
    pub fn save_spec(&self, spec: &InjectionSpec) -> anyhow::Result<()> {
        output::write_atomic(
            &self.spec(),
            spec.to_json().as_bytes(),
            STATE_MODE,
            &spec.owner,
        )
    }

    /// The stored envelopes.
    pub fn load_credentials(&self) -> anyhow::Result<Option<Credentials>> {
        Ok(read_json::<StoredCredentials>(&self.credentials())?.map(|c| c.aliases))
    }

    /// Saves the envelopes.
    pub fn save_credentials(&self, creds: &Credentials, owner: &Owner) -> anyhow::Result<()> {
        let stored = StoredCredentials {
            version: 1,
            aliases: creds.clone(),
        };
        write_json(&self.credentials(), &stored, STATE_MODE, owner)
    }

    /// The lease records (empty when none): a snapshot for reading only. The file is replaced
    /// atomically, so a snapshot is whole, but to change the records use
    /// [`Layout::update_leases`], never a load followed by a save.
    pub fn load_leases(&self) -> anyhow::Result<Leases> {
        Ok(read_json(&self.leases())?.unwrap_or_default())
    }

    /// Edits the lease records with `edit` under an exclusive lock held from the load to the
    /// save, so concurrent editors (another esi-cli of the Pod) never lose each other's
    /// changes; saves only when `edit` changed something. Waits for the lock as long as
    /// another editor holds it, which is never long: `edit` is synchronous, so nobody holds it
    /// across a network call.
    pub fn update_leases<R>(
        &self,
        owner: &Owner,
        edit: impl FnOnce(&mut Leases) -> R,
    ) -> anyhow::Result<R> {
        let _lock = LeasesLock::acquire(&self.leases_lock(), owner)?;
        let mut leases = self.load_leases()?;
        let before = leases.clone();
        let result = edit(&mut leases);
        if leases != before {
            write_json(&self.leases(), &leases, STATE_MODE, owner)?;
        }
        Ok(result)
    }

    /// Adds the leases of fresh envelopes to the records, dropping the records that need
    /// nothing any more (revoked, or expired: the backend ended them), so the file of a
    /// long-running refresher stays as small as the set of live leases.
    pub fn record_leases(
        &self,
        spec: &InjectionSpec,
        fresh: &[(String, &Envelope)],
    ) -> anyhow::Result<()> {
        let now = jiff::Timestamp::now();
        self.update_leases(&spec.owner, |leases| {
            leases
                .leases
                .retain(|l| !l.revoked && l.expires_at.is_none_or(|t| t > now));
            for (alias, env) in fresh {
                if let Some(lease) = &env.lease {
                    leases.leases.push(LeaseRecord {
                        alias: alias.clone(),
                        generator: spec
                            .generators
                            .get(alias)
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        lease: lease.clone(),
                        issued_at: env.issued_at,
                        expires_at: env.expires_at,
                        revoked: false,
                    });
                }
            }
        })
    }

    /// Marks the records of `revoked` leases (by handle) as revoked; a lease with no record
    /// (never recorded, or already dropped) is skipped.
    pub fn mark_revoked(&self, revoked: &[String], owner: &Owner) -> anyhow::Result<()> {
        self.update_leases(owner, |leases| {
            for rec in &mut leases.leases {
                if revoked.contains(&rec.lease) {
                    rec.revoked = true;
                }
            }
        })
    }

    /// An env bundle, when present.
    pub fn load_bundle(&self, container: &str) -> anyhow::Result<Option<Bundle>> {
        read_json(&self.bundle(container))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(lease: &str, expires_in: i64) -> Envelope {
        let now = jiff::Timestamp::now();
        Envelope {
            data: BTreeMap::new(),
            issued_at: now,
            expires_at: Some(now + jiff::SignedDuration::from_secs(expires_in)),
            renewable: false,
            lease: Some(lease.to_owned()),
        }
    }

    fn spec() -> InjectionSpec {
        InjectionSpec::from_json(
            r#"{"version":1,"federationUrl":"https://x","tokenPath":"/t","generators":{},"containers":{}}"#,
        )
        .unwrap()
    }

    #[test]
    fn recording_drops_revoked_and_expired_leases() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure_state_dir().unwrap();
        let spec = spec();
        let (live, expired, revoked) = (
            envelope("live", 600),
            envelope("expired", -1),
            envelope("revoked", 600),
        );
        layout
            .record_leases(
                &spec,
                &[
                    ("a".into(), &live),
                    ("a".into(), &expired),
                    ("a".into(), &revoked),
                ],
            )
            .unwrap();
        layout
            .mark_revoked(&["revoked".to_owned()], &spec.owner)
            .unwrap();
        assert_eq!(layout.load_leases().unwrap().leases.len(), 3);
        let no_expiry = Envelope {
            expires_at: None,
            ..envelope("forever", 0)
        };
        layout
            .record_leases(&spec, &[("b".into(), &no_expiry)])
            .unwrap();
        let kept: Vec<String> = layout
            .load_leases()
            .unwrap()
            .leases
            .into_iter()
            .map(|l| l.lease)
            .collect();
        assert_eq!(kept, ["live", "forever"]);
    }

    /// Refreshers recording and revokers marking at once, as a refresher sidecar re-issuing
    /// during a `preStop` revoke does. Each thread opens the lock file itself, and a `flock`
    /// belongs to the open file description, so threads contend exactly like processes.
    #[test]
    fn concurrent_edits_lose_no_lease_and_revive_no_revoked_one() {
        const WRITERS: usize = 8;
        const ROUNDS: usize = 25;
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure_state_dir().unwrap();
        let spec = spec();
        let start = std::sync::Barrier::new(WRITERS);
        let name = |w: usize, r: usize| format!("w{w}-r{r}");
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let (layout, spec, start) = (&layout, &spec, &start);
                s.spawn(move || {
                    start.wait();
                    for r in 0..ROUNDS {
                        let lease = envelope(&name(w, r), 600);
                        layout.record_leases(spec, &[("a".into(), &lease)]).unwrap();
                        if r % 2 == 1 {
                            layout.mark_revoked(&[name(w, r)], &spec.owner).unwrap();
                        }
                    }
                });
            }
        });
        let records = layout.load_leases().unwrap().leases;
        let (mut lost, mut revived) = (Vec::new(), Vec::new());
        for w in 0..WRITERS {
            for r in 0..ROUNDS {
                let rec = records.iter().find(|l| l.lease == name(w, r));
                // Revoked records may be dropped by a later recording; live ones never are.
                match (r % 2 == 1, rec) {
                    (false, None) => lost.push(name(w, r)),
                    (false, Some(l)) if l.revoked => revived.push(name(w, r)),
                    (true, Some(l)) if !l.revoked => revived.push(name(w, r)),
                    _ => {}
                }
            }
        }
        assert!(
            lost.is_empty() && revived.is_empty(),
            "lost: {lost:?}; wrongly (un)revoked: {revived:?}"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(layout.leases_lock())
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, STATE_MODE);
        assert_eq!(std::fs::metadata(layout.leases_lock()).unwrap().len(), 0);
    }
}
