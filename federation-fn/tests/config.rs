//! Configuration loading: file and folder, multi-document, and errors that name the file, the
//! resource and the field; a failed reload keeps the last good configuration.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use esi_federation::config::{self, LoadError};
use esi_federation::lease::LeaseKeys;
use esi_federation::state::{AppState, Settings};

const GOOD: &str = r#"
apiVersion: esi.dev/v1alpha1
kind: Cluster
metadata: {name: prod, labels: {env: prod}}
spec:
  issuer: https://oidc.example.com/id/1
  audiences: [esi]
---
apiVersion: esi.dev/v1alpha1
kind: Password
metadata: {name: db, namespace: team}
spec: {length: 16}
---
apiVersion: esi.dev/v1alpha1
kind: Authorization
metadata: {name: team}
spec:
  subjects: [{clusterSelector: {matchLabels: {env: prod}}, namespaces: [team]}]
  generators: [team/Password/db]
"#;

fn state() -> AppState {
    AppState::new(Settings::default(), LeaseKeys::ephemeral())
}

/// A serving federation that is an OIDC issuer (`https://esi.example.com`, an ES256 key).
fn issuing_state() -> AppState {
    use esi_backends::identity::{Issuer, KeyAlgorithm, generate_key_pem};
    use secrecy::ExposeSecret as _;
    let pem = generate_key_pem(KeyAlgorithm::Es256).unwrap();
    let issuer = Issuer::new("https://esi.example.com", pem.expose_secret()).unwrap();
    AppState::serving(
        Settings::default(),
        LeaseKeys::ephemeral(),
        Some(std::sync::Arc::new(issuer)),
    )
}

fn errors(yaml: &str) -> Vec<String> {
    match config::load_text("bad.yaml", yaml, &state()) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(LoadError(errs)) => errs.iter().map(ToString::to_string).collect(),
    }
}

fn doc(kind: &str, meta: &str, spec: &str) -> String {
    format!("apiVersion: esi.dev/v1alpha1\nkind: {kind}\nmetadata: {meta}\nspec: {spec}\n---\n")
}

#[test]
fn loads_a_good_configuration() {
    let snap = config::load_text("good.yaml", GOOD, &state()).unwrap();
    assert_eq!(snap.clusters.len(), 1);
    assert_eq!(snap.authorizer.len(), 1);
    assert!(snap.generators.contains_key("team/Password/db"));
    // The issuer's one cluster sits in the map's bucket (no allocation to follow per token).
    let candidates = &snap.clusters_by_issuer["https://oidc.example.com/id/1"];
    assert_eq!(candidates.len(), 1);
    assert!(!candidates.spilled());
}

