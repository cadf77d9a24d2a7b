//! `esi-webhook inject`: the webhook's injection applied to manifests before they reach a
//! cluster, the way `istioctl kube-inject` and `linkerd inject` do it: for a GitOps pipeline
//! that commits what Pods will run, for a cluster where the webhook is not installed, and to
//! see what the webhook would do to a Pod.
//!
//! Every Pod, and every Pod template of a Deployment, StatefulSet, DaemonSet, ReplicaSet,
//! ReplicationController, Job or CronJob (in a `List` too), goes through the very decision the
//! webhook makes at admission ([`crate::server::admit`]): the same configuration, the same
//! patch, the same denials, the same entrypoint lookups when `entrypointLookup` is on. The
//! patched template carries `esi.dev/status: injected`, so the webhook admits its Pods
//! unchanged.
//!
//! The webhook reads a Pod's ServiceAccount for its `esi.dev/` defaults; here, the
//! ServiceAccounts are those of the input. A Pod whose ServiceAccount is not in the input is
//! injected without defaults, with a warning: the webhook will not add them later, since it
//! skips injected Pods.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::AppState;
use crate::mutate::wants_injection;
use crate::review::{self, Decision, Parsed, Reviewed};
use crate::service_account::{esi_annotations, pod_service_account};

/// The manifests once injected, and what their author should read.
#[derive(Debug, Default)]
pub struct Injected {
    /// The documents, in order; the Pods the webhook would patch are patched.
    pub documents: Vec<Value>,
    /// Warnings, notable skips and denials, each naming its object.
    pub notes: Vec<String>,
    /// How many Pods (or templates) were injected.
    pub injected: usize,
    /// Whether a Pod was denied: the manifests must not be applied as they are.
    pub denied: bool,
}

/// Reads manifests: YAML (JSON is YAML), several documents, empty ones dropped. Read as
/// `kubectl` reads them (go-yaml's YAML 1.1): `0440` is octal, `yes` and `on` are booleans.
/// An error says where, never quoting the text: manifests hold Secrets.
pub fn parse(text: &str) -> Result<Vec<Value>, serde_saphyr::Error> {
    // Non-exhaustive: start from the defaults and set fields.
    let mut budget = serde_saphyr::budget::Budget::default();
    // A `kustomize build` of a whole application, CRDs included.
    budget.max_documents = 100_000;
    budget.max_nodes = 20_000_000;
    budget.max_events = 80_000_000;
    budget.max_depth = 256;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.legacy_octal_numbers = true;
    options.with_snippet = false;
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Where the Pod of a manifest sits: the whole document, or its template.
fn pod_pointer(doc: &Value) -> Option<&'static str> {
    match doc.get("kind")?.as_str()? {
        "Pod" => Some(""),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn is_list(doc: &Value) -> bool {
    doc.get("kind").and_then(Value::as_str) == Some("List") && doc.get("items").is_some()
}

fn metadata_str<'a>(doc: &'a Value, field: &str) -> Option<&'a str> {
    doc.get("metadata")?.get(field)?.as_str()
}

/// `Kind namespace/name`, as notes name an object.
fn describe(doc: &Value, namespace: &str) -> String {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("object");
    let name = metadata_str(doc, "name")
        .or_else(|| metadata_str(doc, "generateName"))
        .unwrap_or("(no name)");
    format!("{kind} {namespace}/{name}")
}

/// The `esi.dev/` annotations of every ServiceAccount of `docs` (lists included), by
/// namespace and name.
fn service_accounts(
    docs: &[Value],
    namespace: &str,
) -> HashMap<(String, String), BTreeMap<String, String>> {
    let mut found = HashMap::new();
    for doc in docs {
        if is_list(doc) {
            if let Some(items) = doc["items"].as_array() {
                found.extend(service_accounts(items, namespace));
            }
            continue;
        }
        if doc.get("kind").and_then(Value::as_str) != Some("ServiceAccount") {
            continue;
        }
        let Some(name) = metadata_str(doc, "name") else {
            continue;
        };
        let ns = metadata_str(doc, "namespace").unwrap_or(namespace);
        let annotations = doc
            .pointer("/metadata/annotations")
            .cloned()
            .and_then(|a| serde_json::from_value(a).ok());
        found.insert(
            (ns.to_owned(), name.to_owned()),
            esi_annotations(annotations),
        );
    }
    found
}

