//! The contract between the mutating admission webhook and `esi-cli`.
//!
//! A Pod opts in with the label [`INJECT_LABEL`]`: "true"` (the webhook's `objectSelector`
//! matches on it, so Pods that do not ask never reach the webhook) and describes what it wants
//! with annotations under the one prefix [`PREFIX`] (`esi.dev/`):
//!
//! | annotation | value | meaning |
//! |---|---|---|
//! | `esi.dev/generators` | `alias=namespace/kind/name, ...` | generators to call, by alias (required) |
//! | `esi.dev/federation-url` | `https://...` | federation URL; must be on the webhook's allow-list (default from the webhook config) |
//! | `esi.dev/env` | `DB_USER=db.username, DB_PASS=db.password` | env vars for every chosen container |
//! | `esi.dev/env.<container>` | same syntax | env vars for one container only (added to `esi.dev/env`) |
//! | `esi.dev/env-from` | `PREFIX_*=alias, *=other` | every key of an alias, with an optional prefix |
//! | `esi.dev/env-from.<container>` | same syntax | whole-alias imports for one container |
//! | `esi.dev/file.<name>` | `path=/etc/db/creds.json, format=json, from=db, mode=0440` | a file output (see below) |
//! | `esi.dev/template.<name>` | template text with `{{ .alias.key }}` | body of a `format=template` file |
//! | `esi.dev/containers` | `app, worker` | app containers that get credentials (default: all) |
//! | `esi.dev/init-containers` | `migrate` | init containers that get credentials (default: none) |
//! | `esi.dev/entrypoint.<container>` | JSON array `["/app/server"]` | the entrypoint of a container without `command` (else read from its image when the webhook's `entrypointLookup` lists its registry) |
//! | `esi.dev/refresh` | `true`/`false` | run the `esi-cli refresh` native sidecar (needs file outputs) |
//! | `esi.dev/refresh-at` | `66%` | re-issue at this fraction of the credential's lifetime (10–90 %) |
//! | `esi.dev/refresh-notify` | `none`, `signal=SIGHUP, process=nginx` or `url=http://127.0.0.1:9090/-/reload` | what to tell the app after a swap |
//! | `esi.dev/revoke-on-exit` | `true`/`false` | revoke every lease when the Pod terminates |
//! | `esi.dev/token-audience` | `esi` | audience of the projected token (within the webhook's allow-list) |
//! | `esi.dev/token-expiration` | `10m` / `600s` / `600` | projected token lifetime (within the webhook's bounds, at least 600 s) |
//! | `esi.dev/run-as` | `uid[:gid]` | the app's user when neither the Pod nor its containers say it |
//! | `esi.dev/cli-resources` | `requests.cpu=20m, limits.memory=64Mi` | resources of the esi-cli containers, over the webhook's defaults |
//! | `esi.dev/status` | `injected` | written by the webhook; makes re-admission a no-op |
//!
//! Lists are separated by commas or newlines; blanks around items are ignored. Every key
//! under the prefix must be one of the above: an unknown key (a typo) is an error, never
//! silently ignored. The same keys on the Pod's ServiceAccount act as defaults
//! ([`merge_service_account_defaults`]); the Pod's own value wins key by key.
//!
//! A file output's options: `path` (absolute, required), `format` (`json`, `yaml`, `env`,
//! `raw`, `template`; default `json`, or `template` when `esi.dev/template.<name>` exists),
//! `from` (an alias for `json`/`yaml`/`env`, `alias.key` for `raw`; unused by `template`),
//! `mode` (octal, default `0400` or `0440` when only the group is known; never world-readable)
//! and, for `raw` only, `decode` (`base64` or `base64url`: the file holds the bytes the value
//! encodes, see [`Decoding`]).
//!
//! The webhook resolves the annotations against the Pod and its own configuration into an
//! [`InjectionSpec`], serialized as JSON into the env var [`ENV_SPEC`] of the esi-cli
//! containers. Layout inside the Pod:
//!
//! - the memory-backed `emptyDir` [`VOLUME_NAME`] is mounted at [`MOUNT_PATH`] (`/esi`):
//!   read-write in esi-cli containers, read-only in app containers; it holds the binary at
//!   [`BINARY_PATH`], one env bundle per container under [`ENV_DIR`], file outputs under
//!   [`FILES_DIR`] (each output's directory is also mounted, by `subPath`, where the app expects
//!   it) and esi-cli's own state (leases, for revoke) under [`STATE_DIR`];
//! - the projected ServiceAccount token volume [`TOKEN_VOLUME_NAME`] is mounted only into
//!   esi-cli containers at [`TOKEN_MOUNT_PATH`]; the token is [`TOKEN_PATH`];
//! - the init container [`INIT_CONTAINER_NAME`] runs `esi-cli init`; the optional native sidecar
//!   [`AGENT_CONTAINER_NAME`] runs `esi-cli refresh` (refreshing and/or revoking on `SIGTERM`);
//! - a container that gets env vars has its `command` rewritten to
//!   `[BINARY_PATH, "exec", "--container", <name>, "--", <original command>...]`; `args` are left
//!   untouched (Kubernetes appends them).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The one annotation (and label) prefix.
pub const PREFIX: &str = "esi.dev/";
/// The opt-in label the webhook's `objectSelector` matches; value [`INJECT_LABEL_VALUE`].
pub const INJECT_LABEL: &str = "esi.dev/inject";
/// The value of [`INJECT_LABEL`] that opts a Pod in; any other value leaves it alone.
pub const INJECT_LABEL_VALUE: &str = "true";

/// Annotation: the federation URL.
pub const ANN_FEDERATION_URL: &str = "esi.dev/federation-url";
/// Annotation: the generators, `alias=namespace/kind/name` list.
pub const ANN_GENERATORS: &str = "esi.dev/generators";
/// Annotation: env mappings for every chosen container; `esi.dev/env.<container>` for one.
pub const ANN_ENV: &str = "esi.dev/env";
/// Annotation: whole-alias env imports; `esi.dev/env-from.<container>` for one container.
pub const ANN_ENV_FROM: &str = "esi.dev/env-from";
/// Annotation prefix: `esi.dev/file.<name>`, a file output.
pub const ANN_FILE_PREFIX: &str = "esi.dev/file.";
/// Annotation prefix: `esi.dev/template.<name>`, a template file's body.
pub const ANN_TEMPLATE_PREFIX: &str = "esi.dev/template.";
/// Annotation: the app containers that get credentials.
pub const ANN_CONTAINERS: &str = "esi.dev/containers";
/// Annotation: the init containers that get credentials.
pub const ANN_INIT_CONTAINERS: &str = "esi.dev/init-containers";
/// Annotation prefix: `esi.dev/entrypoint.<container>`, a JSON array of strings.
pub const ANN_ENTRYPOINT_PREFIX: &str = "esi.dev/entrypoint.";
/// Annotation: `true` to run the refresh sidecar.
pub const ANN_REFRESH: &str = "esi.dev/refresh";
/// Annotation: refresh point as a percentage of the credential lifetime.
pub const ANN_REFRESH_AT: &str = "esi.dev/refresh-at";
/// Annotation: how the app is told about a swap.
pub const ANN_REFRESH_NOTIFY: &str = "esi.dev/refresh-notify";
/// Annotation: `true` to revoke every lease when the Pod terminates.
pub const ANN_REVOKE_ON_EXIT: &str = "esi.dev/revoke-on-exit";
/// Annotation: audience of the projected token.
pub const ANN_TOKEN_AUDIENCE: &str = "esi.dev/token-audience";
/// Annotation: lifetime of the projected token.
pub const ANN_TOKEN_EXPIRATION: &str = "esi.dev/token-expiration";
/// Annotation: `uid[:gid]` of the app when the security context does not say it.
pub const ANN_RUN_AS: &str = "esi.dev/run-as";
/// Resource requests and limits of the Pod's esi-cli containers, over the webhook's defaults.
pub const ANN_CLI_RESOURCES: &str = "esi.dev/cli-resources";
/// Every annotation key (or key prefix, ending in `.`) this contract defines.
pub const KNOWN_ANNOTATIONS: &[&str] = &[
    ANN_GENERATORS,
    ANN_FEDERATION_URL,
    ANN_ENV,
    "esi.dev/env.<container>",
    ANN_ENV_FROM,
    "esi.dev/env-from.<container>",
    "esi.dev/file.<name>",
    "esi.dev/template.<name>",
    ANN_CONTAINERS,
    ANN_INIT_CONTAINERS,
    "esi.dev/entrypoint.<container>",
    ANN_REFRESH,
    ANN_REFRESH_AT,
    ANN_REFRESH_NOTIFY,
    ANN_REVOKE_ON_EXIT,
    ANN_TOKEN_AUDIENCE,
    ANN_TOKEN_EXPIRATION,
    ANN_RUN_AS,
    ANN_CLI_RESOURCES,
    ANN_STATUS,
];
/// Annotation written by the webhook on injected Pods.
pub const ANN_STATUS: &str = "esi.dev/status";
/// Value of [`ANN_STATUS`] once injected.
pub const STATUS_INJECTED: &str = "injected";

