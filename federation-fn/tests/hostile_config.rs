//! Hostile configuration: the loader (`config::load_text`, `config::parse_text`) fed mutated
//! manifests, as a broken file or a tenant's resource would be.
//!
//! The configuration is read at start and at every reload. A panic there aborts the release
//! build (every tenant's requests with it); a load error is logged (and, in Kubernetes mode,
//! written to the resource's status), so it must say where the problem is and never quote a
//! secret written in the file. Properties, each over the fixed seed of
//! `esi_test_support::hostile`:
//!
//! - byte mutations of a valid multi-document YAML configuration, and of the same as a JSON
//!   `List`: the load succeeds with a snapshot whose local generators serve, or fails with
//!   errors that each name the file (and the document, when there is one), are one line, and
//!   never quote the Fake generator's values;
//! - one field of the valid configuration replaced by a hostile JSON value (huge, negative and
//!   fractional numbers, `1e400`, long strings, control characters, odd durations, deep
//!   nesting, empty collections, null): the load succeeds and serves (a password no longer
//!   than the limit, a rate limiter that decides), or fails naming the document, the resource
//!   and the field or one it is checked against;
//! - an unknown field added to any object of the configuration that has a fixed shape is
//!   refused, naming the field (every object is tried, not a sample);
//! - the fast readers in front of serde-saphyr read generated YAML and JSON (lookalikes of
//!   bools, numbers and nulls, quoted and plain, nested up to past serde-saphyr's depth limit)
//!   exactly as serde-saphyr alone does, or the file is refused alike.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use esi_backends::{Context, Generate as _};
use esi_federation::config::{self, ConfigError, LoadError, Snapshot};
use esi_federation::lease::LeaseKeys;
use esi_federation::state::{AppState, Settings};
use esi_test_support::hostile::{apply, check, edits};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

/// The Fake generator's values: secrets written in the file, which no error may quote.
const SECRETS: [&str; 2] = ["Fk-pw-7Q2xZ9wLr4", "Fk-tok-3Hn8vBq1Ts"];

/// A public key of a private cluster: inline, so no case waits on the network (and fixed, so
/// the mutated texts are the same on every run).
const JWKS: &str = r#"{"keys":[{"alg":"ES256","crv":"P-256","kid":"2d447e91113b49fb976a5d865071aacf","kty":"EC","use":"sig","x":"gQIZJITOAvWDLSQPXRB6zxgs0xFBbZDL3VrM996OLaQ","y":"ZssMJe5XmqRxJK1qvi3JmyGzIzqHCZ0i8guD1qvl4GY"}]}"#;

/// Every common kind, in the styles operators write (block and flow collections, quoted and
/// plain scalars, comments).
fn base_yaml() -> String {
    format!(
        r#"# A private cluster, its keys inline.
apiVersion: esi.dev/v1alpha1
kind: Cluster
metadata:
  name: prod
  labels: {{env: prod}}
spec:
  issuer: https://private.cluster.internal
  audiences: [esi]
  algorithms: [ES256, RS256]
  leeway: {{expiration: 150s, notBefore: 150s, issuedAt: 60s}}
  keys:
    jwks: {JWKS}
---
apiVersion: esi.dev/v1alpha1
kind: Authorization
metadata: {{name: team}}
spec:
  subjects:
    - clusterSelector:
        matchLabels: {{env: prod}}
        matchExpressions: [{{key: env, operator: In, values: [prod]}}]
      namespaces: [team]
      serviceAccounts: [app, "worker-*"]
  generators: [team/Password/db, "team/*/*"]
  maxTTL: 1h
  rateLimit: {{perMinute: 2, burst: 10}}
---
apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: vault, namespace: team}}
spec:
  provider:
    vault:
      server: https://vault.example:8200
      timeout: 5s
      auth:
        token: {{env: VAULT_TOKEN}}
---
apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: aws, namespace: team}}
spec:
  provider:
    aws:
      region: eu-west-1
      timeout: 10s
---
apiVersion: esi.dev/v1alpha1
kind: Password
metadata: {{name: db, namespace: team}}
spec: {{length: 16, digits: 4, symbols: 4, symbolCharacters: "-_.!", allowRepeat: true}}
---
apiVersion: esi.dev/v1alpha1
kind: UUID
metadata: {{name: id, namespace: team}}
spec: {{}}
---
apiVersion: esi.dev/v1alpha1
kind: Fake
metadata:
  name: creds
  namespace: team
spec:
  data:
    username: app
    password: {}
    token: {}
  leaseDuration: 15m
---
apiVersion: esi.dev/v1alpha1
kind: VaultDynamicSecret
metadata: {{name: pg, namespace: team}}
spec:
  secretStoreRef: {{name: vault}}
  path: database/creds/readonly
  method: POST
  parameters: {{ttl: 1h, common_name: app.example}}
  resultType: Data
  retrySettings: {{maxRetries: 2, retryInterval: 2s}}
