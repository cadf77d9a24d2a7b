//! Hostile input for the wire types esi-cli and the webhook read from places a broken
//! component or a Pod's author can write: `ESI_SPEC` ([`InjectionSpec`], from the Pod's env),
//! the federation's answers (the credential [`Envelope`], [`Identity`], [`RevokeResponse`],
//! [`AuthorizeResponse`], [`ErrorBody`]) and the Pod's annotations (`parse_annotations`).
//!
//! esi-cli and the webhook must never panic on these (the webhook serves every Pod of the
//! cluster; esi-cli gates the app's start) and must say what is wrong without quoting a
//! credential. Properties, each over the fixed seed of `esi_test_support::hostile`:
//!
//! - byte-mutated `ESI_SPEC` JSON is read (and then writes back the same) or refused as
//!   malformed at a line and column, or for its version;
//! - an unknown field in any object of `ESI_SPEC` is refused, naming it (every object tried);
//! - byte-mutated federation answers are read or refused by `json::from_answer`, whose message
//!   never quotes the credential's values, and `ErrorBody` is read or not without panicking;
//! - hostile annotations (valid ones byte-mutated, unknown keys, control characters, values at
//!   and past the size limits) are parsed into values within the contract's limits, or refused
//!   naming the annotation with a short, one-line message.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use esi_api::inject::{
    self, ContainerSpec, EnvImport, EnvMapping, FileContent, FileOutput, GeneratorRef,
    InjectionSpec, Notify, Owner, RefreshSpec, SPEC_VERSION, SpecError, limits,
};
use esi_api::{
    AuthorizeResponse, AuthorizeResult, Envelope, ErrorBody, ErrorCode, ErrorDetail, Identity,
    ObjectRef, RevokeResponse,
};
use esi_test_support::hostile::{apply, check, edits};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A spec using every field and every variant, as the webhook writes it.
fn full_spec() -> InjectionSpec {
    let generator = |kind: &str, name: &str| GeneratorRef {
        namespace: "payments".into(),
        kind: kind.into(),
        name: name.into(),
    };
    let file = |name: &str, content: FileContent| FileOutput {
        name: name.into(),
        path: format!("/etc/app/{name}"),
        volume_path: format!("files/creds/{name}"),
        content,
        mode: 0o440,
    };
    InjectionSpec {
        version: SPEC_VERSION,
        federation_url: "https://esi.example.com".into(),
        federation_ca_pem: Some(
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        ),
        token_path: inject::TOKEN_PATH.into(),
        generators: BTreeMap::from([
            ("db".into(), generator("VaultDynamicSecret", "db")),
            ("aws".into(), generator("AWSAssumeRole", "app")),
        ]),
        containers: BTreeMap::from([
            (
                "app".into(),
                ContainerSpec {
                    env: vec![EnvMapping {
                        name: "DB_PASS".into(),
                        alias: "db".into(),
                        key: "password".into(),
                    }],
                    env_from: vec![EnvImport {
                        alias: "aws".into(),
                        prefix: "AWS_".into(),
                    }],
                },
            ),
            ("migrate".into(), ContainerSpec::default()),
        ]),
        files: vec![
            file("json", FileContent::Json { alias: "db".into() }),
            file("yaml", FileContent::Yaml { alias: "db".into() }),
            file(
                "env",
                FileContent::Env {
                    alias: "aws".into(),
                },
            ),
            file(
                "raw",
                FileContent::Raw {
                    alias: "db".into(),
                    key: "password".into(),
                    decode: None,
                },
            ),
            file(
                "dsn",
                FileContent::Template {
                    template: "postgres://{{ .db.username }}:{{ .db.password }}@db/app".into(),
                },
            ),
        ],
        owner: Owner {
            uid: Some(1000),
            gid: Some(2000),
        },
        refresh: Some(RefreshSpec {
            at_percent: 66,
            notify: Notify::Signal {
                signal: "SIGHUP".into(),
                process: "nginx".into(),
            },
        }),
        revoke_on_exit: true,
    }
}

