//! Reading a container image's entrypoint from its registry, for a container that gets env
//! vars and has no `command`: esi-cli must wrap the program the container would run, and only
//! the image's configuration says what that is (`ENTRYPOINT`, then `CMD` when the Pod sets no
//! `args`). Off unless `entrypointLookup.registries` lists registries; `esi.dev/entrypoint.<c>`
//! always wins and is never looked up.
//!
//! The lookup reads the manifest (an image index once, then its image for each platform the
//! Pod may run on, see [`PodPlatforms`]; an image that is not an index serves every platform)
//! and the configuration blob, each up to a bound and checked against its digest
//! (`entrypoint/registry.rs`), anonymously or with the credentials of the configured Docker
//! `config.json`; never the Pod's `imagePullSecrets`, which the webhook could
//! only read with `get` on every Secret of the cluster. The registry must be on the
//! configured list: a Pod names its images, and without the list it could make the webhook call
//! any host. Answers are kept: an image pinned by digest for as long as the webhook runs
//! (bounded in number), a tag for `cacheSeconds` (a tag can move; the kubelet may then pull
//! another image than the one read here, which is why digests are the safe choice). Failures
//! are not kept.
//!
//! What the Pod's creator sees of a failure is a short reason; the registry's own words go to
//! the log only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use esi_backends::http::{Trust, tls_config};
use oci_spec::distribution::Reference;
use secrecy::SecretString;
use serde::Deserialize;

use crate::config::EntrypointLookupConfig;
use crate::locked;

mod platforms;
mod registry;

pub use platforms::PodPlatforms;

use registry::{Configs, Credentials, Registries};

/// Most images kept.
const MAX_ENTRIES: usize = 1024;
/// Largest credentials file read.
const MAX_CREDENTIALS_BYTES: u64 = 1024 * 1024;

/// What an image runs: its `ENTRYPOINT` and `CMD`, and the digest of the manifest read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageCommand {
    /// `ENTRYPOINT` (empty when the image has none).
    pub entrypoint: Vec<String>,
    /// `CMD` (empty when the image has none).
    pub cmd: Vec<String>,
    /// The manifest's digest (`sha256:...`).
    pub digest: String,
}

impl ImageCommand {
    /// The command line a container runs before its `args`: the entrypoint, and the `CMD` too
    /// when the container sets no `args` (Kubernetes then keeps the image's `CMD`).
    pub fn command(&self, container_sets_args: bool) -> Vec<String> {
        let mut out = self.entrypoint.clone();
        if !container_sets_args {
            out.extend(self.cmd.iter().cloned());
        }
        out
    }
}

/// A platform an image index may hold an image for: `os/architecture[/variant]`, as the OCI
/// image index and `docker --platform` name it (`linux/amd64`, `linux/arm64`, `linux/arm/v7`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// `amd64`, `arm64`, ... (Go's names, as Kubernetes' `kubernetes.io/arch` label has them).
    pub architecture: String,
    /// `v7`, `v8`, ...; without one, an index entry of any variant matches.
    pub variant: Option<String>,
}

/// The node label a Pod's `nodeSelector` or node affinity pins its architecture with.
pub const ARCH_LABEL: &str = "kubernetes.io/arch";
/// The node label a Pod's `nodeSelector` or node affinity pins its OS with.
pub const OS_LABEL: &str = "kubernetes.io/os";