---
apiVersion: esi.dev/v1alpha1
kind: AWSAssumeRole
metadata: {{name: s3, namespace: team}}
spec:
  secretStoreRef: {{name: aws}}
  roleArn: arn:aws:iam::123456789012:role/app
  sessionName: "esi-{{{{namespace}}}}-{{{{serviceAccount}}}}"
  durationSeconds: 3600
  externalId: ext-id-1
  tags: {{team: payments}}
  sourceIdentity: "{{{{serviceAccount}}}}"
# Stores proving the federation with a client certificate, an AWS identity, a password.
---
apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: vault-cert, namespace: team}}
spec:
  provider:
    vault:
      server: https://vault.example:8200
      auth:
        cert:
          path: cert
          name: esi-federation
          clientCert: {{file: /etc/esi/vault-tls/tls.crt}}
          clientKey: {{file: /etc/esi/vault-tls/tls.key}}
---
apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: vault-iam, namespace: team}}
spec:
  provider:
    vault:
      server: https://vault.example:8200
      auth:
        iam: {{path: aws, role: esi-federation, serverId: vault.example.com, sts: {{region: eu-west-1}}}}
---
apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: vault-users, namespace: team}}
spec:
  provider:
    vault:
      server: https://vault.example:8200
      auth:
        userPass: {{path: userpass, username: esi-federation, passwordRef: {{env: VAULT_PASSWORD}}}}
---
apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: ssh-ca, namespace: team}}
spec:
  provider:
    ssh:
      caKey: {{file: /etc/esi/ssh-ca/ca}}
---
apiVersion: esi.dev/v1alpha1
kind: SSHCertificate
metadata: {{name: hosts, namespace: team}}
spec:
  secretStoreRef: {{name: ssh-ca}}
  principals: [deploy, "{{{{serviceAccount}}}}"]
  validity: 15m
  extensions: [permit-pty]
  sourceAddress: [10.0.0.0/8]
  forceCommand: /usr/local/bin/deploy
---
apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: prod-eu, namespace: team}}
spec:
  provider:
    kubernetes:
      server: https://api.prod-eu.example:6443
      auth:
        cert:
          clientCert: {{file: /etc/esi/k8s/tls.crt}}
          clientKey: {{file: /etc/esi/k8s/tls.key}}
"#,
        SECRETS[0], SECRETS[1]
    )
}

/// The documents of [`base_yaml`], as the loader reads them.
fn base_docs() -> Vec<Value> {
    config::parse_text("base.yaml", &base_yaml())
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect()
}

/// The same configuration as one JSON `List` (what `kubectl get -o json` writes).
fn base_list() -> String {
    serde_json::to_string_pretty(&json!({"apiVersion": "v1", "kind": "List", "items": base_docs()}))
        .unwrap()
}

fn state() -> AppState {
    AppState::new(Settings::default(), LeaseKeys::ephemeral())
}

/// The generators [`base_yaml`] defines.
const GENERATORS: [&str; 6] = [
    "team/Password/db",
    "team/UUID/id",
    "team/Fake/creds",
    "team/VaultDynamicSecret/pg",
    "team/AWSAssumeRole/s3",
    "team/SSHCertificate/hosts",
];

fn identity() -> esi_api::Identity {
    esi_api::Identity {
        cluster: "prod".into(),
        issuer: "https://private.cluster.internal".into(),
        namespace: "team".into(),
        service_account: esi_api::ObjectRef {
            name: "app".into(),
            uid: "uid-1".into(),
        },
        pod: None,
        subject: "system:serviceaccount:team:app".into(),
        token_expires_at: jiff::Timestamp::UNIX_EPOCH,
    }
}

/// What a loaded snapshot must do: decide on a request (the rate limiter included) and mint
/// from its local generators, a password never past the limit, and as long as `lengths` says
/// when it knows (by generator reference).
fn serves(
    snap: &Snapshot,
    rt: &tokio::runtime::Runtime,
    lengths: &BTreeMap<String, u64>,
) -> Result<(), TestCaseError> {
    let id = identity();
    let labels = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
    for generator in GENERATORS {
        for _ in 0..2 {
            // Allowed or denied: either is a decision, as long as it is taken.
            let _ = snap.authorizer.authorize(&id, &labels, generator);
        }
    }
    for (reference, entry) in snap.generators.iter() {
        if !matches!(entry.kind.as_str(), "Password" | "UUID" | "Fake") {
            continue;
        }
        let ctx = Context {
            identity: &id,
            generator: reference,
            max_ttl: None,
        };
        let minted = rt.block_on(entry.generator.generate(&ctx));
        prop_assert!(minted.is_ok(), "{reference}: {:?}", minted.err());
        let minted = minted.unwrap();
        if entry.kind.as_str() == "Password" {
            let password = &minted.data["password"];
            prop_assert!(password.len() <= esi_backends::password::MAX_LENGTH as usize);
            if let Some(&length) = lengths.get(reference.as_str()) {
                prop_assert_eq!(password.len() as u64, length);
            }
        }
    }
    Ok(())
}

