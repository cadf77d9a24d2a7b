//! Hostile input on the webhook's admission path, as property tests with a fixed seed
//! (`esi_test_support::hostile`). The release build aborts on panic, so one panicking review
//! would take the webhook, and with `failurePolicy: Fail` every opted-in Pod of the cluster,
//! down with it. Every review here goes through the real router (`tower::ServiceExt::oneshot`,
//! no socket), as the API server's bytes would.
//!
//! - Hostile annotations: the golden Pods (`tests/golden/pods/`) get a random set of `esi.dev/`
//!   keys and near misses, with values from valid fragments to garbage (control characters,
//!   huge values, paths out of bounds or onto other mounts, reserved env names, URLs off the
//!   allow-list, ...). The answer is a skip exactly when the Pod is not for the webhook; else a
//!   patch that applies to the Pod and yields a consistent injected Pod (checked field by field
//!   against the input and the `ESI_SPEC` it carries), or a denial whose message is one short
//!   line without control characters and without the Pod's secrets.
//! - Mutated reviews: byte edits of real reviews, and structure-aware ones (fields removed,
//!   wrong types at every level, unknown fields, huge arrays, deep nesting, duplicate keys,
//!   text that is not UTF-8). The answer is always a well-formed `AdmissionReview` (HTTP 200)
//!   echoing the uid whenever one can be read, or an injection whose patch applies.
//! - Idempotency: every Pod the webhook patched is admitted again unchanged; a copy without
//!   the injected mark never has a command wrapped twice.
//!
//! The default case counts (see each test) keep this file under ~8 s in a debug build;
//! `PROPTEST_CASES` and `ESI_PROPTEST_SEED` search further.

// Test helpers outside #[test] functions are not covered by clippy's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use esi_api::inject::{self, BINARY_PATH, InjectionSpec, MOUNT_PATH, TOKEN_MOUNT_PATH};
use esi_test_support::hostile::{self, check};
use esi_webhook::server::{MAX_BODY_BYTES, MUTATE_PATH};
use esi_webhook::{AppState, WebhookConfig, review, router};
use http_body_util::BodyExt as _;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};
use tower::ServiceExt as _;

mod corpus;
use corpus::{config, golden_dir, pods};

// ---------------------------------------------------------------------------------------------
// The harness: the golden corpus and config, the router on a current-thread runtime
// ---------------------------------------------------------------------------------------------

/// A secret in every seed Pod (an env value, an annotation of another tool): no answer may
/// ever carry it.
const CANARY: &str = "s3cr3t-CANARY-never-echo";

/// Longest denial message accepted: the webhook's own texts are under ~600 bytes and quote
/// values shortened; a message that grows with the input floods `kubectl` and the logs.
const MAX_MESSAGE_BYTES: usize = 2048;

/// The golden Pods (name, Pod), each with the canary planted in its containers' env and in an
/// annotation no esi code reads.
fn seed_pods() -> Vec<(String, Value)> {
    let mut out = pods();
    for (_, pod) in &mut out {
        plant_canary(pod);
    }
    assert!(out.len() >= 25, "the golden corpus shrank to {}", out.len());
    out
}

fn plant_canary(pod: &mut Value) {
    for list in ["containers", "initContainers"] {
        if let Some(cs) = pod["spec"][list].as_array_mut() {
            for c in cs {
                let env = c
                    .as_object_mut()
                    .unwrap()
                    .entry("env")
                    .or_insert_with(|| json!([]));
                env.as_array_mut()
                    .unwrap()
                    .push(json!({"name": "CANARY_SECRET", "value": CANARY}));
            }
        }
    }
    if let Some(meta) = pod["metadata"].as_object_mut() {
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        ann["vault.example.com/agent-token"] = json!(CANARY);
    }
}

fn namespace_of(pod: &Value) -> String {
    pod.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned()
}

/// The router and a runtime to drive it from the (synchronous) property closures.
struct Webhook {
    runtime: tokio::runtime::Runtime,
    app: Router,
    cfg: WebhookConfig,
}

/// What came back over HTTP.
struct Reply {
    status: StatusCode,
    json_content: bool,
    body: Vec<u8>,
}

impl Webhook {
    fn new() -> Self {
        let cfg = config();
        Self {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
            app: router(AppState::new(cfg.clone())),
            cfg,
        }
    }

    fn post(&self, body: Vec<u8>) -> Reply {
        let req = Request::post(MUTATE_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        self.runtime.block_on(async {
            let resp = self.app.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let json_content = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v == "application/json");
            let body = resp
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec();
            Reply {
                status,
                json_content,
                body,
            }
        })
    }

    /// Admits `pod` in a well-formed review and checks the answer's shape.
    fn admit(&self, pod: &Value, namespace: &str, uid: &str) -> Result<Answer, TestCaseError> {
        let body = serde_json::to_vec(&review::pod_create_review(pod, namespace, uid)).unwrap();
        let reply = self.post(body);
        prop_assert_eq!(reply.status, StatusCode::OK, "a well-formed review");
        let answer = answer_of(&reply, false)?;
        prop_assert_eq!(&answer.uid, uid);
        Ok(answer)
    }
}

/// The `response` of an answer, read and checked for shape.
#[derive(Debug)]
struct Answer {
    uid: String,
    allowed: bool,
    /// `(code, reason, message)` of a denial.
    status: Option<(u64, String, String)>,
    /// The decoded JSON patch.
    patch: Option<Vec<Value>>,
    warnings: Vec<String>,
}

/// Reads the answer and checks its shape; `secret_moved` when edits may have moved the
/// canary into a place that is echoed by design (a name, an annotation value).
fn answer_of(reply: &Reply, secret_moved: bool) -> Result<Answer, TestCaseError> {
    prop_assert!(reply.json_content, "the answer is not application/json");
    let v: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| TestCaseError::fail(format!("the answer is not JSON: {e}")))?;
    prop_assert_eq!(&v["apiVersion"], "admission.k8s.io/v1");
    prop_assert_eq!(&v["kind"], "AdmissionReview");
    let r = &v["response"];
    let uid = r["uid"]
        .as_str()
        .ok_or_else(|| TestCaseError::fail("response.uid is not a string"))?;
    let allowed = r["allowed"]
        .as_bool()
        .ok_or_else(|| TestCaseError::fail("response.allowed is not a bool"))?;
    let warnings: Vec<String> = match r.get("warnings") {
        None => vec![],
        Some(w) => serde_json::from_value(w.clone())
            .map_err(|e| TestCaseError::fail(format!("warnings: {e}")))?,
    };
    for w in &warnings {
        one_short_line(w)?;
    }
    let status = match r.get("status") {
        None => None,
        Some(s) => {
            let code = s["code"]
                .as_u64()
                .ok_or_else(|| TestCaseError::fail("status.code"))?;
            let reason = s["reason"]
                .as_str()
                .ok_or_else(|| TestCaseError::fail("status.reason"))?
                .to_owned();
            let message = s["message"]
                .as_str()
                .ok_or_else(|| TestCaseError::fail("status.message"))?
                .to_owned();
            Some((code, reason, message))
        }
    };
    let patch = match r.get("patch") {
        None => None,
        Some(p) => {
            prop_assert_eq!(&r["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(
                    p.as_str()
                        .ok_or_else(|| TestCaseError::fail("patch is not a base64 string"))?,
                )
                .map_err(|e| TestCaseError::fail(format!("patch is not base64: {e}")))?;
            prop_assert!(
                secret_moved || !String::from_utf8_lossy(&bytes).contains(CANARY),
                "the patch carries the Pod's secret"
            );
            let ops: Vec<Value> = serde_json::from_slice(&bytes)
                .map_err(|e| TestCaseError::fail(format!("patch is not a JSON array: {e}")))?;
            Some(ops)
        }
    };
    if allowed {
        prop_assert!(status.is_none(), "allowed with a status: {r}");
    } else {
        prop_assert!(patch.is_none(), "denied with a patch");
        let (code, reason, message) = status
            .as_ref()
            .ok_or_else(|| TestCaseError::fail("denied without a status"))?;
        prop_assert!(
            matches!(
                (*code, reason.as_str()),
                (400, "BadRequest") | (403, "Forbidden")
            ),
            "denied with {code} {reason}"
        );
        one_short_line(message)?;
        prop_assert!(message.starts_with("esi: "), "{message}");
        prop_assert!(
            !message.contains("internal error") && !message.contains("panicked"),
            "{message}"
        );
    }
    prop_assert!(
        secret_moved || !String::from_utf8_lossy(&reply.body).contains(CANARY),
        "the answer carries the Pod's secret: {}",
        String::from_utf8_lossy(&reply.body)
    );
    Ok(Answer {
        uid: uid.to_owned(),
        allowed,
        status,
        patch,
        warnings,
    })
}

/// What `kubectl` prints must stay one readable line: no control characters (an escape
/// sequence would reach the user's terminal), no line separators, not a flood.
fn one_short_line(text: &str) -> Result<(), TestCaseError> {
    prop_assert!(!text.is_empty(), "an empty message");
    prop_assert!(
        !text
            .chars()
            .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')),
        "a control character or line break in {text:?}"
    );
    prop_assert!(
        text.len() <= MAX_MESSAGE_BYTES,
        "a message of {} bytes: {}…",
        text.len(),
        text.chars().take(300).collect::<String>()
    );
    Ok(())
}

