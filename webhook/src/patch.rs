//! The JSON patch (RFC 6902) the webhook answers with, as typed operations over borrowed
//! data, serialized once. Building `serde_json::Value` trees for every container, mount and
//! volume cost more than the rest of an admission's planning.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};
use serde_json::value::RawValue;

/// A serialized JSON patch: what goes, base64-encoded, into the AdmissionReview answer.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonPatch(Vec<u8>);

impl JsonPatch {
    /// The patch of `ops`, with `spec` (a JSON string literal, see [`string_literal`]) as
    /// the value of every [`EnvValue::Spec`].
    pub(crate) fn new(ops: &[Op<'_>], spec: &str) -> Result<Self, serde_json::Error> {
        // A typical injection's patch is 3-4 KB: one allocation instead of doubling from 128 B.
        let mut out = Vec::with_capacity(4096);
        ops.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            WithSpec(spec),
        ))?;
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
    pub value: Option<EnvValue<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_from: Option<FieldRef>,
}

/// An `env` value.
pub(crate) enum EnvValue<'a> {
    /// Text, escaped as it is written.
    Text(&'a str),
    /// The injection spec: [`JsonPatch::new`] writes its literal here.
    Spec,
}

impl Serialize for EnvValue<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            EnvValue::Text(text) => s.serialize_str(text),
            // The patch's only raw fragment, which its formatter replaces by the spec.
            EnvValue::Spec => spec_slot().serialize(s),
        }
    }
}

fn spec_slot() -> &'static RawValue {
    static SLOT: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    SLOT.get_or_init(|| RawValue::from_string("\"\"".to_owned()).expect("a JSON string"))
}

/// Writes the patch compactly, putting the spec's literal where [`EnvValue::Spec`] stands.
struct WithSpec<'a>(&'a str);

impl Formatter for WithSpec<'_> {
    fn write_raw_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        _slot: &str,
    ) -> std::io::Result<()> {
        w.write_all(self.0.as_bytes())
    }
}

/// The JSON string literal holding `value`'s JSON text, written in one pass: the same as
/// `serde_json::to_string(&serde_json::to_string(value)?)`, without escaping the inner text
/// again. The injection spec (~1 KB of JSON, a quote every few bytes) sits in an env value;
/// escaping it a second time, or having serde_json check the literal as a `RawValue`, was a
/// tenth of an admission.
pub(crate) fn string_literal<T: Serialize + ?Sized>(
    value: &T,
) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(2048);
    out.push(b'"');
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out, InString,
    ))?;
    out.push(b'"');
    // serde_json writes UTF-8, and the formatter adds ASCII only.
    String::from_utf8(out).map_err(serde::ser::Error::custom)
}

/// serde_json's compact output, escaped for the inside of a JSON string: its quotes become
/// `\"`, and the backslash of each escape it writes is itself escaped. Text between escapes
/// holds no quote, backslash or control character (serde_json escapes those), so it is
/// written as it is.
struct InString;

impl Formatter for InString {
    fn begin_string<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b"\\\"")
    }

    fn end_string<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b"\\\"")
    }

    fn write_char_escape<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> std::io::Result<()> {
        let letter = match escape {
            CharEscape::Quote => return w.write_all(b"\\\\\\\""),
            CharEscape::ReverseSolidus => return w.write_all(b"\\\\\\\\"),
            CharEscape::Solidus => b'/',
            CharEscape::Backspace => b'b',
            CharEscape::FormFeed => b'f',
            CharEscape::LineFeed => b'n',
            CharEscape::CarriageReturn => b'r',
            CharEscape::Tab => b't',
            CharEscape::AsciiControl(byte) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                return w.write_all(&[
                    b'\\',
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xf)],
                ]);
            }
        };
        w.write_all(&[b'\\', b'\\', letter])
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The literal is exactly what escaping the JSON text a second time would give, for every
    /// character serde_json escapes and for text it leaves alone.
    #[test]
    fn string_literal_is_the_json_text_escaped_once_more() {
        let mut hostile: String = (0u8..0x20).map(char::from).collect();
        hostile.push_str(r#"quote " backslash \ slash / del \u{7f} é ✓ 𝄞 \\" "\"#);
        let values = [
            serde_json::json!({"a": hostile, "b": [1, -2, 3.5, true, null], "c": {"": ""}}),
            serde_json::json!("plain"),
            serde_json::json!(["\"", "\\", "\n", "\u{2028}"]),
            serde_json::json!(null),
        ];
        for value in values {
            let literal = string_literal(&value).unwrap();
            let twice = serde_json::to_string(&serde_json::to_string(&value).unwrap()).unwrap();
            assert_eq!(literal, twice);
            let inner: String = serde_json::from_str(&literal).unwrap();
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&inner).unwrap(),
                value
            );
        }
    }
}