/// Env var of esi-cli containers carrying the JSON [`InjectionSpec`].
pub const ENV_SPEC: &str = "ESI_SPEC";
/// Env var: `true` lets esi-cli talk to an `http://` federation (set by the webhook only when
/// its allow-list admitted such a URL; never the default).
pub const ENV_ALLOW_HTTP: &str = "ESI_ALLOW_HTTP";
/// Env var: path of the projected token (overrides [`InjectionSpec::token_path`]; for use
/// outside Kubernetes).
pub const ENV_TOKEN_FILE: &str = "ESI_TOKEN_FILE";
/// Env var: the federation URL (for `esi-cli fetch`/`doctor` outside Kubernetes).
pub const ENV_FEDERATION_URL: &str = "ESI_FEDERATION_URL";
/// Env var: the shared volume's mount path (default [`MOUNT_PATH`]; tests point it at a temp dir).
pub const ENV_VOLUME_DIR: &str = "ESI_VOLUME_DIR";
/// Env var: where the one-line failure reason goes (default [`TERMINATION_LOG`]).
pub const ENV_TERMINATION_LOG: &str = "ESI_TERMINATION_LOG";
/// Env var: log filter (`info`, `debug`, ...).
pub const ENV_LOG: &str = "ESI_LOG";
/// Env var: log format, `json` or `plain`.
pub const ENV_LOG_FORMAT: &str = "ESI_LOG_FORMAT";
/// Env var: the Pod's name (downward API), for logs and diagnostics.
pub const ENV_POD_NAME: &str = "ESI_POD_NAME";
/// Env var: the Pod's namespace (downward API).
pub const ENV_POD_NAMESPACE: &str = "ESI_POD_NAMESPACE";

/// Name of the memory-backed `emptyDir` volume.
pub const VOLUME_NAME: &str = "esi";
/// Where [`VOLUME_NAME`] is mounted in esi-cli and app containers.
pub const MOUNT_PATH: &str = "/esi";
/// Path of the esi-cli binary copied into the shared volume by `esi-cli init`.
pub const BINARY_PATH: &str = "/esi/bin/esi-cli";
/// The binary's path relative to the volume root.
pub const BINARY_REL_PATH: &str = "bin/esi-cli";
/// Directory (relative to the volume root) of the per-container env bundles: `env/<container>.json`.
pub const ENV_DIR: &str = "env";
/// Directory (relative to the volume root) holding file outputs, see [`FileOutput::volume_path`].
pub const FILES_DIR: &str = "files";
/// Directory (relative to the volume root) of esi-cli's own state (leases, spec copy).
pub const STATE_DIR: &str = "state";
/// Name of the projected token volume.
pub const TOKEN_VOLUME_NAME: &str = "esi-token";
/// Where the token volume is mounted (esi-cli containers only).
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/esi.dev/serviceaccount";
/// File name of the token inside [`TOKEN_MOUNT_PATH`].
pub const TOKEN_FILE_NAME: &str = "token";
/// Full path of the projected token.
pub const TOKEN_PATH: &str = "/var/run/secrets/esi.dev/serviceaccount/token";
/// Default termination-log path.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Name of the esi-cli init container.
pub const INIT_CONTAINER_NAME: &str = "esi-init";
/// Name of the esi-cli native sidecar (refresh / revoke-on-exit).
pub const AGENT_CONTAINER_NAME: &str = "esi-agent";
/// Path of the esi-cli binary inside its own image (the init container's command).
pub const IMAGE_BINARY_PATH: &str = "/usr/local/bin/esi-cli";
/// The uid esi-cli runs as when the app's user is unknown or root.
pub const DEFAULT_UID: u32 = 65532;
/// Minimum projected token lifetime Kubernetes accepts, in seconds.
pub const MIN_TOKEN_EXPIRATION_SECONDS: i64 = 600;
/// Version of [`InjectionSpec`] this crate writes and reads.
pub const SPEC_VERSION: u32 = 1;

/// Limits on hostile annotations.
pub mod limits {
    /// Most generators per Pod.
    pub const MAX_GENERATORS: usize = 32;
    /// Most env mappings or imports in one annotation.
    pub const MAX_ENV_ITEMS: usize = 256;
    /// Most file outputs per Pod.
    pub const MAX_FILES: usize = 32;
    /// Largest template body, in bytes.
    pub const MAX_TEMPLATE_BYTES: usize = 32 * 1024;
    /// Longest file path.
    pub const MAX_PATH_BYTES: usize = 1024;
    /// Longest name in a file path: Linux's `NAME_MAX`.
    pub const MAX_NAME_BYTES: usize = 255;
    /// Largest serialized [`super::InjectionSpec`]: it travels in one env var, and Linux
    /// refuses to `exec` with a single env string over 128 KiB (`MAX_ARG_STRLEN`, E2BIG); the
    /// margin leaves room for the name and for what the runtime adds.
    pub const MAX_SPEC_BYTES: usize = 96 * 1024;
    /// Longest single annotation value other than templates.
    pub const MAX_VALUE_BYTES: usize = 16 * 1024;
}

// ---------------------------------------------------------------------------------------------
// The spec the webhook hands to esi-cli
// ---------------------------------------------------------------------------------------------

/// Everything esi-cli needs to know, resolved by the webhook; JSON in [`ENV_SPEC`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectionSpec {
    /// Always [`SPEC_VERSION`]; esi-cli refuses other versions.
    pub version: u32,
    /// Base URL of the federation (`https://...`).
    pub federation_url: String,
    /// PEM bundle trusted for the federation's TLS in addition to the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation_ca_pem: Option<String>,
    /// Path of the projected ServiceAccount token.
    pub token_path: String,
    /// The generators to call, by alias.
    pub generators: BTreeMap<String, GeneratorRef>,
    /// The containers (app and init) that get credentials, by name.
    pub containers: BTreeMap<String, ContainerSpec>,
    /// File outputs, written by `esi-cli init` (and swapped by `esi-cli refresh`).
    #[serde(default)]
    pub files: Vec<FileOutput>,
    /// The user files and bundles are for; esi-cli runs as this user when it is known.
    #[serde(default)]
    pub owner: Owner,
    /// Refresh settings when the refresh sidecar runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshSpec>,
    /// Revoke every lease when the sidecar gets `SIGTERM` (Pod termination).
    #[serde(default)]
    pub revoke_on_exit: bool,
}

impl InjectionSpec {
    /// Parses the JSON spec, checking its version.
    pub fn from_json(json: &str) -> Result<Self, SpecError> {
        let spec: Self =
            serde_json::from_str(json).map_err(|e| SpecError::Malformed(e.to_string()))?;
        if spec.version != SPEC_VERSION {
            return Err(SpecError::Version(spec.version));
        }
        Ok(spec)
    }

    /// The JSON form of [`ENV_SPEC`] (the webhook writes the same text straight into its
    /// patch, already escaped for the env value).
    pub fn to_json(&self) -> String {
        // A struct of strings, maps and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why an [`InjectionSpec`] could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecError {
    /// The JSON is malformed or carries unknown fields.
    Malformed(String),
    /// The spec was written for another version of esi-cli.
    Version(u32),
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed {ENV_SPEC}: {e}"),
            Self::Version(v) => write!(
                f,
                "{ENV_SPEC} has version {v}, this esi-cli reads version {SPEC_VERSION}; use matching webhook and esi-cli images"
            ),
        }
    }
}

impl std::error::Error for SpecError {}

/// A generator, `namespace/kind/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GeneratorRef {
    /// Namespace of the generator resource.
    pub namespace: String,
    /// Kind (`Password`, `VaultDynamicSecret`, ...).
    pub kind: String,
    /// Name of the generator resource.
    pub name: String,
}

impl GeneratorRef {
    /// The federation path that issues from this generator.
    pub fn path(&self) -> String {
        crate::routes::generate_path(&self.namespace, &self.kind, &self.name)
    }
}

impl fmt::Display for GeneratorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

/// What one container gets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSpec {
    /// Single-key mappings, applied after the imports (a mapping wins over an import).
    #[serde(default)]
    pub env: Vec<EnvMapping>,
    /// Whole-alias imports, in order (a later import wins on a clash).
    #[serde(default)]
    pub env_from: Vec<EnvImport>,
}

impl ContainerSpec {
    /// Whether the container gets env vars (and so runs through `esi-cli exec`).
    pub fn wants_env(&self) -> bool {
        !self.env.is_empty() || !self.env_from.is_empty()
    }
}

/// `NAME=alias.key`: one env var from one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvMapping {
    /// The env var name.
    pub name: String,
    /// The generator alias.
    pub alias: String,
    /// The key in the alias's `data`.
    pub key: String,
}

/// `PREFIX*=alias`: every key of an alias, named `PREFIX` + key (keys are used as they are;
/// a key that is not a valid env var name is an esi-cli error at fetch time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvImport {
    /// The generator alias.
    pub alias: String,
    /// Prepended to every key (may be empty).
    #[serde(default)]
    pub prefix: String,
}

/// A file esi-cli writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileOutput {
    /// The output's name (from `esi.dev/file.<name>`).
    pub name: String,
    /// Absolute path where the app sees the file.
    pub path: String,
    /// Path relative to the shared volume's root where esi-cli writes it
    /// (`files/<dir key>/<file name>`, the dir key being the first output name, in sorted
    /// order, among the outputs sharing that directory); the directory `files/<dir key>` is
    /// mounted by `subPath` at the parent of [`Self::path`] in the chosen containers.
    /// esi-cli creates the directory and writes the file atomically (temp file + rename in the
    /// same directory, so refreshes are seen through the `subPath` mount).
    pub volume_path: String,
    /// What goes in the file.
    pub content: FileContent,
    /// Permission bits (never world-accessible).
    pub mode: u32,
}

/// The format and source of a file output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "camelCase", deny_unknown_fields)]
pub enum FileContent {
    /// A flat JSON object of the alias's data.
    Json {
        /// The alias.
        alias: String,
    },
    /// A flat YAML mapping of the alias's data.
    Yaml {
        /// The alias.
        alias: String,
    },
    /// Dotenv `KEY="value"` lines of the alias's data.
    Env {
        /// The alias.
        alias: String,
    },
    /// One key's value, byte for byte, or the bytes it encodes ([`Decoding`]).
    Raw {
        /// The alias.
        alias: String,
        /// The key.
        key: String,
        /// How the value encodes the file's bytes; `None` writes the value itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decode: Option<Decoding>,
    },
    /// A template with `{{ .alias.key }}` placeholders, see [`parse_template`].
    Template {
        /// The template text.
        template: String,
    },
}

