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

#[test]
fn rbac_grants_only_get_on_service_accounts_to_the_webhook() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rbac.yaml");
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
    let of = |kind: &str| {
        let hits: Vec<_> = docs.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(hits.len(), 1, "one {kind} in rbac.yaml");
        hits[0].clone()
    };
    let sa: ServiceAccount = serde_json::from_value(of("ServiceAccount")).unwrap();
    let role: ClusterRole = serde_json::from_value(of("ClusterRole")).unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(of("ClusterRoleBinding")).unwrap();

    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]));
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["serviceaccounts".to_owned()][..])
    );
    assert_eq!(rules[0].verbs, ["get"]);
    assert!(rules[0].resource_names.is_none());

    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(binding.role_ref.name), role.metadata.name);
    let subjects = binding.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), sa.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace, sa.metadata.namespace);

    // The Deployment runs as that ServiceAccount, with its API token mounted, defaults on.
    let d: Deployment = load("deployment.yaml");
    let pod = d.spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name, sa.metadata.name);
    assert_eq!(pod.automount_service_account_token, Some(true));
    let env = pod.containers[0].env.as_ref().unwrap();
    let get = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        get("ESI_WEBHOOK_SERVICE_ACCOUNT_DEFAULTS").as_deref(),
        Some("true")
    );
    assert!(get("ESI_WEBHOOK_SERVICE_ACCOUNT_TIMEOUT").is_some());
}
