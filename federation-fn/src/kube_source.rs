//! Kubernetes mode: the configuration comes from the esi.dev CRDs, listed and watched through
//! the Kubernetes API (kube's watcher + reflector, which relists on expiry and resyncs).
//!
//! Every change (debounced) rebuilds a snapshot from all watched resources and swaps it in
//! atomically. Unlike file mode, one invalid resource does not block the rest: it is left out,
//! logged with the field at fault and counted in `esi_federation_invalid_resources`, while every
//! valid resource keeps working. Until every kind has been listed once, no snapshot is installed
//! (readiness stays false).
//!
//! Each resource's `status.conditions` gets a `Ready` condition: `True`/`Accepted`, or
//! `False`/`Invalid` with the problem (field and message). Status is patched only when it
//! changes, so several replicas converge without a write storm.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use std::collections::HashMap;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::Notify;

use crate::config::{self, Document};
use crate::state::AppState;

/// The API resources of every esi kind, from the generated CRDs.
pub fn api_resources() -> Vec<(ApiResource, bool)> {
    crate::crds()
        .into_iter()
        .map(|crd| {
            let version = crd
                .spec
                .versions
                .first()
                .map(|v| v.name.clone())
                .unwrap_or_default();
            let ar = ApiResource {
                group: crd.spec.group.clone(),
                version: version.clone(),
                api_version: format!("{}/{version}", crd.spec.group),
                kind: crd.spec.names.kind.clone(),
                plural: crd.spec.names.plural.clone(),
            };
            (ar, crd.spec.scope == "Namespaced")
        })
        .collect()
}

fn origin_of(ar: &ApiResource, obj: &DynamicObject) -> String {
    let name = obj.metadata.name.as_deref().unwrap_or_default();
    match &obj.metadata.namespace {
        Some(ns) => format!("kubernetes:{}/{ns}/{name}", ar.plural),
        None => format!("kubernetes:{}/{name}", ar.plural),
    }
}

fn to_document(ar: &ApiResource, obj: &DynamicObject) -> Document {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let mut metadata = serde_json::json!({ "name": name });
    if let Some(ns) = &obj.metadata.namespace {
        metadata["namespace"] = serde_json::json!(ns);
    }
    if let Some(labels) = &obj.metadata.labels {
        metadata["labels"] = serde_json::json!(labels);
    }
    let origin = origin_of(ar, obj);
    Document {
        origin,
        value: serde_json::json!({
            "apiVersion": ar.api_version,
            "kind": ar.kind,
            "metadata": metadata,
            "spec": obj.data.get("spec").cloned().unwrap_or(serde_json::Value::Null),
        }),
    }
}

/// Watches every esi kind and keeps `state`'s snapshot in step with the cluster. Runs until
/// the task is dropped.
pub async fn run(state: AppState, client: kube::Client, debounce: Duration) {
    let changed = Arc::new(Notify::new());
    let mut stores: Vec<(ApiResource, Store<DynamicObject>)> = Vec::new();
    for (ar, _namespaced) in api_resources() {
        let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        let store = writer.as_reader();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        );
        let notify = changed.clone();
        let kind = ar.kind.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(_) => notify.notify_one(),
                    Err(e) => {
                        tracing::warn!(kind = %kind, error = %e, "watch of esi resources failed; retrying")
                    }
                }
            }
        });
        stores.push((ar, store));
    }
    for (ar, store) in &stores {
        if store.wait_until_ready().await.is_err() {
            tracing::error!(kind = %ar.kind, "watch ended before the first list");
            return;
        }
    }
    tracing::info!("initial list of esi resources complete");
    loop {
        rebuild(&state, &client, &stores).await;
        changed.notified().await;
        // Debounce: a burst of events (an apply of many manifests) yields one rebuild.
        tokio::time::sleep(debounce).await;
    }
}