impl FileContent {
    /// The format name as written in annotations.
    pub fn format(&self) -> FileFormat {
        match self {
            Self::Json { .. } => FileFormat::Json,
            Self::Yaml { .. } => FileFormat::Yaml,
            Self::Env { .. } => FileFormat::Env,
            Self::Raw { .. } => FileFormat::Raw,
            Self::Template { .. } => FileFormat::Template,
        }
    }

    /// The aliases this content reads.
    pub fn aliases(&self) -> Vec<String> {
        match self {
            Self::Json { alias }
            | Self::Yaml { alias }
            | Self::Env { alias }
            | Self::Raw { alias, .. } => {
                vec![alias.clone()]
            }
            Self::Template { template } => parse_template(template)
                .map(|segs| {
                    segs.into_iter()
                        .filter_map(|s| match s {
                            TemplateSegment::Ref { alias, .. } => Some(alias),
                            TemplateSegment::Text(_) => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// How a `raw` file output's value encodes the file's bytes (`decode=` in the annotation).
///
/// Backends hand binary secrets over as base64 text, because a credential's data is text: an
/// AWS Secrets Manager `SecretBinary`, a Google Secret Manager payload that is not UTF-8, the
/// PKCS#12 bundle behind an Azure Key Vault certificate, a keytab or keystore kept in Vault.
/// esi-cli decodes the value and writes the bytes. ASCII whitespace in the value (line breaks
/// of wrapped base64) is skipped and the `=` padding is optional.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decoding {
    /// Base64 with the standard alphabet (`+`, `/`; RFC 4648 section 4).
    Base64,
    /// Base64 with the URL-safe alphabet (`-`, `_`; RFC 4648 section 5).
    Base64Url,
}

impl Decoding {
    /// The name written in annotations.
    pub fn name(self) -> &'static str {
        match self {
            Self::Base64 => "base64",
            Self::Base64Url => "base64url",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Base64, Self::Base64Url]
            .into_iter()
            .find(|d| d.name() == s)
    }
}

/// File formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileFormat {
    /// JSON object.
    Json,
    /// YAML mapping.
    Yaml,
    /// Dotenv lines.
    Env,
    /// One key's raw value.
    Raw,
    /// Template.
    Template,
}

impl FileFormat {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "json" => Self::Json,
            "yaml" => Self::Yaml,
            "env" | "dotenv" => Self::Env,
            "raw" => Self::Raw,
            "template" => Self::Template,
            _ => return None,
        })
    }
}

/// The user credentials are for.
///
/// The webhook runs the esi-cli containers as `uid` (and group `gid`, or `uid` when unknown)
/// when the app's uid is known and not root, so files and env bundles are owned by the app
/// without any `chown`; esi-cli then writes them with mode 0400 by default. When only the
/// group is known (`fsGroup`, or containers with different uids), esi-cli runs as
/// [`DEFAULT_UID`] with that group and the default mode is 0440. For a root app (`uid: 0`),
/// esi-cli runs as [`DEFAULT_UID`] and root reads through its capabilities. [`FileOutput::mode`]
/// is already resolved by the webhook; env bundles follow the same rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Owner {
    /// The app's uid, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The group that must read the files (runAsGroup or fsGroup), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// Settings of `esi-cli refresh`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshSpec {
    /// Re-issue when this percentage of the credential's lifetime has passed (jittered).
    pub at_percent: u8,
    /// What to do after files were swapped.
    pub notify: Notify,
}

/// Default of [`RefreshSpec::at_percent`].
pub const DEFAULT_REFRESH_AT_PERCENT: u8 = 66;

/// How the app learns that files were swapped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Notify {
    /// Nothing: the app re-reads files itself.
    None,
    /// Send a signal to every process with this name (needs `shareProcessNamespace: true`).
    Signal {
        /// Signal name, `SIGHUP`-style.
        signal: String,
        /// Process name (`comm`) to signal.
        process: String,
    },
    /// Call the app's reload endpoint on the Pod's own loopback (Prometheus' `/-/reload`,
    /// Spring Boot's `/actuator/refresh`): every container of a Pod shares its network, so this
    /// needs no `shareProcessNamespace`. The annotation separates items with `,`, so a comma in
    /// the URL is written `%2C`; the URL is called as written.
    Http {
        /// `http://` on `127.0.0.1`, `localhost` or `[::1]` with a port, see
        /// [`check_loopback_url`].
        url: String,
        /// `POST`, `PUT` or `GET`.
        method: String,
    },
}

/// The methods [`Notify::Http`] may use.
pub const NOTIFY_METHODS: &[&str] = &["POST", "PUT", "GET"];

/// Checks a [`Notify::Http`] URL: `http://` (nothing to encrypt on loopback), the host
/// `127.0.0.1`, `localhost` or `[::1]` (the app in this Pod, never a host elsewhere: the
/// annotation is the Pod author's, the call is made by esi-cli), a port, and a path of visible
/// ASCII without a fragment.
pub fn check_loopback_url(url: &str) -> Result<(), String> {
    const HOSTS: &[&str] = &["127.0.0.1", "localhost", "[::1]"];
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!(
            "url {} must start with http:// (the app's own loopback)",
            show(url)
        )
    })?;
    if url.len() > limits::MAX_PATH_BYTES {
        return Err(format!(
            "url is longer than {} bytes",
            limits::MAX_PATH_BYTES
        ));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("url {} needs a port (http://127.0.0.1:PORT/...)", show(url)))?;
    if !HOSTS.contains(&host) {
        return Err(format!(
            "url {}: the host must be 127.0.0.1, localhost or [::1], the app in this Pod",
            show(url)
        ));
    }
    if port.is_empty()
        || !port.bytes().all(|b| b.is_ascii_digit())
        || port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("url {}: the port must be 1..65535", show(url)));
    }
    if !path.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
        return Err(format!(
            "url {}: the path must be visible ASCII without `#`",
            show(url)
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------------

/// A piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateSegment {
    /// Literal text.
    Text(String),
    /// `{{ .alias.key }}`.
    Ref {
        /// The alias.
        alias: String,
        /// The key (may contain dots, `-` and `_`).
        key: String,
    },
}

/// Parses a template: literal text with `{{ .alias.key }}` placeholders (blanks inside the
/// braces are optional). There is no escaping and no other syntax; `{{` not opening a valid
/// placeholder is an error, so a typo cannot end up in a credential file.
pub fn parse_template(text: &str) -> Result<Vec<TemplateSegment>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            out.push(TemplateSegment::Text(rest[..start].to_owned()));
        }
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| "unclosed `{{`".to_owned())?;
        let inner = after[..end].trim();
        // Quoted short and escaped, as every annotation value is: the template is up to
        // 32 KiB of a Pod author's text, line breaks included.
        let placeholder = || format!("`{}`", shorten(&format!("{{{{ {inner} }}}}")));
        let body = inner.strip_prefix('.').ok_or_else(|| {
            format!(
                "placeholder {} must look like `{{{{ .alias.key }}}}`",
                placeholder()
            )
        })?;
        let (alias, key) = body.split_once('.').ok_or_else(|| {
            format!(
                "placeholder {} must name a key: `{{{{ .alias.key }}}}`",
                placeholder()
            )
        })?;
        if !is_alias(alias) || !is_data_key(key) {
            return Err(format!(
                "placeholder {} must look like `{{{{ .alias.key }}}}`",
                placeholder()
            ));
        }
        out.push(TemplateSegment::Ref {
            alias: alias.to_owned(),
            key: key.to_owned(),
        });
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(TemplateSegment::Text(rest.to_owned()));
    }
    Ok(out)
}

/// Renders parsed segments; `lookup(alias, key)` gives a value or `None` (an error naming the
/// placeholder).
pub fn render_template<'a>(
    segments: &[TemplateSegment],
    lookup: impl Fn(&str, &str) -> Option<&'a str>,
) -> Result<String, String> {
    let mut out = String::new();
    for seg in segments {
        match seg {
            TemplateSegment::Text(t) => out.push_str(t),
            TemplateSegment::Ref { alias, key } => {
                let v = lookup(alias, key).ok_or_else(|| {
                    format!("no key `{key}` in `{alias}` for `{{{{ .{alias}.{key} }}}}`")
                })?;
                out.push_str(v);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Annotation parsing
// ---------------------------------------------------------------------------------------------

/// An annotation that cannot be used, with the annotation named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationError {
    /// The annotation key at fault.
    pub annotation: String,
    /// What is wrong (no secret values: annotations are not secret, but values are quoted only
    /// when short).
    pub message: String,
}

impl AnnotationError {
    fn new(annotation: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            annotation: annotation.into(),
            message: message.into(),
        }
    }
}

/// The longest annotation key Kubernetes accepts: a DNS subdomain prefix, `/`, a 63-byte name.
const MAX_KEY_BYTES: usize = 253 + 1 + 63;

impl fmt::Display for AnnotationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key comes from the Pod as sent, before the API server validates it (mutating
        // webhooks run first): one with control characters or of any length is shown
        // escaped and shortened, so the message stays one line that cannot drive a terminal.
        let plain = self.annotation.len() <= MAX_KEY_BYTES
            && self.annotation.bytes().all(|b| b.is_ascii_graphic());
        if plain {
            write!(f, "annotation {}: {}", self.annotation, self.message)
        } else {
            write!(f, "annotation {}: {}", show(&self.annotation), self.message)
        }
    }
}

impl std::error::Error for AnnotationError {}

/// A file output as the annotations describe it (before the webhook places it in the volume).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileAnnotation {
    /// Absolute path where the app sees the file.
    pub path: String,
    /// What goes in the file.
    pub content: FileContent,
    /// Explicit mode, when given.
    pub mode: Option<u32>,
}

