//! Kubernetes mode: the kube watcher against a loopback FAKE of the Kubernetes API server that
//! implements exactly what the federation uses — list and watch of the esi.dev CRDs. A new
//! Authorization takes effect, a deleted one stops matching, an invalid one is reported and
//! left out while the rest keep working.

#![cfg(feature = "kubernetes")]
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use esi_federation::lease::LeaseKeys;
use esi_federation::state::AppState;
use serde_json::{Value, json};

/// The fake API server's state: objects per plural, a global resourceVersion and an event log
/// that watches replay from the version they ask for.
#[derive(Default)]
struct FakeApi {
    inner: Mutex<Inner>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    objects: HashMap<String, BTreeMap<(String, String), Value>>,
    log: Vec<(String, u64, &'static str, Value)>,
}

impl FakeApi {
    fn apply(&self, plural: &str, mut obj: Value) {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        obj["metadata"]["uid"] =
            json!(format!("uid-{}", obj["metadata"]["name"].as_str().unwrap()));
        let key = (
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            obj["metadata"]["name"].as_str().unwrap().to_owned(),
        );
        // Each write of the spec is a new generation, as the API server counts them.
        let generation = inner
            .objects
            .get(plural)
            .and_then(|m| m.get(&key))
            .and_then(|o| o["metadata"]["generation"].as_i64())
            .unwrap_or(0)
            + 1;
        obj["metadata"]["generation"] = json!(generation);
        let kind = if inner
            .objects
            .entry(plural.to_owned())
            .or_default()
            .insert(key, obj.clone())
            .is_some()
        {
            "MODIFIED"
        } else {
            "ADDED"
        };
        inner.log.push((plural.to_owned(), rv, kind, obj));
        drop(inner);
        self.changed.notify_waiters();
    }

    fn patch_status(&self, plural: &str, namespace: &str, name: &str, patch: &Value) -> bool {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        let Some(obj) = inner
            .objects
            .get_mut(plural)
            .and_then(|m| m.get_mut(&(namespace.to_owned(), name.to_owned())))
        else {
            return false;
        };
        // JSON merge patch of `status` (arrays are replaced, as RFC 7386 says).
        obj["status"] = patch["status"].clone();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let obj = obj.clone();
        inner.log.push((plural.to_owned(), rv, "MODIFIED", obj));
        drop(inner);
        self.changed.notify_waiters();
        true
    }

    /// The object and its `Ready` condition.
    fn ready_condition(&self, plural: &str, namespace: &str, name: &str) -> Option<(Value, Value)> {
        let inner = self.inner.lock().unwrap();
        let obj = inner
            .objects
            .get(plural)?
            .get(&(namespace.to_owned(), name.to_owned()))?;
        let c = obj["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?;
        Some((obj.clone(), c.clone()))
    }

    /// The `Ready` condition's status and message.
    fn ready(&self, plural: &str, namespace: &str, name: &str) -> Option<(String, String)> {
        let (_, c) = self.ready_condition(plural, namespace, name)?;
        Some((
            c["status"].as_str()?.to_owned(),
            c["message"].as_str()?.to_owned(),
        ))
    }

    /// The `Ready` condition's `observedGeneration` and the object's `generation`.
    fn generations(&self, plural: &str, namespace: &str, name: &str) -> Option<(i64, i64)> {
        let (obj, c) = self.ready_condition(plural, namespace, name)?;
        Some((
            c["observedGeneration"].as_i64()?,
            obj["metadata"]["generation"].as_i64()?,
        ))
    }

    fn delete(&self, plural: &str, namespace: &str, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        let removed = inner
            .objects
            .get_mut(plural)
            .and_then(|m| m.remove(&(namespace.to_owned(), name.to_owned())));
        if let Some(mut obj) = removed {
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            inner.log.push((plural.to_owned(), rv, "DELETED", obj));
        }
        drop(inner);
        self.changed.notify_waiters();
    }
}

async fn list_or_watch(
    State(api): State<Arc<FakeApi>>,
    Path(plural): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let since: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let stream =
            futures_util::stream::unfold((api, plural, since), |(api, plural, since)| async move {
                loop {
                    // Register for wake-ups before looking, so no event slips between the two.
                    let waker = api.clone();
                    let notified = waker.changed.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    let next = {
                        let inner = api.inner.lock().unwrap();
                        inner
                            .log
                            .iter()
                            .find(|(p, rv, _, _)| *p == plural && *rv > since)
                            .cloned()
                    };
                    if let Some((_, rv, kind, obj)) = next {
                        let line = format!("{}\n", json!({"type": kind, "object": obj}));
                        return Some((Ok::<_, std::io::Error>(line), (api, plural, rv)));
                    }
                    notified.await;
                }
            });
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let inner = api.inner.lock().unwrap();
    let items: Vec<Value> = inner
        .objects
        .get(&plural)
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    axum::Json(json!({
        "apiVersion": "esi.dev/v1alpha1",
        "kind": "List",
        "metadata": {"resourceVersion": inner.rv.to_string()},
        "items": items,
    }))
    .into_response()
}

async fn patch_cluster_status(
    State(api): State<Arc<FakeApi>>,
    Path((plural, name)): Path<(String, String)>,
    axum::Json(patch): axum::Json<Value>,
) -> Response {
    patch_status(&api, &plural, "", &name, &patch)
}

async fn patch_namespaced_status(
    State(api): State<Arc<FakeApi>>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    axum::Json(patch): axum::Json<Value>,
) -> Response {
    patch_status(&api, &plural, &ns, &name, &patch)
}

fn patch_status(api: &FakeApi, plural: &str, ns: &str, name: &str, patch: &Value) -> Response {
    if api.patch_status(plural, ns, name, patch) {
        let inner = api.inner.lock().unwrap();
        axum::Json(inner.objects[plural][&(ns.to_owned(), name.to_owned())].clone()).into_response()
    } else {
        (axum::http::StatusCode::NOT_FOUND, axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}))).into_response()
    }
}

