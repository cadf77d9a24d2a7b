//! Rendering credentials (files in every format, env bundles) and writing them atomically
//! with restrictive modes and the app's ownership.
//!
//! A write is a temp file in the target's own directory (so `rename` is atomic and stays on the
//! memory-backed volume), written, given its mode and owner, then renamed over the target. A
//! reader sees the old file or the new one, never a partial one; a `subPath` mount of the
//! directory sees the swap too.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{DecodeError, Engine as _, alphabet};
use esi_api::Envelope;
use esi_api::inject::{
    ContainerSpec, Decoding, FileContent, Owner, is_env_name, parse_template, render_template,
};

/// The credentials of a Pod, by alias.
pub type Credentials = BTreeMap<String, Envelope>;

fn alias_data<'a>(creds: &'a Credentials, alias: &str) -> anyhow::Result<&'a Envelope> {
    creds
        .get(alias)
        .ok_or_else(|| anyhow!("no generator with alias `{alias}` in the spec"))
}

fn missing_key(alias: &str, key: &str, env: &Envelope) -> anyhow::Error {
    let keys: Vec<&str> = env.data.keys().map(String::as_str).collect();
    anyhow!(
        "generator `{alias}` returned no key `{key}` (its keys: {})",
        keys.join(", ")
    )
}

/// The bytes `value` encodes, for `decode=`: ASCII whitespace skipped (wrapped lines), `=`
/// padding optional, the last character's unused bits ignored; anything else outside the
/// alphabet is refused. The reason names a position in `value`, never a character of it: the
/// value is a secret.
fn decoded(value: &str, how: Decoding) -> Result<Vec<u8>, String> {
    const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
    // Each kept byte with its offset in `value`, so that errors point into what the user has.
    let (kept, offsets): (Vec<u8>, Vec<usize>) = value
        .bytes()
        .enumerate()
        .filter(|(_, b)| !b.is_ascii_whitespace())
        .map(|(i, b)| (b, i))
        .unzip();
    let engine = match how {
        Decoding::Base64 => &STANDARD,
        Decoding::Base64Url => &URL_SAFE,
    };
    engine.decode(&kept).map_err(|e| match e {
        DecodeError::InvalidByte(i, _) | DecodeError::InvalidLastSymbol(i, _) => format!(
            "byte {} of the value is outside the alphabet or a misplaced `=`",
            offsets.get(i).map_or(i, |o| o + 1)
        ),
        DecodeError::InvalidLength(n) => {
            format!("{n} characters (whitespace aside) cannot encode whole bytes")
        }
        DecodeError::InvalidPadding => "its `=` padding is wrong".to_owned(),
    })
}

/// Renders a file output's bytes.
pub fn render_file(content: &FileContent, creds: &Credentials) -> anyhow::Result<Vec<u8>> {
    Ok(match content {
        FileContent::Json { alias } => {
            let env = alias_data(creds, alias)?;
            let mut s = serde_json::to_string_pretty(&env.data)?;
            s.push('\n');
            s.into_bytes()
        }
        FileContent::Yaml { alias } => {
            let env = alias_data(creds, alias)?;
            serde_saphyr::to_string(&env.data)
                .map_err(|e| anyhow!("cannot render YAML: {e}"))?
                .into_bytes()
        }
        FileContent::Env { alias } => {
            let env = alias_data(creds, alias)?;
            dotenv(&env.data)?.into_bytes()
        }
        FileContent::Raw { alias, key, decode } => {
            let env = alias_data(creds, alias)?;
            let value = env
                .data
                .get(key)
                .ok_or_else(|| missing_key(alias, key, env))?;
            match decode {
                None => value.clone().into_bytes(),
                Some(how) => decoded(value, *how).map_err(|why| {
                    anyhow!(
                        "decode={}: the value of `{alias}.{key}` is not {}: {why}",
                        how.name(),
                        how.name()
                    )
                })?,
            }
        }
        FileContent::Template { template } => {
            let segments = parse_template(template).map_err(|e| anyhow!("template: {e}"))?;
            render_template(&segments, |alias, key| {
                creds
                    .get(alias)
                    .and_then(|e| e.data.get(key))
                    .map(String::as_str)
            })
            .map_err(|e| anyhow!("template: {e}"))?
            .into_bytes()
        }
    })
}