#[test]
fn errors_name_file_resource_and_field() {
    let cluster = |spec: &str| doc("Cluster", "{name: c1}", spec);
    let cases: Vec<(String, &str)> = vec![
        (cluster("{issuer: https://x.example, audiences: [esi], audiense: [x]}"), "bad.yaml#1: Cluster/c1: spec.audiense: unknown field `audiense`"),
        (cluster("{issuer: https://x.example}"), "bad.yaml#1: Cluster/c1: spec: missing field `audiences`"),
        (cluster("{issuer: https://x.example, audiences: []}"), "Cluster/c1: spec.audiences: must list at least one"),
        (cluster("{issuer: kubernetes/serviceaccount, audiences: [esi]}"), "Cluster/c1: spec.keys: no way to get keys"),
        (cluster("{issuer: https://x.example, audiences: [esi], keys: {}}"), "Cluster/c1: spec.keys: no way to get keys"),
        (cluster("{issuer: https://x.example, audiences: [esi], keys: {discovery: {}, jwksUri: https://y.example/jwks}}"), "spec.keys: set exactly one"),
        (cluster("{issuer: https://x.example, audiences: [esi], keys: {jwksUri: http://y.example/jwks}}"), "spec.keys.jwksUri: \"http://y.example/jwks\": plain http is allowed only to loopback"),
        (cluster("{issuer: https://x.example, audiences: [esi], keys: {jwks: {keys: []}}}"), "spec.keys.jwks: JWKS holds no usable signing key"),
        (cluster("{issuer: https://x.example, audiences: [esi], algorithms: [HS256]}"), "Cluster/c1: spec.algorithms[0]: unknown variant `HS256`"),
        (cluster("{issuer: https://x.example, audiences: [esi], leeway: {expiration: forever}}"), "spec.leeway.expiration"),
        (cluster("{issuer: https://x.example, audiences: [esi], caBundle: not-a-pem}"), "Cluster/c1: spec.caBundle"),
        (doc("Cluster", "{name: c1, namespace: x}", "{issuer: https://x.example, audiences: [esi]}"), "metadata.namespace: Cluster is cluster-scoped"),
        (doc("Cluster", "{name: C1}", "{issuer: https://x.example, audiences: [esi]}"), "metadata.name: \"C1\" is not a lowercase RFC 1123 name"),
        (cluster("{issuer: https://x.example, audiences: [esi]}") + &cluster("{issuer: https://y.example, audiences: [esi]}"), "bad.yaml#2: Cluster/c1: metadata.name: duplicate resource (first defined at bad.yaml#1)"),
        (doc("Cluster", "{name: a}", "{issuer: https://x.example, audiences: [esi]}") + &doc("Cluster", "{name: b}", "{issuer: https://x.example, audiences: [esi]}"), "Cluster/b: spec.keys: shares issuer \"https://x.example\" and the same key source with cluster \"a\""),
        (doc("Authorization", "{name: all}", "{subjects: [{}], generators: ['*/*/*']}"), "Authorization/all: spec.subjects[0]: constrains nothing"),
        (doc("Authorization", "{name: all}", "{subjects: [{clusters: ['*'], namespaces: ['*']}], generators: [a/b/c]}"), "spec.subjects[0]: constrains nothing"),
        (doc("Authorization", "{name: a}", "{subjects: [{namespaces: [x]}], generators: []}"), "Authorization/a: spec.generators: must list at least one"),
        (doc("Authorization", "{name: a}", "{subjects: [{namespaces: [x]}], generators: [a/b]}"), "spec.generators[0]: \"a/b\" is not namespace/kind/name"),
        (doc("Authorization", "{name: a}", "{subjects: [{namespaces: [x]}], generators: [a/b/c], maxTTL: soon}"), "spec.maxTTL"),
        (doc("Authorization", "{name: a}", "{subjects: [{namespaces: [x]}], generators: [a/b/c], rateLimit: {perMinute: 0}}"), "spec.rateLimit.perMinute"),
        (doc("Authorization", "{name: a}", "{subjects: [{namespaces: [x], team: y}], generators: [a/b/c]}"), "spec.subjects[0].team: unknown field `team`"),
        (doc("Password", "{name: p, namespace: ns}", "{length: 0}"), "bad.yaml#1: Password/ns/p: spec.length: must be between 1"),
        (doc("Password", "{name: p}", "{colour: blue}"), "Password/default/p: spec.colour: unknown field `colour`"),
        (doc("Secret", "{name: s}", "{}"), "kind: unknown kind \"Secret\""),
        ("apiVersion: v1\nkind: Cluster\nmetadata: {name: x}\nspec: {}\n".to_owned(), "apiVersion: \"v1\" is not \"esi.dev/v1alpha1\""),
        ("apiVersion: esi.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x}\nspec: {}\nextra: 1\n".to_owned(), "bad.yaml#1: extra: unknown field `extra`"),
        ("kind: [unclosed\n".to_owned(), "bad.yaml: not valid YAML"),
        ("- just\n- a list\n".to_owned(), "bad.yaml#1: document is not a mapping"),
    ];
    let mut missing = Vec::new();
    for (yaml, expected) in cases {
        let errs = errors(&yaml);
        if !errs.iter().any(|e| e.contains(expected)) {
            missing.push(format!("expected {expected:?} in {errs:#?}"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = doc("Cluster", "{name: a}", "{issuer: https://x.example}")
        + &doc(
            "Authorization",
            "{name: b}",
            "{subjects: [{}], generators: [x/y/z]}",
        )
        + &doc("Password", "{name: c}", "{length: -1}");
    assert_eq!(errors(&yaml).len(), 3);
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn loads_a_folder_and_reports_file_names() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "10-cluster.yaml",
        &GOOD[..GOOD.find("---").unwrap()],
    );
    std::fs::create_dir(dir.path().join("team")).unwrap();
    write(
        &dir.path().join("team"),
        "gen.yml",
        &GOOD[GOOD.find("---").unwrap()..],
    );
    write(dir.path(), "README.md", "not config");
    std::fs::create_dir(dir.path().join("..data")).unwrap();
    write(&dir.path().join("..data"), "ignored.yaml", "garbage: [");
    let snap = config::load_path(dir.path(), &state()).unwrap();
    assert_eq!(snap.generators.len(), 1);

    write(
        dir.path(),
        "20-bad.yaml",
        &doc("Password", "{name: q}", "{digits: 99}"),
    );
    let err = config::load_path(dir.path(), &state())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("20-bad.yaml#1: Password/default/q: spec.digits"),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    let err = config::load_path(empty.path(), &state())
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds no .yaml"), "{err}");
}

#[test]
fn failed_reload_keeps_the_last_good_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("esi.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let state = state();
    state.reload_from(&file).unwrap();
    let before = state.snapshot().unwrap();
    std::fs::write(&file, GOOD.replace("length: 16", "length: 0")).unwrap();
    assert!(state.reload_from(&file).is_err());
    assert!(
        std::sync::Arc::ptr_eq(&before, &state.snapshot().unwrap()),
        "the old snapshot must keep serving"
    );
    std::fs::write(&file, GOOD.replace("length: 16", "length: 17")).unwrap();
    state.reload_from(&file).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&before, &state.snapshot().unwrap()));
    let metrics = state.metrics.render();
    assert!(
        metrics.contains("esi_federation_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
}

#[test]
fn committed_crds_are_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    let files = esi_federation::crd_files().unwrap();
    let mut stale = Vec::new();
    for (name, yaml) in &files {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(committed) if committed == *yaml => {}
            _ => stale.push(name.clone()),
        }
    }
    let committed: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for name in committed {
        if name.ends_with(".yaml") && !files.iter().any(|(n, _)| *n == name) {
            stale.push(format!("{name} (no longer generated)"));
        }
    }
    assert!(
        stale.is_empty(),
        "deploy/crds is stale: {stale:?}; regenerate with `cargo run -p esi-federation -- crds --out deploy/crds`"
    );
}

#[test]
fn a_generator_needs_its_store() {
    let yaml = doc(
        "VaultDynamicSecret",
        "{name: db, namespace: team}",
        "{secretStoreRef: {name: vault}, path: database/creds/app}",
    );
    let errs = errors(&yaml);
    assert!(
        errs.iter().any(|e| e.contains(
            "VaultDynamicSecret/team/db: spec.secretStoreRef: SecretStore team/vault does not exist"
        )),
        "{errs:#?}"
    );
}

#[test]
fn a_large_single_file_loads() {
    // 3,000 generators and an Authorization in one multi-document file: beyond the YAML
    // library's default document budget.
    let mut yaml = String::from(GOOD);
    for i in 0..3000 {
        yaml.push_str(&format!("---\napiVersion: esi.dev/v1alpha1\nkind: UUID\nmetadata: {{name: g{i}, namespace: team}}\n"));
    }
    let snap = config::load_text("big.yaml", &yaml, &state()).unwrap();
    assert_eq!(snap.generators.len(), 3001);
}

/// A file that is one JSON object (what `jsonencode` writes) takes serde_json's fast path and
/// means exactly what the same text means as YAML; anything the fast path cannot read goes to
/// the YAML parser, whose errors stay the ones users see.
#[test]
fn a_json_file_loads_like_its_yaml() {
    let docs = config::parse_text("good.yaml", GOOD).unwrap();
    let items: Vec<serde_json::Value> = docs.into_iter().map(|d| d.value).collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    let json = serde_json::to_string_pretty(&list).unwrap();
    let fast = config::parse_text("good.json", &json).unwrap();
    let slow: Vec<config::Document> = serde_saphyr::from_multiple::<serde_json::Value>(&json)
        .unwrap()
        .into_iter()
        .flat_map(|v| v["items"].as_array().unwrap().clone())
        .map(|value| config::Document {
            origin: String::new(),
            value,
        })
        .collect();
    assert_eq!(fast.len(), 3);
    for (f, s) in fast.iter().zip(&slow) {
        assert_eq!(f.value, s.value);
    }
    assert_eq!(fast[1].origin, "good.json#1.items[1]");
    let snap = config::load_text("good.json", &json, &state()).unwrap();
    assert!(snap.generators.contains_key("team/Password/db"));

    // Duplicate keys: refused as in YAML, with the YAML parser's message.
    let dup = r#"{"apiVersion": "esi.dev/v1alpha1", "kind": "Password", "kind": "UUID",
        "metadata": {"name": "db", "namespace": "team"}}"#;
    let e = errors(dup).join("\n");
    assert!(
        e.contains("not valid YAML") && e.contains("uplicate"),
        "{e}"
    );
    // Not JSON after all (a YAML document that starts with a flow mapping): still loads.
    let flow =
        "{apiVersion: esi.dev/v1alpha1, kind: UUID, metadata: {name: id, namespace: team}}\n";
    assert_eq!(config::parse_text("flow.yaml", flow).unwrap().len(), 1);
    // Trailing garbage after the object: the YAML parser reports it.
    let e = errors("{\"kind\": \"UUID\"} ]").join("\n");
    assert!(e.contains("not valid YAML"), "{e}");
}