/// The Pod's annotations, parsed and validated one by one (cross-checks against the Pod and the
/// webhook's configuration happen in the webhook).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodAnnotations {
    /// `esi.dev/federation-url`.
    pub federation_url: Option<String>,
    /// `esi.dev/generators`.
    pub generators: BTreeMap<String, GeneratorRef>,
    /// `esi.dev/env`.
    pub env: Vec<EnvMapping>,
    /// `esi.dev/env.<container>`.
    pub env_per_container: BTreeMap<String, Vec<EnvMapping>>,
    /// `esi.dev/env-from`.
    pub env_from: Vec<EnvImport>,
    /// `esi.dev/env-from.<container>`.
    pub env_from_per_container: BTreeMap<String, Vec<EnvImport>>,
    /// `esi.dev/file.<name>` (+ `esi.dev/template.<name>`).
    pub files: BTreeMap<String, FileAnnotation>,
    /// `esi.dev/containers`.
    pub containers: Option<Vec<String>>,
    /// `esi.dev/init-containers`.
    pub init_containers: Vec<String>,
    /// `esi.dev/entrypoint.<container>`.
    pub entrypoints: BTreeMap<String, Vec<String>>,
    /// `esi.dev/refresh`.
    pub refresh: bool,
    /// `esi.dev/refresh-at`.
    pub refresh_at_percent: Option<u8>,
    /// `esi.dev/refresh-notify`.
    pub refresh_notify: Option<Notify>,
    /// `esi.dev/revoke-on-exit`.
    pub revoke_on_exit: bool,
    /// `esi.dev/token-audience`.
    pub token_audience: Option<String>,
    /// `esi.dev/token-expiration`, in seconds.
    pub token_expiration_seconds: Option<i64>,
    /// `esi.dev/run-as`.
    pub run_as: Option<Owner>,
    /// `esi.dev/cli-resources`.
    pub cli_resources: CliResources,
}

/// Requests and limits of the esi-cli containers (`cpu`, `memory`), as Kubernetes quantities;
/// what is not set here is the webhook's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CliResources {
    /// `requests.<resource>`.
    pub requests: BTreeMap<String, String>,
    /// `limits.<resource>`.
    pub limits: BTreeMap<String, String>,
}

impl CliResources {
    /// Whether the annotation set nothing.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.limits.is_empty()
    }
}

/// Whether the Pod carries [`ANN_STATUS`]`: injected`.
pub fn is_injected(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(ANN_STATUS).map(String::as_str) == Some(STATUS_INJECTED)
}

/// The Pod's esi annotations completed by its ServiceAccount's: each `esi.dev/` key of the
/// ServiceAccount that the Pod does not set is added (except [`ANN_STATUS`]).
pub fn merge_service_account_defaults(
    pod: &BTreeMap<String, String>,
    service_account: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = pod.clone();
    for (k, v) in service_account {
        if k.starts_with(PREFIX) && k != ANN_STATUS && !out.contains_key(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// Parses every `esi.dev/` annotation; other annotations are ignored. Fails on the first
/// malformed value or unknown key, naming it.
pub fn parse_annotations(
    annotations: &BTreeMap<String, String>,
) -> Result<PodAnnotations, AnnotationError> {
    let mut p = PodAnnotations::default();
    let mut templates: BTreeMap<String, String> = BTreeMap::new();
    let mut file_specs: BTreeMap<String, (String, String)> = BTreeMap::new();

    for (key, value) in annotations {
        let Some(name) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let limit = if key.starts_with(ANN_TEMPLATE_PREFIX) {
            limits::MAX_TEMPLATE_BYTES
        } else {
            limits::MAX_VALUE_BYTES
        };
        if value.len() > limit {
            return Err(AnnotationError::new(
                key,
                format!("value is {} bytes, the limit is {limit}", value.len()),
            ));
        }
        let err = |m: String| AnnotationError::new(key.clone(), m);
        match name {
            "federation-url" => p.federation_url = Some(parse_url(value).map_err(err)?),
            "generators" => p.generators = parse_generators(value).map_err(err)?,
            "env" => p.env = parse_env(value).map_err(err)?,
            "env-from" => p.env_from = parse_env_from(value).map_err(err)?,
            "containers" => p.containers = Some(parse_names(value, "container").map_err(err)?),
            "init-containers" => {
                p.init_containers = parse_names(value, "init container").map_err(err)?
            }
            "refresh" => p.refresh = parse_bool(value).map_err(err)?,
            "refresh-at" => p.refresh_at_percent = Some(parse_percent(value).map_err(err)?),
            "refresh-notify" => p.refresh_notify = Some(parse_notify(value).map_err(err)?),
            "revoke-on-exit" => p.revoke_on_exit = parse_bool(value).map_err(err)?,
            "token-audience" => p.token_audience = Some(parse_audience(value).map_err(err)?),
            "token-expiration" => {
                p.token_expiration_seconds = Some(parse_duration_seconds(value).map_err(err)?)
            }
            "run-as" => p.run_as = Some(parse_run_as(value).map_err(err)?),
            "cli-resources" => p.cli_resources = parse_cli_resources(value).map_err(err)?,
            "status" => {
                if value != STATUS_INJECTED {
                    return Err(err(format!(
                        "only the webhook sets this annotation, to `{STATUS_INJECTED}`"
                    )));
                }
            }
            "inject" => {
                return Err(err(format!(
                    "opt in with the label {INJECT_LABEL}: \"{INJECT_LABEL_VALUE}\", not an annotation"
                )));
            }
            _ => {
                if let Some(c) = name.strip_prefix("env.") {
                    check_name(c, "container").map_err(err)?;
                    p.env_per_container
                        .insert(c.to_owned(), parse_env(value).map_err(err)?);
                } else if let Some(c) = name.strip_prefix("env-from.") {
                    check_name(c, "container").map_err(err)?;
                    p.env_from_per_container
                        .insert(c.to_owned(), parse_env_from(value).map_err(err)?);
                } else if let Some(c) = name.strip_prefix("entrypoint.") {
                    check_name(c, "container").map_err(err)?;
                    p.entrypoints
                        .insert(c.to_owned(), parse_entrypoint(value).map_err(err)?);
                } else if let Some(f) = name.strip_prefix("file.") {
                    check_name(f, "file output").map_err(err)?;
                    file_specs.insert(f.to_owned(), (key.clone(), value.clone()));
                } else if let Some(f) = name.strip_prefix("template.") {
                    check_name(f, "file output").map_err(err)?;
                    templates.insert(f.to_owned(), value.clone());
                } else {
                    return Err(err(format!(
                        "unknown esi annotation; the known ones are listed in {}",
                        "the webhook README"
                    )));
                }
            }
        }
    }

    if file_specs.len() > limits::MAX_FILES {
        return Err(AnnotationError::new(
            ANN_FILE_PREFIX.to_owned() + "*",
            format!(
                "{} file outputs, the limit is {}",
                file_specs.len(),
                limits::MAX_FILES
            ),
        ));
    }
    for (name, (key, value)) in &file_specs {
        let template = templates.remove(name);
        let f = parse_file(value, template).map_err(|m| AnnotationError::new(key.clone(), m))?;
        p.files.insert(name.clone(), f);
    }
    if let Some((name, _)) = templates.into_iter().next() {
        return Err(AnnotationError::new(
            format!("{ANN_TEMPLATE_PREFIX}{name}"),
            format!("no matching {ANN_FILE_PREFIX}{name} annotation gives the file's path"),
        ));
    }
    Ok(p)
}

fn items(value: &str) -> impl Iterator<Item = &str> {
    value
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Shows a user value in an error, shortened so hostile input cannot flood messages.
fn show(s: &str) -> String {
    format!("\"{}\"", shorten(s))
}

/// `s` escaped (one line, no control characters) and cut at 64 characters.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_default).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// RFC 1123 label: lowercase alphanumerics and `-`, at most 63.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A generator alias: a DNS label, also with `_` (so `{{ .db_main.key }}` reads well).
pub fn is_alias(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// A key of an envelope's `data` as annotations may name it.
pub fn is_data_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A portable env var name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

fn is_kind(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.as_bytes()[0].is_ascii_uppercase()
        && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn check_name(s: &str, what: &str) -> Result<(), String> {
    if is_dns_label(s) {
        Ok(())
    } else {
        Err(format!("{what} name {} is not a valid DNS label", show(s)))
    }
}

fn parse_names(value: &str, what: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for item in items(value) {
        check_name(item, what)?;
        if out.iter().any(|n| n == item) {
            return Err(format!("{what} {} is listed twice", show(item)));
        }
        out.push(item.to_owned());
    }
    if out.is_empty() {
        return Err(format!(
            "lists no {what}; remove the annotation to use the default"
        ));
    }
    Ok(out)
}

fn parse_url(value: &str) -> Result<String, String> {
    let v = value.trim();
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or_else(|| format!("{} is not an http(s) URL", show(v)))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains('@') || v.bytes().any(|b| b.is_ascii_control() || b == b' ')
    {
        return Err(format!(
            "{} is not a valid URL (no host, credentials or blanks allowed)",
            show(v)
        ));
    }
    Ok(v.trim_end_matches('/').to_owned())
}

fn parse_generators(value: &str) -> Result<BTreeMap<String, GeneratorRef>, String> {
    let mut out = BTreeMap::new();
    for item in items(value) {
        let (alias, target) = item
            .split_once('=')
            .ok_or_else(|| format!("{} must look like alias=namespace/kind/name", show(item)))?;
        let (alias, target) = (alias.trim(), target.trim());
        if !is_alias(alias) {
            return Err(format!(
                "alias {} must be lowercase letters, digits, `-` or `_`",
                show(alias)
            ));
        }
        let parts: Vec<&str> = target.split('/').collect();
        let [namespace, kind, name] = parts.as_slice() else {
            return Err(format!(
                "{} must look like namespace/kind/name",
                show(target)
            ));
        };
        if !is_dns_label(namespace) {
            return Err(format!(
                "namespace {} in {} is not a valid namespace",
                show(namespace),
                show(alias)
            ));
        }
        if !is_kind(kind) {
            return Err(format!(
                "kind {} in {} is not a valid kind (e.g. VaultDynamicSecret)",
                show(kind),
                show(alias)
            ));
        }
        if !is_dns_subdomain(name) {
            return Err(format!(
                "name {} in {} is not a valid resource name",
                show(name),
                show(alias)
            ));
        }
        let r = GeneratorRef {
            namespace: (*namespace).to_owned(),
            kind: (*kind).to_owned(),
            name: (*name).to_owned(),
        };
        if out.insert(alias.to_owned(), r).is_some() {
            return Err(format!("alias {} is defined twice", show(alias)));
        }
        if out.len() > limits::MAX_GENERATORS {
            return Err(format!("more than {} generators", limits::MAX_GENERATORS));
        }
    }
    if out.is_empty() {
        return Err("names no generator; expected alias=namespace/kind/name".to_owned());
    }
    Ok(out)
}

/// `requests.cpu=20m, limits.memory=64Mi`: the resources esi-cli's containers may set.
fn parse_cli_resources(value: &str) -> Result<CliResources, String> {
    let mut out = CliResources::default();
    for item in items(value) {
        let (key, quantity) = item.split_once('=').ok_or_else(|| {
            format!(
                "{} must look like requests.cpu=20m or limits.memory=64Mi",
                show(item)
            )
        })?;
        let (key, quantity) = (key.trim(), quantity.trim());
        let (map, resource) = match key.split_once('.') {
            Some(("requests", resource @ ("cpu" | "memory"))) => (&mut out.requests, resource),
            Some(("limits", resource @ ("cpu" | "memory"))) => (&mut out.limits, resource),
            _ => {
                return Err(format!(
                    "{} is not one of requests.cpu, requests.memory, limits.cpu, limits.memory",
                    show(key)
                ));
            }
        };
        parse_quantity(quantity).map_err(|e| format!("{key}: {e}"))?;
        if map
            .insert(resource.to_owned(), quantity.to_owned())
            .is_some()
        {
            return Err(format!("{} is set twice", show(key)));
        }
    }
    if out.is_empty() {
        return Err("sets nothing; expected e.g. requests.cpu=20m, limits.memory=64Mi".to_owned());
    }
    Ok(out)
}

/// The value of a Kubernetes resource quantity (`50m`, `64Mi`, `1.5`, `2e3`, `+1`): a
/// non-negative decimal number, then a decimal SI suffix, a binary SI suffix or a decimal exponent, as the
/// API server reads them (`k8s.io/apimachinery/pkg/api/resource`). For comparisons; the text
/// is what the Pod gets.
pub fn parse_quantity(text: &str) -> Result<f64, String> {
    let bad = || {
        format!(
            "{} is not a Kubernetes quantity (e.g. 50m, 64Mi, 1)",
            show(text)
        )
    };
    // A sign is allowed, as the API server allows it; a negative amount is not (the API server
    // refuses it in a container's resources).
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let split = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(split);
    if !number.bytes().any(|b| b.is_ascii_digit()) || number.matches('.').count() > 1 {
        return Err(bad());
    }
    let number: f64 = number.parse().map_err(|_| bad())?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => {
            let exponent = suffix
                .strip_prefix(['e', 'E'])
                .filter(|e| {
                    let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                    !digits.is_empty()
                        && digits.len() <= 3
                        && digits.bytes().all(|b| b.is_ascii_digit())
                })
                .and_then(|e| e.parse::<i32>().ok())
                .ok_or_else(bad)?;
            10f64.powi(exponent)
        }
    };
    let value = Some(number * factor)
        .filter(|v| v.is_finite())
        .ok_or_else(bad)?;
    if negative && value > 0.0 {
        return Err(format!(
            "{} is negative; a resource quantity is 0 or more",
            show(text)
        ));
    }
    Ok(value)
}

/// The first resource (by name) whose request in `requests` is more than its limit in
/// `limits`, which the API server refuses. Quantities are compared as [`parse_quantity`] reads
/// them; one it cannot read is not compared (whoever read it first has refused it).
pub fn request_above_limit<'m>(
    requests: &'m BTreeMap<String, String>,
    limits: &BTreeMap<String, String>,
) -> Option<&'m str> {
    requests.iter().find_map(|(resource, request)| {
        let limit = limits.get(resource)?;
        let (request, limit) = (parse_quantity(request).ok()?, parse_quantity(limit).ok()?);
        (request > limit).then_some(resource.as_str())
    })
}

fn parse_env(value: &str) -> Result<Vec<EnvMapping>, String> {
    let mut out: Vec<EnvMapping> = Vec::new();
    for item in items(value) {
        let (name, source) = item
            .split_once('=')
            .ok_or_else(|| format!("{} must look like NAME=alias.key", show(item)))?;
        let (name, source) = (name.trim(), source.trim());
        if !is_env_name(name) {
            return Err(format!("{} is not a valid env var name", show(name)));
        }
        let (alias, key) = source
            .split_once('.')
            .ok_or_else(|| format!("{} must look like alias.key", show(source)))?;
        if !is_alias(alias) || !is_data_key(key) {
            return Err(format!("{} must look like alias.key", show(source)));
        }
        if out.iter().any(|m| m.name == name) {
            return Err(format!("env var {} is mapped twice", show(name)));
        }
        out.push(EnvMapping {
            name: name.to_owned(),
            alias: alias.to_owned(),
            key: key.to_owned(),
        });
        if out.len() > limits::MAX_ENV_ITEMS {
            return Err(format!("more than {} env mappings", limits::MAX_ENV_ITEMS));
        }
    }
    if out.is_empty() {
        return Err("maps no env var; expected NAME=alias.key".to_owned());
    }
    Ok(out)
}

fn parse_env_from(value: &str) -> Result<Vec<EnvImport>, String> {
    let mut out = Vec::new();
    for item in items(value) {
        let (pattern, alias) = item
            .split_once('=')
            .ok_or_else(|| format!("{} must look like PREFIX_*=alias or *=alias", show(item)))?;
        let (pattern, alias) = (pattern.trim(), alias.trim());
        let prefix = pattern.strip_suffix('*').ok_or_else(|| {
            format!(
                "{} must end with `*` (PREFIX_*=alias or *=alias)",
                show(pattern)
            )
        })?;
        if !prefix.is_empty() && !is_env_name(prefix) {
            return Err(format!(
                "prefix {} is not a valid env var name start",
                show(prefix)
            ));
        }
        if !is_alias(alias) {
            return Err(format!("alias {} is not a valid alias", show(alias)));
        }
        out.push(EnvImport {
            alias: alias.to_owned(),
            prefix: prefix.to_owned(),
        });
        if out.len() > limits::MAX_ENV_ITEMS {
            return Err(format!("more than {} env imports", limits::MAX_ENV_ITEMS));
        }
    }
    if out.is_empty() {
        return Err("imports nothing; expected PREFIX_*=alias".to_owned());
    }
    Ok(out)
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{} must be \"true\" or \"false\"", show(other))),
    }
}