/// Rebuilds and installs the snapshot from the stores, then brings every resource's `Ready`
/// condition up to date. Validating and compiling thousands of resources takes tens of
/// milliseconds, so it runs on the blocking pool: on a current-thread runtime (one CPU) it
/// would otherwise hold up every request for as long.
async fn rebuild(
    state: &AppState,
    client: &kube::Client,
    stores: &[(ApiResource, Store<DynamicObject>)],
) {
    // The objects this snapshot is built from; their statuses below describe the same ones
    // (an object added meanwhile is not marked Accepted before it is served).
    let listed: Arc<Vec<(ApiResource, Vec<Arc<DynamicObject>>)>> = Arc::new(
        stores
            .iter()
            .map(|(ar, store)| {
                let mut objects = store.state();
                objects.sort_by(|a, b| {
                    (&a.metadata.namespace, &a.metadata.name)
                        .cmp(&(&b.metadata.namespace, &b.metadata.name))
                });
                (ar.clone(), objects)
            })
            .collect(),
    );
    let build = {
        let (state, listed) = (state.clone(), listed.clone());
        move || {
            let mut docs = Vec::new();
            for (ar, objects) in listed.iter() {
                docs.extend(objects.iter().map(|o| to_document(ar, o)));
            }
            let (resources, mut problems) = config::parse_resources_lenient(docs);
            let (snapshot, more) =
                config::build_snapshot_lenient(resources, &state, "kubernetes".to_owned());
            problems.extend(more);
            (snapshot, problems)
        }
    };
    let (snapshot, problems) = match tokio::task::spawn_blocking(build).await {
        Ok(built) => built,
        Err(e) => {
            // The last snapshot keeps serving; the next change tries again.
            tracing::error!(error = %e, "rebuilding the configuration failed");
            return;
        }
    };
    for p in &problems {
        tracing::error!(problem = %p, "invalid esi resource left out of the configuration");
    }
    state.metrics.invalid_resources(problems.len());
    state.install(snapshot);

    let mut by_origin: HashMap<&str, Vec<String>> = HashMap::new();
    for p in &problems {
        let what = if p.field.is_empty() {
            p.message.clone()
        } else {
            format!("{}: {}", p.field, p.message)
        };
        by_origin.entry(p.origin.as_str()).or_default().push(what);
    }
    let mut patches = Vec::new();
    for (ar, objects) in listed.iter() {
        for obj in objects {
            let (status, reason, message) = match by_origin.get(origin_of(ar, obj).as_str()) {
                Some(problems) => {
                    let mut m = problems.join("; ");
                    esi_api::json::truncate_at_char_boundary(&mut m, 1024);
                    ("False", "Invalid", m)
                }
                None => (
                    "True",
                    "Accepted",
                    "accepted by the esi federation".to_owned(),
                ),
            };
            let current = obj
                .data
                .get("status")
                .and_then(|s| s.get("conditions"))
                .and_then(|c| c.as_array())
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
            let generation = serde_json::json!(obj.metadata.generation);
            if current.is_some_and(|c| {
                c["status"] == status
                    && c["reason"] == reason
                    && c["message"] == message.as_str()
                    && c["observedGeneration"] == generation
            }) {
                continue;
            }
            let condition = serde_json::json!({
                "type": "Ready",
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": jiff::Timestamp::now().to_string(),
                "observedGeneration": generation,
            });
            let api: Api<DynamicObject> = match &obj.metadata.namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
                None => Api::all_with(client.clone(), ar),
            };
            let name = obj.metadata.name.clone().unwrap_or_default();
            patches.push((api, ar.kind.clone(), name, condition));
        }
    }
    if patches.is_empty() {
        return;
    }
    // A few at a time: at start every resource may need one, and thousands of PATCH requests
    // at once would only queue in the API server's priority and fairness.
    tokio::spawn(
        futures_util::stream::iter(patches).for_each_concurrent(
            STATUS_PATCHES_AT_ONCE,
            |(api, kind, name, condition)| async move {
                let patch =
                    Patch::Merge(serde_json::json!({ "status": { "conditions": [condition] } }));
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &patch)
                    .await
                {
                    tracing::warn!(kind = %kind, name = %name, error = %e, "cannot update the resource's status");
                }
            },
        ),
    );
}

/// How many status updates are sent to the API server at once.
const STATUS_PATCHES_AT_ONCE: usize = 8;