/// A JSON List is read item by item as the loader takes it (never held whole as values): a
/// file and a folder load what the same text loads, and an item the fast reader declines sends
/// the file to the YAML parser, whose error is the one reported, once.
#[test]
fn a_json_list_read_item_by_item_loads_and_fails_as_a_whole() {
    let docs = config::parse_text("good.yaml", GOOD).unwrap();
    let items: Vec<serde_json::Value> = docs.into_iter().map(|d| d.value).collect();
    let json = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "config.json", &json);
    for snap in [
        config::load_path(&dir.path().join("config.json"), &state()).unwrap(),
        config::load_path(dir.path(), &state()).unwrap(),
    ] {
        assert_eq!(snap.clusters.len(), 1);
        assert_eq!(snap.authorizer.len(), 1);
        assert!(snap.generators.contains_key("team/Password/db"));
    }

    // The last item holds a duplicate key: the items before it were already read.
    let bad_item = r#"{"apiVersion": "esi.dev/v1alpha1", "kind": "UUID", "kind": "UUID",
        "metadata": {"name": "id", "namespace": "team"}}"#;
    let bad = json.replacen(
        "],\"kind\":\"List\"}",
        &format!(",{bad_item}],\"kind\":\"List\"}}"),
        1,
    );
    assert_ne!(bad, json);
    write(dir.path(), "config.json", &bad);
    let err = config::load_path(dir.path(), &state()).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(
        err.0[0].origin.ends_with("config.json") && err.0[0].message.contains("uplicate"),
        "{err}"
    );

    // A file that cannot be read fails the load with its own problem only, even where the
    // files read before it hold a bad resource.
    write(dir.path(), "config.json", &json);
    write(
        dir.path(),
        "10-bad.yaml",
        &doc("Password", "{name: q, namespace: team}", "{digits: 99}"),
    );
    assert!(
        config::load_path(dir.path(), &state())
            .unwrap_err()
            .to_string()
            .contains("spec.digits")
    );
    write(dir.path(), "20-broken.yaml", "a: [unclosed");
    let err = config::load_path(dir.path(), &state()).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.0[0].origin.ends_with("20-broken.yaml"), "{err}");
}