fn parse_percent(value: &str) -> Result<u8, String> {
    let v = value.trim();
    let n: u8 = v
        .strip_suffix('%')
        .unwrap_or(v)
        .trim()
        .parse()
        .map_err(|_| format!("{} must be a percentage like 66%", show(v)))?;
    if !(10..=90).contains(&n) {
        return Err(format!("{n}% is outside 10%..90%"));
    }
    Ok(n)
}

fn parse_notify(value: &str) -> Result<Notify, String> {
    let v = value.trim();
    if v == "none" {
        return Ok(Notify::None);
    }
    let kv = parse_kv(v, &["signal", "process", "url", "method"])?;
    if let Some(url) = kv.get("url") {
        if kv.contains_key("signal") || kv.contains_key("process") {
            return Err(
                "`url=` and `signal=`/`process=` are two ways to notify the app: pick one"
                    .to_owned(),
            );
        }
        check_loopback_url(url)?;
        let method = kv
            .get("method")
            .map_or_else(|| "POST".to_owned(), |m| m.to_ascii_uppercase());
        if !NOTIFY_METHODS.contains(&method.as_str()) {
            return Err(format!(
                "method {} is not one of {}",
                show(&method),
                NOTIFY_METHODS.join(", ")
            ));
        }
        return Ok(Notify::Http {
            url: url.clone(),
            method,
        });
    }
    if kv.contains_key("method") {
        return Err("`method=` goes with `url=`".to_owned());
    }
    let signal = kv.get("signal").ok_or(
        "expected `none`, `signal=SIGHUP, process=NAME` or `url=http://127.0.0.1:PORT/path`",
    )?;
    let process = kv
        .get("process")
        .ok_or("`signal=` needs `process=NAME` (the process to signal)")?;
    const SIGNALS: &[&str] = &[
        "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGQUIT", "SIGWINCH",
    ];
    let signal = if signal.starts_with("SIG") {
        signal.clone()
    } else {
        format!("SIG{signal}")
    };
    if !SIGNALS.contains(&signal.as_str()) {
        return Err(format!(
            "signal {} is not one of {}",
            show(&signal),
            SIGNALS.join(", ")
        ));
    }
    if process.is_empty()
        || process.len() > 15
        || !process
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "process {} must be a process name (at most 15 characters)",
            show(process)
        ));
    }
    Ok(Notify::Signal {
        signal,
        process: process.clone(),
    })
}

fn parse_audience(value: &str) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty()
        || v.len() > 253
        || v.bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b',')
    {
        return Err(format!("{} is not a valid audience", show(v)));
    }
    Ok(v.to_owned())
}