/// 5,000 cases: about 1 s in a debug build.
#[test]
fn byte_mutated_esi_spec_is_read_or_refused_at_a_position() {
    let text = full_spec().to_json();
    // The harness is live: the spec as written reads back.
    assert_eq!(InjectionSpec::from_json(&text).unwrap(), full_spec());
    let pretty = serde_json::to_string_pretty(&full_spec()).unwrap();
    let texts = [text, pretty];
    let strategy = (0..texts.len(), edits(4));
    check("ESI_SPEC", 5_000, &strategy, |(which, e)| {
        let mutated = apply(texts[which].as_bytes(), &e);
        // An env var esi-cli reads as a String: only UTF-8 reaches the parser.
        let Ok(mutated) = String::from_utf8(mutated) else {
            return Ok(());
        };
        match InjectionSpec::from_json(&mutated) {
            Ok(spec) => {
                prop_assert_eq!(spec.version, SPEC_VERSION);
                prop_assert_eq!(InjectionSpec::from_json(&spec.to_json()), Ok(spec));
            }
            Err(SpecError::Malformed(m)) => {
                prop_assert!(m.contains(" at line ") && m.contains(" column "), "{m}");
            }
            Err(SpecError::Version(v)) => prop_assert_ne!(v, SPEC_VERSION),
            Err(other) => prop_assert!(false, "{other}"),
        }
        Ok(())
    });
}