/// A YAML file is read one document at a time as the loader takes it: a later document the
/// fast reader declines sends the file to serde-saphyr, whose reading (or error) is the file's,
/// as when the file was read whole first.
#[test]
fn a_yaml_file_read_document_by_document_reads_as_a_whole() {
    // `yes` is a bool to serde-saphyr (YAML 1.1), a string to libyaml: declined there.
    let text = format!("{GOOD}---\napiVersion: v1\nkind: Note\nmetadata: {{name: n, x: yes}}\n");
    let read = config::parse_text("f.yaml", &text).unwrap();
    let whole = serde_saphyr::from_multiple::<serde_json::Value>(&text).unwrap();
    assert_eq!(read.len(), 4);
    assert_eq!(
        read.iter().map(|d| &d.value).collect::<Vec<_>>(),
        whole.iter().collect::<Vec<_>>()
    );
    assert_eq!(read[3].value["metadata"]["x"], true);
    let origins: Vec<&str> = read.iter().map(|d| d.origin.as_str()).collect();
    assert_eq!(origins, ["f.yaml#1", "f.yaml#2", "f.yaml#3", "f.yaml#4"]);

    // A List without a sequence of items, then a document that is not YAML: the file's error
    // is the YAML parser's, as it was when every document was read before any was used.
    let list = "---\napiVersion: v1\nkind: List\nitems: UUID\n";
    let e = config::parse_text("f.yaml", &format!("{GOOD}{list}---\na: [unclosed\n")).unwrap_err();
    assert!(e.message.contains("not valid YAML"), "{e}");
    let e = config::parse_text("f.yaml", &format!("{GOOD}{list}")).unwrap_err();
    assert_eq!(
        (e.origin.as_str(), e.field.as_str()),
        ("f.yaml#4", "items"),
        "{e}"
    );
}