/// Checks every error of a failed load has: the file as origin, alone for a whole-file
/// problem, else with the document (`#N`, `#N.items[M]`); one line (a value holding a line
/// break must not forge a log line); and no secret.
fn well_formed(
    origin: &str,
    errors: &[ConfigError],
    secrets: &[&str],
) -> Result<(), TestCaseError> {
    prop_assert!(!errors.is_empty(), "a failed load reports a problem");
    for e in errors {
        let shown = e.to_string();
        prop_assert!(!e.message.is_empty(), "{shown}");
        if e.origin == origin {
            prop_assert!(
                e.message.starts_with("not valid YAML"),
                "a whole-file problem is the file's syntax: {shown}"
            );
        } else {
            let doc = e
                .origin
                .strip_prefix(origin)
                .and_then(|r| r.strip_prefix('#'));
            prop_assert!(
                doc.is_some_and(|d| {
                    let (n, items) = d.split_once('.').unwrap_or((d, ""));
                    n.parse::<usize>().is_ok_and(|n| n >= 1)
                        && (items.is_empty()
                            || items
                                .strip_prefix("items[")
                                .and_then(|i| i.strip_suffix(']'))
                                .is_some_and(|i| i.parse::<usize>().is_ok()))
                }),
                "origin {:?} does not name {origin} and a document",
                e.origin
            );
        }
        prop_assert!(
            !shown.chars().any(char::is_control),
            "more than one line, or a control character: {shown:?}"
        );
        for s in secrets {
            prop_assert!(!shown.contains(s), "quotes the secret {s:?}: {shown}");
        }
    }
    Ok(())
}

/// The secrets still written as values (after `key: `) in `text`: a mutation may have moved
/// or copied one into a key or a name, which messages quote by design.
fn secrets_as_values(text: &[u8]) -> Vec<&'static str> {
    let text = String::from_utf8_lossy(text);
    SECRETS
        .into_iter()
        .filter(|s| {
            text.matches(s).count() == 1
                && text.find(s).is_some_and(|at| {
                    let before = &text[..at];
                    let after = &text[at + s.len()..];
                    (before.ends_with(": ") && after.starts_with('\n'))
                        || (before.ends_with(": \"") && after.starts_with('"'))
                })
        })
        .collect()
}

fn byte_mutations(text: String, origin: &'static str, cases: u32) {
    let state = state();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // The harness is live: the unmutated text loads whole and serves.
    let snap = config::load_text(origin, &text, &state).unwrap();
    assert_eq!(snap.generators.len(), GENERATORS.len());
    let lengths = BTreeMap::from([("team/Password/db".to_owned(), 16)]);
    serves(&snap, &rt, &lengths).unwrap();
    let loaded = std::cell::Cell::new(0u32);
    check(origin, cases, &edits(4), |e| {
        let mutated = apply(text.as_bytes(), &e);
        // The loader reads text: a file that is not UTF-8 is refused before it (`read_to_string`).
        let Ok(mutated_text) = std::str::from_utf8(&mutated) else {
            return Ok(());
        };
        match config::load_text(origin, mutated_text, &state) {
            Ok(snap) => {
                loaded.set(loaded.get() + 1);
                serves(&snap, &rt, &BTreeMap::new())
            }
            Err(LoadError(errors)) => well_formed(origin, &errors, &secrets_as_values(&mutated)),
        }
    });
    // Some mutations land where they change nothing the loader reads (a comment, a blank).
    assert!(loaded.get() > 0, "no mutated configuration loaded");
}

/// 1,500 cases: about 2.5 s in a debug build.
#[test]
fn byte_mutated_yaml_loads_or_names_the_document_without_quoting_secrets() {
    byte_mutations(base_yaml(), "test.yaml", 1_500);
}

/// 1,000 cases: about 1.5 s in a debug build.
#[test]
fn byte_mutated_json_list_loads_or_names_the_document_without_quoting_secrets() {
    byte_mutations(base_list(), "test.json", 1_000);
}

/// Found by the byte-mutation property: serde-saphyr's messages carried a snippet of the lines
/// around the fault, here the Fake's password, into the log.
#[test]
fn a_syntax_error_next_to_a_secret_names_the_line_not_the_text() {
    let text = base_yaml().replace(
        &format!("password: {}", SECRETS[0]),
        &format!("password: \"{}", SECRETS[0]),
    );
    let errors = match config::load_text("test.yaml", &text, &state()) {
        Ok(_) => panic!("loaded"),
        Err(LoadError(errors)) => errors,
    };
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(
        shown[0].starts_with("test.yaml: not valid YAML: "),
        "{shown:?}"
    );
    assert!(shown[0].ends_with("at line 67, column 15"), "{shown:?}");
    assert!(
        !shown[0].contains(SECRETS[0]) && !shown[0].contains('\n'),
        "{shown:?}"
    );
}

