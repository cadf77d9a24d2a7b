//! Checks of the manifests under `webhook/deploy/`: they parse as the Kubernetes types, carry the
//! safety settings the README promises, and the ConfigMap's configuration is one the webhook
//! accepts. (`scripts/checks/webhook-manifests.sh` adds `kubernetes-validate --strict`.)

#![allow(clippy::unwrap_used)]

use std::path::Path;

use esi_webhook::WebhookConfig;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde::de::DeserializeOwned;

fn load<T: DeserializeOwned>(file: &str) -> T {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn webhook_configuration_is_scoped_and_fails_closed() {
    let mwc: MutatingWebhookConfiguration = load("mutatingwebhookconfiguration.yaml");
    let hooks = mwc.webhooks.unwrap();
    assert_eq!(hooks.len(), 1);
    let h = &hooks[0];
    assert_eq!(h.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(h.side_effects, "None");
    assert!(
        h.timeout_seconds.is_some_and(|t| t <= 10),
        "timeoutSeconds must be short"
    );
    assert_eq!(h.reinvocation_policy.as_deref(), Some("Never"));
    assert_eq!(h.admission_review_versions, vec!["v1".to_owned()]);
    let labels = h
        .object_selector
        .as_ref()
        .unwrap()
        .match_labels
        .as_ref()
        .unwrap();
    assert_eq!(
        labels
            .get(esi_api::inject::INJECT_LABEL)
            .map(String::as_str),
        Some("true")
    );
    let rules = h.rules.as_ref().unwrap();
    assert!(
        rules
            .iter()
            .all(|r| r.operations.as_deref() == Some(&["CREATE".to_owned()][..]))
    );
    assert!(
        rules
            .iter()
            .all(|r| r.resources.as_deref() == Some(&["pods".to_owned()][..]))
    );
    let ns = h
        .namespace_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .as_ref()
        .unwrap();
    let excluded = ns[0].values.as_ref().unwrap();
    for n in ["kube-system", "esi-system"] {
        assert!(excluded.iter().any(|e| e == n), "{n} must be excluded");
    }
    let svc = h.client_config.service.as_ref().unwrap();
    assert_eq!(svc.path.as_deref(), Some(esi_webhook::server::MUTATE_PATH));
}

#[test]
fn deployment_is_highly_available_and_locked_down() {
    let d: Deployment = load("deployment.yaml");
    let spec = d.spec;
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    let pdb: PodDisruptionBudget = load("pdb.yaml");
    assert!(pdb.spec.unwrap().min_available.is_some());
}

#[test]
fn configmap_holds_a_valid_webhook_config() {
    let cm: ConfigMap = load("configmap.yaml");
    let text = cm.data.unwrap().remove("config.yaml").unwrap();
    let cfg = WebhookConfig::from_yaml(&text).unwrap();
    assert!(cfg.excluded_namespaces.iter().any(|n| n == "esi-system"));
    assert!(cfg.federation.default_url.is_some());
}