/// Dotenv lines `KEY="value"`, escaping `\`, `"`, `$` and newlines so every common dotenv
/// parser (and a POSIX shell sourcing the file) reads back the exact value.
pub fn dotenv(data: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let mut out = String::new();
    for (k, v) in data {
        if !is_env_name(k) {
            bail!("key `{k}` is not a valid env var name for a dotenv file");
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '$' => out.push_str("\\$"),
                '`' => out.push_str("\\`"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
        out.push_str("\"\n");
    }
    Ok(out)
}

/// Variables that steer how a process or its interpreter starts (the dynamic loader, shells,
/// language runtimes) rather than carry data. A wildcard import (`esi.dev/env-from`) takes
/// whatever keys a backend returns, so a key named like one of these would let the backend (or
/// whoever controls its data) run code in the app: such keys are skipped, with a warning. An
/// explicit `esi.dev/env` mapping is the operator's own choice and stays allowed.
const PROCESS_CONTROL_VARS: &[&str] = &[
    "PATH",
    "IFS",
    "ENV",
    "BASH_ENV",
    "BASHOPTS",
    "SHELLOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCPATH",
    "NLSPATH",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONINSPECT",
    "PERL5LIB",
    "PERL5OPT",
    "PERLLIB",
    "RUBYLIB",
    "RUBYOPT",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "DOTNET_STARTUP_HOOKS",
];

/// Prefixes of whole families of such variables: the dynamic loader's `LD_*`, and esi's own.
const PROCESS_CONTROL_PREFIXES: &[&str] = &["LD_", "ESI_"];

/// Whether a wildcard import must not set `name` (see [`PROCESS_CONTROL_VARS`]).
fn controls_the_process(name: &str) -> bool {
    PROCESS_CONTROL_VARS.contains(&name)
        || PROCESS_CONTROL_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The env vars of one container: whole-alias imports in order (later wins), then single-key
/// mappings (which win over imports). Imports skip names that control the process (a warning
/// names the key, never its value).
pub fn container_env(
    spec: &ContainerSpec,
    creds: &Credentials,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for import in &spec.env_from {
        let e = alias_data(creds, &import.alias)?;
        for (k, v) in &e.data {
            let name = format!("{}{k}", import.prefix);
            if !is_env_name(&name) {
                bail!(
                    "key `{k}` of generator `{}` gives `{name}`, not a valid env var name; map it explicitly with esi.dev/env",
                    import.alias
                );
            }
            if controls_the_process(&name) {
                crate::log::warn(&format!(
                    "skipped key `{k}` of generator `{}`: as `{name}` it would steer how the app starts; map it explicitly with esi.dev/env if that is intended",
                    import.alias
                ));
                continue;
            }
            env.insert(name, v.clone());
        }
    }
    for m in &spec.env {
        let e = alias_data(creds, &m.alias)?;
        let v = e
            .data
            .get(&m.key)
            .ok_or_else(|| missing_key(&m.alias, &m.key, e))?;
        env.insert(m.name.clone(), v.clone());
    }
    Ok(env)
}

/// The earliest expiry among the aliases a container or file reads.
pub fn earliest_expiry<'a>(
    aliases: impl IntoIterator<Item = &'a str>,
    creds: &Credentials,
) -> Option<jiff::Timestamp> {
    aliases
        .into_iter()
        .filter_map(|a| creds.get(a).and_then(|e| e.expires_at))
        .min()
}

/// The aliases a container reads.
pub fn container_aliases(spec: &ContainerSpec) -> Vec<&str> {
    spec.env_from
        .iter()
        .map(|i| i.alias.as_str())
        .chain(spec.env.iter().map(|m| m.alias.as_str()))
        .collect()
}

/// Creates `dir` (and parents) with `mode` when missing.
pub fn ensure_dir(dir: &Path, mode: u32) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    Ok(())
}

/// Writes `bytes` to `path` atomically with `mode`, owned as `owner` asks (see
/// [`apply_owner`]).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, owner: &Owner) -> anyhow::Result<()> {
    replace_with(path, mode, owner, |f| f.write_all(bytes))
}