/// Found by the byte-mutation property: a key holding a tab or a line break went as it was
/// into the field path and the message (`unknown field`), where a resource name is escaped.
#[test]
fn a_key_holding_a_line_break_cannot_forge_a_log_line() {
    let text = base_yaml().replace(
        "  durationSeconds: 3600",
        "  durationSeconds: 3600\n  \"x\\nlevel=INFO msg=forged\": 1",
    );
    let errors = match config::load_text("test.yaml", &text, &state()) {
        Ok(_) => panic!("loaded"),
        Err(LoadError(errors)) => errors,
    };
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "test.yaml#9: AWSAssumeRole/team/s3: spec.x\\nlevel=INFO msg=forged: unknown field `x\\nlevel=INFO msg=forged`, expected one of `secretStoreRef`, `roleArn`, `sessionName`, `durationSeconds`, `externalId`, `policy`, `policyArns`, `identityTags`, `tags`, `transitiveTagKeys`, `sourceIdentity`"
        ]
    );
}

/// Found by the structure-aware property: libyaml's time grows with the square of the depth of
/// flow collections (40,000 `{a:` took 25 s in a debug build); past serde-saphyr's limit they
/// go straight to serde-saphyr, which stops at the 65th.
#[test]
fn deep_flow_nesting_is_refused_without_reading_it_all() {
    let text = format!("a: {}1{}", "{a: ".repeat(40_000), "}".repeat(40_000));
    let started = std::time::Instant::now();
    let e = config::parse_text("test.yaml", &text).unwrap_err();
    assert!(e.message.starts_with("not valid YAML"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// One field replaced
// ---------------------------------------------------------------------------------------------

/// A number as JSON text: any `i64`, `u64`, `u32`, finite `f64`, and texts at the edges (past
/// `u64`, past `f64`: `1e400`).
fn hostile_number() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        // Within the u32 fields' range, where only validation stands between a value and use.
        2 => any::<u32>().prop_map(|n| n.to_string()),
        1 => (1u32..5000).prop_map(|n| n.to_string()),
        1 => any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f).to_string()),
        2 => prop::sample::select(vec![
            "0", "-1", "1", "4096", "4097", "4294967295", "4294967296", "65536", "900", "43200",
            "-9223372036854775808", "18446744073709551615", "18446744073709551616",
            "123456789012345678901234567890", "1e400", "-1e400", "1e-400", "0.5", "-0.0",
            "3600.0", "1e300", "6e0",
        ])
        .prop_map(str::to_owned),
    ]
}

/// A string as JSON text: durations at the edges, printable and any Unicode text, control
/// characters, long ones (up to 1 MB), and words the loader gives meaning to.
fn hostile_string() -> impl Strategy<Value = String> {
    let text = |s: String| json!(s).to_string();
    let durations = prop::sample::select(vec![
        "99999999999h",
        "-1s",
        "0s",
        "0",
        "1e400",
        "18446744073709551616s",
        "18446744073709551615s",
        "9223372036854775807s",
        "584542046091y",
        "1h30m",
        "15m",
        "10000000000000d",
        "1ns",
        " 5s",
        "5 s",
        "",
    ]);
    prop_oneof![
        durations.prop_map(move |s| text(s.to_owned())),
        "[ -~]{0,24}".prop_map(text),
        "\\PC{0,16}".prop_map(text),
        "[\\x00-\\x1f\\x7f]{1,4}[a-z]{0,4}".prop_map(text),
        (
            prop::sample::select(vec![1_000usize, 100_000, 1_000_000]),
            "[a-z{}]"
        )
            .prop_map(move |(n, c)| text(c.repeat(n))),
        prop::sample::select(vec![
            "*",
            "*/*/*",
            "team/*/*",
            "..",
            "../..",
            "/",
            "https://",
            "http://127.0.0.1:1/",
            "{{ secret }}",
            "{{namespace",
            "arn:aws:iam::1:role/x",
            "ES256",
            "HS256",
            "none",
            "In",
            "team",
            "vault",
            "aws",
            "TEAM",
            "a b",
            "-",
            "true",
            "null",
        ])
        .prop_map(move |s| text(s.to_owned())),
    ]
}