/// Injects the Pods of `docs` as the webhook configured by `state` would; objects that name
/// no namespace are taken to be in `namespace`.
pub async fn inject(state: &AppState, docs: Vec<Value>, namespace: &str) -> Injected {
    let accounts = service_accounts(&docs, namespace);
    let mut out = Injected::default();
    for doc in docs {
        let doc = inject_document(state, doc, namespace, &accounts, &mut out).await;
        out.documents.push(doc);
    }
    out
}

async fn inject_document(
    state: &AppState,
    mut doc: Value,
    namespace: &str,
    accounts: &HashMap<(String, String), BTreeMap<String, String>>,
    out: &mut Injected,
) -> Value {
    if is_list(&doc) {
        if let Some(items) = doc["items"].as_array_mut() {
            for item in items.iter_mut() {
                let taken = std::mem::take(item);
                *item = Box::pin(inject_document(state, taken, namespace, accounts, out)).await;
            }
        }
        return doc;
    }
    let Some(pointer) = pod_pointer(&doc) else {
        return doc;
    };
    let ns = metadata_str(&doc, "namespace")
        .unwrap_or(namespace)
        .to_owned();
    let what = describe(&doc, &ns);
    let Some(template) = doc.pointer(pointer) else {
        out.notes
            .push(format!("{what}: has no {pointer}, left as it is"));
        return doc;
    };
    // A template is a Pod's metadata and spec; the review wants the Pod.
    let mut pod = if pointer.is_empty() {
        template.clone()
    } else {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
            "spec": template.get("spec").cloned().unwrap_or(Value::Null),
        })
    };
    let body = review::pod_create_review(&pod, &ns, "esi-inject").to_string();
    let reviewed = match review::parse(body.as_bytes()) {
        Parsed::Answered(r) => *r,
        Parsed::Pod(req) => {
            let mut sa = None;
            if wants_injection(&req.pod, &req.namespace, &state.config) {
                let name = pod_service_account(&req.pod);
                sa = accounts.get(&(req.namespace.clone(), name.to_owned()));
                if sa.is_none() {
                    out.notes.push(format!(
                        "{what}: warning: ServiceAccount {}/{name} is not in the input; the \
                         esi.dev/ defaults it may hold are not applied (the webhook will not add \
                         them: it admits injected Pods as they are)",
                        req.namespace
                    ));
                }
            }
            crate::server::admit(state, req, sa).await
        }
    };
    let Reviewed {
        response,
        decision,
        detail,
        ..
    } = reviewed;
    let answer = response.response;
    for warning in &answer.warnings {
        out.notes.push(format!("{what}: warning: {warning}"));
    }
    match decision {
        Decision::Injected => {}
        Decision::Skipped => {
            if detail != crate::mutate::SkipReason::NotOptedIn.as_str() {
                out.notes.push(format!("{what}: left as it is ({detail})"));
            }
            return doc;
        }
        Decision::Denied | Decision::Invalid => {
            let message = answer.status.map_or(detail, |s| s.message);
            out.notes.push(format!("{what}: denied: {message}"));
            out.denied = true;
            return doc;
        }
    }
    let patched = answer
        .patch
        .as_ref()
        .and_then(|p| {
            base64::engine::general_purpose::STANDARD
                .decode(p.as_str())
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<json_patch::Patch>(&bytes).ok())
        .map(|patch| json_patch::patch(&mut pod, &patch));
    if !matches!(patched, Some(Ok(()))) {
        // The webhook's own patch always applies to the Pod it was made for (the golden tests
        // check it); this is a bug, said as one.
        out.notes.push(format!(
            "{what}: the webhook's patch does not apply to the Pod (a bug of esi-webhook)"
        ));
        out.denied = true;
        return doc;
    }
    out.injected += 1;
    if pointer.is_empty() {
        return pod;
    }
    if let Some(template) = doc.pointer_mut(pointer).and_then(Value::as_object_mut) {
        template.insert("metadata".to_owned(), pod["metadata"].take());
        template.insert("spec".to_owned(), pod["spec"].take());
    }
    doc
}