/// Every JSON pointer of `v` to an object.
fn objects(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            out.push(at.clone());
            for (k, child) in m {
                objects(child, format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                objects(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn an_unknown_field_in_any_object_of_the_spec_is_refused() {
    let spec = serde_json::to_value(full_spec()).unwrap();
    let mut pointers = Vec::new();
    objects(&spec, String::new(), &mut pointers);
    assert!(pointers.len() >= 20, "{pointers:?}");
    for pointer in pointers {
        let mut changed = spec.clone();
        changed
            .pointer_mut(&pointer)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert("zzUnknown".to_owned(), json!(1));
        let err = InjectionSpec::from_json(&changed.to_string()).unwrap_err();
        // The maps of aliases and containers take any key: the new entry is refused for its
        // value (`1` is not a generator), every other object for the key.
        let expected = if pointer == "/generators" || pointer == "/containers" {
            "invalid type: integer `1`, expected struct"
        } else {
            "unknown field `zzUnknown`"
        };
        assert!(err.to_string().contains(expected), "{pointer}: {err}");
    }
}

/// The credential's values: secrets no message may quote.
const SECRETS: [&str; 2] = ["S3cr3t-pw-Hq8vL2", "AKIAS3CR3T9Z7Q4W"];

/// The secrets still written as a JSON value (`"key": "secret"`) in `text`: a mutation may
/// have moved or copied one into a key, which messages name by design.
fn secrets_as_values(text: &str) -> Vec<&'static str> {
    SECRETS
        .into_iter()
        .filter(|s| {
            text.matches(s).count() == 1
                && text.find(s).is_some_and(|at| {
                    let before = text[..at].trim_end_matches('"').trim_end();
                    before.ends_with(':') && text[at + s.len()..].starts_with('"')
                })
        })
        .collect()
}

/// Mutates `value`'s JSON and reads it as a `T` with `from_answer`, as esi-cli reads the
/// federation's answer: read (and written back the same), or refused without quoting a
/// secret.
fn answers<T>(name: &str, cases: u32, value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let texts = [
        serde_json::to_string(value).unwrap(),
        serde_json::to_string_pretty(value).unwrap(),
    ];
    for text in &texts {
        assert_eq!(
            &esi_api::json::from_answer::<T>(text.as_bytes()).unwrap(),
            value
        );
    }
    check(name, cases, &(0..texts.len(), edits(4)), |(which, e)| {
        let mutated = apply(texts[which].as_bytes(), &e);
        match esi_api::json::from_answer::<T>(&mutated) {
            Ok(read) => {
                let again = serde_json::to_vec(&read).unwrap();
                prop_assert_eq!(esi_api::json::from_answer::<T>(&again).unwrap(), read);
            }
            Err(err) => {
                let shown = err.to_string();
                prop_assert!(!shown.is_empty());
                for s in secrets_as_values(&String::from_utf8_lossy(&mutated)) {
                    prop_assert!(!shown.contains(s), "quotes the secret {s:?}: {shown}");
                }
            }
        }
        // The error path reads the body as an ErrorBody, or not.
        let _ = serde_json::from_slice::<ErrorBody>(&mutated);
        Ok(())
    });
}

fn identity() -> Identity {
    Identity {
        cluster: "prod".into(),
        issuer: "https://oidc.example.com".into(),
        namespace: "payments".into(),
        service_account: ObjectRef {
            name: "api".into(),
            uid: "3f1c".into(),
        },
        pod: Some(ObjectRef {
            name: "api-7d9f".into(),
            uid: "9a0b".into(),
        }),
        subject: "system:serviceaccount:payments:api".into(),
        token_expires_at: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    }
}

/// 3,000 cases: about 0.5 s in a debug build.
#[test]
fn a_byte_mutated_envelope_is_read_or_refused_without_quoting_the_credential() {
    let envelope = Envelope {
        data: BTreeMap::from([
            ("password".into(), SECRETS[0].into()),
            ("AWS_ACCESS_KEY_ID".into(), SECRETS[1].into()),
            ("username".into(), "app".into()),
        ]),
        issued_at: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        expires_at: Some(jiff::Timestamp::from_second(1_700_003_600).unwrap()),
        renewable: true,
        lease: Some("v1.sealed-lease-handle".into()),
    };
    answers("Envelope", 3_000, &envelope);
}

/// 1,000 cases each: about 0.6 s in a debug build.
#[test]
fn other_byte_mutated_answers_are_read_or_refused() {
    answers("Identity", 1_000, &identity());
    answers("RevokeResponse", 1_000, &RevokeResponse { revoked: true });
    answers(
        "AuthorizeResponse",
        1_000,
        &AuthorizeResponse {
            identity: identity(),
            results: vec![
                AuthorizeResult {
                    generator: "payments/Password/db".into(),
                    allowed: true,
                    code: None,
                    message: "allowed by Authorization payments".into(),
                },
                AuthorizeResult {
                    generator: "payments/UUID/id".into(),
                    allowed: false,
                    code: Some(ErrorCode::PolicyDenied),
                    message: "no Authorization allows it".into(),
                },
            ],
        },
    );
    let body = ErrorBody {
        error: ErrorDetail {
            code: ErrorCode::RateLimited,
            message: "rate limit of this workload exceeded".into(),
            request_id: "req-1".into(),
            retry_after_seconds: Some(2),
        },
    };
    answers("ErrorBody", 1_000, &body);
}

// ---------------------------------------------------------------------------------------------
// Annotations
// ---------------------------------------------------------------------------------------------

/// A Pod's annotations using every key.
fn full_annotations() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "esi.dev/generators",
            "db=payments/VaultDynamicSecret/db,\n aws = payments/AWSAssumeRole/app",
        ),
        ("esi.dev/federation-url", "https://esi.example.com/"),
        ("esi.dev/env", "DB_USER=db.username, DB_PASS=db.password"),
        ("esi.dev/env.worker", "AWS_KEY=aws.AWS_ACCESS_KEY_ID"),
        ("esi.dev/env-from", "AWS_*=aws, *=db"),
        ("esi.dev/env-from.worker", "DB_*=db"),
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
        (
            "esi.dev/cli-resources",
            "requests.cpu=20m, limits.memory=64Mi",
        ),
        ("esi.dev/status", "injected"),
        ("other.io/ignored", "whatever"),
    ]
}