/// A `List` whose `items` is not a sequence is an error naming the field, in JSON and YAML
/// alike; an empty `List` is an empty configuration.
#[test]
fn a_list_needs_a_sequence_of_items() {
    for text in [
        r#"{"apiVersion": "v1", "kind": "List", "items": {"kind": "UUID"}}"#,
        "apiVersion: v1\nkind: List\nitems: UUID\n",
    ] {
        let e = errors(text).join("\n");
        assert!(
            e.contains("items") && e.contains("sequence of manifests"),
            "{text}: {e}"
        );
    }
    let empty = config::parse_text("empty.json", r#"{"apiVersion": "v1", "kind": "List"}"#);
    assert!(empty.unwrap().is_empty());
}

/// A hostile configuration: an alias bomb (nine levels of nine aliases, 9^9 strings expanded)
/// is declined by the fast YAML reader (yaml_serde's repetition limit) and refused once
/// serde-saphyr has recorded a million anchored events (well under a second in a release
/// build; the bound below only catches an expansion without limit).
#[test]
fn a_wide_alias_bomb_is_refused_before_it_expands() {
    // One 1 MiB anchor named by 200 aliases: 200 MiB of values from a 1 MiB file. (Scaled to
    // 10,000 aliases it is 10 GB: the fast YAML reader, which only counts alias jumps, expanded
    // it all before serde-saphyr's budget, which counts the bytes, could refuse it.)
    let text = format!(
        "a: &a \"{}\"\nb: [{}]\n",
        "x".repeat(1 << 20),
        vec!["*a"; 200].join(", ")
    );
    let e = errors(&text).join("\n");
    assert!(
        e.contains("not valid YAML") && e.contains("budget"),
        "{}",
        &e[..e.len().min(400)]
    );
}

#[test]
fn an_alias_bomb_is_refused() {
    let mut text = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 9].join(", ");
        text.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
    }
    let started = std::time::Instant::now();
    let e = errors(&text).join("\n");
    assert!(e.contains("not valid YAML") && e.contains("budget"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

/// In Kubernetes mode (lenient: the rest keeps serving), clusters sharing an issuer and a key
/// source are all left out, not all but the first by name: a newly added cluster must not take
/// over an existing one's tokens (and with them its labels' and audiences' grants).
#[test]
fn colliding_clusters_are_all_left_out_in_lenient_mode() {
    let text = doc(
        "Cluster",
        "{name: prod}",
        "{issuer: https://x.example, audiences: [esi]}",
    ) + &doc(
        "Cluster",
        "{name: aaa-test}",
        "{issuer: https://x.example, audiences: [esi]}",
    ) + &doc(
        "Cluster",
        "{name: other}",
        "{issuer: https://y.example, audiences: [esi]}",
    );
    let docs = config::parse_text("crds", &text).unwrap();
    let (res, errors) = config::parse_resources_lenient(docs);
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    for name in ["prod", "aaa-test"] {
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!("Cluster/{name}: spec.keys: shares issuer"))),
            "{name}: {errors:?}"
        );
    }
    let (snap, _) = config::build_snapshot_lenient(res, &state(), "crds".into());
    assert!(snap.clusters_for("https://x.example").is_none());
    assert_eq!(snap.clusters.keys().collect::<Vec<_>>(), ["other"]);
}

/// A token written inline where a reference belongs is refused without being repeated: the
/// message reaches the log (`serde_json` would quote it: `invalid type: string "hvs.…"`).
#[test]
fn an_inline_secret_is_refused_without_being_repeated() {
    let store = doc(
        "SecretStore",
        "{name: vault, namespace: team}",
        "{provider: {vault: {server: \"https://vault.example:8200\", auth: {token: \"hvs.CAESinline-secret\"}}}}",
    );
    let e = errors(&store).join("\n");
    assert!(e.contains("provider.vault.auth.token"), "{e}");
    assert!(e.contains("invalid type: a string"), "{e}");
    assert!(!e.contains("hvs.CAES"), "{e}");
}

/// A malformed inline JWKS is named at spec.keys.jwks, placed inside the document, and said
/// without the offending value, as every other configuration error about a value is (serde's
/// own message quoted it: `invalid type: string "…"`).
#[test]
fn a_malformed_inline_jwks_is_named_without_its_values() {
    let cluster = |jwks: &str| {
        doc(
            "Cluster",
            "{name: c1}",
            &format!("{{issuer: https://x.example, audiences: [esi], keys: {{jwks: {jwks}}}}}"),
        )
    };
    for (jwks, expected) in [
        (
            "{keys: s3cret-pasted-here}",
            "bad.yaml#1: Cluster/c1: spec.keys.jwks: not a JWKS document: keys: invalid type: a string, expected a sequence",
        ),
        (
            "{keys: [s3cret-pasted-here]}",
            "bad.yaml#1: Cluster/c1: spec.keys.jwks: not a JWKS document: keys[0]: invalid type: a string, expected struct Jwk",
        ),
        (
            "s3cret-pasted-here",
            "bad.yaml#1: Cluster/c1: spec.keys.jwks: not a JWKS document: invalid type: a string, expected struct JwksDoc",
        ),
    ] {
        let e = errors(&cluster(jwks));
        assert_eq!(e, [expected]);
    }
}

