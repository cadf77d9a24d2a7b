//! The flagship example, end to end on this machine: an app gets Vault database credentials
//! as `DB_USER`/`DB_PASS`.
//!
//! OpenBao's database secrets engine over a real PostgreSQL (peers from
//! `scripts/peers/{openbao,postgres}.sh`) behind a `VaultDynamicSecret` generator and an
//! Authorization for the ServiceAccount `payments/app`; the federation binary as a subprocess;
//! a local OIDC issuer minting that account's projected-style token; `esi-cli init` into a temp
//! dir standing for the emptyDir; `esi-cli exec -- psql ...` logs in with the injected
//! variables; `esi-cli revoke` then makes the same login fail.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

use esi_api::inject::{ContainerSpec, EnvMapping};
use esi_tests::{Federation, Issuer, Pod, config_dir, peer, peer_post, spec};
use serde_json::{Value, json};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Administrative calls to OpenBao with the dev root token.
fn bao(rt: &tokio::runtime::Runtime, addr: &str, token: &str, path: &str, body: Value) {
    peer_post(
        rt,
        path,
        &format!("{addr}/v1/{path}"),
        &[("X-Vault-Token", token)],
        &body,
    );
}

/// `psql`, from PATH or PostgreSQL's own bin folder.
fn psql() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin/psql"))
        .collect();
    candidates.sort();
    candidates.push(PathBuf::from("/usr/bin/psql"));
    candidates
        .into_iter()
        .rev()
        .find(|p| p.is_file())
        .expect("psql is installed with PostgreSQL (scripts/peers/postgres.sh installs it)")
}

#[test]
fn flagship_vault_database_credentials_reach_the_app_and_die_on_revoke() {
    let test = "flagship_vault_database_credentials_reach_the_app_and_die_on_revoke";
    let Some(addr) = peer("ESI_TEST_OPENBAO_ADDR", test) else {
        return;
    };
    let Some(root) = peer("ESI_TEST_OPENBAO_TOKEN", test) else {
        return;
    };
    let Some(pg_url) = peer("ESI_TEST_PG_URL", test) else {
        return;
    };
    // postgres://postgres:<password>@127.0.0.1:<port>/postgres
    let rest = pg_url.strip_prefix("postgres://").expect("ESI_TEST_PG_URL");
    let (userinfo, hostpart) = rest
        .split_once('@')
        .expect("ESI_TEST_PG_URL has credentials");
    let admin_pw = userinfo.split_once(':').expect("user:password").1;
    let port = hostpart
        .split_once('/')
        .map_or(hostpart, |(h, _)| h)
        .rsplit(':')
        .next()
        .expect("port");

    // OpenBao: a database engine on a random mount, with a role creating login users.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mount = format!("db-esi-cli-{}", std::process::id());
    bao(
        &rt,
        &addr,
        &root,
        &format!("sys/mounts/{mount}"),
        json!({"type": "database"}),
    );
    bao(
        &rt,
        &addr,
        &root,
        &format!("{mount}/config/pg"),
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{port}/postgres?sslmode=disable"),
            "username": "postgres",
            "password": admin_pw,
            "allowed_roles": "*",
        }),
    );
    bao(
        &rt,
        &addr,
        &root,
        &format!("{mount}/roles/app"),
        json!({
            "db_name": "pg",
            "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
            "default_ttl": "1h",
            "max_ttl": "2h",
        }),
    );

    // The federation: a Cluster for the local issuer, the store, the generator, the rule.
    let issuer = Issuer::start();
    let manifests = format!(
        r#"
apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: vault, namespace: payments}}
spec:
  provider:
    vault:
      server: {addr}
      timeout: 10s
      auth: {{token: {{env: ESI_TEST_OPENBAO_TOKEN}}}}
---
apiVersion: esi.dev/v1alpha1
kind: VaultDynamicSecret
metadata: {{name: db, namespace: payments}}
spec:
  secretStoreRef: {{name: vault}}
  path: {mount}/creds/app
---
apiVersion: esi.dev/v1alpha1
kind: Authorization
metadata: {{name: payments-app}}
spec:
  subjects:
    - namespaces: [payments]
      serviceAccounts: [app]
  generators: [payments/VaultDynamicSecret/db]
"#
    );
    let config = config_dir(&issuer.url(), &manifests);
    let fed = Federation::start(config.path(), "127.0.0.1:0", None);

    // The Pod: its projected-style token, the emptyDir, the app container's mapping.
    let pod = Pod::new(&issuer.token("payments", "app"));
    let spec = spec(
        &fed.url(),
        &[("db", "payments/VaultDynamicSecret/db")],
        &[(
            "app",
            ContainerSpec {
                env: vec![
                    EnvMapping {
                        name: "DB_USER".into(),
                        alias: "db".into(),
                        key: "username".into(),
                    },
                    EnvMapping {
                        name: "DB_PASS".into(),
                        alias: "db".into(),
                        key: "password".into(),
                    },
                ],
                env_from: vec![],
            },
        )],
        vec![],
    );
    let init = pod.cli(&spec).arg("init").output().unwrap();
    assert!(
        init.status.success(),
        "esi-cli init: {}\nfederation logs:\n{}",
        text(&init.stderr),
        fed.logs()
    );

    // The app: psql logging in with exactly the injected variables (esi-cli from the volume,
    // as in the app container: no spec, no token).
    let login = || -> Output {
        Command::new(pod.path("bin/esi-cli"))
            .env("ESI_VOLUME_DIR", &pod.volume)
            .env_remove("ESI_SPEC")
            .env_remove("PGPASSWORD")
            .env_remove("PGUSER")
            .args(["exec", "--container", "app", "--", "sh", "-c"])
            .arg(format!(
                "PGPASSWORD=\"$DB_PASS\" PGCONNECT_TIMEOUT=10 exec {} -h 127.0.0.1 -p {port} -U \"$DB_USER\" -d postgres -tAc 'select current_user'",
                psql().display()
            ))
            .output()
            .unwrap()
    };
    let first = login();
    assert!(
        first.status.success(),
        "the app must log in with DB_USER/DB_PASS: {}",
        text(&first.stderr)
    );
    let user = text(&first.stdout).trim().to_owned();
    assert!(
        user.starts_with("v-"),
        "a dynamic OpenBao user, got {user:?}"
    );

    let revoke = pod.cli(&spec).arg("revoke").output().unwrap();
    assert!(
        revoke.status.success(),
        "esi-cli revoke: {}",
        text(&revoke.stderr)
    );
    assert!(text(&revoke.stderr).contains("revoked 1 lease"));

    let after = login();
    assert!(
        !after.status.success(),
        "login must fail after revoke, got {}",
        text(&after.stdout)
    );
    let err = text(&after.stderr);
    assert!(
        err.contains("password authentication failed") || err.contains("does not exist"),
        "{err}"
    );
    // Idempotent.
    let again = pod.cli(&spec).arg("revoke").output().unwrap();
    assert!(again.status.success());
    assert!(text(&again.stderr).contains("nothing to revoke"));
}