/// One change to the annotations.
#[derive(Debug, Clone)]
enum Change {
    /// Byte edits of the value of the annotation at this index.
    Value(prop::sample::Index, Vec<esi_test_support::hostile::Edit>),
    /// A value replaced by another.
    Replace(prop::sample::Index, String),
    /// An annotation added (or replaced).
    Add(String, String),
}

fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "[ -~]{0,40}",
        "[a-z0-9=,./*_{}%:\\[\\]\" \n-]{0,60}",
        "[\\x00-\\x1f\\x7f]{1,4}[a-z=/.]{0,8}",
        // At and past the limits (16 KiB values, 32 KiB templates).
        prop::sample::select(vec![
            limits::MAX_VALUE_BYTES,
            limits::MAX_VALUE_BYTES + 1,
            limits::MAX_TEMPLATE_BYTES,
            limits::MAX_TEMPLATE_BYTES + 1,
        ])
        .prop_flat_map(|n| {
            prop::sample::select(vec![
                "a".repeat(n),
                "{{ ".to_owned() + &"\n".repeat(n - 6) + " }}",
                "{{ ".to_owned() + &"x\n".repeat((n - 6) / 2) + " }}",
                "x,".repeat(n / 2),
                "a=b/C/d,".repeat(n / 8),
                "{{ .a.b }}".repeat(n / 10),
                "/".to_owned() + &"a/".repeat(n / 2),
            ])
        }),
    ]
}

fn hostile_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            full_annotations()
                .into_iter()
                .map(|(k, _)| k.to_owned())
                .collect::<Vec<_>>()
        ),
        "esi\\.dev/(file|template|env|env-from|entrypoint)\\.[a-z0-9.-]{0,10}",
        "esi\\.dev/[a-z.-]{0,12}",
        "esi\\.dev/\\PC{0,6}",
        "esi\\.dev/file\\.[a-z]{1,3}[\\x00-\\x1f]",
    ]
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => (any::<prop::sample::Index>(), edits(3)).prop_map(|(i, e)| Change::Value(i, e)),
        1 => (any::<prop::sample::Index>(), hostile_value()).prop_map(|(i, v)| Change::Replace(i, v)),
        1 => (hostile_key(), hostile_value()).prop_map(|(k, v)| Change::Add(k, v)),
    ]
}

/// Checks what `parse_annotations` made of `annotations` holds to the contract's limits.
fn within_contract(p: &inject::PodAnnotations) -> Result<(), TestCaseError> {
    prop_assert!(!p.generators.is_empty() && p.generators.len() <= limits::MAX_GENERATORS);
    for (alias, g) in &p.generators {
        prop_assert!(inject::is_alias(alias), "{alias:?}");
        prop_assert!(inject::is_dns_label(&g.namespace) && inject::is_dns_subdomain(&g.name));
    }
    let envs = p.env.iter().chain(p.env_per_container.values().flatten());
    for m in envs {
        prop_assert!(inject::is_env_name(&m.name) && inject::is_alias(&m.alias));
        prop_assert!(inject::is_data_key(&m.key));
    }
    prop_assert!(p.files.len() <= limits::MAX_FILES);
    for f in p.files.values() {
        prop_assert!(inject::check_file_path(&f.path).is_ok(), "{:?}", f.path);
        if let Some(mode) = f.mode {
            prop_assert!(
                mode <= 0o777 && mode & 0o007 == 0 && mode & 0o440 != 0,
                "{mode:o}"
            );
        }
        if let FileContent::Template { template } = &f.content {
            prop_assert!(template.len() <= limits::MAX_TEMPLATE_BYTES);
            prop_assert!(inject::parse_template(template).is_ok());
        }
    }
    for argv in p.entrypoints.values() {
        prop_assert!(!argv.is_empty() && !argv[0].is_empty());
        prop_assert!(argv.iter().all(|a| !a.contains('\0')));
    }
    if let Some(at) = p.refresh_at_percent {
        prop_assert!((10..=90).contains(&at));
    }
    if let Some(s) = p.token_expiration_seconds {
        prop_assert!(s > 0);
    }
    if let Some(url) = &p.federation_url {
        prop_assert!(url.starts_with("https://") || url.starts_with("http://"));
        prop_assert!(!url.chars().any(|c| c.is_control() || c == ' '));
    }
    Ok(())
}