/// Parses `600`, `600s`, `10m`, `1h`, `1h30m` into seconds.
pub fn parse_duration_seconds(value: &str) -> Result<i64, String> {
    let v = value.trim();
    if let Ok(n) = v.parse::<i64>() {
        return if n > 0 {
            Ok(n)
        } else {
            Err(format!("{} must be positive", show(v)))
        };
    }
    let mut total: i64 = 0;
    let mut num = String::new();
    let mut any = false;
    for c in v.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => {
                return Err(format!(
                    "{} must be a duration like 600s, 10m or 1h",
                    show(v)
                ));
            }
        };
        let n: i64 = num
            .parse()
            .map_err(|_| format!("{} must be a duration like 600s, 10m or 1h", show(v)))?;
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(|| format!("{} is too long", show(v)))?;
        num.clear();
        any = true;
    }
    if !any || !num.is_empty() || total <= 0 {
        return Err(format!(
            "{} must be a duration like 600s, 10m or 1h",
            show(v)
        ));
    }
    Ok(total)
}

/// The largest user or group id Kubernetes accepts in a `securityContext` (2^31-1).
pub const MAX_ID: u32 = i32::MAX as u32;

fn parse_run_as(value: &str) -> Result<Owner, String> {
    let v = value.trim();
    let (u, g) = match v.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (v, None),
    };
    let id = |s: &str| {
        let id = s
            .trim()
            .parse::<u32>()
            .map_err(|_| format!("{} must look like uid or uid:gid", show(v)))?;
        // The esi-cli containers run as this user: Kubernetes refuses a runAsUser or
        // runAsGroup beyond 2^31-1, and would reject the Pod for a container it never wrote.
        if id > MAX_ID {
            return Err(format!(
                "{} names an id beyond {MAX_ID}, the largest Kubernetes accepts",
                show(v)
            ));
        }
        Ok(id)
    };
    let uid = id(u)?;
    let gid = g.map(id).transpose()?;
    Ok(Owner {
        uid: Some(uid),
        gid,
    })
}

fn parse_entrypoint(value: &str) -> Result<Vec<String>, String> {
    let argv: Vec<String> = serde_json::from_str(value).map_err(|_| {
        "must be a JSON array of strings, e.g. [\"/app/server\", \"--serve\"]".to_owned()
    })?;
    if argv.is_empty() || argv[0].is_empty() {
        return Err("must name at least the program".to_owned());
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err("arguments must not contain NUL".to_owned());
    }
    Ok(argv)
}

fn parse_kv(value: &str, allowed: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in items(value) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("{} must look like key=value", show(item)))?;
        let (k, v) = (k.trim(), v.trim());
        if !allowed.contains(&k) {
            return Err(format!(
                "unknown option {}; known: {}",
                show(k),
                allowed.join(", ")
            ));
        }
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(format!("option {} given twice", show(k)));
        }
    }
    Ok(out)
}

/// Checks an absolute, normalized file path (no `..`, `.`, `//`, control characters).
pub fn check_file_path(path: &str) -> Result<(), String> {
    if path.len() > limits::MAX_PATH_BYTES {
        return Err(format!(
            "path is longer than {} bytes",
            limits::MAX_PATH_BYTES
        ));
    }
    if !path.starts_with('/') || path.ends_with('/') {
        return Err(format!(
            "path {} must be absolute and name a file",
            show(path)
        ));
    }
    if path.chars().any(|c| c.is_control() || c == ',' || c == ':') {
        return Err(format!(
            "path {} contains a control character, `,` or `:`",
            show(path)
        ));
    }
    if path[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(format!(
            "path {} must be normalized (no `.`, `..` or `//`)",
            show(path)
        ));
    }
    // Refused here, at admission, rather than by the kernel (ENAMETOOLONG) in esi-cli after
    // the credentials were issued.
    if let Some(seg) = path[1..]
        .split('/')
        .find(|seg| seg.len() > limits::MAX_NAME_BYTES)
    {
        return Err(format!(
            "path {} has a name of {} bytes, the limit is {}",
            show(path),
            seg.len(),
            limits::MAX_NAME_BYTES
        ));
    }
    Ok(())
}

fn parse_file(value: &str, template: Option<String>) -> Result<FileAnnotation, String> {
    let kv = parse_kv(value, &["path", "format", "from", "mode", "decode"])?;
    let path = kv.get("path").ok_or("needs path=/absolute/file")?.clone();
    check_file_path(&path)?;
    let format = match kv.get("format") {
        Some(f) => FileFormat::parse(f).ok_or_else(|| {
            format!(
                "format {} is not one of json, yaml, env, raw, template",
                show(f)
            )
        })?,
        None if template.is_some() => FileFormat::Template,
        None => FileFormat::Json,
    };
    let from = kv.get("from");
    let decode = kv
        .get("decode")
        .map(|d| {
            if format != FileFormat::Raw {
                return Err(format!(
                    "decode= applies to format=raw only, not format={}",
                    format_name(format)
                ));
            }
            Decoding::parse(d)
                .ok_or_else(|| format!("decode {} is not one of base64, base64url", show(d)))
        })
        .transpose()?;
    let content = match format {
        FileFormat::Template => {
            if from.is_some() {
                return Err(
                    "format=template takes its keys from the template, not from=".to_owned(),
                );
            }
            let template =
                template.ok_or("format=template needs an esi.dev/template.<name> annotation")?;
            parse_template(&template).map_err(|e| format!("template: {e}"))?;
            FileContent::Template { template }
        }
        other => {
            if template.is_some() {
                return Err(format!(
                    "has a template annotation but format={}",
                    format_name(other)
                ));
            }
            let from = from.ok_or_else(|| format!("format={} needs from=", format_name(other)))?;
            match other {
                FileFormat::Raw => {
                    let (alias, key) = from.split_once('.').ok_or_else(|| {
                        format!("format=raw needs from=alias.key, got {}", show(from))
                    })?;
                    if !is_alias(alias) || !is_data_key(key) {
                        return Err(format!("from={} must look like alias.key", show(from)));
                    }
                    FileContent::Raw {
                        alias: alias.to_owned(),
                        key: key.to_owned(),
                        decode,
                    }
                }
                _ => {
                    if !is_alias(from) {
                        return Err(format!("from={} must be an alias", show(from)));
                    }
                    let alias = from.clone();
                    match other {
                        FileFormat::Json => FileContent::Json { alias },
                        FileFormat::Yaml => FileContent::Yaml { alias },
                        _ => FileContent::Env { alias },
                    }
                }
            }
        }
    };
    let mode = kv.get("mode").map(|m| parse_mode(m)).transpose()?;
    Ok(FileAnnotation {
        path,
        content,
        mode,
    })
}

fn format_name(f: FileFormat) -> &'static str {
    match f {
        FileFormat::Json => "json",
        FileFormat::Yaml => "yaml",
        FileFormat::Env => "env",
        FileFormat::Raw => "raw",
        FileFormat::Template => "template",
    }
}