/// A choice of exactly one key given several or none (`provider`, `vault.auth`,
/// `grafana.auth`) names the keys it takes and the keys found, at the choice's path, and
/// none of their values (serde said only "expected map with a single key").
#[test]
fn a_choice_of_one_key_names_the_keys_found_not_their_values() {
    let store = |provider: &str| {
        doc(
            "SecretStore",
            "{name: s, namespace: team}",
            &format!("{{provider: {provider}}}"),
        )
    };
    let vault = "{server: \"https://vault.example:8200\", auth: {token: {env: s3cret-env}}}";
    let cases = [
        (
            store(&format!(
                "{{vault: {vault}, aws: {{region: s3cret-region}}}}"
            )),
            "SecretStore/team/s: spec.provider: takes exactly one of vault, aws, gcp, webhook, github, grafana",
            "; found 2: aws, vault",
        ),
        (
            store("{}"),
            "SecretStore/team/s: spec.provider: takes exactly one of vault, aws, ",
            "; found none",
        ),
        (
            store(
                "{vault: {server: \"https://vault.example:8200\", auth: {token: {env: s3cret-env}, appRole: {secretIdRef: {file: /s3cret}}}}}",
            ),
            "SecretStore/team/s: spec.provider.vault.auth: takes exactly one of token, appRole, jwt, kubernetes",
            "; found 2: appRole, token",
        ),
        (
            store(
                "{grafana: {url: \"https://grafana.example\", auth: {token: {env: s3cret-env}, basic: {username: s3cret-user, password: {env: s3cret-env}}}}}",
            ),
            "SecretStore/team/s: spec.provider.grafana.auth: takes exactly one of token, basic",
            "; found 2: basic, token",
        ),
    ];
    for (yaml, takes, found) in cases {
        let e = errors(&yaml).join("\n");
        assert!(e.contains(takes), "{e}");
        assert!(e.contains(found), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }
}

/// Links are followed (a ConfigMap's files are links), so a folder linking to itself twice
/// would make a walk of 2^depth folders: it stops at a bound, with an error saying why.
#[test]
fn a_folder_linking_to_itself_is_refused_not_walked_forever() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
    for name in ["x", "y"] {
        std::os::unix::fs::symlink(".", dir.path().join(name)).unwrap();
    }
    let started = std::time::Instant::now();
    let e = match config::load_path(dir.path(), &state()) {
        Ok(_) => panic!("accepted"),
        Err(LoadError(errs)) => errs.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    assert!(e.join("\n").contains("folders deep"), "{e:?}");
    let _ = esi_federation::state::fingerprint(dir.path());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// A name is shown in messages before it is validated: a line break in it is escaped, so the
/// message cannot forge a log line of its own.
#[test]
fn a_name_with_a_line_break_cannot_forge_a_log_line() {
    let text = doc(
        "Password",
        "{name: \"x\\nERROR forged line\", namespace: team}",
        "{length: 20}",
    );
    let e = errors(&text).join("\n");
    assert!(e.contains("Password/team/x\\nERROR forged line"), "{e}");
    assert!(!e.contains("\nERROR forged line"), "{e}");
}

/// `kubectl get -o yaml` output loads (the rest of ObjectMeta is ignored); a misspelt
/// metadata field is refused instead of quietly leaving the resource in `default`.
#[test]
fn metadata_typos_are_refused_and_kubectl_output_loads() {
    let e = errors(&doc(
        "Password",
        "{name: db, namespce: team}",
        "{length: 20}",
    ))
    .join("\n");
    assert!(e.contains("unknown field `namespce`"), "{e}");
    let kubectl = doc(
        "Password",
        "{name: db, namespace: team, uid: 0f0f, resourceVersion: \"7\", generation: 2, \
         creationTimestamp: \"2026-01-01T00:00:00Z\", annotations: {a: b}, finalizers: [x], \
         managedFields: [{manager: kubectl}], ownerReferences: [], labels: {team: a}}",
        "{length: 20}",
    );
    config::load_text("kubectl.yaml", &kubectl, &state()).unwrap();
}

/// `IdentityToken` needs the federation's own issuer: a serving federation without one refuses
/// the configuration, naming the fix; `check` (no federation settings) accepts it; and the
/// federation's own issuer can never be registered as a Cluster.
#[test]
fn identity_tokens_need_the_federations_issuer_which_is_never_a_cluster() {
    let token = doc(
        "IdentityToken",
        "{name: aws, namespace: team}",
        "{audiences: [sts.amazonaws.com]}",
    );
    assert!(config::load_text("check.yaml", &token, &state()).is_ok());
    let bare = AppState::serving(Settings::default(), LeaseKeys::ephemeral(), None);
    let Err(LoadError(errs)) = config::load_text("t.yaml", &token, &bare) else {
        panic!("an IdentityToken loaded on a federation with no issuer");
    };
    let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(
        errs.iter()
            .any(|e| e.contains("IdentityToken/team/aws") && e.contains("--issuer-url")),
        "{errs:#?}"
    );
    let issuing = issuing_state();
    assert!(config::load_text("t.yaml", &token, &issuing).is_ok());
    let cluster = doc(
        "Cluster",
        "{name: loop}",
        "{issuer: \"https://esi.example.com/\", keys: {discovery: {}}, audiences: [esi]}",
    );
    let Err(LoadError(errs)) = config::load_text("t.yaml", &cluster, &issuing) else {
        panic!("the federation's own issuer was registered as a Cluster");
    };
    assert!(
        errs[0]
            .to_string()
            .contains("this federation's own issuer URL"),
        "{errs:#?}"
    );
}

/// A Vault store logging in with a token the federation signs for itself
/// (`auth.jwt.selfIssued`) needs the federation's issuer, like `IdentityToken`; it is a `jwt`
/// login alone, without a token file; and no `IdentityToken` may hand workloads tokens for the
/// audience of the federation's own login, the store's server URL.
#[test]
fn a_self_issued_vault_login_needs_the_issuer_and_an_audience_of_its_own() {
    let store = |auth: &str| {
        doc(
            "SecretStore",
            "{name: vault, namespace: team}",
            &format!(
                "{{provider: {{vault: {{server: \"https://vault.example:8200\", auth: {auth}}}}}}}"
            ),
        ) + &doc(
            "VaultStaticSecret",
            "{name: kv, namespace: team}",
            "{secretStoreRef: {name: vault}, mount: secret, path: app}",
        )
    };
    let own = store("{jwt: {role: esi-federation, selfIssued: true}}");
    assert!(config::load_text("check.yaml", &own, &state()).is_ok());
    let bare = AppState::serving(Settings::default(), LeaseKeys::ephemeral(), None);
    let Err(LoadError(errs)) = config::load_text("t.yaml", &own, &bare) else {
        panic!("a self-issued login loaded on a federation with no issuer");
    };
    let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(
        errs.iter().any(|e| e.contains("VaultStaticSecret/team/kv")
            && e.contains("auth.jwt.selfIssued")
            && e.contains("--issuer-url")),
        "{errs:#?}"
    );

    let issuing = issuing_state();
    assert!(config::load_text("t.yaml", &own, &issuing).is_ok());

    for (auth, field, says) in [
        (
            "{kubernetes: {role: r, selfIssued: true}}",
            "provider.vault.auth.kubernetes.selfIssued",
            "jwt auth method",
        ),
        (
            "{jwt: {role: r, tokenFile: /var/run/t, selfIssued: true}}",
            "provider.vault.auth.jwt.selfIssued",
            "not both",
        ),
        (
            "{jwt: {role: r, selfIssued: {audience: vault}}}",
            "selfIssued",
            "expected a boolean",
        ),
    ] {
        let errs = errors(&store(auth));
        assert!(
            errs.iter().any(|e| e.contains("SecretStore/team/vault")
                && e.contains(field)
                && e.contains(says)),
            "{auth}: {errs:#?}"
        );
    }

    let clash = own.clone()
        + &doc(
            "IdentityToken",
            "{name: aws, namespace: other}",
            "{audiences: [sts.amazonaws.com, \"https://vault.example:8200\"]}",
        );
    let Err(LoadError(errs)) = config::load_text("t.yaml", &clash, &issuing) else {
        panic!("an IdentityToken for the federation's own login audience loaded");
    };
    let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(
        errs.iter().any(|e| e.contains("IdentityToken/other/aws")
            && e.contains("spec.audiences")
            && e.contains("SecretStore team/vault")),
        "{errs:#?}"
    );
}

/// A `gcp` store's own login exchanges a token for its Workload Identity provider, which takes
/// the provider's name as the audience with or without `https:`: no `IdentityToken` may hand a
/// workload a token for either.
#[test]
fn no_workload_gets_a_token_for_a_self_issued_gcp_stores_provider() {
    let name = "projects/123456789/locations/global/workloadIdentityPools/esi-federation/providers/esi-federation";
    let store = doc(
        "SecretStore",
        "{name: gcp, namespace: team}",
        &format!("{{provider: {{gcp: {{selfIssued: {{workloadIdentityProvider: \"{name}\"}}}}}}}}"),
    ) + &doc(
        "GCPAccessToken",
        "{name: app, namespace: team}",
        "{secretStoreRef: {name: gcp}, serviceAccountEmail: app@proj.iam.gserviceaccount.com}",
    );
    let issuing = issuing_state();
    assert!(config::load_text("t.yaml", &store, &issuing).is_ok());
    for audience in [
        format!("//iam.googleapis.com/{name}"),
        format!("https://iam.googleapis.com/{name}"),
    ] {
        let clash = store.clone()
            + &doc(
                "IdentityToken",
                "{name: gcp, namespace: other}",
                &format!("{{audiences: [\"{audience}\"]}}"),
            );
        let Err(LoadError(errs)) = config::load_text("t.yaml", &clash, &issuing) else {
            panic!("an IdentityToken for {audience} loaded");
        };
        let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            errs.iter().any(|e| e.contains("IdentityToken/other/gcp")
                && e.contains("spec.audiences")
                && e.contains("SecretStore team/gcp, provider.gcp.selfIssued")),
            "{audience}: {errs:#?}"
        );
    }
}

/// Quay and Cloudsmith trust the federation's issuer and the caller's subject: a workload
/// holding its own identity token for the audience the federation trades there could trade it
/// itself, past the Authorization of `QuayAccessToken` or `CloudsmithAccessToken`.
#[test]
fn no_workload_gets_a_token_for_the_audience_the_federation_trades_at_quay_cloudsmith_or_entra() {
    use esi_backends::identity::{Issuer, KeyAlgorithm, generate_key_pem};
    use secrecy::ExposeSecret as _;
    let pem = generate_key_pem(KeyAlgorithm::Rs256).unwrap();
    let issuer = Issuer::new("https://esi.example.com", pem.expose_secret()).unwrap();
    let issuing = AppState::serving(
        Settings::default(),
        LeaseKeys::ephemeral(),
        Some(std::sync::Arc::new(issuer)),
    );
    let exchanges = doc(
        "QuayAccessToken",
        "{name: pull, namespace: team}",
        "{robotAccount: org+puller}",
    ) + &doc(
        "CloudsmithAccessToken",
        "{name: cs, namespace: team}",
        "{orgSlug: acme, serviceSlug: ci, audience: esi-cloudsmith}",
    ) + &doc(
        "AzureAccessToken",
        "{name: storage, namespace: team}",
        "{tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47, clientId: 3c1b7e2a-5d4f-4e8b-9a61-0f2d8c7b6e15, \
          scope: \"https://storage.azure.com/.default\", authorityHost: \"https://login.microsoftonline.us\"}",
    );
    let with_token = |audience: &str| {
        exchanges.clone()
            + &doc(
                "IdentityToken",
                "{name: own, namespace: other}",
                &format!("{{audiences: [\"{audience}\"]}}"),
            )
    };
    // Other audiences load, Cloudsmith's default too when the generator names its own, and the
    // public cloud's Entra ID audience when the generator is in another cloud.
    for audience in [
        "sts.amazonaws.com",
        "cloudsmith",
        "quay.example.com",
        "api://AzureADTokenExchange",
    ] {
        if let Err(LoadError(errs)) = config::load_text("t.yaml", &with_token(audience), &issuing) {
            panic!("{audience}: {errs:#?}");
        }
    }
    for (audience, exchange) in [
        ("quay.io", "QuayAccessToken/team/pull"),
        ("esi-cloudsmith", "CloudsmithAccessToken/team/cs"),
        (
            "api://AzureADTokenExchangeUSGov",
            "AzureAccessToken/team/storage",
        ),
    ] {
        let Err(LoadError(errs)) = config::load_text("t.yaml", &with_token(audience), &issuing)
        else {
            panic!("an IdentityToken for {audience} loaded");
        };
        let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            errs.len() == 1
                && errs[0].contains("IdentityToken/other/own")
                && errs[0].contains("spec.audiences")
                && errs[0].contains(exchange)
                && errs[0].contains("past that generator's Authorization"),
            "{audience}: {errs:#?}"
        );
    }
}