/// The longest message: values are quoted only when short (64 characters, escaped).
const MESSAGE_MAX: usize = 512;

/// 6,000 cases: about 3 s in a debug build.
#[test]
fn hostile_annotations_are_parsed_within_limits_or_refused_naming_the_annotation() {
    let base: BTreeMap<String, String> = full_annotations()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    // The harness is live: the annotations as written parse.
    within_contract(&inject::parse_annotations(&base).unwrap()).unwrap();
    let strategy = prop::collection::vec(change(), 1..4);
    check("annotations", 6_000, &strategy, |changes| {
        let mut annotations = base.clone();
        for c in &changes {
            let keys: Vec<String> = annotations.keys().cloned().collect();
            match c {
                Change::Value(i, e) => {
                    let key = &keys[i.index(keys.len())];
                    let value = apply(annotations[key].as_bytes(), e);
                    // Kubernetes annotations are strings: UTF-8 only.
                    if let Ok(value) = String::from_utf8(value) {
                        annotations.insert(key.clone(), value);
                    }
                }
                Change::Replace(i, v) => {
                    let key = keys[i.index(keys.len())].clone();
                    annotations.insert(key, v.clone());
                }
                Change::Add(k, v) => {
                    annotations.insert(k.clone(), v.clone());
                }
            }
        }
        match inject::parse_annotations(&annotations) {
            Ok(p) => within_contract(&p)?,
            Err(e) => {
                let known = annotations.contains_key(&e.annotation)
                    || e.annotation == "esi.dev/file.*"
                    || e.annotation.starts_with(inject::ANN_TEMPLATE_PREFIX);
                prop_assert!(known, "names no annotation of the Pod: {e}");
                prop_assert!(!e.message.is_empty());
                prop_assert!(
                    e.message.len() <= MESSAGE_MAX,
                    "a message of {} bytes: {}…",
                    e.message.len(),
                    &e.message[..MESSAGE_MAX.min(e.message.len())]
                );
                prop_assert!(
                    !e.message.chars().any(char::is_control),
                    "more than one line, or a control character: {:?}",
                    e.message
                );
            }
        }
        Ok(())
    });
}

/// The value parsers the webhook applies to single annotations, on any text: an answer within
/// their contract, or an error.
///
/// 3,000 cases: about 0.5 s in a debug build.
#[test]
fn single_value_parsers_answer_within_their_contract() {
    let text = prop_oneof![
        "\\PC{0,24}",
        "[0-9smhd+ -]{0,24}",
        "[0-7o+ -]{0,8}",
        "[/a-z.,:]{0,24}",
        "[{}. a-z]{0,32}",
    ];
    check("values", 3_000, &text, |s| {
        if let Ok(n) = inject::parse_duration_seconds(&s) {
            prop_assert!(n > 0);
        }
        if let Ok(mode) = inject::parse_mode(&s) {
            prop_assert!(mode <= 0o777 && mode & 0o007 == 0 && mode & 0o440 != 0);
        }
        if inject::check_file_path(&s).is_ok() {
            prop_assert!(s.starts_with('/') && !s.ends_with('/') && !s.contains("//"));
            prop_assert!(!s.split('/').any(|seg| seg == "." || seg == ".."));
        }
        if let Ok(segments) = inject::parse_template(&s) {
            let rendered = inject::render_template(&segments, |_, _| Some("v"));
            prop_assert!(rendered.is_ok());
        }
        Ok(())
    });
}