/// Any value as JSON text: most are serialized `Value`s; some are texts no `Value` serializes
/// to (`1e400`, nesting deeper than serde_json writes).
fn hostile_json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z]{0,6}".prop_map(Value::String),
    ];
    let nested = leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let deep = (
        prop::sample::select(vec![60usize, 62, 63, 64, 65, 70, 128, 129, 1_000, 20_000]),
        any::<bool>(),
    )
        .prop_map(|(depth, arrays)| {
            if arrays {
                format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
            } else {
                format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
            }
        });
    prop_oneof![
        2 => hostile_number(),
        3 => hostile_string(),
        1 => prop::sample::select(vec!["null", "true", "false", "[]", "{}", "[[]]", "[{}]", "{\"\":null}"])
            .prop_map(str::to_owned),
        2 => nested.prop_map(|v| v.to_string()),
        1 => deep,
    ]
}

/// Every JSON pointer of `v` (the root, `""`, first).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            out.push(at.clone());
            for (k, child) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(child, format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            out.push(at.clone());
            for (i, child) in items.iter().enumerate() {
                pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}

/// A pointer's field path as the loader writes it (`spec.subjects[0].namespaces`), in segments.
fn pointer_segments(doc: &Value, pointer: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = doc;
    for raw in pointer.split('/').skip(1) {
        let key = raw.replace("~1", "/").replace("~0", "~");
        at = match at {
            Value::Array(items) => &items[key.parse::<usize>().unwrap()],
            _ => &at[key.as_str()],
        };
        out.push(key);
    }
    out
}

/// A field path the loader wrote (`spec.subjects[0].namespaces`), in segments.
fn path_segments(path: &str) -> Vec<String> {
    path.split(['.', '['])
        .map(|s| s.trim_end_matches(']').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The field an error names: its `field`, else the path leading its message (generator and
/// store errors read `spec.length: must be ...`).
fn error_path(e: &ConfigError) -> Vec<String> {
    if !e.field.is_empty() {
        return path_segments(&e.field);
    }
    match e.message.split_once(": ") {
        Some((path, _)) if path == "spec" || path.starts_with("spec.") => path_segments(path),
        _ => Vec::new(),
    }
}

/// Whether an error at `named` is about the field at `changed`: the field itself, a field
/// inside it or around it, or one it is checked against (a sibling: `digits` + `symbols`
/// exceed `length`).
fn related(named: &[String], changed: &[String]) -> bool {
    if named.is_empty() {
        // A document-level problem: the document's shape changed.
        return changed.len() <= 1;
    }
    let common = named
        .iter()
        .zip(changed)
        .take_while(|(a, b)| a == b)
        .count();
    let siblings = named.len() == changed.len() && common + 1 == changed.len();
    common == named.len() || common == changed.len() || siblings
}

/// How deep a JSON text nests (brackets outside strings).
fn json_depth(text: &str) -> usize {
    let (mut depth, mut most, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for c in text.chars() {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_string = false,
            (true, false, _) => {}
            (false, _, '"') => in_string = true,
            (false, _, '[' | '{') => {
                depth += 1;
                most = most.max(depth);
            }
            (false, _, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    most
}

/// Whether YAML refuses `c` written as it is (outside its printable set).
fn not_yaml_printable(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

/// Fields whose change shows on another document (a name others refer to, what a rule
/// selects): the load may fail there only.
fn referenced_elsewhere(changed: &[String]) -> bool {
    // The whole document: `null` leaves it out (an empty document).
    changed.is_empty()
        || matches!(
            changed.first().map(String::as_str),
            Some("metadata" | "kind" | "apiVersion")
        )
        || changed.iter().any(|s| s == "secretStoreRef")
}

/// The length each Password generator of `docs` is configured with (24 when it says none).
fn password_lengths(docs: &[String]) -> BTreeMap<String, u64> {
    docs.iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|d| d["kind"] == "Password")
        .filter_map(|d| {
            let reference = format!(
                "{}/Password/{}",
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(config::DEFAULT_NAMESPACE),
                d["metadata"]["name"].as_str()?
            );
            let length = match d.get("spec").and_then(|s| s.get("length")) {
                None => 24,
                Some(l) => l.as_u64()?,
            };
            Some((reference, length))
        })
        .collect()
}

/// Which fields a replacement picks from.
#[derive(Debug, Clone, Copy)]
enum Among {
    /// Any field (and any object, array, document).
    All,
    /// A field holding a number, replaced by a number.
    Numbers,
    /// A field holding a string, replaced by a string.
    Strings,
}

#[derive(Debug, Clone)]
struct Replacement {
    among: Among,
    /// Which pointer of which document (an index into those `among` picks from).
    at: Index,
    /// The new value, as JSON text.
    json: String,
    /// Written as one JSON `List`, or as YAML documents (in JSON syntax).
    list: bool,
}

const PLACEHOLDER: &str = "\u{1}hostile\u{1}";

/// 800 cases: about 4 s in a debug build.
#[test]
fn a_field_replaced_by_a_hostile_value_loads_and_serves_or_is_named() {
    let docs = base_docs();
    let all: Vec<(usize, String)> = docs
        .iter()
        .enumerate()
        .flat_map(|(i, d)| {
            let mut ps = Vec::new();
            pointers(d, String::new(), &mut ps);
            ps.into_iter().map(move |p| (i, p))
        })
        .collect();
    let of = |pick: fn(&Value) -> bool| -> Vec<(usize, String)> {
        all.iter()
            .filter(|(i, p)| pick(docs[*i].pointer(p).unwrap()))
            .cloned()
            .collect()
    };
    let (numbers, strings) = (of(Value::is_number), of(Value::is_string));
    assert!(numbers.len() >= 7 && strings.len() >= 40, "{numbers:?}");
    let state = state();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let replacement = |among: Among, json: BoxedStrategy<String>| {
        (any::<Index>(), json, any::<bool>()).prop_map(move |(at, json, list)| Replacement {
            among,
            at,
            json,
            list,
        })
    };
    let strategy = prop_oneof![
        2 => replacement(Among::All, hostile_json().boxed()),
        1 => replacement(Among::Numbers, hostile_number().boxed()),
        1 => replacement(Among::Strings, hostile_string().boxed()),
    ];
    check("replaced field", 800, &strategy, |r| {
        let pointers = match r.among {
            Among::All => &all,
            Among::Numbers => &numbers,
            Among::Strings => &strings,
        };
        let (doc_index, pointer) = &pointers[r.at.index(pointers.len())];
        let changed = pointer_segments(&docs[*doc_index], pointer);
        let rendered: Vec<String> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if i != *doc_index {
                    return d.to_string();
                }
                let mut d = d.clone();
                *d.pointer_mut(pointer).unwrap() = Value::String(PLACEHOLDER.to_owned());
                d.to_string()
                    .replace(&json!(PLACEHOLDER).to_string(), &r.json)
            })
            .collect();
        let (origin, text, doc_origin) = if r.list {
            (
                "test.json",
                format!(
                    "{{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [{}]}}",
                    rendered.join(",\n")
                ),
                format!("test.json#1.items[{doc_index}]"),
            )
        } else {
            (
                "test.yaml",
                rendered.join("\n---\n"),
                format!("test.yaml#{}", doc_index + 1),
            )
        };
        let secrets: Vec<&str> = SECRETS
            .into_iter()
            .filter(|s| text.matches(s).count() == 1)
            .collect();
        match config::load_text(origin, &text, &state) {
            Ok(snap) => serves(&snap, &rt, &password_lengths(&rendered)),
            Err(LoadError(errors)) => {
                well_formed(origin, &errors, &secrets)?;
                if errors.iter().any(|e| e.origin == origin) {
                    // The file as a whole: only nesting serde-saphyr refuses to follow, a
                    // number past `f64` (serde-saphyr refuses infinities), or in YAML a
                    // character it does not carry unescaped (serde_json writes DEL and C1
                    // controls as they are).
                    prop_assert!(
                        changed.len() + json_depth(&r.json) > 60
                            || r.json.parse::<f64>().is_ok_and(f64::is_infinite)
                            || (!r.list && r.json.chars().any(not_yaml_printable)),
                        "{errors:#?}"
                    );
                    return Ok(());
                }
                let named = errors
                    .iter()
                    .any(|e| e.origin == doc_origin && related(&error_path(e), &changed));
                prop_assert!(
                    named || referenced_elsewhere(&changed),
                    "no error about {doc_origin} at {}: {errors:#?}",
                    changed.join(".")
                );
                Ok(())
            }
        }
    });
}

/// Found by the property above: governor keeps `(burst - 1) * 60s / perMinute` in u64
/// nanoseconds, and overflowed (a panic in debug builds, a wrong limit in release ones) on a
/// burst whose refill takes more than 584 years.
#[test]
fn a_burst_past_what_the_rate_limiter_counts_is_refused_naming_it() {
    let text = base_yaml().replace(
        "rateLimit: {perMinute: 2, burst: 10}",
        "rateLimit: {perMinute: 2, burst: 4294967295}",
    );
    let errors = match config::load_text("test.yaml", &text, &state()) {
        Ok(_) => panic!("loaded"),
        Err(LoadError(errors)) => errors,
    };
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "test.yaml#2: Authorization/team: spec.rateLimit.burst: 4294967295 at 2 per minute takes more than 584 years to refill; lower it"
        ]
    );
}

/// Objects whose keys are data, not fields: any key is accepted there.
fn free_form(path: &[String]) -> bool {
    let p = path.join(".");
    matches!(
        p.as_str(),
        "metadata.labels" | "spec.data" | "spec.parameters" | "spec.tags"
    ) || p.starts_with("spec.keys.jwks")
        || p.ends_with("matchLabels")
}

/// Objects that hold one key of a closed set, the choice made (Rust enums).
const SINGLE_KEY: &[&str] = &[
    "spec.provider",
    "spec.provider.vault.auth",
    "spec.provider.kubernetes.auth",
];

/// Every object of every document with a fixed shape, given an unknown field: the load is
/// refused, naming the field and the document.
#[test]
fn an_unknown_field_is_refused_in_every_object() {
    let docs = base_docs();
    let state = state();
    let mut tried = 0;
    for (i, doc) in docs.iter().enumerate() {
        let mut ps = Vec::new();
        pointers(doc, String::new(), &mut ps);
        for pointer in ps {
            let path = pointer_segments(doc, &pointer);
            if !doc.pointer(&pointer).unwrap().is_object() || free_form(&path) {
                continue;
            }
            let mut changed = docs.clone();
            changed[i]
                .pointer_mut(&pointer)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert("zzUnknownField".to_owned(), json!(1));
            let text = changed
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n---\n");
            let errors = match config::load_text("test.yaml", &text, &state) {
                Ok(_) => panic!(
                    "an unknown field at {pointer:?} of document {} loads",
                    i + 1
                ),
                Err(LoadError(errors)) => errors,
            };
            let origin = format!("test.yaml#{}", i + 1);
            // A choice of exactly one key (`provider: {vault: ...}`) is refused for holding
            // two, at its path, naming both.
            let expected = if SINGLE_KEY.contains(&path.join(".").as_str()) {
                vec![
                    format!("{}: takes exactly one of ", path.join(".")),
                    "; found 2: ".to_owned(),
                    ", zzUnknownField".to_owned(),
                ]
            } else {
                vec!["unknown field `zzUnknownField`".to_owned()]
            };
            assert!(
                errors
                    .iter()
                    .any(|e| e.origin == origin
                        && expected.iter().all(|x| e.to_string().contains(x))),
                "{pointer:?} of {origin}: {errors:#?}"
            );
            tried += 1;
        }
    }
    assert!(tried >= 30, "only {tried} objects");
}

// ---------------------------------------------------------------------------------------------
// The fast readers agree with serde-saphyr
// ---------------------------------------------------------------------------------------------

/// A YAML node to write in one of several styles.
#[derive(Debug, Clone)]
enum Node {
    Scalar(String, Style),
    Seq(Vec<Node>, bool),
    Map(Vec<(String, Style, Node)>, bool),
}

#[derive(Debug, Clone, Copy)]
enum Style {
    Plain,
    Single,
    Double,
}

/// Scalars serde-saphyr and libyaml resolve differently, or that end a plain scalar.
const LOOKALIKES: &[&str] = &[
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "Y",
    "true",
    "false",
    "True",
    "FALSE",
    "null",
    "Null",
    "NULL",
    "~",
    "",
    "0",
    "00",
    "010",
    "0x1F",
    "0o17",
    "0b101",
    "1_000",
    "1e3",
    "1.5",
    "-1",
    "+1",
    ".5",
    "1.",
    ".inf",
    "-.Inf",
    ".nan",
    "1:20",
    "2001-12-14",
    "18446744073709551616",
    "1e400",
    "<<",
    "-",
    "?",
    ":",
    "a b",
    "#x",
    "x#y",
    "a: b",
    "it's",
    "\"q\"",
    "ünï",
    "\t",
    " lead",
    "trail ",
    "a,b",
    "[x]",
    "{x}",
    "x]",
    "@x",
    "`x",
    "%x",
    "|",
    ">",
    "!x",
    "&x",
    "*x",
    "?x",
    "?(",
    ":x",
    "::",
    "x:",
    "x:y",
    "-x",
    "x?",
    "? x",
    ": x",
    "--- x",
    "...",
];

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(LOOKALIKES).prop_map(str::to_owned),
        2 => "[a-z0-9_.:/-]{1,10}",
        1 => "\\PC{0,8}",
        1 => "[\\x00-\\x1f\"'\\\\]{1,3}",
        1 => any::<f64>().prop_map(|f| f.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:e}")),
    ]
}

fn style() -> impl Strategy<Value = Style> {
    prop_oneof![
        3 => Just(Style::Plain),
        1 => Just(Style::Single),
        1 => Just(Style::Double)
    ]
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = (scalar(), style()).prop_map(|(s, st)| Node::Scalar(s, st));
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            (prop::collection::vec(inner.clone(), 0..4), any::<bool>())
                .prop_map(|(items, flow)| Node::Seq(items, flow)),
            (
                prop::collection::vec((scalar(), style(), inner), 0..4),
                any::<bool>()
            )
                .prop_map(|(entries, flow)| Node::Map(entries, flow)),
        ]
    })
}