/// `pod` with the answer's patch applied (json-patch, as the API server applies it).
fn apply(pod: &Value, ops: &[Value]) -> Result<Value, TestCaseError> {
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec()))
        .map_err(|e| TestCaseError::fail(format!("not an RFC 6902 patch: {e}")))?;
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch)
        .map_err(|e| TestCaseError::fail(format!("the patch does not apply: {e}")))?;
    Ok(patched)
}

// ---------------------------------------------------------------------------------------------
// What an injected Pod must look like
// ---------------------------------------------------------------------------------------------

fn list<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn annotations_of(pod: &Value) -> BTreeMap<String, String> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| serde_json::from_value(a.clone()).ok())
        .unwrap_or_default()
}

/// `v` without the keys `except` (for "nothing else changed").
fn without(v: &Value, except: &[&str]) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for k in except {
            o.remove(*k);
        }
    }
    v
}

/// The checks every patched Pod passes: only `spec` and the injected mark change; the esi-cli
/// containers are added once, locked down and carry a spec that agrees with the annotations;
/// chosen containers keep everything but a wrapped command and added read-only mounts.
fn injected_consistently(
    before: &Value,
    after: &Value,
    ops: &[Value],
    cfg: &WebhookConfig,
) -> Result<(), String> {
    for op in ops {
        let path = op["path"].as_str().unwrap_or_default();
        if !matches!(op["op"].as_str(), Some("add" | "replace"))
            || !(path.starts_with("/spec/")
                || path == "/metadata/annotations"
                || path == "/metadata/annotations/esi.dev~1status")
        {
            return Err(format!("unexpected operation {op}"));
        }
    }
    serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(after.clone())
        .map_err(|e| format!("the patched Pod is not a Pod: {e}"))?;
    serde_json::from_value::<esi_webhook::pod::Pod>(after.clone())
        .map_err(|e| format!("the patched Pod does not read: {e}"))?;

    // Outside spec, only the mark is added.
    let mut want_annotations = annotations_of(before);
    want_annotations.insert(inject::ANN_STATUS.into(), inject::STATUS_INJECTED.into());
    if annotations_of(after) != want_annotations {
        return Err("the annotations changed beyond the injected mark".into());
    }
    let meta = |p: &Value| without(&p["metadata"], &["annotations"]);
    if without(before, &["spec", "metadata"]) != without(after, &["spec", "metadata"])
        || meta(before) != meta(after)
    {
        return Err("the patch changed more than spec and the mark".into());
    }
    let (bs, as_) = (&before["spec"], &after["spec"]);
    let grown = ["containers", "initContainers", "volumes"];
    if without(bs, &grown) != without(as_, &grown) {
        return Err("the patch changed spec fields it has no business with".into());
    }

    // Volumes: the originals, then the two of esi.
    let (bv, av) = (list(bs, "volumes"), list(as_, "volumes"));
    if av.len() != bv.len() + 2 || av[..bv.len()] != *bv {
        return Err("volumes: the originals are not kept, or not exactly two added".into());
    }
    let old_volumes: BTreeSet<&str> = bv.iter().filter_map(|v| v["name"].as_str()).collect();
    let added = &av[bv.len()..];
    let esi_volume = added[0]["name"].as_str().ok_or("unnamed volume")?;
    let token_volume = added[1]["name"].as_str().ok_or("unnamed volume")?;
    if esi_volume == token_volume
        || old_volumes.contains(esi_volume)
        || old_volumes.contains(token_volume)
    {
        return Err(format!(
            "added volume names collide: {esi_volume}, {token_volume}"
        ));
    }
    if added[0]["emptyDir"]["medium"] != "Memory" {
        return Err("the esi volume is not memory-backed".into());
    }
    let sat = &added[1]["projected"]["sources"][0]["serviceAccountToken"];
    let exp = sat["expirationSeconds"].as_i64().unwrap_or(0);
    if !sat["audience"]
        .as_str()
        .is_some_and(|a| cfg.audience_allowed(a))
        || !(cfg.token.min_expiration_seconds..=cfg.token.max_expiration_seconds).contains(&exp)
    {
        return Err(format!("projected token outside the policy: {sat}"));
    }

    // Init containers: the originals in order, and one block of esi-cli containers.
    let (bi, ai) = (list(bs, "initContainers"), list(as_, "initContainers"));
    let k = ai
        .len()
        .checked_sub(bi.len())
        .ok_or("init containers removed")?;
    if !(1..=2).contains(&k) {
        return Err(format!("{k} init containers added"));
    }
    let same_name = |a: &[Value], b: &[Value]| a.iter().zip(b).all(|(x, y)| x["name"] == y["name"]);
    let (new, kept) = if same_name(&ai[k..], bi) {
        (&ai[..k], &ai[k..])
    } else if same_name(&ai[..bi.len()], bi) {
        (&ai[bi.len()..], &ai[..bi.len()])
    } else {
        return Err("the original init containers are not kept in order".into());
    };
    let taken: BTreeSet<&str> = list(bs, "containers")
        .iter()
        .chain(bi)
        .chain(list(bs, "ephemeralContainers"))
        .filter_map(|c| c["name"].as_str())
        .collect();
    for (i, c) in new.iter().enumerate() {
        let name = c["name"].as_str().ok_or("unnamed esi-cli container")?;
        if taken.contains(name) || c["image"] != cfg.cli.image.as_str() {
            return Err(format!(
                "esi-cli container {name} collides or has another image"
            ));
        }
        if strs(&c["command"]) != [cfg.cli.binary_path.as_str()] {
            return Err(format!("{name}: command {}", c["command"]));
        }
        let (args, restart) = if i == 0 {
            ("init", Value::Null)
        } else {
            ("refresh", json!("Always"))
        };
        if strs(&c["args"]) != [args] || c["restartPolicy"] != restart {
            return Err(format!("{name}: not the {args} container"));
        }
        let sc = &c["securityContext"];
        let id = |v: &Value, min: i64| {
            v.as_i64()
                .is_some_and(|n| (min..=i64::from(i32::MAX)).contains(&n))
        };
        if sc["runAsNonRoot"] != true
            || !id(&sc["runAsUser"], 1)
            || !id(&sc["runAsGroup"], 0)
            || sc["readOnlyRootFilesystem"] != true
            || sc["allowPrivilegeEscalation"] != false
            || sc["privileged"] != false
            || sc["capabilities"]["drop"] != json!(["ALL"])
        {
            // Kubernetes refuses ids beyond 2^31-1 and esi-cli must never run as root.
            return Err(format!(
                "{name} is not locked down or has ids Kubernetes refuses: {sc}"
            ));
        }
        let mounts: Vec<(&str, &str)> = list(c, "volumeMounts")
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or(""),
                    m["mountPath"].as_str().unwrap_or(""),
                )
            })
            .collect();
        if mounts != [(esi_volume, MOUNT_PATH), (token_volume, TOKEN_MOUNT_PATH)] {
            return Err(format!("{name}: mounts {mounts:?}"));
        }
    }
    let spec_text = list(&new[0], "env")
        .iter()
        .find(|e| e["name"] == inject::ENV_SPEC)
        .and_then(|e| e["value"].as_str())
        .ok_or("the init container has no ESI_SPEC")?;
    let spec = InjectionSpec::from_json(spec_text).map_err(|e| format!("ESI_SPEC: {e}"))?;

    // The spec agrees with the annotations and the policy.
    let ann = inject::parse_annotations(&annotations_of(before))
        .map_err(|e| format!("injected although the annotations do not parse: {e}"))?;
    if spec.generators != ann.generators || spec.token_path != inject::TOKEN_PATH {
        return Err("ESI_SPEC's generators or token path differ from the annotations".into());
    }
    let url_ok = match &ann.federation_url {
        Some(u) => cfg.url_allowed(u) && spec.federation_url == *u,
        None => {
            cfg.federation
                .default_url
                .as_deref()
                .map(|u| u.trim_end_matches('/'))
                == Some(spec.federation_url.as_str())
        }
    };
    if !url_ok || !spec.federation_url.starts_with("https://") {
        return Err(format!(
            "federation URL {} is not the allowed one",
            spec.federation_url
        ));
    }
    let mut dirs = BTreeMap::new();
    for f in &spec.files {
        let dir = f.path.rsplit_once('/').map(|(d, _)| d).unwrap_or_default();
        let sub = f
            .volume_path
            .rsplit_once('/')
            .map(|(d, _)| d)
            .unwrap_or_default();
        if inject::check_file_path(&f.path).is_err()
            || dir.is_empty()
            || dir == MOUNT_PATH
            || dir.starts_with("/esi/")
            || f.mode & 0o007 != 0
            || f.mode & 0o440 == 0
            || !sub.starts_with("files/")
            || f.content
                .aliases()
                .iter()
                .any(|a| !spec.generators.contains_key(a))
        {
            return Err(format!("file output {} is out of bounds: {f:?}", f.name));
        }
        if dirs.insert(dir, sub).is_some_and(|other| other != sub) {
            return Err(format!("directory {dir} is mounted from two places"));
        }
    }

    // App containers (and chosen init containers): only commands and mounts change.
    let originals: Vec<(&Value, &Value)> = list(bs, "containers")
        .iter()
        .zip(list(as_, "containers"))
        .chain(bi.iter().zip(kept))
        .collect();
    if list(bs, "containers").len() != list(as_, "containers").len() {
        return Err("containers added or removed".into());
    }
    for (b, a) in originals {
        let name = b["name"].as_str().unwrap_or_default();
        if without(b, &["command", "volumeMounts"]) != without(a, &["command", "volumeMounts"]) {
            return Err(format!("{name}: changed beyond command and mounts"));
        }
        let Some(cs) = spec.containers.get(name) else {
            if a != b {
                return Err(format!("{name} gets no credentials but was changed"));
            }
            continue;
        };
        for m in &cs.env {
            if !inject::is_env_name(&m.name) || !spec.generators.contains_key(&m.alias) {
                return Err(format!("{name}: env mapping {m:?}"));
            }
        }
        if cs
            .env_from
            .iter()
            .any(|i| !spec.generators.contains_key(&i.alias))
        {
            return Err(format!("{name}: env import of an undefined alias"));
        }
        let (bm, am) = (list(b, "volumeMounts"), list(a, "volumeMounts"));
        if am.len() < bm.len() || am[..bm.len()] != *bm {
            return Err(format!("{name}: its own mounts are not kept"));
        }
        let mut paths: BTreeSet<&str> = bm
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap_or_default())
            .collect();
        for m in &am[bm.len()..] {
            let path = m["mountPath"].as_str().unwrap_or_default();
            if !paths.insert(path) {
                return Err(format!(
                    "{name}: an added mount at {path} takes a path in use"
                ));
            }
        }
        let mut want: BTreeSet<(&str, Option<&str>)> =
            dirs.iter().map(|(d, s)| (*d, Some(*s))).collect();
        if cs.wants_env() {
            want.insert((MOUNT_PATH, None));
        }
        let mut got = BTreeSet::new();
        for m in &am[bm.len()..] {
            if m["name"] != esi_volume || m["readOnly"] != true {
                return Err(format!(
                    "{name}: an added mount is not the esi volume, read-only"
                ));
            }
            got.insert((
                m["mountPath"].as_str().unwrap_or_default(),
                m["subPath"].as_str(),
            ));
        }
        if got != want {
            return Err(format!("{name}: mounts {got:?}, expected {want:?}"));
        }
        let (bc, ac) = (strs(&b["command"]), strs(&a["command"]));
        if !cs.wants_env() || bc.first() == Some(&BINARY_PATH) {
            if a["command"] != b["command"] {
                return Err(format!("{name}: command changed although not wrapped"));
            }
            continue;
        }
        let original: Vec<String> = if bc.is_empty() {
            ann.entrypoints
                .get(name)
                .cloned()
                .ok_or(format!("{name}: no entrypoint"))?
        } else {
            bc.iter().map(|s| (*s).to_owned()).collect()
        };
        let mut wrapped = vec![BINARY_PATH, "exec", "--container", name, "--"];
        wrapped.extend(original.iter().map(String::as_str));
        if ac != wrapped {
            return Err(format!("{name}: command {ac:?}, expected {wrapped:?}"));
        }
    }
    for c in list(as_, "containers").iter().chain(kept) {
        if list(c, "volumeMounts")
            .iter()
            .any(|m| m["name"] == token_volume)
        {
            return Err("the token is mounted into an app container".into());
        }
    }
    // A mount the Pod had (even of a volume it does not define) keeps its meaning.
    for c in list(bs, "containers").iter().chain(bi) {
        if list(c, "volumeMounts")
            .iter()
            .any(|m| m["name"] == esi_volume || m["name"] == token_volume)
        {
            return Err(format!(
                "{}: an existing mount now names an added volume",
                c["name"]
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The decision the webhook must take, independently of it
// ---------------------------------------------------------------------------------------------

/// Whether container names, and each container's mount paths, are unique: Kubernetes refuses
/// a Pod where they are not, whatever the webhook adds, so the patch of such a Pod need only
/// apply.
fn names_unique(pod: &Value) -> bool {
    let spec = &pod["spec"];
    let all: Vec<&Value> = list(spec, "containers")
        .iter()
        .chain(list(spec, "initContainers"))
        .collect();
    let names: BTreeSet<String> = all.iter().map(|c| c["name"].to_string()).collect();
    names.len() == all.len()
        && all.iter().all(|c| {
            let mounts = list(c, "volumeMounts");
            let paths: BTreeSet<String> =
                mounts.iter().map(|m| m["mountPath"].to_string()).collect();
            paths.len() == mounts.len()
        })
}

/// Whether the webhook must leave the Pod alone: not opted in, already injected, or in an
/// excluded namespace.
fn not_for_the_webhook(pod: &Value, namespace: &str, cfg: &WebhookConfig) -> bool {
    pod.pointer("/metadata/labels/esi.dev~1inject") != Some(&json!("true"))
        || annotations_of(pod)
            .get(inject::ANN_STATUS)
            .map(String::as_str)
            == Some(inject::STATUS_INJECTED)
        || cfg.excluded_namespaces.iter().any(|n| n == namespace)
}

/// Tally of the outcomes, to prove the generators reach every branch.
#[derive(Default)]
struct Tally {
    injected: Cell<u32>,
    skipped: Cell<u32>,
    denied: Cell<u32>,
    invalid: Cell<u32>,
}

impl Tally {
    fn count(&self, a: &Answer) {
        let c = match (a.allowed, a.patch.is_some(), &a.status) {
            (true, true, _) => &self.injected,
            (true, false, _) => &self.skipped,
            (false, _, Some((400, ..))) => &self.invalid,
            _ => &self.denied,
        };
        c.set(c.get() + 1);
    }

    fn show(&self) -> String {
        format!(
            "injected {}, skipped {}, denied {}, invalid {}",
            self.injected.get(),
            self.skipped.get(),
            self.denied.get(),
            self.invalid.get()
        )
    }
}

/// Idempotency: the patched Pod is admitted again without a patch; a copy of it without the
/// mark (a Pod copied from an injected one) never gets a command wrapped twice.
fn readmitted_unchanged(
    hook: &Webhook,
    patched: &Value,
    namespace: &str,
) -> Result<(), TestCaseError> {
    let again = hook.admit(patched, namespace, "uid-again")?;
    prop_assert!(
        again.allowed && again.patch.is_none(),
        "re-admission of an injected Pod is not a no-op: {again:?}"
    );
    let mut copy = patched.clone();
    copy["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove(inject::ANN_STATUS);
    let copied = hook.admit(&copy, namespace, "uid-copy")?;
    if let Some(ops) = &copied.patch {
        let twice = apply(&copy, ops)?;
        for c in list(&twice["spec"], "containers")
            .iter()
            .chain(list(&twice["spec"], "initContainers"))
        {
            let wraps = strs(&c["command"])
                .iter()
                .filter(|a| **a == BINARY_PATH)
                .count();
            prop_assert!(wraps <= 1, "{} is wrapped {wraps} times", c["name"]);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Property 1: hostile annotations on the golden Pods
// ---------------------------------------------------------------------------------------------

const FIXED_KEYS: &[&str] = &[
    inject::ANN_GENERATORS,
    inject::ANN_FEDERATION_URL,
    inject::ANN_ENV,
    inject::ANN_ENV_FROM,
    inject::ANN_CONTAINERS,
    inject::ANN_INIT_CONTAINERS,
    inject::ANN_REFRESH,
    inject::ANN_REFRESH_AT,
    inject::ANN_REFRESH_NOTIFY,
    inject::ANN_REVOKE_ON_EXIT,
    inject::ANN_TOKEN_AUDIENCE,
    inject::ANN_TOKEN_EXPIRATION,
    inject::ANN_RUN_AS,
    inject::ANN_CLI_RESOURCES,
    inject::ANN_STATUS,
];

const KEY_PREFIXES: &[&str] = &[
    "esi.dev/env.",
    "esi.dev/env-from.",
    "esi.dev/entrypoint.",
    "esi.dev/file.",
    "esi.dev/template.",
];

/// Container and file names the prefixed keys take: the corpus's, and wrong ones.
const KEY_NAMES: &[&str] = &[
    "app", "app", "worker", "migrate", "nginx", "proxy", "db", "creds", "dsn", "a", "x-y",
    "missing", "App", "-a", "a.b", "", "é", "esi-init",
];

const NEAR_MISS_KEYS: &[&str] = &[
    "ESI.dev/env",
    "Esi.Dev/generators",
    "esi.dev/Env",
    "esi.dev/GENERATORS",
    "esi.dev/generators ",
    " esi.dev/generators",
    "esi.dev/generators\n",
    "esi.dev/env.",
    "esi.dev/file.",
    "esi.dev/template.",
    "esi.dev//env",
    "esi.dev/env..app",
    "esi.dev/env.app.x",
    "esi.dev/file.a.b",
    "esi.dev/envs",
    "esi.dev/generator",
    "esi.dev/inject",
    "esi.dev/",
    "esi.dev/unknown",
    "esi.dev/file.db-json/x",
    "esi.dev\\env",
    "esi.dev/token-audience.app",
    "esi.dev/refresh.app",
    "esi.dev/env.app\u{1b}[31m",
    "esi.dev/\u{0}",
    "esi.dev/\u{202e}vne",
];

/// Pieces that values are made of: valid fragments and the characters that break parsers.
const FRAGMENTS: &[&str] = &[
    "db",
    "aws",
    "=",
    "=",
    ".",
    "/",
    ",",
    ",",
    "\n",
    " ",
    "payments",
    "default",
    "Password",
    "VaultDynamicSecret",
    "AWSAssumeRole",
    "p",
    "*",
    "DB_",
    "A=db.password",
    "B=aws.k",
    "db=payments/Password/p",
    "aws=payments/AWSAssumeRole/app",
    "path=/etc/app-creds/f",
    "path=/etc/app-creds/g.json",
    "format=json",
    "format=raw",
    "format=template",
    "format=env",
    "format=yaml",
    "from=db",
    "from=db.password",
    "from=nope",
    "mode=0440",
    "mode=0400",
    "mode=0644",
    "mode=7777",
    "decode=base64",
    "decode=base64url",
    "decode=hex",
    "true",
    "false",
    "66%",
    "95%",
    "signal=SIGHUP",
    "process=app",
    "url=http://127.0.0.1:9090/-/reload",
    "url=http://169.254.169.254:80/",
    "method=PUT",
    "none",
    "10m",
    "600",
    "1h",
    "99999999999999999999999",
    "-1",
    "0",
    "4294967295",
    "2147483648",
    ":",
    "{{ .db.password }}",
    "{{",
    "}}",
    "[\"/app/server\"]",
    "[",
    "]",
    "\"",
    "\\",
    "\u{0}",
    "\u{1b}[31m",
    "\r",
    "\t",
    "\u{7f}",
    "\u{85}",
    "\u{2028}",
    "é",
    "✓",
    "𝄞",
    "\u{202e}",
    "https://esi.example.com",
    "https://esi-eu.example.com",
    "http://esi.example.com",
    "https://evil.example.com",
    "https://user:pw@esi.example.com",
    "https://[::1]:8443",
    "..",
    "../",
    "/esi",
    "/esi/bin",
    "/var/run/secrets/esi.dev/serviceaccount",
    "/var/run/secrets/kubernetes.io/serviceaccount",
    "/etc",
    "/proc/self",
    "//",
    "./",
    "PATH",
    "LD_PRELOAD",
    "ESI_SPEC",
    "1X",
    "A-B",
    "esi",
    "esi-eu",
    "sts.amazonaws.com",
    "app",
    "worker",
    "migrate",
    "nope",
];

/// Whole values, valid and near-valid, for every key.
const WHOLE_VALUES: &[&str] = &[
    // generators
    "db=payments/Password/p",
    "db=payments/VaultDynamicSecret/db, aws=payments/AWSAssumeRole/app",
    "db=payments/Password/p, db=payments/Password/q",
    "DB=payments/Password/p",
    "db=../Password/x",
    "db=payments/Password/a.b.c",
    "db=payments/password/p",
    "db=payments/Password/p/extra",
    "db=/Password/p",
    // env, env-from
    "A=db.password",
    "DB_USER=db.username, DB_PASS=db.password",
    "PATH=db.password",
    "LD_PRELOAD=db.k",
    "ESI_SPEC=db.k",
    "A=nope.k",
    "A=db.",
    "A=db.k,A=db.j",
    "A=db.k\nB=db.j",
    "*=db",
    "DB_*=db",
    "*=nope",
    "1_*=db",
    "P_=db",
    "*=db, *=db",
    // files
    "path=/etc/app-creds/db.json, format=json, from=db",
    "path=/etc/app-creds/pw, format=raw, from=db.password",
    "path=/etc/app-creds/dsn",
    "path=/etc/../shadow, from=db",
    "path=/esi/x, from=db",
    "path=/esi, from=db",
    "path=/esi/bin/esi-cli, from=db",
    "path=/etc/passwd, from=db",
    "path=/var/run/secrets/esi.dev/serviceaccount/token, from=db",
    "path=/var/run/secrets/kubernetes.io/serviceaccount/token, from=db",
    "path=/etc/app-creds/, from=db",
    "path=relative, from=db",
    "path=/a//b, from=db",
    "path=/a/./b, from=db",
    "path=/data/x, from=db",
    "path=/data/sub/x, from=db",
    "path=/esi/cache/x, from=db",
    "path=/etc/nginx/conf.d/x, from=db",
    "path=/etc/nginx/conf.d/sub/x, from=db",
    "path=/etc/app/tls/x, from=db",
    "path=/var/esi-data/x, from=db",
    "path=/etc/api/x, from=db",
    "path=/x/y, format=raw, from=db.password",
    "path=/x/y, format=raw, from=db.password, decode=base64",
    "path=/x/y, format=raw, from=db.password, decode=base64, decode=base64url",
    "path=/x/y, from=db, decode=base64",
    "path=/x/y, mode=0777, from=db",
    "path=/x/y, mode=0040, from=db",
    "path=/x/y, path=/x/z, from=db",
    "path=/x/y, from=db, colour=red",
    "path=/x/y/z, from=db",
    // templates
    "{{ .db.password }}",
    "{{ .nope.k }}",
    "{{ .db }}",
    "postgres://{{ .db.username }}:{{ .db.password }}@db/app",
    "}}{{",
    "text only",
    // containers
    "app",
    "app, worker",
    "app,app",
    "nope",
    "APP",
    "",
    "migrate",
    "esi-init",
    // booleans, percentages, notify
    "true",
    "false",
    "yes",
    "TRUE",
    "10%",
    "90%",
    "9%",
    "91%",
    "66",
    "255%",
    "-5%",
    "none",
    "signal=SIGHUP, process=nginx",
    "signal=KILL, process=x",
    "signal=HUP",
    "process=x",
    "signal=HUP, process=0123456789abcdef",
    "url=http://127.0.0.1:9090/-/reload",
    "url=http://localhost:8080/actuator/refresh, method=put",
    "url=http://127.0.0.1:9090/-/reload, signal=HUP, process=x",
    "url=http://[::1]:0/",
    "url=https://127.0.0.1:9090/",
    "url=http://127.0.0.1:9090/#frag",
    // audiences, durations, ids
    "esi",
    "esi-eu",
    "sts.amazonaws.com",
    "esi ",
    "esi,esi-eu",
    "10m",
    "600s",
    "599",
    "3601",
    "1h",
    "-600",
    "9223372036854775807",
    "99999999999999999999h",
    "1h30m",
    "1d",
    "1000",
    "1000:2000",
    "0",
    "0:0",
    "root",
    "4294967295",
    "4294967295:4294967295",
    "2147483647",
    "2147483648",
    "1000:2147483648",
    "-1",
    ":",
    "1000:",
    // entrypoints
    "[\"/app/server\"]",
    "[\"/app/server\", \"--port\", \"8080\"]",
    "[]",
    "[\"\"]",
    "/bin/app",
    "[\"/x\\u0000\"]",
    "[1,2]",
    "[\"/esi/bin/esi-cli\", \"exec\"]",
    // federation URLs
    "https://esi.example.com",
    "https://esi.example.com/",
    "https://esi-eu.example.com",
    "http://esi.example.com",
    "https://evil.example.com",
    "https://esi.example.com.evil.com",
    "https://user:pw@esi.example.com",
    "https://esi.example.com@evil.com",
    "https://[::1]:8443",
    "https://[::ffff:169.254.169.254]",
    "https://169.254.169.254/latest/meta-data",
    "HTTPS://ESI.EXAMPLE.COM",
    "https://esi.example.com/#",
    "https://esi.example.com?x=1",
    "ftp://esi.example.com",
    "https://",
    "https:///x",
    "https://esi.example.com//",
    "https://esi.example.com/../",
    " https://esi.example.com ",
    "https://esi.example.com\n",
    // status, and text of other formats
    "injected",
    "pending",
    "{\"generators\": \"db=payments/Password/p\"}",
    "- a\n- b",
    "a: b\nc: [1, 2]",
    "null",
    "~",
    "!!binary aGVsbG8=",
    "<<: *x",
];

/// Values far beyond any limit, made on demand.
fn long_value(kind: u8) -> String {
    let max = inject::limits::MAX_VALUE_BYTES;
    match kind {
        0 => "x".repeat(max),
        1 => "x".repeat(max + 1),
        2 => "y".repeat(inject::limits::MAX_TEMPLATE_BYTES + 1),
        3 => (0..33)
            .map(|i| format!("a{i}=ns/Password/p"))
            .collect::<Vec<_>>()
            .join(","),
        4 => (0..32)
            .map(|i| format!("a{i}=ns/Password/p"))
            .collect::<Vec<_>>()
            .join(","),
        5 => (0..257)
            .map(|i| format!("V{i}=db.k"))
            .collect::<Vec<_>>()
            .join(","),
        6 => (0..256)
            .map(|i| format!("P{i}_*=db"))
            .collect::<Vec<_>>()
            .join(","),
        7 => format!("https://esi.example.com/{}", "a".repeat(10_000)),
        8 => format!("https://{}.example.com", "h".repeat(5_000)),
        9 => format!("path=/etc/app-creds/{}, from=db", "n".repeat(300)),
        10 => format!("path={}/f, from=db", "/d".repeat(600)),
        11 => format!("[{}]", vec!["\"/x\""; 3000].join(",")),
        12 => "{{ .db.password }}".repeat(1800),
        13 => "a".repeat(253),
        14 => "a".repeat(254),
        15 => "app,".repeat(3000),
        16 => format!("{}=payments/Password/p", "a".repeat(5_000)),
        17 => "\u{1b}[2J".repeat(2_000),
        _ => "é".repeat(max / 2 + 1),
    }
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(select(FRAGMENTS), 0..8).prop_map(|v| v.concat()),
        3 => select(WHOLE_VALUES).prop_map(str::to_owned),
        1 => (select(WHOLE_VALUES), select(FRAGMENTS), any::<bool>())
            .prop_map(|(w, f, front)| if front { format!("{f}{w}") } else { format!("{w}{f}") }),
        1 => any::<String>(),
        1 => (0u8..19).prop_map(long_value),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(FIXED_KEYS).prop_map(str::to_owned),
        3 => (select(KEY_PREFIXES), select(KEY_NAMES)).prop_map(|(p, n)| format!("{p}{n}")),
        2 => select(NEAR_MISS_KEYS).prop_map(str::to_owned),
        1 => any::<String>().prop_map(|s| format!("esi.dev/{s}")),
        1 => (select(KEY_PREFIXES), any::<String>()).prop_map(|(p, s)| format!("{p}{s}")),
    ]
}

/// Annotations most golden Pods take and still get injected: hostile ones come on top.
const GOOD_PAIRS: &[(&str, &str)] = &[
    (inject::ANN_TOKEN_AUDIENCE, "esi-eu"),
    (inject::ANN_TOKEN_EXPIRATION, "1h"),
    (inject::ANN_TOKEN_EXPIRATION, "900s"),
    (inject::ANN_FEDERATION_URL, "https://esi-eu.example.com/"),
    (inject::ANN_REVOKE_ON_EXIT, "true"),
    (inject::ANN_REVOKE_ON_EXIT, "false"),
    (inject::ANN_RUN_AS, "1000:2000"),
    (inject::ANN_RUN_AS, "0"),
    (inject::ANN_RUN_AS, "2147483647"),
    (inject::ANN_RUN_AS, "4294967295"),
    (inject::ANN_RUN_AS, "1000:2147483648"),
    (inject::ANN_TOKEN_EXPIRATION, "3600"),
    (inject::ANN_TOKEN_EXPIRATION, "10m"),
    (
        inject::ANN_CLI_RESOURCES,
        "limits.memory=64Mi, limits.cpu=1",
    ),
    (
        inject::ANN_CLI_RESOURCES,
        "requests.cpu=1m\nrequests.memory=8Mi",
    ),
    ("example.com/other", "{\"not\": \"ours\"}"),
    ("esi.dev.other/x", "\u{1b}[31m"),
];

/// Container names a Pod may carry before validation (the API server validates after the
/// mutating webhooks): the webhook echoes them in messages.
const HOSTILE_CONTAINER_NAMES: &[&str] = &[
    "",
    "app\n",
    "a\u{1b}]0;pwn\u{7}",
    "App",
    "é",
    "esi-init",
    "esi-agent",
    "esi",
    "a b",
];

/// One hostile Pod: which seed, which annotations to set, and how else to bend it.
#[derive(Debug, Clone)]
struct HostilePod {
    seed: Index,
    annotations: Vec<(String, String)>,
    force_opt_in: bool,
    drop_existing: bool,
    rename: Option<(Index, &'static str)>,
    namespace: Option<&'static str>,
    uid: &'static str,
}

fn hostile_pod() -> impl Strategy<Value = HostilePod> {
    (
        any::<Index>(),
        prop::collection::vec(
            prop_oneof![2 => select(GOOD_PAIRS).prop_map(|(k, v)| (k.to_owned(), v.to_owned())),
                        3 => (key(), value())],
            1..5,
        ),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.15, (any::<Index>(), select(HOSTILE_CONTAINER_NAMES))),
        prop::option::weighted(
            0.1,
            select(&["kube-system", "esi-system", "", "ns\n", "Payments"][..]),
        ),
        select(
            &[
                "uid-1",
                "",
                "u\"\\\n\u{0}é",
                "0b5a3d2e-9f1c-4e8a-8d6f-000000000001",
            ][..],
        ),
    )
        .prop_map(
            |(seed, annotations, force_opt_in, drop_existing, rename, namespace, uid)| HostilePod {
                seed,
                annotations,
                force_opt_in,
                drop_existing,
                rename,
                namespace,
                uid,
            },
        )
}

fn build(h: &HostilePod, seeds: &[(String, Value)]) -> (Value, String) {
    let (_, seed) = &seeds[h.seed.index(seeds.len())];
    let mut pod = seed.clone();
    let meta = pod["metadata"].as_object_mut().unwrap();
    if h.force_opt_in {
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        labels[inject::INJECT_LABEL] = json!(inject::INJECT_LABEL_VALUE);
    }
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .unwrap();
    if h.drop_existing {
        ann.retain(|k, _| !k.starts_with(inject::PREFIX));
    }
    for (k, v) in &h.annotations {
        ann.insert(k.clone(), json!(v));
    }
    let in_use = |pod: &Value, name: &str| {
        let spec = &pod["spec"];
        list(spec, "containers")
            .iter()
            .chain(list(spec, "initContainers"))
            .any(|c| c["name"] == name)
    };
    if let Some((i, name)) = h.rename
        && !in_use(&pod, name)
        && let Some(cs) = pod["spec"]["containers"].as_array_mut()
        && !cs.is_empty()
    {
        // Only to a name no other container has: two containers of one name are refused by
        // validation whatever the webhook does.
        let at = i.index(cs.len());
        cs[at]["name"] = json!(name);
    }
    let namespace = h
        .namespace
        .map_or_else(|| namespace_of(&pod), str::to_owned);
    (pod, namespace)
}

// 2000 cases: ~2.5 s in a debug build.
#[test]
fn hostile_annotations_get_a_consistent_patch_a_skip_or_a_clean_denial() {
    let hook = Webhook::new();
    let seeds = seed_pods();
    let tally = Tally::default();
    check("hostile annotations", 2000, &hostile_pod(), |h| {
        let (pod, namespace) = build(&h, &seeds);
        let answer = hook.admit(&pod, &namespace, h.uid)?;
        tally.count(&answer);
        let skip = not_for_the_webhook(&pod, &namespace, &hook.cfg);
        match (&answer.patch, answer.allowed) {
            (_, true) if skip => {
                prop_assert!(
                    answer.patch.is_none(),
                    "a Pod not for the webhook was patched"
                );
            }
            (None, true) => prop_assert!(false, "an opted-in Pod was admitted unchanged"),
            (Some(ops), true) => {
                let patched = apply(&pod, ops)?;
                injected_consistently(&pod, &patched, ops, &hook.cfg)
                    .map_err(TestCaseError::fail)?;
                readmitted_unchanged(&hook, &patched, &namespace)?;
            }
            (_, false) => {
                prop_assert!(!skip, "a Pod not for the webhook was denied");
                let (code, _, message) = answer.status.as_ref().unwrap();
                prop_assert_eq!(*code, 403, "a well-formed review is not a bad request");
                if inject::parse_annotations(&annotations_of(&pod)).is_err() {
                    prop_assert!(
                        message.starts_with("esi: annotation "),
                        "a bad annotation is not named: {message}"
                    );
                }
            }
        }
        Ok(())
    });
    eprintln!("hostile annotations: {}", tally.show());
    assert!(tally.injected.get() >= 20, "{}", tally.show());
    assert!(tally.denied.get() >= 100, "{}", tally.show());
    assert!(tally.skipped.get() >= 5, "{}", tally.show());
}

// ---------------------------------------------------------------------------------------------
// Property 2: mutated AdmissionReview bytes
// ---------------------------------------------------------------------------------------------

fn uid_of(review: &Value) -> &str {
    review["request"]["uid"].as_str().unwrap()
}

/// The golden Pods' reviews, as the API server sends them.
fn seed_reviews() -> Vec<(Value, Vec<u8>)> {
    seed_pods()
        .iter()
        .map(|(name, pod)| {
            let review = review::pod_create_review(pod, &namespace_of(pod), &format!("uid-{name}"));
            let bytes = serde_json::to_vec(&review).unwrap();
            (review, bytes)
        })
        .collect()
}

/// Whether the canary is only where it was planted (an env value, another tool's annotation):
/// byte edits can splice it into a name or an esi annotation, which are echoed by design.
fn secret_in_place(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let planted = [
        format!("\"value\":\"{CANARY}\""),
        format!("\"vault.example.com/agent-token\":\"{CANARY}\""),
    ];
    text.matches(CANARY).count()
        == planted
            .iter()
            .map(|p| text.matches(p.as_str()).count())
            .sum::<usize>()
}

/// Checks the answer to any body: HTTP 200 with a well-formed `AdmissionReview` that echoes
/// the uid when the body has a readable one (`seed_uid` is the uid before the edits: the
/// webhook reads past nesting a `serde_json::Value` refuses); an injection's patch applies to
/// the object sent, and the result is admitted again unchanged.
fn answered_well(
    hook: &Webhook,
    body: Vec<u8>,
    seed_uid: &str,
    secret_moved: bool,
    tally: &Tally,
) -> Result<(), TestCaseError> {
    let parsed = serde_json::from_slice::<Value>(&body);
    // The webhook's own types skip most of a Pod, and serde_json skips a value without
    // building it: nesting past `Value`'s depth limit, a number beyond f64 or a lone surrogate
    // escape in a skipped field still reads (valid JSON that `Value` cannot hold).
    let beyond_value = parsed.as_ref().is_err_and(|e| {
        let e = e.to_string();
        ["recursion limit", "number out of range", "hex escape"]
            .iter()
            .any(|m| e.contains(m))
    });
    let sent = parsed.ok();
    let sent_text = String::from_utf8_lossy(&body).into_owned();
    let size = body.len();
    let reply = hook.post(body);
    if size > MAX_BODY_BYTES {
        prop_assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        return Ok(());
    }
    prop_assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let answer = answer_of(&reply, secret_moved)?;
    tally.count(&answer);
    match &sent {
        Some(v) => {
            let readable = v.pointer("/request/uid").and_then(Value::as_str);
            prop_assert_eq!(
                answer.uid.as_str(),
                readable.unwrap_or_default(),
                "the uid is not echoed"
            );
        }
        // What `Value` cannot read, the webhook may: its uid is then one the body holds.
        None => prop_assert!(
            answer.uid.is_empty()
                || answer.uid == seed_uid
                || (beyond_value
                    && sent_text.contains(&format!("\"uid\":{}", quoted(&answer.uid)))),
            "a uid out of nowhere: {}",
            answer.uid
        ),
    }
    if let Some(ops) = &answer.patch {
        let Some(sent) = sent else {
            prop_assert!(beyond_value, "a body that is not JSON was injected");
            prop_assert!(
                sent_text.contains(&format!("\"uid\":{}", quoted(&answer.uid))),
                "injected with a uid the body does not hold: {}",
                answer.uid
            );
            return Ok(());
        };
        let object = sent
            .pointer("/request/object")
            .ok_or_else(|| TestCaseError::fail("injected without an object"))?;
        let patched = apply(object, ops)?;
        serde_json::from_value::<esi_webhook::pod::Pod>(patched.clone())
            .map_err(|e| TestCaseError::fail(format!("the patched Pod does not read: {e}")))?;
        if serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(object.clone()).is_ok()
            && names_unique(object)
        {
            injected_consistently(object, &patched, ops, &hook.cfg).map_err(TestCaseError::fail)?;
        }
        let namespace = sent
            .pointer("/request/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let again = hook.admit(&patched, namespace, "uid-again")?;
        prop_assert!(
            again.allowed && again.patch.is_none(),
            "re-admission is not a no-op: {again:?}"
        );
    }
    Ok(())
}

// 3000 cases: ~2 s in a debug build.
#[test]
fn byte_edits_of_real_reviews_get_a_well_formed_answer() {
    let hook = Webhook::new();
    let seeds = seed_reviews();
    let tally = Tally::default();
    let strategy = (any::<u64>(), hostile::edits(3));
    check("byte edits", 3000, &strategy, |(seed, edits)| {
        let (review, bytes) = &seeds[nth(seed, seeds.len())];
        let body = hostile::apply(bytes, &edits);
        let moved = !secret_in_place(&body);
        answered_well(&hook, body, uid_of(review), moved, &tally)
    });
    eprintln!("byte edits: {}", tally.show());
    // Most byte edits break the JSON or its UTF-8; some land inside a string and leave a
    // review that is decided.
    assert!(tally.invalid.get() >= 300, "{}", tally.show());
    assert!(tally.injected.get() >= 8, "{}", tally.show());
    assert!(
        tally.denied.get() + tally.skipped.get() >= 8,
        "{}",
        tally.show()
    );
}

/// A JSON value in place of a node, given as text so it can be what `serde_json::Value`
/// cannot hold (numbers beyond f64, nesting beyond its recursion limit, lone surrogates).
const HOSTILE_JSON: &[&str] = &[
    "null",
    "true",
    "0",
    "-1",
    "1.5",
    "1e400",
    "18446744073709551616",
    "-9223372036854775809",
    "\"\"",
    "\"s3cr3t-CANARY-never-echo\"",
    "\"\\u0000\\u001b[31m\\n\"",
    "\"\\ud800\"",
    "[]",
    "{}",
    "[null]",
    "[{}]",
    "{\"\": {}}",
    "\"CREATE\"",
    "\"Pod\"",
    "[\"s3cr3t-CANARY-never-echo\"]",
    "{\"s3cr3t-CANARY-never-echo\": 1}",
];

/// The `pick`th of `len` things, `pick` spread over all of `u64` (so a shrunk failing input
/// can be replayed by number).
fn nth(pick: u64, len: usize) -> usize {
    ((len as u128 * u128::from(pick)) >> 64) as usize
}

/// The pick that [`nth`] turns into `n` of `len`.
fn pick_of(n: usize, len: usize) -> u64 {
    ((n as u128) << 64).div_ceil(len as u128) as u64
}

/// One structure-aware edit. Nodes are picked among every member and element of the review.
#[derive(Debug, Clone)]
enum StructEdit {
    /// Remove the node (a missing `request.uid`, `object`, `kind`, ...).
    Remove(u64),
    /// Replace it with another JSON value (wrong types at every level).
    Replace(u64, &'static str),
    /// Replace it with arrays or objects nested this deep.
    Nest(u64, usize, bool),
    /// Add an unknown member to the object at (or holding) the node.
    Unknown(u64, String, &'static str),
    /// Repeat the first element of the array at (or holding) the node this many times.
    Grow(u64, usize),
    /// Write the member a second time, before the real one, with another value.
    Duplicate(u64, &'static str),
    /// Put bytes that are not UTF-8 into a string.
    NotUtf8(u64, Vec<u8>),
}

fn struct_edit() -> impl Strategy<Value = StructEdit> {
    prop_oneof![
        2 => any::<u64>().prop_map(StructEdit::Remove),
        3 => (any::<u64>(), select(HOSTILE_JSON)).prop_map(|(i, j)| StructEdit::Replace(i, j)),
        1 => (any::<u64>(), select(&[2usize, 64, 127, 128, 200, 5_000][..]), any::<bool>())
            .prop_map(|(i, d, a)| StructEdit::Nest(i, d, a)),
        2 => (any::<u64>(), "[a-zA-Z$_-]{0,12}", select(HOSTILE_JSON))
            .prop_map(|(i, k, j)| StructEdit::Unknown(i, k, j)),
        1 => (any::<u64>(), select(&[0usize, 2, 100, 2_000][..]))
            .prop_map(|(i, n)| StructEdit::Grow(i, n)),
        2 => (any::<u64>(), select(HOSTILE_JSON)).prop_map(|(i, j)| StructEdit::Duplicate(i, j)),
        1 => (any::<u64>(), prop::collection::vec(0x80u8..=0xff, 1..4))
            .prop_map(|(i, b)| StructEdit::NotUtf8(i, b)),
    ]
}

/// Every node's pointer, parents before children.
fn pointers(v: &Value) -> Vec<String> {
    fn walk(v: &Value, at: &str, out: &mut Vec<String>) {
        let mut visit = |key: &str, child: &Value| {
            let p = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
            out.push(p.clone());
            walk(child, &p, out);
        };
        match v {
            Value::Object(o) => o.iter().for_each(|(k, c)| visit(k, c)),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, c)| visit(&i.to_string(), c)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}

fn parent(pointer: &str) -> (&str, String) {
    let (p, last) = pointer.rsplit_once('/').unwrap();
    (p, last.replace("~1", "/").replace("~0", "~"))
}

/// A placeholder the text edits replace after serialization.
fn slot(n: usize) -> String {
    format!("\u{1}slot{n}\u{1}")
}

/// `text` as serialized inside a JSON string, with its quotes.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// The review with `edits` applied, as bytes; and whether the canary now stands where a
/// string stood (a name, the uid: echoed by design), rather than in a place of another type.
fn edit_review(review: &Value, edits: &[StructEdit]) -> (Vec<u8>, bool) {
    let mut v = review.clone();
    let mut secret_moved = false;
    // Strings and lists (of strings: commands) are echoed by design, as names, commands, or
    // the unknown variant of an enum (`operation`); objects never are.
    let echoable = |v: &Value| v.is_string() || v.is_array();
    // (what the serialized review holds, the bytes it becomes): written in at the end.
    let mut raw: Vec<(String, Vec<u8>)> = Vec::new();
    for e in edits {
        let all = pointers(&v);
        if all.is_empty() {
            break;
        }
        let pick = |i: &u64| all[nth(*i, all.len())].clone();
        let s = slot(raw.len());
        match e {
            StructEdit::Remove(i) => {
                let p = pick(i);
                let (at, key) = parent(&p);
                match v.pointer_mut(at) {
                    Some(Value::Object(o)) => {
                        o.remove(&key);
                    }
                    Some(Value::Array(a)) => {
                        a.remove(key.parse::<usize>().unwrap());
                    }
                    _ => {}
                }
            }
            StructEdit::Replace(i, text) => {
                let node = v.pointer_mut(&pick(i)).unwrap();
                secret_moved |= echoable(node) && text.contains(CANARY);
                *node = json!(s);
                raw.push((quoted(&s), text.as_bytes().to_vec()));
            }
            StructEdit::Nest(i, depth, arrays) => {
                *v.pointer_mut(&pick(i)).unwrap() = json!(s);
                let text = if *arrays {
                    format!("{}{}", "[".repeat(*depth), "]".repeat(*depth))
                } else {
                    format!("{}0{}", "{\"a\":".repeat(*depth), "}".repeat(*depth))
                };
                raw.push((quoted(&s), text.into_bytes()));
            }
            StructEdit::Unknown(i, key, text) => {
                let p = pick(i);
                let target = match v.pointer(&p) {
                    Some(Value::Object(_)) => p,
                    _ => parent(&p).0.to_owned(),
                };
                if let Some(Value::Object(o)) = v.pointer_mut(&target) {
                    o.insert(key.clone(), json!(s));
                    raw.push((quoted(&s), text.as_bytes().to_vec()));
                }
            }
            StructEdit::Grow(i, n) => {
                let p = pick(i);
                let target = match v.pointer(&p) {
                    Some(Value::Array(_)) => p,
                    _ => parent(&p).0.to_owned(),
                };
                if let Some(Value::Array(a)) = v.pointer_mut(&target) {
                    let first = a.first().cloned().unwrap_or(json!({}));
                    a.extend(std::iter::repeat_n(first, *n));
                }
            }
            StructEdit::Duplicate(i, text) => {
                // `"key": <text>` right before the real member (a placeholder member holds
                // its place): where duplicates are accepted, the last one wins.
                let p = pick(i);
                let (at, key) = parent(&p);
                if let Some(Value::Object(o)) = v.pointer_mut(at) {
                    secret_moved |= o.get(&key).is_some_and(echoable) && text.contains(CANARY);
                    let mut copy = Map::new();
                    for (k, val) in std::mem::take(o) {
                        if k == key {
                            copy.insert(s.clone(), Value::Null);
                        }
                        copy.insert(k, val);
                    }
                    *o = copy;
                    let member = format!("{}:{text}", quoted(&key));
                    raw.push((format!("{}:null", quoted(&s)), member.into_bytes()));
                }
            }
            StructEdit::NotUtf8(i, bytes) => {
                if let Some(Value::String(text)) = v.pointer_mut(&pick(i)) {
                    text.push_str(&s);
                    let inside = quoted(&s);
                    raw.push((inside[1..inside.len() - 1].to_owned(), bytes.clone()));
                }
            }
        }
    }
    let mut out = serde_json::to_vec(&v).unwrap();
    for (needle, text) in &raw {
        if let Some(at) = out
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
        {
            out.splice(at..at + needle.len(), text.iter().copied());
        }
    }
    (out, secret_moved)
}

// 1500 cases: ~3 s in a debug build.
#[test]
fn structurally_hostile_reviews_get_a_well_formed_answer() {
    let hook = Webhook::new();
    let seeds = seed_reviews();
    let tally = Tally::default();
    let strategy = (any::<u64>(), prop::collection::vec(struct_edit(), 1..4));
    check("structural edits", 1500, &strategy, |(seed, edits)| {
        let (review, _) = &seeds[nth(seed, seeds.len())];
        let (body, moved) = edit_review(review, &edits);
        answered_well(&hook, body, uid_of(review), moved, &tally)
    });
    eprintln!("structural edits: {}", tally.show());
    assert!(tally.invalid.get() >= 100, "{}", tally.show());
    assert!(tally.injected.get() >= 10, "{}", tally.show());
}

// ---------------------------------------------------------------------------------------------
// The harness is live, and the edits do what they say
// ---------------------------------------------------------------------------------------------

/// Unmutated, every golden Pod gets the decision pinned in `tests/golden/expected/` through
/// the router, and every patch passes the consistency checks above.
#[test]
fn the_unmutated_corpus_gets_its_golden_decisions_through_the_router() {
    let hook = Webhook::new();
    for (name, pod) in seed_pods() {
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(golden_dir().join(format!("expected/{name}.json"))).unwrap(),
        )
        .unwrap();
        let namespace = namespace_of(&pod);
        let answer = hook.admit(&pod, &namespace, "uid-golden").unwrap();
        let result = match (answer.allowed, &answer.patch) {
            (true, Some(_)) => "injected",
            (true, None) => "skipped",
            (false, _) => "denied",
        };
        assert_eq!(expected["result"], result, "{name}");
        if let Some(ops) = &answer.patch {
            let patched = apply(&pod, ops).unwrap();
            injected_consistently(&pod, &patched, ops, &hook.cfg)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            readmitted_unchanged(&hook, &patched, &namespace).unwrap();
        }
        assert!(
            answer.warnings.iter().all(|w| !w.contains(CANARY)),
            "{name}"
        );
    }
}

/// The shapes the properties reach at random, pinned: each is a 400 over HTTP 200 that
/// echoes the uid when the body holds a readable one.
#[test]
fn malformed_reviews_are_bad_requests_with_their_uid() {
    let hook = Webhook::new();
    let pod = json!({"metadata": {"labels": {"esi.dev/inject": "true"}}, "spec": {"containers": [{"name": "app"}]}});
    let good = review::pod_create_review(&pod, "payments", "u1");
    let without = |pointer: &str| {
        let mut v = good.clone();
        let (at, key) = parent(pointer);
        v.pointer_mut(at)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(&key);
        serde_json::to_vec(&v).unwrap()
    };
    let with = |pointer: &str, value: Value| {
        let mut v = good.clone();
        *v.pointer_mut(pointer).unwrap() = value;
        serde_json::to_vec(&v).unwrap()
    };
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"".to_vec(), "", "malformed AdmissionReview JSON"),
        (b"null".to_vec(), "", "only admission.k8s.io/v1"),
        (b"[]".to_vec(), "", "only admission.k8s.io/v1"),
        (
            b"{\"apiVersion\":\"admission.k8s.io/v1\"}".to_vec(),
            "",
            "valid Pod request",
        ),
        (without("/request/uid"), "", "uid"),
        (without("/request/object"), "u1", "without an object"),
        (with("/request", Value::Null), "", "no request"),
        (with("/request/uid", json!(7)), "", "valid Pod request"),
        (
            with("/request/object/spec/containers", json!({"name": "app"})),
            "u1",
            "valid Pod request",
        ),
        (
            with("/request/object/metadata/labels", json!(["a"])),
            "u1",
            "valid Pod request",
        ),
        (
            with("/request/operation", json!("CREATE\u{1b}[31m")),
            "u1",
            "unknown variant",
        ),
        // The review and the request's parts are objects, as the Pod's are: serde's derive
        // alone read these arrays by position.
        (
            serde_json::to_vec(&json!([
                "admission.k8s.io/v1",
                "AdmissionReview",
                good["request"]
            ]))
            .unwrap(),
            "",
            "only admission.k8s.io/v1",
        ),
        (
            with("/request/kind", json!(["", "v1", "Pod"])),
            "u1",
            "valid Pod request",
        ),
        (
            with("/request/resource", json!(["", "v1", "pods"])),
            "u1",
            "valid Pod request",
        ),
    ];
    for (body, uid, want) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let reply = hook.post(body);
        assert_eq!(reply.status, StatusCode::OK, "{shown}");
        let answer = answer_of(&reply, false).unwrap_or_else(|e| panic!("{shown}: {e}"));
        assert_eq!(answer.uid, uid, "{shown}");
        let (code, reason, message) = answer.status.expect("refused");
        assert_eq!((code, reason.as_str()), (400, "BadRequest"), "{shown}");
        assert!(message.contains(want), "{shown}: {message}");
    }
}

/// Found by the byte edits: a container mounting a volume the Pod does not define (the API
/// server validates after the webhooks) got the federation token, or the credentials volume
/// read-write, through it once the webhook added a volume of that name.
#[test]
fn a_mount_of_an_undefined_volume_is_not_captured_by_the_injected_volumes() {
    let hook = Webhook::new();
    for dangling in [inject::TOKEN_VOLUME_NAME, inject::VOLUME_NAME] {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "api", "labels": {"esi.dev/inject": "true"},
                         "annotations": {"esi.dev/generators": "db=payments/Password/p",
                                         "esi.dev/env": "A=db.password"}},
            "spec": {"securityContext": {"runAsUser": 1000},
                     "containers": [{"name": "app", "image": "x", "command": ["/app"],
                                     "volumeMounts": [{"name": dangling, "mountPath": "/var/run/x"}]}]}
        });
        let answer = hook.admit(&pod, "payments", "u").unwrap();
        let ops = answer.patch.as_ref().expect("injected");
        let patched = apply(&pod, ops).unwrap();
        injected_consistently(&pod, &patched, ops, &hook.cfg).unwrap();
        let added: Vec<&Value> = list(&patched["spec"], "volumes")
            .iter()
            .map(|v| &v["name"])
            .collect();
        assert!(!added.contains(&&json!(dangling)), "{dangling}: {added:?}");
    }
}

/// Found by the hostile annotations: `esi.dev/run-as` took any u32, and the esi-cli
/// containers then ran as an id Kubernetes refuses (over 2^31-1), failing the Pod on a
/// container its author never wrote.
#[test]
fn ids_kubernetes_refuses_are_denied_naming_their_source() {
    let hook = Webhook::new();
    let pod = |run_as: Option<&str>, run_as_user: i64| {
        let mut annotations = json!({"esi.dev/generators": "db=payments/Password/p",
                                     "esi.dev/env": "A=db.password"});
        if let Some(r) = run_as {
            annotations[inject::ANN_RUN_AS] = json!(r);
        }
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "api", "labels": {"esi.dev/inject": "true"}, "annotations": annotations},
            "spec": {"securityContext": {"runAsUser": run_as_user},
                     "containers": [{"name": "app", "image": "x", "command": ["/app"]}]}
        })
    };
    for (p, want) in [
        (pod(Some("4294967295"), 1000), "esi.dev/run-as"),
        (pod(Some("1000:2147483648"), 1000), "esi.dev/run-as"),
        (pod(None, 3_000_000_000), "runAsUser 3000000000"),
    ] {
        let answer = hook.admit(&p, "payments", "u").unwrap();
        let (code, _, message) = answer.status.expect("denied");
        assert_eq!(code, 403);
        assert!(message.contains(want), "{message}");
    }
    let answer = hook
        .admit(&pod(Some("2147483647"), 1000), "payments", "u")
        .unwrap();
    assert!(answer.patch.is_some(), "{answer:?}");
}

/// Found by the hostile annotations: an unknown key, or a container name, with control
/// characters was echoed as sent in the denial `kubectl` prints.
#[test]
fn denials_escape_what_the_pod_sent() {
    let hook = Webhook::new();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "api", "labels": {"esi.dev/inject": "true"},
                     "annotations": {"esi.dev/generators": "db=payments/Password/p",
                                     "esi.dev/containers": "app"}},
        "spec": {"securityContext": {"runAsUser": 1000},
                 "containers": [{"name": "web\n\u{1b}[2J", "image": "x", "command": ["/app"]}]}
    });
    let answer = hook.admit(&pod, "payments", "u").unwrap();
    let (_, _, message) = answer.status.expect("denied");
    assert!(message.contains("web\\n\\u{1b}[2J"), "{message}");
    let mut keyed = pod.clone();
    keyed["metadata"]["annotations"]["esi.dev/env.app\u{1b}[31m"] = json!("A=db.k");
    let answer = hook.admit(&keyed, "payments", "u").unwrap();
    let (_, _, message) = answer.status.expect("denied");
    assert!(message.contains("\\u{1b}[31m"), "{message}");
    let mut long = pod.clone();
    long["spec"]["containers"][0]["name"] = json!("c".repeat(5000));
    let answer = hook.admit(&long, "payments", "u").unwrap();
    let (_, _, message) = answer.status.expect("denied");
    assert!(
        message.len() <= review::MAX_MESSAGE_BYTES && message.ends_with('…'),
        "{message}"
    );
}