/// Parses an octal mode (`0400`, `440`, `0o640`); rejects world bits, anything beyond `0777`,
/// and modes nobody can read.
pub fn parse_mode(value: &str) -> Result<u32, String> {
    let v = value.trim();
    let digits = v.strip_prefix("0o").unwrap_or(v);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("mode {} must be octal like 0440", show(v)))?;
    if mode > 0o777 {
        return Err(format!("mode {v} is beyond 0777"));
    }
    if mode & 0o007 != 0 {
        return Err(format!(
            "mode {v} gives access to others; credentials are never world-accessible"
        ));
    }
    if mode & 0o440 == 0 {
        return Err(format!("mode {v} lets nobody read the file"));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn err_of(pairs: &[(&str, &str)]) -> AnnotationError {
        parse_annotations(&ann(pairs)).expect_err("must be rejected")
    }

    #[test]
    fn parses_a_full_set_of_annotations() {
        let p = parse_annotations(&ann(&[
            (
                "esi.dev/generators",
                "db=payments/VaultDynamicSecret/db,\n aws = payments/AWSAssumeRole/app",
            ),
            ("esi.dev/federation-url", "https://esi.example.com/"),
            ("esi.dev/env", "DB_USER=db.username, DB_PASS=db.password"),
            ("esi.dev/env.worker", "AWS_KEY=aws.AWS_ACCESS_KEY_ID"),
            ("esi.dev/env-from", "AWS_*=aws, *=db"),
            (
                "esi.dev/file.creds",
                "path=/etc/db/creds.json, format=json, from=db, mode=0440",
            ),
            (
                "esi.dev/file.pw",
                "path=/etc/db/pw, format=raw, from=db.password",
            ),
            ("esi.dev/file.dsn", "path=/etc/db/dsn.txt"),
            (
                "esi.dev/template.dsn",
                "postgres://{{ .db.username }}:{{.db.password}}@db/app",
            ),
            ("esi.dev/containers", "app, worker"),
            ("esi.dev/init-containers", "migrate"),
            (
                "esi.dev/entrypoint.app",
                r#"["/app/server", "--port", "8080"]"#,
            ),
            ("esi.dev/refresh", "true"),
            ("esi.dev/refresh-at", "75%"),
            ("esi.dev/refresh-notify", "signal=HUP, process=nginx"),
            ("esi.dev/revoke-on-exit", "true"),
            ("esi.dev/token-audience", "esi"),
            ("esi.dev/token-expiration", "1h30m"),
            ("esi.dev/run-as", "1000:2000"),
            ("other.io/ignored", "whatever"),
        ]))
        .unwrap();
        assert_eq!(p.federation_url.as_deref(), Some("https://esi.example.com"));
        assert_eq!(
            p.generators["aws"].to_string(),
            "payments/AWSAssumeRole/app"
        );
        assert_eq!(
            p.generators["db"].path(),
            "/v1/generators/payments/VaultDynamicSecret/db"
        );
        assert_eq!(
            p.env[1],
            EnvMapping {
                name: "DB_PASS".into(),
                alias: "db".into(),
                key: "password".into()
            }
        );
        assert_eq!(p.env_per_container["worker"][0].key, "AWS_ACCESS_KEY_ID");
        assert_eq!(
            p.env_from,
            vec![
                EnvImport {
                    alias: "aws".into(),
                    prefix: "AWS_".into()
                },
                EnvImport {
                    alias: "db".into(),
                    prefix: String::new()
                }
            ]
        );
        assert_eq!(p.files["creds"].mode, Some(0o440));
        assert_eq!(
            p.files["pw"].content,
            FileContent::Raw {
                alias: "db".into(),
                key: "password".into(),
                decode: None,
            }
        );
        assert_eq!(p.files["dsn"].content.format(), FileFormat::Template);
        assert_eq!(
            p.files["dsn"].content.aliases(),
            vec!["db".to_owned(), "db".to_owned()]
        );
        assert_eq!(
            p.containers,
            Some(vec!["app".to_owned(), "worker".to_owned()])
        );
        assert_eq!(p.entrypoints["app"], vec!["/app/server", "--port", "8080"]);
        assert!(p.refresh && p.revoke_on_exit);
        assert_eq!(p.refresh_at_percent, Some(75));
        assert_eq!(
            p.refresh_notify,
            Some(Notify::Signal {
                signal: "SIGHUP".into(),
                process: "nginx".into()
            })
        );
        assert_eq!(p.token_expiration_seconds, Some(5400));
        assert_eq!(
            p.run_as,
            Some(Owner {
                uid: Some(1000),
                gid: Some(2000)
            })
        );
    }

    #[test]
    fn rejects_malformed_values_naming_the_annotation() {
        let cases: &[(&str, &str, &str)] = &[
            ("esi.dev/generators", "db", "alias=namespace/kind/name"),
            ("esi.dev/generators", "db=a/b", "namespace/kind/name"),
            ("esi.dev/generators", "db=ns/kind/name", "not a valid kind"),
            ("esi.dev/generators", "DB=ns/Password/x", "alias"),
            (
                "esi.dev/generators",
                "db=ns/Password/x,db=ns/Password/y",
                "defined twice",
            ),
            ("esi.dev/generators", " , ", "names no generator"),
            (
                "esi.dev/generators",
                "db=../Password/x",
                "not a valid namespace",
            ),
            ("esi.dev/env", "1X=db.user", "not a valid env var name"),
            ("esi.dev/env", "X=db", "alias.key"),
            ("esi.dev/env", "X=db.a,X=db.b", "mapped twice"),
            ("esi.dev/env-from", "P_=db", "must end with `*`"),
            ("esi.dev/refresh", "yes", "\"true\" or \"false\""),
            ("esi.dev/refresh-at", "95%", "outside"),
            (
                "esi.dev/refresh-notify",
                "signal=KILL, process=x",
                "not one of",
            ),
            ("esi.dev/token-expiration", "ten minutes", "duration"),
            ("esi.dev/federation-url", "ftp://x", "http(s) URL"),
            ("esi.dev/federation-url", "https://user:pw@x", "credentials"),
            ("esi.dev/entrypoint.app", "/bin/app", "JSON array"),
            ("esi.dev/entrypoint.App", "[\"/x\"]", "DNS label"),
            ("esi.dev/file.a", "format=json,from=db", "needs path"),
            ("esi.dev/file.a", "path=relative,from=db", "absolute"),
            (
                "esi.dev/file.a",
                "path=/etc/../shadow,from=db",
                "normalized",
            ),
            ("esi.dev/file.a", "path=/x/y,from=db,mode=0644", "world"),
            ("esi.dev/file.a", "path=/x/y,from=db,mode=9", "octal"),
            (
                "esi.dev/file.a",
                "path=/x/y,format=raw,from=db",
                "alias.key",
            ),
            (
                "esi.dev/file.a",
                "path=/x/y,format=template",
                "needs an esi.dev/template",
            ),
            ("esi.dev/file.a", "path=/x/y,colour=red", "unknown option"),
            (
                "esi.dev/file.a",
                "path=/x/y,from=db,decode=base64",
                "format=raw only, not format=json",
            ),
            (
                "esi.dev/file.a",
                "path=/x/y,format=raw,from=db.k,decode=hex",
                "not one of base64, base64url",
            ),
            (
                "esi.dev/file.a",
                "path=/x/y,format=raw,from=db.k,decode=Base64",
                "not one of base64, base64url",
            ),
            ("esi.dev/template.a", "x", "no matching"),
            ("esi.dev/containers", "", "lists no"),
            ("esi.dev/containers", "a,a", "twice"),
            ("esi.dev/env-vars", "x", "unknown esi annotation"),
            ("esi.dev/inject", "true", "label"),
            ("esi.dev/status", "pending", "only the webhook"),
            ("esi.dev/run-as", "root", "uid"),
            ("esi.dev/run-as", "4294967295", "beyond 2147483647"),
            ("esi.dev/run-as", "1000:2147483648", "beyond 2147483647"),
        ];
        for (key, value, want) in cases {
            let e = err_of(&[(key, value)]);
            assert_eq!(&e.annotation, key, "{key}={value}");
            assert!(e.to_string().contains(want), "{key}={value}: {e}");
        }
    }

    #[test]
    fn rejects_oversized_and_hostile_values_with_short_messages() {
        let big = "x".repeat(limits::MAX_VALUE_BYTES + 1);
        assert!(err_of(&[("esi.dev/env", &big)]).message.contains("limit"));
        let many: String = (0..40).map(|i| format!("a{i}=ns/Password/p,")).collect();
        assert!(
            err_of(&[("esi.dev/generators", &many)])
                .message
                .contains("more than")
        );
        let long_alias = format!("{}=ns/Password/p", "a".repeat(5000));
        let e = err_of(&[("esi.dev/generators", &long_alias)]);
        assert!(e.to_string().len() < 300, "{e}");
        let e = err_of(&[("esi.dev/env", "X=\u{1b}[31m.key")]);
        assert!(!e.to_string().contains('\u{1b}'), "{e}");
    }

    /// Found by webhook/tests/hostile_admission.rs: an unknown or malformed key was echoed
    /// as sent, escape sequences, newlines and all.
    #[test]
    fn a_hostile_key_is_shown_escaped_and_shortened() {
        for key in [
            "esi.dev/env.app\u{1b}[31m".to_owned(),
            "esi.dev/x\ny".to_owned(),
            format!("esi.dev/{}", "k".repeat(5000)),
        ] {
            let e = err_of(&[(&key, "A=db.k")]);
            assert_eq!(e.annotation, key);
            let shown = e.to_string();
            assert!(!shown.chars().any(char::is_control), "{shown}");
            assert!(shown.len() < 300, "{shown}");
        }
        let e = err_of(&[("esi.dev/env-vars", "x")]);
        assert!(
            e.to_string().starts_with("annotation esi.dev/env-vars: "),
            "{e}"
        );
    }

    #[test]
    fn refuses_a_file_name_longer_than_the_kernel_allows() {
        let ok = format!("/etc/app/{}", "n".repeat(limits::MAX_NAME_BYTES));
        assert!(check_file_path(&ok).is_ok());
        let long = format!("/etc/app/{}", "n".repeat(limits::MAX_NAME_BYTES + 1));
        let e = err_of(&[
            ("esi.dev/generators", "db=ns/Password/p"),
            ("esi.dev/file.creds", &format!("path={long}, from=db")),
        ]);
        assert!(e.message.contains("name of 256 bytes"), "{e}");
        let long_dir = format!("/{}/file", "d".repeat(limits::MAX_NAME_BYTES + 1));
        assert!(check_file_path(&long_dir).is_err());
    }

    #[test]
    fn template_parsing_and_rendering() {
        let segs = parse_template("u={{ .db.username }} p={{.db.password}}!").unwrap();
        let data: BTreeMap<&str, &str> = [("username", "alice"), ("password", "s3cr,et")].into();
        let out = render_template(&segs, |a, k| {
            if a == "db" {
                data.get(k).copied()
            } else {
                None
            }
        })
        .unwrap();
        assert_eq!(out, "u=alice p=s3cr,et!");
        assert!(
            render_template(&segs, |_, _| None)
                .unwrap_err()
                .contains("no key `username`")
        );
        assert!(parse_template("{{ .db }}").is_err());
        assert!(parse_template("{{ db.user }}").is_err());
        assert!(parse_template("{{ .db.user ").is_err());
        assert_eq!(
            parse_template("plain").unwrap(),
            vec![TemplateSegment::Text("plain".into())]
        );
    }

    /// Found by the hostile-wire property test: a bad placeholder was quoted whole, up to the
    /// 32 KiB of a template annotation and its line breaks, in the webhook's denial.
    #[test]
    fn a_bad_placeholder_is_quoted_short_and_on_one_line() {
        assert_eq!(
            parse_template("{{ db.user }}").unwrap_err(),
            "placeholder `{{ db.user }}` must look like `{{ .alias.key }}`"
        );
        let long = format!("x {{{{ {} }}}}", "line\n".repeat(5_000));
        let e = parse_template(&long).unwrap_err();
        assert!(e.len() < 200 && !e.contains('\n'), "{e}");
        assert!(e.starts_with("placeholder `{{ line\\nline\\n"), "{e}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_seconds("600").unwrap(), 600);
        assert_eq!(parse_duration_seconds("10m").unwrap(), 600);
        assert_eq!(parse_duration_seconds("1h").unwrap(), 3600);
        assert!(parse_duration_seconds("0").is_err());
        assert!(parse_duration_seconds("10").is_ok());
        assert!(parse_duration_seconds("10x").is_err());
        assert!(parse_duration_seconds("m").is_err());
        assert!(parse_duration_seconds("99999999999999999999h").is_err());
    }

    #[test]
    fn service_account_defaults_fill_gaps_and_pod_wins() {
        let pod = ann(&[("esi.dev/generators", "db=a/Password/p")]);
        let sa = ann(&[
            ("esi.dev/generators", "x=b/Password/q"),
            ("esi.dev/federation-url", "https://f"),
            ("esi.dev/status", "injected"),
            ("eks.amazonaws.com/role-arn", "arn"),
        ]);
        let m = merge_service_account_defaults(&pod, &sa);
        assert_eq!(m["esi.dev/generators"], "db=a/Password/p");
        assert_eq!(m["esi.dev/federation-url"], "https://f");
        assert!(!m.contains_key("esi.dev/status"));
        assert!(!m.contains_key("eks.amazonaws.com/role-arn"));
    }

    #[test]
    fn spec_round_trips_and_rejects_unknown_fields_and_versions() {
        let spec = InjectionSpec {
            version: SPEC_VERSION,
            federation_url: "https://esi.example.com".into(),
            federation_ca_pem: None,
            token_path: TOKEN_PATH.into(),
            generators: [(
                "db".to_owned(),
                GeneratorRef {
                    namespace: "p".into(),
                    kind: "Password".into(),
                    name: "x".into(),
                },
            )]
            .into(),
            containers: [(
                "app".to_owned(),
                ContainerSpec {
                    env: vec![EnvMapping {
                        name: "A".into(),
                        alias: "db".into(),
                        key: "k".into(),
                    }],
                    env_from: vec![],
                },
            )]
            .into(),
            files: vec![FileOutput {
                name: "f".into(),
                path: "/etc/x/f.json".into(),
                volume_path: "files/f/f.json".into(),
                content: FileContent::Json { alias: "db".into() },
                mode: 0o400,
            }],
            owner: Owner {
                uid: Some(1000),
                gid: None,
            },
            refresh: Some(RefreshSpec {
                at_percent: 66,
                notify: Notify::None,
            }),
            revoke_on_exit: true,
        };
        let json = spec.to_json();
        assert!(json.contains(r#""format":"json""#), "{json}");
        assert!(json.contains(r#""notify":{"type":"none"}"#), "{json}");
        assert_eq!(InjectionSpec::from_json(&json).unwrap(), spec);
        let extra = json.replacen('{', r#"{"surprise":1,"#, 1);
        assert!(matches!(
            InjectionSpec::from_json(&extra),
            Err(SpecError::Malformed(_))
        ));
        let v2 = json.replace(r#""version":1"#, r#""version":2"#);
        assert_eq!(InjectionSpec::from_json(&v2), Err(SpecError::Version(2)));
    }

    #[test]
    fn a_raw_file_may_decode_its_value_and_says_so_on_the_wire() {
        let parsed = |value: &str| {
            parse_annotations(&ann(&[
                (ANN_GENERATORS, "kv=payments/SecretsManagerSecret/ks"),
                ("esi.dev/file.ks", value),
            ]))
            .unwrap()
            .files
            .remove("ks")
            .unwrap()
            .content
        };
        for (value, decode) in [
            ("path=/etc/ks/app.p12, format=raw, from=kv.value", None),
            (
                "path=/etc/ks/app.p12, format=raw, from=kv.value, decode=base64",
                Some(Decoding::Base64),
            ),
            (
                "path=/etc/ks/app.p12, decode=base64url, format=raw, from=kv.value",
                Some(Decoding::Base64Url),
            ),
        ] {
            let content = parsed(value);
            assert_eq!(
                content,
                FileContent::Raw {
                    alias: "kv".into(),
                    key: "value".into(),
                    decode,
                },
                "{value}"
            );
            // On the wire only when set, so a spec without it reads as before.
            let wire = serde_json::to_string(&content).unwrap();
            match decode {
                None => assert!(!wire.contains("decode"), "{wire}"),
                Some(d) => assert!(
                    wire.contains(&format!(r#""decode":"{}""#, d.name())),
                    "{wire}"
                ),
            }
            assert_eq!(serde_json::from_str::<FileContent>(&wire).unwrap(), content);
        }
        assert!(
            serde_json::from_str::<FileContent>(
                r#"{"format":"raw","alias":"kv","key":"value","decode":"hex"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn refresh_notify_may_call_the_apps_reload_endpoint_on_loopback_only() {
        let notify = |value: &str| {
            parse_annotations(&ann(&[
                (ANN_GENERATORS, "db=payments/Password/p"),
                (ANN_REFRESH_NOTIFY, value),
            ]))
            .map(|p| p.refresh_notify.unwrap())
            .map_err(|e| e.to_string())
        };
        for (value, url, method) in [
            (
                "url=http://127.0.0.1:9090/-/reload",
                "http://127.0.0.1:9090/-/reload",
                "POST",
            ),
            (
                "url=http://localhost:8080/actuator/refresh?force=true, method=put",
                "http://localhost:8080/actuator/refresh?force=true",
                "PUT",
            ),
            ("method=GET, url=http://[::1]:1", "http://[::1]:1", "GET"),
            // `,` separates items: a comma in the URL is written percent-encoded.
            (
                "url=http://127.0.0.1:80/reload?only=a%2Cb",
                "http://127.0.0.1:80/reload?only=a%2Cb",
                "POST",
            ),
        ] {
            assert_eq!(
                notify(value).unwrap(),
                Notify::Http {
                    url: url.into(),
                    method: method.into()
                },
                "{value}"
            );
        }
        for (value, want) in [
            ("url=https://127.0.0.1:9090/", "must start with http://"),
            ("url=http://10.0.0.7:9090/", "the host must be 127.0.0.1"),
            (
                "url=http://metadata.google.internal:80/",
                "the host must be",
            ),
            ("url=http://127.0.0.1.nip.io:80/", "the host must be"),
            ("url=http://user@127.0.0.1:80/", "the host must be"),
            ("url=http://127.0.0.1/reload", "needs a port"),
            ("url=http://127.0.0.1:0/", "1..65535"),
            ("url=http://127.0.0.1:65536/", "1..65535"),
            ("url=http://127.0.0.1:+80/", "1..65535"),
            ("url=http://127.0.0.1:80/a#b", "without `#`"),
            ("url=http://127.0.0.1:80/a\u{7f}", "visible ASCII"),
            (
                "url=http://127.0.0.1:80/, method=DELETE",
                "not one of POST, PUT, GET",
            ),
            (
                "url=http://127.0.0.1:80/, signal=HUP, process=x",
                "pick one",
            ),
            ("method=POST", "goes with `url=`"),
            ("colour=red", "unknown option"),
        ] {
            let e = notify(value).expect_err(value);
            assert!(e.contains(want), "{value}: {e}");
            assert!(e.contains(ANN_REFRESH_NOTIFY), "{e}");
        }
        // On the wire as a tagged variant esi-cli reads back.
        let http = notify("url=http://127.0.0.1:9090/-/reload").unwrap();
        let wire = serde_json::to_string(&http).unwrap();
        assert_eq!(
            wire,
            r#"{"type":"http","url":"http://127.0.0.1:9090/-/reload","method":"POST"}"#
        );
        assert_eq!(serde_json::from_str::<Notify>(&wire).unwrap(), http);
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0400").unwrap(), 0o400);
        assert_eq!(parse_mode("440").unwrap(), 0o440);
        assert_eq!(parse_mode("0o640").unwrap(), 0o640);
        assert!(parse_mode("0200").is_err());
        assert!(parse_mode("0604").is_err());
        assert!(parse_mode("1777").is_err());
    }

    #[test]
    fn quantities_read_as_the_api_server_reads_them() {
        for (text, value) in [
            ("0", 0.0),
            ("1", 1.0),
            ("50m", 0.05),
            ("1.5", 1.5),
            (".5", 0.5),
            ("2.", 2.0),
            ("64Mi", 64.0 * 1024.0 * 1024.0),
            ("1Gi", 1024.0 * 1024.0 * 1024.0),
            ("128M", 128e6),
            ("2k", 2000.0),
            ("2e3", 2000.0),
            ("5E-1", 0.5),
            ("+1", 1.0),
            ("+250m", 0.25),
        ] {
            assert_eq!(parse_quantity(text), Ok(value), "{text}");
        }
        for bad in [
            "", "m", ".", "-", "+", "++1", "+-1", "-+1", "--1", "1..5", "1.2.3", "64MB", "64mi",
            "1 Gi", "1e", "1e+", "1e1000", "1e999", "0x10", "Mi", "1Ki1", "1K",
        ] {
            let e = parse_quantity(bad).unwrap_err();
            assert!(e.contains("is not a Kubernetes quantity"), "{bad}: {e}");
        }
        assert_eq!(parse_quantity("-0"), Ok(0.0));
        for negative in ["-1", "-50m", "-1e-3"] {
            let e = parse_quantity(negative).unwrap_err();
            assert!(e.contains("is negative"), "{negative}: {e}");
        }
    }

    #[test]
    fn cli_resources_name_requests_and_limits_of_cpu_and_memory() {
        let r =
            parse_cli_resources("requests.cpu=20m, limits.memory=64Mi\nlimits.cpu = 1").unwrap();
        assert_eq!(
            r.requests,
            BTreeMap::from([("cpu".to_owned(), "20m".to_owned())])
        );
        assert_eq!(
            r.limits,
            BTreeMap::from([
                ("cpu".to_owned(), "1".to_owned()),
                ("memory".to_owned(), "64Mi".to_owned())
            ])
        );
        for (bad, says) in [
            ("", "sets nothing"),
            ("requests.cpu", "must look like"),
            ("requests.gpu=1", "is not one of"),
            ("limit.cpu=1", "is not one of"),
            ("requests=1", "is not one of"),
            ("requests.cpu=lots", "is not a Kubernetes quantity"),
            ("requests.cpu=1, requests.cpu=2", "set twice"),
        ] {
            let e = parse_cli_resources(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