fn write_scalar(s: &str, style: Style) -> String {
    match style {
        Style::Plain => s.to_owned(),
        Style::Single => format!("'{}'", s.replace('\'', "''")),
        Style::Double => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
    }
}

fn write_flow(n: &Node) -> String {
    match n {
        Node::Scalar(s, st) => write_scalar(s, *st),
        Node::Seq(items, _) => format!(
            "[{}]",
            items.iter().map(write_flow).collect::<Vec<_>>().join(", ")
        ),
        Node::Map(entries, _) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, st, v)| format!("{}: {}", write_scalar(k, *st), write_flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Writes `n` as the value after `key:` or `-` at `indent`.
fn write_block(n: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match n {
        Node::Seq(items, false) if !items.is_empty() => {
            out.push('\n');
            for item in items {
                out.push_str(&pad);
                out.push('-');
                write_block(item, indent + 2, out);
            }
        }
        Node::Map(entries, false) if !entries.is_empty() => {
            out.push('\n');
            for (k, st, v) in entries {
                out.push_str(&pad);
                out.push_str(&write_scalar(k, *st));
                out.push(':');
                write_block(v, indent + 2, out);
            }
        }
        other => {
            out.push(' ');
            out.push_str(&write_flow(other));
            out.push('\n');
        }
    }
}

fn write_document(entries: &[(String, Style, Node)]) -> String {
    let mut out = String::new();
    for (k, st, v) in entries {
        out.push_str(&write_scalar(k, *st));
        out.push(':');
        write_block(v, 2, &mut out);
    }
    out
}

/// `depth` collections nested as one flow or block chain, to cross serde-saphyr's depth limit.
fn nested(depth: usize, flow: bool, arrays: bool) -> String {
    match (flow, arrays) {
        (true, true) => format!("a: {}1{}\n", "[".repeat(depth), "]".repeat(depth)),
        (true, false) => format!("a: {}1{}\n", "{b: ".repeat(depth), "}".repeat(depth)),
        (false, _) => {
            let mut out = String::new();
            for i in 0..depth {
                out.push_str(&" ".repeat(i));
                out.push_str(if arrays && i % 2 == 1 {
                    "- b:\n"
                } else {
                    "b:\n"
                });
            }
            out.push_str(&" ".repeat(depth));
            out.push_str("c\n");
            out
        }
    }
}

/// What serde-saphyr alone reads, null documents left out as the loader leaves them out.
fn saphyr(text: &str) -> Option<Vec<Value>> {
    let docs = serde_saphyr::from_multiple::<Value>(text).ok()?;
    Some(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn agrees(text: &str) -> Result<(), TestCaseError> {
    let ours = config::parse_text("gen.yaml", text)
        .map(|docs| docs.into_iter().map(|d| d.value).collect::<Vec<_>>());
    match (ours, saphyr(text)) {
        (Ok(ours), Some(theirs)) => prop_assert_eq!(ours, theirs, "{:?}", text),
        (Err(_), None) => {}
        (Ok(ours), None) => {
            prop_assert!(false, "read {ours:?} where serde-saphyr refuses {text:?}")
        }
        (Err(e), Some(theirs)) => {
            prop_assert!(
                false,
                "refused ({e}) what serde-saphyr reads as {theirs:?}: {text:?}"
            )
        }
    }
    Ok(())
}

/// 1,500 cases: about 3.5 s in a debug build.
#[test]
fn generated_yaml_is_read_as_serde_saphyr_reads_it() {
    let docs = prop::collection::vec(
        prop::collection::vec((scalar(), style(), node()), 1..5),
        1..3,
    );
    let deep = (50usize..75, any::<bool>(), any::<bool>());
    let strategy = (docs, prop::option::weighted(0.15, deep));
    check("yaml", 1_500, &strategy, |(docs, deep)| {
        let mut text = docs
            .iter()
            .map(|d| write_document(d))
            .collect::<Vec<_>>()
            .join("---\n");
        if let Some((depth, flow, arrays)) = deep {
            text.push_str("---\n");
            text.push_str(&nested(depth, flow, arrays));
        }
        agrees(&text)
    });
}

/// 1,000 cases: about 2.5 s in a debug build.
#[test]
fn generated_json_is_read_as_serde_saphyr_reads_it() {
    let key = prop_oneof![
        prop::sample::select(LOOKALIKES).prop_map(str::to_owned),
        "\\PC{0,6}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(LOOKALIKES).prop_map(|s| Value::String(s.to_owned())),
        "\\PC{0,12}".prop_map(Value::String),
        "[\\x00-\\x1f\\u{2028}\\u{feff}]{1,3}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(4, 32, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let object = prop::collection::btree_map("[a-z]{1,6}", value, 1..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    let deep = (50usize..75, any::<bool>());
    let strategy = (object, any::<bool>(), prop::option::weighted(0.15, deep));
    check("json", 1_000, &strategy, |(v, pretty, deep)| {
        let mut text = if pretty {
            serde_json::to_string_pretty(&v).unwrap()
        } else {
            v.to_string()
        };
        if let Some((depth, arrays)) = deep {
            let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
            let inner = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            text = format!("{{\"deep\": {inner}, \"rest\": {text}}}");
        }
        agrees(&text)
    });
}
