//! Golden tests: every Pod under `tests/golden/pods/` goes through a real `AdmissionReview`
//! JSON; the answer (patch, denial or skip) is compared with `tests/golden/expected/`, the patch
//! is applied with json-patch and the resulting Pod (pinned in `tests/golden/patched/`) must
//! deserialize as a k8s-openapi Pod and pass the structural checks. `ESI_BLESS=1` rewrites the
//! expected files (then review the diff by hand). See `tests/golden/README.md`.

// Test helpers outside #[test] functions are not covered by clippy's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine as _;
use esi_api::inject::{self, BINARY_PATH, InjectionSpec};
use esi_webhook::WebhookConfig;
use esi_webhook::mutate::{self, Outcome};
use esi_webhook::review;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

mod corpus;
use corpus::{config, golden_dir, pods};

fn bless() -> bool {
    std::env::var("ESI_BLESS").is_ok_and(|v| v == "1")
}

/// An AdmissionReview as the API server sends it for a Pod CREATE.
fn admission_review(pod: &Value, uid: &str) -> Value {
    let namespace = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    review::pod_create_review(pod, namespace, uid)
}

fn compare_or_bless(path: &Path, actual: &Value, failures: &mut Vec<String>) {
    let text = serde_json::to_string_pretty(actual).expect("json") + "\n";
    if bless() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write golden");
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == text => {}
        Ok(expected) => failures.push(format!(
            "{} differs (ESI_BLESS=1 to rewrite, then review):\n--- expected\n{expected}\n--- actual\n{text}",
            path.display()
        )),
        Err(_) => failures.push(format!("{} is missing (run with ESI_BLESS=1)", path.display())),
    }
}

#[test]
fn golden_corpus() {
    let cfg = config();
    let corpus = pods();
    assert!(
        corpus.len() >= 25,
        "the corpus must hold at least 25 pods, has {}",
        corpus.len()
    );
    let mut failures = Vec::new();
    let mut seen_results = BTreeSet::new();
    for (name, pod) in &corpus {
        let uid = format!("uid-{name}");
        let body = serde_json::to_vec(&admission_review(pod, &uid)).expect("review json");
        let reviewed = review::review(&body, &cfg);
        let resp: serde_json::Value =
            serde_json::from_slice(&reviewed.response.to_json().expect("response json"))
                .expect("the answer is JSON");
        assert_eq!(resp["apiVersion"], "admission.k8s.io/v1", "{name}");
        assert_eq!(
            resp["response"]["uid"],
            uid.as_str(),
            "{name}: uid must be echoed"
        );
        let r = &resp["response"];
        let mut expected = json!({"result": reviewed.decision.as_str()});
        if let Some(w) = r.get("warnings") {
            expected["warnings"] = w.clone();
        }
        if let Some(msg) = r.pointer("/status/message") {
            expected["message"] = msg.clone();
            assert_eq!(r["allowed"], false, "{name}");
        }
        if let Some(p) = r.get("patch") {
            assert_eq!(r["patchType"], "JSONPatch", "{name}");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p.as_str().expect("patch must be a base64 string"))
                .expect("base64");
            let ops: Value = serde_json::from_slice(&bytes).expect("patch json");
            expected["patch"] = ops.clone();
            let patch: json_patch::Patch = serde_json::from_value(ops).expect("patch ops");
            let mut patched = pod.clone();
            json_patch::patch(&mut patched, &patch)
                .unwrap_or_else(|e| panic!("{name}: patch does not apply: {e}"));
            if let Err(e) = structural_checks(pod, &patched, &cfg) {
                failures.push(format!("{name}: structural check failed: {e}"));
            }
            compare_or_bless(
                &golden_dir().join("patched").join(format!("{name}.json")),
                &patched,
                &mut failures,
            );
        }
        seen_results.insert(reviewed.decision.as_str());
        compare_or_bless(
            &golden_dir().join("expected").join(format!("{name}.json")),
            &expected,
            &mut failures,
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    for want in ["injected", "skipped", "denied"] {
        assert!(
            seen_results.contains(want),
            "the corpus must exercise {want}"
        );
    }
}

fn spec_of(c: &Container) -> Option<InjectionSpec> {
    let v = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == inject::ENV_SPEC)?
        .value
        .clone()?;
    Some(InjectionSpec::from_json(&v).expect("ESI_SPEC parses"))
}