/// A URL off the allow-list as long as an annotation may be is shortened, and the reason
/// stays in the message.
#[test]
fn a_long_federation_url_leaves_room_for_the_reason() {
    let hook = Webhook::new();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "api", "labels": {"esi.dev/inject": "true"},
                     "annotations": {"esi.dev/generators": "db=payments/Password/p",
                                     "esi.dev/env": "A=db.password",
                                     "esi.dev/federation-url": format!("https://esi.example.com/{}", "a".repeat(10_000))}},
        "spec": {"securityContext": {"runAsUser": 1000},
                 "containers": [{"name": "app", "image": "x", "command": ["/app"]}]}
    });
    let answer = hook.admit(&pod, "payments", "u").unwrap();
    let (_, _, message) = answer.status.expect("denied");
    assert!(
        message.contains("a… is not on the webhook's allow-list"),
        "{message}"
    );
    assert!(message.ends_with("federation.allowedUrls)"), "{message}");
}

/// Found by the structural edits: serde's derive read a container written as an array of its
/// fields; the answer was an injection whose patch could not apply.
#[test]
fn a_container_written_as_an_array_is_a_bad_request() {
    let hook = Webhook::new();
    for containers in [json!([[]]), json!([["app", ["/app"]]])] {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "api", "labels": {"esi.dev/inject": "true"},
                         "annotations": {"esi.dev/generators": "db=payments/Password/p",
                                         "esi.dev/env": "A=db.password"}},
            "spec": {"securityContext": {"runAsUser": 1000}, "containers": containers}
        });
        let answer = hook.admit(&pod, "payments", "u").unwrap();
        let (code, _, message) = answer.status.expect("refused");
        assert_eq!(code, 400, "{message}");
        assert!(message.contains("valid Pod request"), "{message}");
    }
}

