//! `esi-webhook inject`: manifests get exactly what the webhook would patch into their Pods at
//! admission (the Pods of workload templates, CronJobs and Lists included, the ServiceAccounts
//! of the input as defaults), everything else comes out as it went in, a denial prints nothing
//! and fails, and what comes out goes through the webhook unchanged. Also `esi-webhook check`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use esi_webhook::review::{self, Decision, Parsed};
use esi_webhook::{AppState, WebhookConfig};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_esi-webhook");

const CONFIG: &str = "federation:\n  defaultUrl: https://esi.example.com\n\
                      cli:\n  image: registry.example/esi-cli:test\n";

fn state() -> AppState {
    AppState::new(WebhookConfig::from_yaml(CONFIG).unwrap())
}

/// The Pod template of a Deployment whose Pods ask for `db` through their ServiceAccount's
/// defaults and map it themselves.
fn template(service_account: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": "api", "esi.dev/inject": "true"},
                     "annotations": {"esi.dev/env": "DB_PASS=db.password"}},
        "spec": {"serviceAccountName": service_account,
                 "securityContext": {"runAsUser": 1000},
                 "containers": [{"name": "app", "image": "registry.example/api:1",
                                 "command": ["/app/server"], "args": ["--port", "8080"]}]}
    })
}

fn service_account() -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount",
           "metadata": {"name": "api", "namespace": "payments",
                        "annotations": {"esi.dev/generators": "db=payments/Password/db",
                                        "team.example/owner": "payments"}}})
}

/// What the webhook answers for `pod` in `namespace` with `sa` as the ServiceAccount's
/// annotations: the Pod patched, or the denial's message.
fn admitted(pod: &Value, namespace: &str, sa: Option<&BTreeMap<String, String>>) -> Value {
    let body = review::pod_create_review(pod, namespace, "u").to_string();
    let Parsed::Pod(req) = review::parse(body.as_bytes()) else {
        panic!("not a Pod CREATE")
    };
    let config = WebhookConfig::from_yaml(CONFIG).unwrap();
    let reviewed = review::decide(req, sa, &config);
    assert_eq!(reviewed.decision, Decision::Injected, "{}", reviewed.detail);
    let patch = base64::engine::general_purpose::STANDARD
        .decode(reviewed.response.response.patch.unwrap().as_str())
        .unwrap();
    let mut patched = pod.clone();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    json_patch::patch(&mut patched, &patch).unwrap();
    patched
}

#[tokio::test]
async fn the_pods_of_manifests_get_what_the_webhook_patches_and_nothing_else_changes() {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "payments"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                 "template": template("api")}
    });
    let mut batch = template("batch");
    batch["metadata"]["annotations"]["esi.dev/generators"] = json!("db=payments/Password/db");
    let cron_job = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *",
                 "jobTemplate": {"spec": {"template": batch}}}
    });
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "api-config", "namespace": "payments"},
                            "data": {"esi.dev/inject": "true"}});
    let mut not_opted_in = template("api");
    not_opted_in["metadata"]["labels"]["esi.dev/inject"] = json!("false");
    let plain_job = json!({"apiVersion": "batch/v1", "kind": "Job",
                           "metadata": {"name": "plain", "namespace": "payments"},
                           "spec": {"template": not_opted_in}});
    let list = json!({"apiVersion": "v1", "kind": "List",
                      "items": [service_account(), plain_job.clone()]});
    let docs = vec![
        deployment.clone(),
        cron_job.clone(),
        config_map.clone(),
        list.clone(),
    ];

    let out = esi_webhook::inject::inject(&state(), docs, "payments").await;
    assert!(!out.denied, "{:?}", out.notes);
    assert_eq!(out.injected, 2, "{:?}", out.notes);
    assert_eq!(out.documents.len(), 4);

    // The Deployment's template is the Pod the webhook patches, with the ServiceAccount of the
    // input (in a List, after the Deployment) as its defaults: only its esi.dev/ keys.
    let sa: BTreeMap<String, String> = [(
        "esi.dev/generators".to_owned(),
        "db=payments/Password/db".to_owned(),
    )]
    .into();
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
                     "metadata": template("api")["metadata"], "spec": template("api")["spec"]});
    let expected = admitted(&pod, "payments", Some(&sa));
    let injected = &out.documents[0];
    assert_eq!(
        injected["spec"]["template"]["metadata"],
        expected["metadata"]
    );
    assert_eq!(injected["spec"]["template"]["spec"], expected["spec"]);
    assert_eq!(
        injected["spec"]["template"]["metadata"]["annotations"]["esi.dev/status"],
        "injected"
    );
    // The rest of the Deployment as it was.
    let mut rest = injected.clone();
    rest["spec"]["template"] = deployment["spec"]["template"].clone();
    assert_eq!(rest, deployment);

    // The CronJob's Pods, in the namespace given for objects naming none; its ServiceAccount
    // is not in the input, which a warning says.
    let template = &out.documents[1]["spec"]["jobTemplate"]["spec"]["template"];
    let args = &template["spec"]["containers"][0]["command"];
    assert_eq!(args[0], "/esi/bin/esi-cli", "{template}");
    assert_eq!(
        out.notes,
        [
            "CronJob payments/nightly: warning: ServiceAccount payments/batch is not in the input; \
             the esi.dev/ defaults it may hold are not applied (the webhook will not add them: it \
             admits injected Pods as they are)"
        ]
    );

    // Everything else as it went in.
    assert_eq!(out.documents[2], config_map);
    assert_eq!(out.documents[3], list);

    // What comes out is left alone the second time, saying so.
    let again = esi_webhook::inject::inject(&state(), out.documents.clone(), "payments").await;
    assert_eq!(again.documents, out.documents);
    assert_eq!(again.injected, 0);
    assert!(
        again
            .notes
            .iter()
            .any(|n| n == "Deployment payments/api: left as it is (already_injected)"),
        "{:?}",
        again.notes
    );
}