/// The checks every injected Pod must pass.
fn structural_checks(original: &Value, patched: &Value, cfg: &WebhookConfig) -> Result<(), String> {
    let pod: Pod =
        serde_json::from_value(patched.clone()).map_err(|e| format!("not a Pod: {e}"))?;
    let before: Pod =
        serde_json::from_value(original.clone()).map_err(|e| format!("input not a Pod: {e}"))?;
    let spec = pod.spec.as_ref().ok_or("no spec")?;
    let inits = spec.init_containers.clone().unwrap_or_default();
    let all: Vec<&Container> = inits.iter().chain(spec.containers.iter()).collect();

    let mut names = BTreeSet::new();
    for c in &all {
        if !names.insert(c.name.as_str()) {
            return Err(format!("duplicate container name {}", c.name));
        }
    }
    let volumes: BTreeMap<&str, &k8s_openapi::api::core::v1::Volume> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    if volumes.len() != spec.volumes.as_ref().map_or(0, Vec::len) {
        return Err("duplicate volume names".into());
    }
    let token_volume = volumes
        .values()
        .find(|v| {
            v.projected.as_ref().is_some_and(|p| {
                p.sources.iter().flatten().any(|s| {
                    s.service_account_token.as_ref().is_some_and(|t| {
                        t.audience
                            .as_deref()
                            .is_some_and(|a| cfg.audience_allowed(a))
                            && t.expiration_seconds.is_some_and(|e| e >= 600)
                    })
                })
            })
        })
        .map(|v| v.name.clone())
        .ok_or("no projected token volume with an allowed audience and expiry >= 600")?;
    let esi_volume = volumes
        .values()
        .find(|v| {
            v.empty_dir
                .as_ref()
                .is_some_and(|e| e.medium.as_deref() == Some("Memory"))
                && !before
                    .spec
                    .as_ref()
                    .and_then(|s| s.volumes.as_ref())
                    .is_some_and(|vs| vs.iter().any(|o| o.name == v.name))
        })
        .map(|v| v.name.clone())
        .ok_or("no memory emptyDir added")?;

    let cli_containers: Vec<&Container> = inits
        .iter()
        .filter(|c| c.image.as_deref() == Some(cfg.cli.image.as_str()))
        .collect();
    if cli_containers.is_empty() {
        return Err("no esi-cli container".into());
    }
    let init_spec = spec_of(cli_containers[0]).ok_or("esi-cli init container lacks ESI_SPEC")?;
    if cli_containers[0].args.as_deref() != Some(&["init".to_owned()][..]) {
        return Err("first esi-cli container is not `init`".into());
    }
    for c in &cli_containers {
        let sc = c
            .security_context
            .as_ref()
            .ok_or("esi-cli without securityContext")?;
        let ok = sc.run_as_non_root == Some(true)
            && sc.run_as_user.is_some_and(|u| u != 0)
            && sc.read_only_root_filesystem == Some(true)
            && sc.allow_privilege_escalation == Some(false)
            && sc.capabilities.as_ref().and_then(|c| c.drop.clone())
                == Some(vec!["ALL".to_owned()])
            && sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()) == Some("RuntimeDefault");
        if !ok {
            return Err(format!("{} is not locked down: {sc:?}", c.name));
        }
        if c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_none()
        {
            return Err(format!("{} has no resource limits", c.name));
        }
        if c.name != cli_containers[0].name && c.restart_policy.as_deref() != Some("Always") {
            return Err(format!(
                "{} must be a native sidecar (restartPolicy Always)",
                c.name
            ));
        }
    }
    // esi-init runs before any init container that gets credentials.
    let init_pos = inits
        .iter()
        .position(|c| c.name == cli_containers[0].name)
        .ok_or("init missing")?;
    for name in init_spec.containers.keys() {
        if let Some(p) = inits.iter().position(|c| &c.name == name)
            && p < init_pos
        {
            return Err(format!(
                "init container {name} gets credentials but runs before esi-init"
            ));
        }
    }

    for c in &all {
        let is_cli = cli_containers.iter().any(|x| x.name == c.name);
        let mut paths = BTreeSet::new();
        for m in c.volume_mounts.iter().flatten() {
            if !volumes.contains_key(m.name.as_str()) {
                return Err(format!("{}: mount {} refers to no volume", c.name, m.name));
            }
            if !paths.insert(m.mount_path.as_str()) {
                return Err(format!("{}: two mounts at {}", c.name, m.mount_path));
            }
            if m.name == token_volume && !is_cli {
                return Err(format!(
                    "token volume mounted into non-esi-cli container {}",
                    c.name
                ));
            }
            if m.name == esi_volume && !is_cli && m.read_only != Some(true) {
                return Err(format!(
                    "{}: credentials volume must be read-only in app containers",
                    c.name
                ));
            }
        }
        if is_cli
            && !c
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == token_volume)
        {
            return Err(format!("{}: esi-cli without the token", c.name));
        }
        let cmd = c.command.clone().unwrap_or_default();
        let wraps = cmd.iter().filter(|a| a.as_str() == BINARY_PATH).count();
        if wraps > 1 || (wraps == 1 && cmd.first().map(String::as_str) != Some(BINARY_PATH)) {
            return Err(format!(
                "{}: command wrapped more than once or oddly: {cmd:?}",
                c.name
            ));
        }
        let wants_env = init_spec
            .containers
            .get(&c.name)
            .is_some_and(|s| s.wants_env());
        if wants_env {
            if wraps != 1
                || cmd.get(1).map(String::as_str) != Some("exec")
                || !cmd.contains(&"--".to_owned())
            {
                return Err(format!(
                    "{}: gets env vars but its command is not wrapped: {cmd:?}",
                    c.name
                ));
            }
            if !c
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == esi_volume && m.mount_path == inject::MOUNT_PATH)
            {
                return Err(format!(
                    "{}: wrapped but {} is not mounted",
                    c.name,
                    inject::MOUNT_PATH
                ));
            }
            // The original command and args survive unchanged.
            let orig = before
                .spec
                .as_ref()
                .and_then(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                        .find(|o| o.name == c.name)
                })
                .ok_or("wrapped container not in the input")?;
            if orig.args != c.args {
                return Err(format!("{}: args changed", c.name));
            }
            if let Some(oc) = &orig.command
                && !cmd.ends_with(oc)
            {
                return Err(format!("{}: original command lost", c.name));
            }
        } else if !is_cli {
            let orig = before.spec.as_ref().and_then(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .find(|o| o.name == c.name)
            });
            if orig.map(|o| &o.command) != Some(&c.command) {
                return Err(format!("{}: command changed without env injection", c.name));
            }
        }
        // Every file output's directory is mounted in every container that gets credentials.
        if init_spec.containers.contains_key(&c.name) {
            for f in &init_spec.files {
                let dir = f.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("/");
                let sub = f.volume_path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                let mounted = c.volume_mounts.iter().flatten().any(|m| {
                    m.mount_path == dir
                        && m.sub_path.as_deref() == Some(sub)
                        && m.name == esi_volume
                });
                if !mounted {
                    return Err(format!("{}: file {} directory not mounted", c.name, f.path));
                }
            }
        }
    }
    if pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(inject::ANN_STATUS))
        .map(String::as_str)
        != Some(inject::STATUS_INJECTED)
    {
        return Err("status annotation missing".into());
    }
    // Idempotent: the patched Pod is left alone.
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let view: esi_webhook::pod::Pod =
        serde_json::from_value(patched.clone()).map_err(|e| format!("not a Pod: {e}"))?;
    match mutate::mutate(&view, &ns, None, cfg) {
        Ok(Outcome::Skip {
            reason: mutate::SkipReason::AlreadyInjected,
            ..
        }) => {}
        other => return Err(format!("re-admission is not a no-op: {other:?}")),
    }
    // Everything else in the Pod is untouched.
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("spec");
            if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut)
                && let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut)
            {
                a.remove(inject::ANN_STATUS);
                if a.is_empty() {
                    m.remove("annotations");
                }
            }
        }
        v
    };
    if strip(original) != strip(patched) {
        return Err("the patch changed more than spec and the status annotation".into());
    }
    Ok(())
}

