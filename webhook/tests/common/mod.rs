//! Shared by the webhook's socket and router tests.

use serde_json::{Value, json};

/// An `AdmissionReview` of a Pod CREATE by `alice` in `payments`, as the API server sends it.
pub fn pod_create_review(pod: &Value, uid: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "payments",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": pod,
            "oldObject": null,
            "dryRun": false
        }
    })
}