impl Platform {
    /// The webhook's own platform.
    pub fn own() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
        }
    }

    /// This platform, then those whose images its nodes also run, in the order containerd
    /// prefers them when an index has no image for the node's own (its `platforms.Only`):
    /// `amd64/vN` the lower versions down to `v1`, then `386`; `arm/vN` the lower versions
    /// down to `v5`; `arm64` 32-bit `arm` from `v8` down to `v5`.
    pub fn fallbacks(&self) -> Vec<Platform> {
        let with = |architecture: &str, variant: Option<String>| Platform {
            os: self.os.clone(),
            architecture: architecture.to_owned(),
            variant,
        };
        let version = |v: Option<&str>| v.and_then(|v| version_number(v).parse::<u32>().ok());
        let mut out = vec![self.clone()];
        match self.architecture.as_str() {
            "amd64" => {
                let below = version(self.variant.as_deref()).unwrap_or(1);
                out.extend(
                    (1..below)
                        .rev()
                        .map(|n| with("amd64", Some(format!("v{n}")))),
                );
                out.push(with("386", None));
            }
            "arm" => {
                let below = version(self.variant.as_deref()).unwrap_or(5);
                out.extend((5..below).rev().map(|n| with("arm", Some(format!("v{n}")))));
            }
            "arm64" => {
                out.extend((5..=8).rev().map(|n| with("arm", Some(format!("v{n}")))));
            }
            _ => {}
        }
        out
    }

    /// Whether an index entry for `os`/`architecture`/`variant` is an image for this platform.
    /// Without a variant, an entry of any variant is; with one, an entry of that variant,
    /// an entry without one standing for its architecture's default as containerd reads it
    /// (`arm64` is `arm64/v8`, `arm` is `arm/v7`, `amd64` is `amd64/v1`; `8` is `v8`).
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let given = variant.or(match architecture {
            "arm64" => Some("v8"),
            "arm" => Some("v7"),
            "amd64" => Some("v1"),
            _ => None,
        });
        self.os == os
            && self.architecture == architecture
            && self.variant.as_deref().is_none_or(|wanted| {
                given.is_some_and(|given| {
                    if given.starts_with(|c: char| c.is_ascii_digit()) {
                        wanted.strip_prefix('v') == Some(given)
                    } else {
                        given == wanted
                    }
                })
            })
    }
}

/// A variant's version, `v8` or `8` alike.
fn version_number(variant: &str) -> &str {
    variant.strip_prefix('v').unwrap_or(variant)
}

impl std::str::FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let word = |p: &str| {
            !p.is_empty()
                && p.len() <= 32
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        let mut parts = s.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(os), Some(arch), variant, None)
                if word(os) && word(arch) && variant.is_none_or(word) =>
            {
                Ok(Self {
                    os: os.to_owned(),
                    architecture: arch.to_owned(),
                    variant: variant.map(str::to_owned),
                })
            }
            _ => Err(format!(
                "{s:?} is not a platform: os/architecture[/variant] in lowercase letters and \
                 digits, e.g. linux/amd64 or linux/arm/v7"
            )),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Why an image's entrypoint could not be read; the text is what the Pod's creator sees.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LookupError {
    /// The image reference does not parse.
    #[error("the image reference is not valid")]
    Reference,
    /// The registry is not on the list.
    #[error(
        "registry {0} is not one the webhook may read (entrypointLookup.registries in its configuration)"
    )]
    NotAllowed(String),
    /// The registry refused the credentials, or wants some.
    #[error("the registry refused access to the image (the webhook reads it {0})")]
    Unauthorized(&'static str),
    /// No such image.
    #[error("the registry has no such image")]
    NotFound,
    /// The image is an index without an image for the platform.
    #[error("the image has no {0} variant")]
    NoPlatform(Platform),
    /// The index's images for the platforms the Pod may run on run different commands.
    #[error(
        "the image runs different commands on {0}; pin the Pod to one platform with nodeSelector {ARCH_LABEL} \
         (or required node affinity)"
    )]
    PlatformsDiffer(String),
    /// The Pod's `nodeSelector` and required node affinity allow none of the cluster's
    /// platforms (listed) and name no other.
    #[error(
        "the Pod's nodeSelector and required node affinity allow none of the cluster's platforms \
         ({0}, entrypointLookup.platforms) and name no other platform"
    )]
    NoSchedulablePlatform(String),
    /// The configuration holds no `ENTRYPOINT` and no `CMD`.
    #[error("the image's configuration has no ENTRYPOINT or CMD")]
    Empty,
    /// The manifest gives the configuration a size past 4 MiB (Distribution's own manifest
    /// limit), or below 0.
    #[error("the image's configuration is {0} bytes; the webhook reads at most 4 MiB")]
    TooLarge(i64),
    /// The manifest (or index) is larger than 4 MiB, Distribution's own limit.
    #[error("the image's manifest is larger than 4 MiB, which the webhook does not read")]
    ManifestTooLarge,
    /// The registry could not be read in time.
    #[error("the registry did not answer within {0} s")]
    Timeout(u64),
    /// Anything else (network, TLS, a malformed answer); the detail is logged.
    #[error("the registry could not be read")]
    Unavailable(String),
}