/// What a start fetches before its configuration is compiled (`config::remote_key_sources`):
/// each source once, named by the first cluster that names it, with its CA bundle; no inline
/// keys, no cluster naming the federation's own issuer.
#[test]
fn a_start_fetches_the_keys_the_compilation_will_use() {
    use esi_federation::token::jwks::{Location, SourceKey};
    let dir = tempfile::tempdir().unwrap();
    let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let manifests = [
        doc(
            "Cluster",
            "{name: alpha}",
            "{issuer: \"https://a.example\", audiences: [esi]}",
        ),
        doc(
            "Cluster",
            "{name: beta}",
            "{issuer: \"https://b.example\", keys: {jwksUri: \"https://keys.example/jwks\"}, audiences: [esi]}",
        ),
        // The same keys as beta's, under another issuer: one source, named after beta.
        doc(
            "Cluster",
            "{name: beta-2}",
            "{issuer: \"https://b2.example\", keys: {jwksUri: \"https://keys.example/jwks\"}, audiences: [esi]}",
        ),
        doc(
            "Cluster",
            "{name: gamma}",
            "{issuer: \"https://c.example\", keys: {jwks: {keys: []}}, audiences: [esi]}",
        ),
        doc(
            "Cluster",
            "{name: own}",
            "{issuer: \"https://esi.example.com/\", audiences: [esi]}",
        ),
        format!(
            "apiVersion: esi.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: zeta}}\nspec:\n  issuer: https://z.example\n  audiences: [esi]\n  caBundle: |\n{}\n",
            ca.lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    ];
    write(dir.path(), "clusters.yaml", &manifests.concat());
    let res = config::read_resources(dir.path()).unwrap();
    let got: Vec<(SourceKey, &str)> =
        config::remote_key_sources(&res, Some("https://esi.example.com"));
    let key = |location, ca_bundle: Option<&str>| SourceKey {
        location,
        ca_bundle: ca_bundle.map(str::to_owned),
    };
    assert_eq!(
        got,
        vec![
            (
                key(Location::Discovery("https://a.example".into()), None),
                "alpha"
            ),
            (
                key(Location::JwksUri("https://keys.example/jwks".into()), None),
                "beta"
            ),
            (
                key(Location::Discovery("https://z.example".into()), Some(ca)),
                "zeta"
            ),
        ]
    );
    // Without an issuer of its own, the federation's URL is any other issuer's.
    assert_eq!(config::remote_key_sources(&res, None).len(), 4);
}