/// The same for the structs inside the spec and its containers: a security context, a mount
/// or a volume written as an array of its fields was read by position (`[1000]` as
/// `{runAsUser: 1000}`) and the Pod injected. Each is a 400, as a container written so is.
#[test]
fn a_security_context_mount_or_volume_written_as_an_array_is_a_bad_request() {
    let hook = Webhook::new();
    let pod = |spec: Value| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "api", "labels": {"esi.dev/inject": "true"},
                         "annotations": {"esi.dev/generators": "db=payments/Password/p",
                                         "esi.dev/env": "A=db.password"}},
            "spec": spec
        })
    };
    let app = |extra: Value| {
        let mut c = json!({"name": "app", "image": "x", "command": ["/app"]});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let well_formed = pod(json!({
        "securityContext": {"runAsUser": 1000},
        "containers": [app(json!({"securityContext": {"runAsUser": 1000},
                                  "volumeMounts": [{"name": "v", "mountPath": "/v"}]}))],
        "volumes": [{"name": "v", "emptyDir": {}}]
    }));
    assert!(
        hook.admit(&well_formed, "payments", "u")
            .unwrap()
            .patch
            .is_some(),
        "the same Pod with objects is injected"
    );
    for spec in [
        json!({"securityContext": [1000], "containers": [app(json!({}))]}),
        json!({"securityContext": {"runAsUser": 1000},
               "containers": [app(json!({"securityContext": [1000]}))]}),
        json!({"securityContext": {"runAsUser": 1000},
               "containers": [app(json!({"volumeMounts": [["v", "/v"]]}))],
               "volumes": [{"name": "v", "emptyDir": {}}]}),
        json!({"securityContext": {"runAsUser": 1000},
               "containers": [app(json!({}))], "volumes": [["v"]]}),
    ] {
        let p = pod(spec);
        let answer = hook.admit(&p, "payments", "u").unwrap();
        let (code, reason, message) = answer.status.unwrap_or_else(|| panic!("admitted {p}"));
        assert_eq!((code, reason.as_str()), (400, "BadRequest"), "{message}");
        assert!(message.contains("valid Pod request"), "{message}");
    }
}

