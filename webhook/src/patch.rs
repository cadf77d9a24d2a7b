//! The JSON patch (RFC 6902) the webhook answers with, as typed operations over borrowed
//! data, serialized once. Building `serde_json::Value` trees for every container, mount and
//! volume cost more than the rest of an admission's planning.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;

/// A serialized JSON patch: what goes, base64-encoded, into the AdmissionReview answer.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonPatch(Vec<u8>);

impl JsonPatch {
    pub(crate) fn new(ops: &[Op<'_>]) -> Result<Self, serde_json::Error> {
        // A typical injection's patch is 3-4 KB: one allocation instead of doubling from 128 B.
        let mut out = Vec::with_capacity(4096);
        serde_json::to_writer(&mut out, ops)?;
        Ok(JsonPatch(out))
    }

    /// The patch's JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The patch as json-patch operations (for applying it to a Pod in tests and tools).
    pub fn operations(&self) -> Result<json_patch::Patch, serde_json::Error> {
        serde_json::from_slice(&self.0)
    }
}

impl std::fmt::Debug for JsonPatch {
    // The patch holds no secret (the injection spec names generators, never credentials).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// One operation. `path` is a JSON pointer (RFC 6901), already escaped.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum Op<'a> {
    Add { path: Path, value: Val<'a> },
    Replace { path: Path, value: Val<'a> },
}

/// A JSON pointer: most are constants, the containers' carry an index.
pub(crate) type Path = Cow<'static, str>;

/// The values the webhook adds or replaces.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum Val<'a> {
    Command(&'a [&'a str]),
    Mounts(Vec<Mount<'a>>),
    Mount(Mount<'a>),
    Containers(Vec<CliContainer<'a>>),
    Container(Box<CliContainer<'a>>),
    Volumes(Vec<Volume<'a>>),
    Volume(Volume<'a>),
    Annotations(BTreeMap<&'a str, &'a str>),
    Str(&'a str),
}

/// A `volumeMounts` entry.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Mount<'a> {
    pub name: &'a str,
    pub mount_path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// An esi-cli container (the init container, or the refreshing native sidecar).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CliContainer<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub image_pull_policy: &'a str,
    pub command: [&'a str; 1],
    pub args: [&'a str; 1],
    pub env: Vec<EnvVar<'a>>,
    pub volume_mounts: [Mount<'a>; 2],
    pub resources: Resources<'a>,
    pub security_context: SecurityContext,
    pub termination_message_policy: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe<'a>>,
}

/// An `env` entry: a value, or a field of the Pod.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EnvVar<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_from: Option<FieldRef>,
}

/// `valueFrom: {fieldRef: {fieldPath: ...}}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FieldRef {
    pub field_ref: FieldPath,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FieldPath {
    pub field_path: &'static str,
}

#[derive(Serialize)]
pub(crate) struct Resources<'a> {
    pub requests: &'a BTreeMap<String, String>,
    pub limits: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SecurityContext {
    pub run_as_user: u32,
    pub run_as_group: u32,
    pub run_as_non_root: bool,
    pub read_only_root_filesystem: bool,
    pub allow_privilege_escalation: bool,
    pub privileged: bool,
    pub capabilities: Capabilities,
    pub seccomp_profile: SeccompProfile,
}

#[derive(Serialize)]
pub(crate) struct Capabilities {
    pub drop: [&'static str; 1],
}

#[derive(Serialize)]
pub(crate) struct SeccompProfile {
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// An exec probe.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Probe<'a> {
    pub exec: Exec<'a>,
    pub period_seconds: u32,
    pub failure_threshold: u32,
}

#[derive(Serialize)]
pub(crate) struct Exec<'a> {
    pub command: [&'a str; 2],
}

/// The two volumes the webhook adds.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum Volume<'a> {
    /// The memory-backed volume for esi-cli's binary and the credentials.
    EmptyDir {
        name: &'a str,
        #[serde(rename = "emptyDir")]
        empty_dir: EmptyDir,
    },
    /// The projected ServiceAccount token with the federation's audience.
    Projected {
        name: &'a str,
        projected: Projected<'a>,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EmptyDir {
    pub medium: &'static str,
    pub size_limit: &'static str,
}

#[derive(Serialize)]
pub(crate) struct Projected<'a> {
    pub sources: [TokenSource<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenSource<'a> {
    pub service_account_token: ServiceAccountToken<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceAccountToken<'a> {
    pub audience: &'a str,
    pub expiration_seconds: i64,
    pub path: &'static str,
}