/// A small deterministic generator of hostile strings (no extra crate needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() as usize) % xs.len()]
    }
}

#[test]
fn hostile_annotations_never_panic_and_every_patch_is_valid() {
    let cfg = config();
    let pieces = [
        "db",
        "=",
        ".",
        "/",
        ",",
        "\n",
        "payments",
        "VaultDynamicSecret",
        "x",
        "*",
        "DB_",
        "../",
        "%",
        "{{",
        "}}",
        " ",
        "\u{0}",
        "é",
        "path=/etc/a/b",
        "format=raw",
        "from=db.password",
        "mode=0440",
        "true",
        "false",
        "\"",
        "[",
        "]",
        "signal=SIGHUP",
        "process=app",
        "10m",
        "https://esi.example.com",
        "A=db.k",
        ":",
        "0",
        "-",
    ];
    let keys = [
        "esi.dev/generators",
        "esi.dev/env",
        "esi.dev/env.app",
        "esi.dev/env-from",
        "esi.dev/file.f",
        "esi.dev/template.f",
        "esi.dev/containers",
        "esi.dev/init-containers",
        "esi.dev/refresh",
        "esi.dev/refresh-at",
        "esi.dev/refresh-notify",
        "esi.dev/revoke-on-exit",
        "esi.dev/token-audience",
        "esi.dev/token-expiration",
        "esi.dev/entrypoint.app",
        "esi.dev/run-as",
        "esi.dev/federation-url",
        "esi.dev/",
        "esi.dev/file.",
        "esi.dev/status",
    ];
    let mut rng = Lcg(0x5eed);
    let mut injected = 0;
    for round in 0..3000 {
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "esi.dev/generators".to_owned(),
            "db=payments/Password/p".to_owned(),
        );
        annotations.insert("esi.dev/env".to_owned(), "A=db.password".to_owned());
        for _ in 0..(rng.next() % 4) {
            let key = rng.pick(&keys).to_owned();
            let value: String = (0..(rng.next() % 8)).map(|_| rng.pick(&pieces)).collect();
            annotations.insert(key, value);
        }
        let pod_json = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "payments", "labels": {"esi.dev/inject": "true"}, "annotations": annotations},
            "spec": {"securityContext": {"runAsUser": 1000},
                     "containers": [{"name": "app", "image": "x", "command": ["/app"]}, {"name": "b", "image": "y", "command": ["/b"]}]}
        });
        let pod: esi_webhook::pod::Pod = serde_json::from_value(pod_json.clone()).expect("pod");
        match mutate::mutate(&pod, "payments", None, &cfg) {
            Ok(Outcome::Patch { patch, .. }) => {
                injected += 1;
                let mut patched = pod_json.clone();
                let ops = patch.operations().expect("the patch parses as RFC 6902");
                json_patch::patch(&mut patched, &ops)
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
                structural_checks(&pod_json, &patched, &cfg)
                    .unwrap_or_else(|e| panic!("round {round}: {e}: {annotations:?}"));
            }
            Ok(Outcome::Skip { .. }) => {}
            Ok(Outcome::NeedsEntrypoints(wanted)) => {
                panic!("round {round}: entrypointLookup is off, yet {wanted:?}")
            }
            Err(denial) => {
                assert!(denial.0.starts_with("esi: "), "{denial}");
                assert!(denial.0.len() < 1200, "denial too long: {denial}");
            }
        }
    }
    assert!(
        injected > 10,
        "the generator should also produce valid pods ({injected})"
    );
}