#[test]
fn structural_edits_produce_the_hostile_shapes() {
    let review = json!({"request": {"uid": "u", "object": {"a": [1]}}});
    let edited =
        |e: StructEdit| String::from_utf8_lossy(&edit_review(&review, &[e]).0).into_owned();
    assert_eq!(
        edited(StructEdit::Replace(
            index_of(&review, "/request/uid"),
            "1e400"
        )),
        r#"{"request":{"object":{"a":[1]},"uid":1e400}}"#
    );
    assert_eq!(
        edited(StructEdit::Duplicate(
            index_of(&review, "/request/uid"),
            "\"x\""
        )),
        r#"{"request":{"uid":"x","object":{"a":[1]},"uid":"u"}}"#
    );
    assert_eq!(
        edited(StructEdit::Remove(index_of(&review, "/request/uid"))),
        r#"{"request":{"object":{"a":[1]}}}"#
    );
    assert_eq!(
        edited(StructEdit::Nest(
            index_of(&review, "/request/object/a"),
            2,
            true
        )),
        r#"{"request":{"object":{"a":[[]]},"uid":"u"}}"#
    );
    assert_eq!(
        edited(StructEdit::Grow(
            index_of(&review, "/request/object/a/0"),
            2
        )),
        r#"{"request":{"object":{"a":[1,1,1]},"uid":"u"}}"#
    );
    assert_eq!(
        edited(StructEdit::Unknown(
            index_of(&review, "/request/object"),
            "zz".into(),
            "[]"
        )),
        r#"{"request":{"object":{"a":[1],"zz":[]},"uid":"u"}}"#
    );
    let (bytes, _) = edit_review(
        &review,
        &[StructEdit::NotUtf8(
            index_of(&review, "/request/uid"),
            vec![0xff],
        )],
    );
    assert_eq!(
        bytes,
        b"{\"request\":{\"object\":{\"a\":[1]},\"uid\":\"u\xff\"}}"
    );
}

/// The pick of `pointer` among the review's nodes.
fn index_of(review: &Value, pointer: &str) -> u64 {
    let all = pointers(review);
    let n = all.iter().position(|x| x == pointer).unwrap();
    assert_eq!(nth(pick_of(n, all.len()), all.len()), n);
    pick_of(n, all.len())
}