#[tokio::test]
async fn a_denied_pod_fails_the_whole_input_naming_the_object_and_why() {
    let mut hostile = template("api");
    hostile["metadata"]["annotations"]["esi.dev/generators"] = json!("db=../../v1/revoke/x");
    let docs = vec![
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "db", "namespace": "payments"},
               "spec": {"template": hostile}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "broken", "namespace": "payments"}, "spec": {}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "odd"},
               "spec": {"template": {"metadata": {"labels": {"esi.dev/inject": "true"}},
                                     "spec": "not a Pod spec"}}}),
    ];
    let out = esi_webhook::inject::inject(&state(), docs, "default").await;
    assert!(out.denied);
    assert_eq!(out.injected, 0);
    // The missing ServiceAccount is said too: its defaults may be why a Pod is denied.
    assert_eq!(out.notes.len(), 4, "{:?}", out.notes);
    assert!(
        out.notes[0].starts_with("StatefulSet payments/db: warning: ServiceAccount payments/api"),
        "{}",
        out.notes[0]
    );
    assert!(
        out.notes[1].starts_with("StatefulSet payments/db: denied: esi: ")
            && out.notes[1].contains("esi.dev/generators"),
        "{}",
        out.notes[1]
    );
    assert_eq!(
        out.notes[2],
        "Deployment payments/broken: has no /spec/template, left as it is"
    );
    // What the API server would refuse to read, the webhook's words for it.
    assert!(
        out.notes[3].starts_with("Job default/odd: denied: ")
            && out.notes[3].contains("expected PodSpec"),
        "{}",
        out.notes[3]
    );
    assert_eq!(
        out.documents[2]["spec"]["template"]["spec"],
        "not a Pod spec"
    );
}

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_binary_reads_yaml_and_writes_the_injected_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let config = config.to_str().unwrap();
    // As a user writes it: YAML, several documents, strings that look like other things.
    let manifests = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: api\n  annotations:\n    \
                     esi.dev/generators: db=payments/Password/db\n---\n\
                     apiVersion: v1\nkind: Pod\nmetadata:\n  name: api\n  labels:\n    \
                     esi.dev/inject: \"true\"\n    version: \"1.10\"\n  annotations:\n    \
                     esi.dev/env: DB_PASS=db.password\n    note: \"yes\"\nspec:\n  serviceAccountName: api\n  containers:\n  \
                     - name: app\n    image: registry.example/api:1\n    command: [/app/server]\n    \
                     args: [\"0755\", \"null\"]\n  securityContext:\n    runAsUser: 1000\n  \
                     volumes:\n  - name: tls\n    secret:\n      secretName: api-tls\n      \
                     defaultMode: 0440\n";
    let out = run(&["inject", "--config", config, "-n", "payments"], manifests);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("1 of 2 documents injected"),
        "{}",
        text(&out.stderr)
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text(&out.stdout)).unwrap();
    assert_eq!(docs.len(), 2);
    let pod = &docs[1];
    // Strings stay strings.
    assert_eq!(pod["metadata"]["labels"]["esi.dev/inject"], "true");
    assert_eq!(pod["metadata"]["labels"]["version"], "1.10");
    assert_eq!(pod["metadata"]["annotations"]["note"], "yes");
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        json!(["0755", "null"])
    );
    // An unquoted 0440 is octal, as kubectl reads it, and stays that mode.
    assert_eq!(pod["spec"]["volumes"][0]["secret"]["defaultMode"], 0o440);
    // The same as the webhook's patch with the ServiceAccount's defaults.
    let input = esi_webhook::inject::parse(manifests).unwrap();
    let sa: BTreeMap<String, String> = [(
        "esi.dev/generators".to_owned(),
        "db=payments/Password/db".to_owned(),
    )]
    .into();
    assert_eq!(pod, &admitted(&input[1], "payments", Some(&sa)));

    // A denial: nothing on standard output, the reason on standard error, exit 1.
    let denied = manifests.replace("DB_PASS=db.password", "DB_PASS=nope.password");
    let out = run(&["inject", "--config", config, "-"], &denied);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Pod default/api: denied: esi: ") && stderr.contains("nope"),
        "{stderr}"
    );

    // Input that is not manifests, or a missing file: said, exit 1; the text is not quoted
    // (a Secret's value could be next to the fault).
    let broken = "kind: Secret\nstringData:\n  password: hunter2-secret\n  x: [unclosed\n";
    let out = run(&["inject", "--config", config], broken);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("standard input: not YAML or JSON manifests") && stderr.contains("line "),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let out = run(&["inject", "/nonexistent/manifests.yaml"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("reading /nonexistent/manifests.yaml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_says_whether_a_configuration_holds() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, CONFIG).unwrap();
    let out = run(&["check", good.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("good.yaml: ok (entrypointLookup off)"),
        "{}",
        text(&out.stdout)
    );
    // --image needs the lookup on.
    let out = run(&["check", good.to_str().unwrap(), "--image", "nginx"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--image needs entrypointLookup.registries"),
        "{}",
        text(&out.stderr)
    );
    // A broken configuration: the webhook's own start-up error.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "federation:\n  defaultUrl: http://esi.example.com\n").unwrap();
    let out = run(&["check", bad.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("invalid webhook config") && stderr.contains("must be https://"),
        "{stderr}"
    );
    // A lookup whose CA file holds no certificate.
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let lookup = dir.path().join("lookup.yaml");
    std::fs::write(
        &lookup,
        format!(
            "{CONFIG}entrypointLookup:\n  registries: [\"registry.example\"]\n  caFile: {}\n",
            ca.display()
        ),
    )
    .unwrap();
    let out = run(&["check", lookup.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("entrypointLookup.caFile") && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_entrypoint_denial_names_what_the_pod_inherits_from_its_service_account() {
    // The Pod maps `db`, which only its ServiceAccount's defaults make it get; its container
    // has no command and its image's registry is not one the webhook may read.
    let config = WebhookConfig::from_yaml(&format!(
        "{CONFIG}entrypointLookup:\n  registries: [\"ghcr.io\"]\n"
    ))
    .unwrap();
    let lookup = esi_webhook::entrypoint::EntrypointLookup::new(&config.entrypoint_lookup).unwrap();
    let state = AppState::new(config).with_entrypoint_lookup(lookup);
    let mut pod = template("api");
    pod["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("command");
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                            "metadata": {"name": "api", "namespace": "payments"},
                            "spec": {"template": pod}});
    let out =
        esi_webhook::inject::inject(&state, vec![service_account(), deployment], "payments").await;
    assert!(out.denied, "{:?}", out.notes);
    let note = out.notes.join("\n");
    assert!(
        note.contains("registry registry.example is not one the webhook may read")
            && note.contains("(the Pod inherits esi.dev/generators from its ServiceAccount)"),
        "{note}"
    );
}