impl LookupError {
    /// A bounded label for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Reference => "invalid_reference",
            Self::NotAllowed(_) => "not_allowed",
            Self::Unauthorized(_) => "unauthorized",
            Self::NotFound => "not_found",
            Self::NoPlatform(_) => "no_platform",
            Self::PlatformsDiffer(_) => "platforms_differ",
            Self::NoSchedulablePlatform(_) => "no_platform_allowed",
            Self::Empty => "no_entrypoint",
            Self::TooLarge(_) => "config_too_large",
            Self::ManifestTooLarge => "manifest_too_large",
            Self::Timeout(_) => "timeout",
            Self::Unavailable(_) => "unavailable",
        }
    }

    /// What is logged: the registry's own words where there are some.
    pub fn detail(&self) -> String {
        match self {
            Self::Unavailable(d) => d.clone(),
            other => other.to_string(),
        }
    }
}

/// Where an answer came from (a bounded metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Kept from an earlier lookup.
    Cached,
    /// Read from the registry now.
    Registry,
}

impl Source {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cached => "cached",
            Self::Registry => "registry",
        }
    }
}

/// The registry client, its settings and the answers kept.
pub struct EntrypointLookup {
    cfg: EntrypointLookupConfig,
    /// `cfg.platforms`, read.
    platforms: Vec<Platform>,
    registries: Registries,
    cache: Mutex<HashMap<String, (Instant, Arc<ImageCommand>)>>,
    /// One gate per image being read: the Pods of a rollout, admitted at once, make one read
    /// (Docker Hub counts each manifest read against its pull rate limit).
    reading: Gates,
}

/// Why the lookup cannot be set up (an unreadable CA file, no trusted certificate at all, a
/// platform that is not one).
#[derive(Debug, thiserror::Error)]
#[error("entrypointLookup.{field}: {why}")]
pub struct SetupError {
    /// The field, and the file it names.
    field: String,
    why: String,
}