#[test]
fn refuses_a_spec_too_large_for_one_env_var() {
    let cfg = config();
    let pod_with = |templates: usize| {
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "esi.dev/generators".to_owned(),
            "db=payments/Password/p".to_owned(),
        );
        for i in 0..templates {
            annotations.insert(format!("esi.dev/file.t{i}"), format!("path=/etc/app/t{i}"));
            // Just under the per-template limit, every byte kept by the spec.
            let body = "x".repeat(inject::limits::MAX_TEMPLATE_BYTES - 64) + "{{ .db.password }}";
            annotations.insert(format!("esi.dev/template.t{i}"), body);
        }
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "payments", "labels": {"esi.dev/inject": "true"}, "annotations": annotations},
            "spec": {"securityContext": {"runAsUser": 1000},
                     "containers": [{"name": "app", "image": "x", "command": ["/app"]}]}
        });
        serde_json::from_value::<esi_webhook::pod::Pod>(pod).unwrap()
    };
    // Two near-limit templates fit ...
    assert!(matches!(
        mutate::mutate(&pod_with(2), "payments", None, &cfg),
        Ok(Outcome::Patch { .. })
    ));
    // ... four would make exec fail with E2BIG: refused at admission, saying why.
    match mutate::mutate(&pod_with(4), "payments", None, &cfg) {
        Err(denial) => {
            assert!(denial.0.contains("ESI_SPEC"), "{denial}");
            assert!(denial.0.contains("over the limit of 98304"), "{denial}");
            assert!(denial.0.len() < 1200, "{denial}");
        }
        other => panic!("a spec over the limit was admitted: {other:?}"),
    }
}