fn object(kind: &str, namespace: Option<&str>, name: &str, spec: Value) -> Value {
    let mut metadata = json!({ "name": name });
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({ "apiVersion": "esi.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec })
}

async fn status_of(state: &AppState, token: &str) -> u16 {
    common::send(
        state,
        common::post("/v1/generators/default/Password/db", Some(token), None),
    )
    .await
    .0
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crds_are_watched_and_invalid_resources_left_out() {
    let issuer = common::issuer().await;
    let api = Arc::new(FakeApi::default());
    api.apply(
        "clusters",
        object(
            "Cluster",
            None,
            "alpha",
            json!({"issuer": issuer.issuer(), "audiences": ["esi"]}),
        ),
    );
    api.apply(
        "passwords",
        object("Password", Some("default"), "db", json!({"length": 16})),
    );
    api.apply(
        "authorizations",
        object("Authorization", None, "app", json!({"subjects": [{"namespaces": ["default"], "serviceAccounts": ["app"]}], "generators": ["default/Password/db"]})),
    );
    let app = Router::new()
        .route("/apis/esi.dev/v1alpha1/{plural}", get(list_or_watch))
        .route(
            "/apis/esi.dev/v1alpha1/{plural}/{name}/status",
            axum::routing::patch(patch_cluster_status),
        )
        .route(
            "/apis/esi.dev/v1alpha1/namespaces/{ns}/{plural}/{name}/status",
            axum::routing::patch(patch_namespaced_status),
        )
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let config = kube::Config::new(url.parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let state = AppState::new(
        common::settings(Duration::from_millis(300)),
        LeaseKeys::ephemeral(),
    );
    tokio::spawn(esi_federation::kube_source::run(
        state.clone(),
        client,
        Duration::from_millis(50),
    ));

    let app_token = common::token(&issuer, "default", "app");
    let ops_token = common::token(&issuer, "ops", "runner");
    eventually("the first snapshot serves", async || {
        status_of(&state, &app_token).await == 200
    })
    .await;
    assert_eq!(status_of(&state, &ops_token).await, 403);

    // A new Authorization takes effect.
    api.apply(
        "authorizations",
        object(
            "Authorization",
            None,
            "ops",
            json!({"subjects": [{"namespaces": ["ops"]}], "generators": ["default/*/*"]}),
        ),
    );
    eventually("the new Authorization matches", async || {
        status_of(&state, &ops_token).await == 200
    })
    .await;

    // An invalid Authorization and an invalid generator are reported and left out; the rest works.
    api.apply(
        "authorizations",
        object(
            "Authorization",
            None,
            "everyone",
            json!({"subjects": [{}], "generators": ["*/*/*"]}),
        ),
    );
    api.apply(
        "passwords",
        object("Password", Some("default"), "broken", json!({"length": 0})),
    );
    eventually("the invalid resources are counted", async || {
        state
            .metrics
            .render()
            .contains("esi_federation_invalid_resources 2")
    })
    .await;
    assert_eq!(status_of(&state, &app_token).await, 200);
    assert_eq!(status_of(&state, &ops_token).await, 200);
    // Each resource reports in its status whether it was accepted, and why not.
    eventually("the status conditions are written", async || {
        api.ready("passwords", "default", "broken").is_some()
    })
    .await;
    let (status, message) = api.ready("authorizations", "", "everyone").unwrap();
    assert_eq!(status, "False");
    assert!(
        message.contains("spec.subjects[0]: constrains nothing"),
        "{message}"
    );
    let (status, message) = api.ready("passwords", "default", "broken").unwrap();
    assert_eq!(status, "False");
    assert!(message.contains("spec.length"), "{message}");
    assert_eq!(api.ready("authorizations", "", "app").unwrap().0, "True");
    assert_eq!(api.ready("clusters", "", "alpha").unwrap().0, "True");
    let stranger = common::token(&issuer, "other", "x");
    assert_eq!(
        status_of(&state, &stranger).await,
        403,
        "the invalid catch-all rule must not apply"
    );

    // A deleted Authorization stops matching; fixing the invalid one clears the count.
    api.delete("authorizations", "", "ops");
    eventually("the deleted Authorization stops matching", async || {
        status_of(&state, &ops_token).await == 403
    })
    .await;
    api.delete("authorizations", "", "everyone");
    api.apply(
        "passwords",
        object("Password", Some("default"), "broken", json!({"length": 8})),
    );
    eventually("no invalid resources remain", async || {
        state
            .metrics
            .render()
            .contains("esi_federation_invalid_resources 0")
    })
    .await;
    eventually("the fixed resource is Ready", async || {
        api.ready("passwords", "default", "broken")
            .is_some_and(|(s, _)| s == "True")
    })
    .await;
    // The condition says which generation of the resource it describes.
    assert_eq!(
        api.generations("passwords", "default", "broken"),
        Some((2, 2))
    );
    assert_eq!(status_of(&state, &app_token).await, 200);
}