impl EntrypointLookup {
    /// A client for `cfg`, trusting the system roots and `cfg.caFile` (read now).
    pub fn new(cfg: &EntrypointLookupConfig) -> Result<Self, SetupError> {
        let field = match &cfg.ca_file {
            Some(path) => format!("caFile {path}"),
            None => "caFile".to_owned(),
        };
        let failed = |why: String| SetupError {
            field: field.clone(),
            why,
        };
        let pem = match &cfg.ca_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?),
            None => None,
        };
        let tls = tls_config(Trust::System {
            extra: pem.as_deref(),
        })
        .map_err(failed)?;
        let registries =
            Registries::new(tls, Duration::from_secs(cfg.timeout_seconds)).map_err(failed)?;
        let platforms = cfg.platforms().map_err(|why| SetupError {
            field: "platforms".to_owned(),
            why,
        })?;
        Ok(Self {
            cfg: cfg.clone(),
            platforms,
            registries,
            cache: Mutex::new(HashMap::new()),
            reading: Mutex::new(HashMap::new()),
        })
    }

    /// The `ENTRYPOINT` and `CMD` of `image` (a container's `image` field) for `platform`:
    /// [`Self::lookup_for`] one platform.
    pub async fn lookup(
        &self,
        image: &str,
        platform: &Platform,
    ) -> Result<(Arc<ImageCommand>, Source), LookupError> {
        let mut found = self.lookup_for(image, std::slice::from_ref(platform)).await;
        found.pop().expect("one answer per platform")
    }

    /// The `ENTRYPOINT` and `CMD` of `image` for each of `platforms`, in order (an index's
    /// image for each; an image that is not an index serves every platform, and is read once
    /// for all of them), within the configured timeout (waiting for another admission reading
    /// the same image included).
    pub async fn lookup_for(
        &self,
        image: &str,
        platforms: &[Platform],
    ) -> Vec<Result<(Arc<ImageCommand>, Source), LookupError>> {
        match self.try_lookup_for(image, platforms).await {
            Ok(found) => found,
            // The image could not be read at all: the same answer for every platform.
            Err(e) => vec![Err(e); platforms.len()],
        }
    }

    async fn try_lookup_for(
        &self,
        image: &str,
        platforms: &[Platform],
    ) -> Result<Vec<Result<(Arc<ImageCommand>, Source), LookupError>>, LookupError> {
        let reference: Reference = image.parse().map_err(|_| LookupError::Reference)?;
        let registry = reference.registry();
        if !self.cfg.registry_allowed(registry) {
            return Err(LookupError::NotAllowed(registry.to_owned()));
        }
        let ttl = if reference.digest().is_some() {
            Duration::MAX
        } else {
            Duration::from_secs(self.cfg.cache_seconds)
        };
        // Image references hold no space: `* IMAGE` for an image that is not an index,
        // `PLATFORM IMAGE` for an index's image for a platform.
        let any_key = format!("* {image}");
        let key = |p: &Platform| format!("{p} {image}");
        let cached = || {
            let cache = locked(&self.cache);
            let fresh = |k: &str| {
                cache
                    .get(k)
                    .filter(|(at, _)| at.elapsed() < ttl)
                    .map(|(_, found)| found.clone())
            };
            let any = fresh(&any_key);
            platforms
                .iter()
                .map(|p| any.clone().or_else(|| fresh(&key(p))))
                .collect::<Vec<_>>()
        };
        let hits = |found: Vec<Option<Arc<ImageCommand>>>| {
            found
                .into_iter()
                .map(|f| f.map(|f| Ok((f, Source::Cached))))
                .collect::<Option<Vec<_>>>()
        };
        if let Some(all) = hits(cached()) {
            return Ok(all);
        }
        let timeout = Duration::from_secs(self.cfg.timeout_seconds);
        tokio::time::timeout(timeout, async {
            let gate = Gate::enter(&self.reading, image);
            let _turn = gate.turn().await;
            // Read by the admission this one waited for.
            let found = cached();
            let missing: Vec<&Platform> = platforms
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_none())
                .map(|(p, _)| p)
                .collect();
            if missing.is_empty() {
                return Ok(hits(found).unwrap_or_default());
            }
            let credentials = self.credentials(reference.registry())?;
            let read = self
                .registries
                .image_configs(&reference, &credentials, &missing)
                .await?;
            let mut read = match read {
                Configs::Any(config) => {
                    let found = self.keep(&any_key, parse_config(&config.0, config.1)?);
                    vec![Ok(found); missing.len()]
                }
                Configs::PerPlatform(each) => missing
                    .iter()
                    .zip(each)
                    .map(|(p, config)| {
                        let (config, digest) = config?;
                        Ok(self.keep(&key(p), parse_config(&config, digest)?))
                    })
                    .collect(),
            }
            .into_iter();
            Ok(found
                .into_iter()
                .map(|f| match f {
                    Some(f) => Ok((f, Source::Cached)),
                    None => read
                        .next()
                        .expect("one read per missing platform")
                        .map(|f| (f, Source::Registry)),
                })
                .collect())
        })
        .await
        .map_err(|_| LookupError::Timeout(self.cfg.timeout_seconds))?
    }

    /// The platforms a Pod that pins none may run on (`entrypointLookup.platforms`).
    pub fn platforms(&self) -> &[Platform] {
        &self.platforms
    }

    /// Keeps `found` under `key`.
    fn keep(&self, key: &str, found: ImageCommand) -> Arc<ImageCommand> {
        let found = Arc::new(found);
        let mut cache = locked(&self.cache);
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(self.cfg.cache_seconds));
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key.to_owned(), (Instant::now(), found.clone()));
        found
    }

    /// The credentials for `registry` in the configured `config.json`, read now (a rotated
    /// Secret is picked up); anonymous without a file or an entry.
    fn credentials(&self, registry: &str) -> Result<Credentials, LookupError> {
        let Some(path) = &self.cfg.credentials_file else {
            return Ok(Credentials::Anonymous);
        };
        let unreadable = |why: String| {
            LookupError::Unavailable(format!("entrypointLookup.credentialsFile {path}: {why}"))
        };
        let text = read_bounded(path).map_err(unreadable)?;
        credentials_for(&text, registry).map_err(unreadable)
    }
}

/// The images being read, each with its gate and the number of admissions holding it.
type Gates = Mutex<HashMap<String, (usize, Arc<tokio::sync::Mutex<()>>)>>;

/// An admission's place at the gate of one image: the first to arrive reads the registry, the
/// others wait for it and then find its answer kept. The gate leaves the map with the last
/// admission holding it, however that admission ends (a read done or failed, a timeout).
struct Gate<'a> {
    gates: &'a Gates,
    image: &'a str,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> Gate<'a> {
    fn enter(gates: &'a Gates, image: &'a str) -> Self {
        let mut all = locked(gates);
        let (holders, gate) = all.entry(image.to_owned()).or_default();
        *holders += 1;
        Self {
            gates,
            image,
            gate: gate.clone(),
        }
    }

    /// Waits until no other admission reads the image.
    async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.gate.lock().await
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        let mut all = locked(self.gates);
        if let Some((holders, _)) = all.get_mut(self.image) {
            *holders -= 1;
            if *holders == 0 {
                all.remove(self.image);
            }
        }
    }
}