/// Replaces `path` atomically with what `fill` writes into a fresh owner-only temporary file
/// beside it, then gives it `mode` and `owner` and renames it into place: readers see the old
/// file or the whole new one, never a part.
///
/// Nothing is fsynced: everything esi-cli writes lives in the Pod's own `emptyDir`, which does
/// not outlive the node, so durability across a power loss buys nothing, while each fsync on a
/// disk-backed volume costs milliseconds of Pod start-up.
pub fn replace_with(
    path: &Path,
    mode: u32,
    owner: &Owner,
    fill: impl FnOnce(&mut fs::File) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", path.display()))?;
    if path.file_name().is_none() {
        bail!("{} has no file name", path.display());
    }
    // Short and independent of the target's name: a name near the 255-byte NAME_MAX would
    // otherwise make the temp name too long (ENAMETOOLONG).
    let tmp = dir.join(format!(
        ".esi-tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| -> anyhow::Result<()> {
        // Created owner-only: nobody else can open it while it is being written.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        fill(&mut f).with_context(|| format!("cannot write {}", tmp.display()))?;
        apply_owner(&f, path, mode, owner)?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The uid of root, which reads files it does not own (see [`apply_owner`]).
const ROOT_UID: u32 = 0;

/// Gives a just-written file to the app: as root, `chown` to the owner's uid/gid; otherwise
/// check that the app can read it (same uid, or a group read bit with the owner's gid, which a
/// non-root process may set when it is a member of that group, as with `fsGroup`).
///
/// An app running as root (owner uid 0) is satisfied without a chown, which esi-cli (never root
/// in a Pod: the webhook runs it as 65532 with `runAsNonRoot`) could not do anyway: root reads
/// any file through `CAP_DAC_OVERRIDE`, which container runtimes grant by default. A root app
/// that dropped ALL capabilities reads like any other user, so for uid 0 the webhook also names
/// the app's group (its `runAsGroup`/`fsGroup`, else 0, root's primary group), runs esi-cli in
/// that group and defaults to group-readable modes (0440): the group bit serves that app.
pub fn apply_owner(f: &fs::File, path: &Path, mode: u32, owner: &Owner) -> anyhow::Result<()> {
    let euid = rustix::process::geteuid();
    if euid.is_root() {
        if owner.uid.is_some() || owner.gid.is_some() {
            std::os::unix::fs::fchown(f, owner.uid, owner.gid).with_context(|| {
                format!(
                    "cannot chown {} to {}:{}",
                    path.display(),
                    owner.uid.map_or("-".into(), |u| u.to_string()),
                    owner.gid.map_or("-".into(), |g| g.to_string())
                )
            })?;
        }
        return Ok(());
    }
    let group_readable = mode & 0o040 != 0;
    let mut group_ok = false;
    if let (Some(gid), true) = (owner.gid, group_readable) {
        let meta = f.metadata()?;
        if meta.gid() != gid {
            std::os::unix::fs::fchown(f, None, Some(gid)).with_context(|| {
                format!(
                    "cannot give {} to group {gid}: esi-cli runs as uid {} without membership in that group; run it with runAsGroup/fsGroup {gid}",
                    path.display(),
                    euid.as_raw()
                )
            })?;
        }
        group_ok = true;
    }
    if let Some(uid) = owner.uid
        && uid != euid.as_raw()
        && uid != ROOT_UID
        && !group_ok
    {
        bail!(
            "{} would not be readable by the app (uid {uid}): esi-cli runs as uid {} and only root may chown; run esi-cli as uid {uid} (the webhook does) or share a group (fsGroup) and a 0440 mode",
            path.display(),
            euid.as_raw()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use esi_api::inject::{EnvImport, EnvMapping};

    fn creds() -> Credentials {
        let env = |pairs: &[(&str, &str)]| Envelope {
            data: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            issued_at: jiff::Timestamp::UNIX_EPOCH,
            expires_at: None,
            renewable: false,
            lease: None,
        };
        [
            (
                "db".to_owned(),
                env(&[("username", "u"), ("password", "p\"$x\\\n")]),
            ),
            ("aws".to_owned(), env(&[("KEY", "k"), ("bad-key", "v")])),
        ]
        .into()
    }

    #[test]
    fn dotenv_escapes_every_special_character() {
        let out = dotenv(&creds()["db"].data).unwrap();
        assert_eq!(out, "password=\"p\\\"\\$x\\\\\\n\"\nusername=\"u\"\n");
        assert!(dotenv(&creds()["aws"].data).is_err());
    }

    #[test]
    fn env_mappings_win_over_imports_and_bad_names_are_refused() {
        let spec = ContainerSpec {
            env: vec![EnvMapping {
                name: "DB_USERNAME".into(),
                alias: "db".into(),
                key: "password".into(),
            }],
            env_from: vec![EnvImport {
                alias: "db".into(),
                prefix: "DB_".into(),
            }],
        };
        let env = container_env(&spec, &creds()).unwrap();
        assert_eq!(env["DB_USERNAME"], "p\"$x\\\n");
        assert_eq!(env["DB_password"], "p\"$x\\\n");
        let bad = ContainerSpec {
            env: vec![],
            env_from: vec![EnvImport {
                alias: "aws".into(),
                prefix: String::new(),
            }],
        };
        let e = container_env(&bad, &creds()).unwrap_err().to_string();
        assert!(e.contains("bad-key") && !e.contains('v'.to_string().repeat(2).as_str()));
        let missing = ContainerSpec {
            env: vec![EnvMapping {
                name: "X".into(),
                alias: "db".into(),
                key: "nope".into(),
            }],
            env_from: vec![],
        };
        let e = container_env(&missing, &creds()).unwrap_err().to_string();
        assert!(e.contains("no key `nope`") && e.contains("username"), "{e}");
        assert!(!e.contains("p\"$x"), "{e}");
    }

    #[test]
    fn wildcard_imports_skip_process_control_names_but_explicit_mappings_keep_them() {
        let mut c = creds();
        c.get_mut("aws").unwrap().data = [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "PATH",
            "BASH_ENV",
            "ENV",
            "NODE_OPTIONS",
            "PYTHONPATH",
            "ESI_SPEC",
            "KEY",
        ]
        .iter()
        .map(|k| ((*k).to_owned(), "/tmp/evil".to_owned()))
        .collect();
        let spec = ContainerSpec {
            env: vec![EnvMapping {
                name: "PATH".into(),
                alias: "aws".into(),
                key: "PATH".into(),
            }],
            env_from: vec![
                EnvImport {
                    alias: "aws".into(),
                    prefix: String::new(),
                },
                EnvImport {
                    alias: "aws".into(),
                    prefix: "AWS_".into(),
                },
            ],
        };
        let env = container_env(&spec, &c).unwrap();
        let names: Vec<&str> = env.keys().map(String::as_str).collect();
        assert!(
            names.contains(&"KEY") && names.contains(&"AWS_PATH"),
            "{names:?}"
        );
        assert!(
            names.contains(&"AWS_LD_PRELOAD"),
            "prefixed, it is inert: {names:?}"
        );
        for bad in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "BASH_ENV",
            "ENV",
            "NODE_OPTIONS",
            "PYTHONPATH",
            "ESI_SPEC",
        ] {
            assert!(!env.contains_key(bad), "{bad} was imported");
        }
        assert_eq!(
            env["PATH"], "/tmp/evil",
            "the operator's explicit mapping stays"
        );
    }

    #[test]
    fn renders_every_format() {
        let c = creds();
        let json = render_file(&FileContent::Json { alias: "db".into() }, &c).unwrap();
        let back: BTreeMap<String, String> = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, c["db"].data);
        let yaml = render_file(&FileContent::Yaml { alias: "db".into() }, &c).unwrap();
        let back: BTreeMap<String, String> =
            serde_saphyr::from_str(std::str::from_utf8(&yaml).unwrap()).unwrap();
        assert_eq!(back, c["db"].data);
        let raw = render_file(
            &FileContent::Raw {
                alias: "db".into(),
                key: "username".into(),
                decode: None,
            },
            &c,
        )
        .unwrap();
        assert_eq!(raw, b"u");
        let t = render_file(
            &FileContent::Template {
                template: "{{ .db.username }}@{{.aws.KEY}}".into(),
            },
            &c,
        )
        .unwrap();
        assert_eq!(t, b"u@k");
    }

    #[test]
    fn a_raw_file_decodes_base64_to_the_bytes_and_never_quotes_the_value() {
        // Every byte value, NUL and non-UTF-8 included: what a keystore holds.
        let bytes: Vec<u8> = (0..=255u8).rev().collect();
        let standard = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        assert!(standard.contains('+') && standard.contains('/') && url.contains('-'));
        // Wrapped at 76 columns with CRLF, as `base64` tools and PEM bodies write it.
        let wrapped = standard
            .as_bytes()
            .chunks(76)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n");
        let render = |value: &str, decode: Decoding| {
            let mut c = creds();
            c.get_mut("db")
                .unwrap()
                .data
                .insert("ks".into(), value.to_owned());
            render_file(
                &FileContent::Raw {
                    alias: "db".into(),
                    key: "ks".into(),
                    decode: Some(decode),
                },
                &c,
            )
        };
        for (value, how) in [
            (standard.as_str(), Decoding::Base64),
            (standard.trim_end_matches('='), Decoding::Base64),
            (wrapped.as_str(), Decoding::Base64),
            (url.as_str(), Decoding::Base64Url),
        ] {
            assert_eq!(render(value, how).unwrap(), bytes, "{how:?}");
        }
        assert_eq!(render("", Decoding::Base64).unwrap(), b"");
        // The wrong alphabet, a character outside both, a cut value, bad padding: the reason
        // and where, never the secret's characters.
        for (value, how, want) in [
            (standard.as_str(), Decoding::Base64Url, "byte "),
            (
                "c2VjcmV0LXZhbHVl!",
                Decoding::Base64,
                "byte 17 of the value",
            ),
            ("-----BEGIN x-----", Decoding::Base64, "byte 1 of the value"),
            ("c2VjcmV0LXZhbHVlX", Decoding::Base64, "17 characters"),
            ("c2VjcmV0LXZhbHVl=====", Decoding::Base64, "byte"),
        ] {
            let e = format!("{:#}", render(value, how).unwrap_err());
            assert!(e.contains(want), "{value}: {e}");
            assert!(
                e.contains(&format!("decode={}", how.name())) && e.contains("`db.ks`"),
                "{e}"
            );
            for secret in ["c2VjcmV0", "BEGIN", "!"] {
                assert!(!e.contains(secret), "{e}");
            }
        }
    }

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one", 0o400, &Owner::default()).unwrap();
        write_atomic(&p, b"two", 0o440, &Owner::default()).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o440);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp left");
    }

    #[test]
    fn atomic_write_takes_a_name_as_long_as_the_kernel_allows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n".repeat(255));
        write_atomic(&p, b"x", 0o400, &Owner::default()).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"x");
    }
}