fn read_bounded(path: &str) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(MAX_CREDENTIALS_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_CREDENTIALS_BYTES {
        return Err(format!("larger than {MAX_CREDENTIALS_BYTES} bytes"));
    }
    Ok(text)
}

/// A Docker `config.json`: the entries this reads.
#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The host an `auths` key names: Docker writes `https://index.docker.io/v1/` for Docker Hub,
/// others a bare host or a URL.
fn auth_host(key: &str) -> &str {
    let host = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

/// The credentials `text` (a Docker `config.json`) holds for `registry`, or anonymous.
fn credentials_for(text: &str, registry: &str) -> Result<Credentials, String> {
    // serde's words quote the values they stumble on, and this file holds passwords.
    let config: DockerConfig = serde_json::from_str(text).map_err(|e| {
        format!(
            "not a Docker config.json: {}",
            esi_api::json::without_values(&e.to_string())
        )
    })?;
    let Some(entry) = config
        .auths
        .iter()
        .find(|(key, _)| auth_host(key) == registry)
        .map(|(_, entry)| entry)
    else {
        return Ok(Credentials::Anonymous);
    };
    if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Credentials::Basic {
            user: user.clone(),
            password: SecretString::from(password.as_str()),
        });
    }
    let Some(auth) = &entry.auth else {
        return Err(format!("the entry for {registry} has no auth"));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| format!("the auth of {registry} is not base64 of user:password"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| format!("the auth of {registry} is not base64 of user:password"))?;
    Ok(Credentials::Basic {
        user: user.to_owned(),
        password: SecretString::from(password),
    })
}

/// An image configuration: the part this reads.
#[derive(Deserialize)]
struct ImageConfig {
    config: Option<ContainerConfig>,
}

#[derive(Deserialize)]
struct ContainerConfig {
    #[serde(rename = "Entrypoint")]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd")]
    cmd: Option<Vec<String>>,
}

fn parse_config(config: &[u8], digest: String) -> Result<ImageCommand, LookupError> {
    let parsed: ImageConfig = serde_json::from_slice(config).map_err(|e| {
        LookupError::Unavailable(format!("the image configuration is not one: {e}"))
    })?;
    let inner = parsed.config;
    let entrypoint = inner
        .as_ref()
        .and_then(|c| c.entrypoint.clone())
        .unwrap_or_default();
    let cmd = inner.and_then(|c| c.cmd).unwrap_or_default();
    if entrypoint.is_empty() && cmd.is_empty() {
        return Err(LookupError::Empty);
    }
    Ok(ImageCommand {
        entrypoint,
        cmd,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_the_entrypoint_then_cmd_unless_the_container_sets_args() {
        let image = parse_config(
            br#"{"architecture":"amd64","config":{"Entrypoint":["/app/server"],"Cmd":["--port","8080"]}}"#,
            "sha256:1".into(),
        )
        .unwrap();
        assert_eq!(image.command(false), ["/app/server", "--port", "8080"]);
        assert_eq!(image.command(true), ["/app/server"]);
        let cmd_only = parse_config(
            br#"{"config":{"Entrypoint":null,"Cmd":["nginx","-g","daemon off;"]}}"#,
            "d".into(),
        )
        .unwrap();
        assert_eq!(cmd_only.command(false), ["nginx", "-g", "daemon off;"]);
        assert!(matches!(
            parse_config(br#"{"config":{"Env":["A=b"]}}"#, "d".into()),
            Err(LookupError::Empty)
        ));
        assert!(matches!(
            parse_config(br#"{"rootfs":{}}"#, "d".into()),
            Err(LookupError::Empty)
        ));
        assert!(matches!(
            parse_config(b"not json", "d".into()),
            Err(LookupError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn a_gate_leaves_with_its_last_holder_however_it_ends() {
        let gates = Gates::default();
        let reader = Gate::enter(&gates, "img");
        let turn = reader.turn().await;
        // Another admission waits at the gate, and times out there.
        let waited = tokio::time::timeout(Duration::from_millis(20), async {
            let gate = Gate::enter(&gates, "img");
            let _turn = gate.turn().await;
        })
        .await;
        assert!(waited.is_err());
        assert_eq!(locked(&gates)["img"].0, 1);
        // A third one waits while the read goes on, then takes its turn.
        let waiting = Gate::enter(&gates, "img");
        drop(turn);
        drop(reader);
        assert_eq!(locked(&gates)["img"].0, 1);
        drop(waiting.turn().await);
        drop(waiting);
        assert!(locked(&gates).is_empty());
    }

    #[test]
    fn credentials_come_from_the_entry_of_the_registry() {
        let file = r#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"aHViOmh1Yi1wYXNz"},
            "ghcr.io":{"username":"bot","password":"ghcr-pass"},
            "https://registry.example.com:5000":{"auth":"cmVnOnJlZy1wYXNz"},
            "broken.example.com":{"auth":"bm8tY29sb24="},
            "empty.example.com":{}}}"#;
        let basic = |user: &str, password: &str| Some((user.to_owned(), password.to_owned()));
        let got = |registry: &str| credentials_for(file, registry);
        let pair = |c: Credentials| match c {
            Credentials::Basic { user, password } => {
                use secrecy::ExposeSecret as _;
                Some((user, password.expose_secret().to_owned()))
            }
            Credentials::Anonymous => None,
        };
        assert_eq!(pair(got("docker.io").unwrap()), basic("hub", "hub-pass"));
        assert_eq!(pair(got("ghcr.io").unwrap()), basic("bot", "ghcr-pass"));
        assert_eq!(
            pair(got("registry.example.com:5000").unwrap()),
            basic("reg", "reg-pass")
        );
        assert_eq!(pair(got("quay.io").unwrap()), None);
        let e = got("broken.example.com").unwrap_err();
        assert!(
            e.contains("user:password") && !e.contains("no-colon"),
            "{e}"
        );
        assert!(got("empty.example.com").unwrap_err().contains("no auth"));
        for hostile in [
            r#"{"auths":{"ghcr.io":{"password":["hunter2-secret"]}}}"#,
            r#"{"auths":"hunter2-secret"}"#,
        ] {
            let e = credentials_for(hostile, "ghcr.io").unwrap_err();
            assert!(e.contains("config.json") && !e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn the_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let with = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            EntrypointLookupConfig {
                registries: vec!["ghcr.io".into()],
                ca_file: Some(path.display().to_string()),
                ..EntrypointLookupConfig::default()
            }
        };
        let ca = esi_test_support::pki("registry").unwrap().ca_pem;
        assert!(EntrypointLookup::new(&with("ca.crt", &ca)).is_ok());
        for (name, text, why) in [
            ("empty.crt", "", "holds no PEM certificate"),
            (
                "key.pem",
                &esi_test_support::pki("x").unwrap().key_pem,
                "holds no PEM certificate",
            ),
            (
                "broken.crt",
                "-----BEGIN CERTIFICATE-----\nnot base64!\n",
                "not a PEM certificate bundle",
            ),
        ] {
            let e = EntrypointLookup::new(&with(name, text))
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(name) && e.contains(why), "{e}");
        }
        let missing = EntrypointLookupConfig {
            ca_file: Some("/nonexistent/ca.crt".into()),
            ..with("unused", "")
        };
        assert!(EntrypointLookup::new(&missing).is_err());
    }

    #[test]
    fn the_own_platform_is_linux_on_this_architecture() {
        let own = Platform::own();
        assert_eq!(own.os, "linux");
        assert!(own.matches(
            "linux",
            if cfg!(target_arch = "aarch64") {
                "arm64"
            } else {
                "amd64"
            },
            Some("v8")
        ));
    }

    #[test]
    fn only_listed_registries_are_read() {
        let cfg = EntrypointLookupConfig {
            registries: vec!["ghcr.io".into(), "*.dkr.ecr.*.amazonaws.com".into()],
            ..EntrypointLookupConfig::default()
        };
        let lookup = EntrypointLookup::new(&cfg).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for (image, allowed) in [
            ("nginx", "docker.io"),
            ("169.254.169.254/latest/meta-data:x", "169.254.169.254"),
            ("registry.internal:5000/app:1", "registry.internal:5000"),
        ] {
            match rt.block_on(lookup.lookup(image, &Platform::own())) {
                Err(LookupError::NotAllowed(r)) => assert_eq!(r, allowed),
                other => panic!("{image}: {other:?}"),
            }
        }
        assert!(cfg.registry_allowed("123456789012.dkr.ecr.eu-west-1.amazonaws.com"));
        assert!(matches!(
            rt.block_on(lookup.lookup("UPPER/case:bad tag", &Platform::own())),
            Err(LookupError::Reference)
        ));
    }
}
