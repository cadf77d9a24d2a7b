//! Vault generators against a real OpenBao dev server (scripts/peers/openbao.sh) and, for
//! the database engine, a real PostgreSQL (scripts/peers/postgres.sh). Each test mounts its
//! own engines under random paths, so tests share one server.

#![cfg(feature = "vault")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use esi_backends::{BackendError, Generate};
use serde_json::{Value, json};

use common::{build, ctx, ctx_with_max_ttl, identity, peer, suffix};

/// The test's administrative access to OpenBao (the root token of the dev server).
struct Bao {
    addr: String,
    token: String,
    http: reqwest::Client,
}

impl Bao {
    fn from_env(test: &str) -> Option<Self> {
        let addr = peer("ESI_TEST_OPENBAO_ADDR", test)?;
        let token = peer("ESI_TEST_OPENBAO_TOKEN", test)?;
        Some(Bao {
            addr,
            token,
            http: reqwest::Client::new(),
        })
    }

    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{path}: {status}: {text}"));
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| e.to_string())?
        })
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.try_call(reqwest::Method::POST, path, Some(body))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn get(&self, path: &str) -> Value {
        self.try_call(reqwest::Method::GET, path, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The dev server serving TLS (it asks clients for a certificate), and its CA (PEM).
    fn tls_from_env(test: &str) -> Option<(Self, String)> {
        let addr = peer("ESI_TEST_OPENBAO_TLS_ADDR", test)?;
        let token = peer("ESI_TEST_OPENBAO_TOKEN", test)?;
        let ca_file = peer("ESI_TEST_OPENBAO_TLS_CA", test)?;
        let ca = std::fs::read_to_string(&ca_file)
            .unwrap_or_else(|e| panic!("ESI_TEST_OPENBAO_TLS_CA {ca_file}: {e}"));
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA")])
            .build()
            .expect("client");
        Some((Bao { addr, token, http }, ca))
    }

    /// The SecretStore of the tests, authenticating with `auth`.
    fn store(&self, auth: Value) -> Value {
        json!({"provider": {"vault": {"server": self.addr, "timeout": "5s", "auth": auth}}})
    }

    /// A store using the root token from the environment variable the peer script exports.
    fn root_store(&self) -> Value {
        self.store(json!({"token": {"env": "ESI_TEST_OPENBAO_TOKEN"}}))
    }

    /// Writes a KV v2 secret, retrying while a fresh mount finishes its upgrade.
    async fn kv2_put(&self, mount: &str, path: &str, data: Value) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self
                .try_call(
                    reqwest::Method::POST,
                    &format!("{mount}/data/{path}"),
                    Some(json!({"data": data.clone()})),
                )
                .await
            {
                Ok(_) => return,
                Err(e) if Instant::now() < deadline && e.contains("upgrade") => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) if Instant::now() < deadline && e.contains("no handler") => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// A KV v2 mount holding `apps/db` with two versions, and a policy reading it.
    /// A fresh AppRole mount with role `esi` (`settings` as its role settings): its mount path
    /// and role id.
    async fn approle(&self, settings: Value) -> (String, String) {
        let path = format!("approle-{}", suffix());
        self.post(&format!("sys/auth/{path}"), json!({"type": "approle"}))
            .await;
        self.post(&format!("auth/{path}/role/esi"), settings).await;
        let role_id = self.get(&format!("auth/{path}/role/esi/role-id")).await["data"]["role_id"]
            .as_str()
            .expect("role id")
            .to_owned();
        (path, role_id)
    }

    /// A new token created with `settings` (policies, ttl, ...).
    async fn create_token(&self, settings: Value) -> String {
        self.post("auth/token/create", settings).await["auth"]["client_token"]
            .as_str()
            .expect("client token")
            .to_owned()
    }

    /// A new secret id of role `esi` on the AppRole mount `path`.
    async fn secret_id(&self, path: &str) -> String {
        self.post(&format!("auth/{path}/role/esi/secret-id"), json!({}))
            .await["data"]["secret_id"]
            .as_str()
            .expect("secret id")
            .to_owned()
    }

    async fn kv2_fixture(&self) -> (String, String) {
        let mount = format!("kv2-{}", suffix());
        self.post(
            &format!("sys/mounts/{mount}"),
            json!({"type": "kv", "options": {"version": "2"}}),
        )
        .await;
        self.kv2_put(
            &mount,
            "apps/db",
            json!({"user": "app", "password": "v1-secret"}),
        )
        .await;
        self.kv2_put(
            &mount,
            "apps/db",
            json!({"user": "app", "password": "v2-secret", "port": 5432}),
        )
        .await;
        let policy = format!("read-{mount}");
        self.post(
            &format!("sys/policies/acl/{policy}"),
            json!({"policy": format!("path \"{mount}/data/apps/*\" {{ capabilities = [\"read\"] }}")}),
        )
        .await;
        (mount, policy)
    }
}

/// Builds a `kind` generator on `store` and mints once: the refusal, asserted `Rejected`.
/// The serial numbers a PKI mount lists (`GET {mount}/certs?list=true`).
fn serials(listed: Value) -> std::collections::BTreeSet<String> {
    listed["data"]["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect()
}

async fn rejected(
    kind: &str,
    spec: Value,
    store: Value,
    c: &esi_backends::Context<'_>,
    what: &str,
) -> BackendError {
    let err = build(kind, spec, Some(store))
        .generate(c)
        .await
        .expect_err(what);
    assert!(
        matches!(err, BackendError::Rejected { .. }),
        "{what}: {err:?}"
    );
    err
}

fn static_spec(mount: &str, extra: Value) -> Value {
    let mut spec = json!({"secretStoreRef": {"name": "vault"}, "mount": mount, "path": "apps/db"});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_user_logs_in_then_fails_after_revoke() {
    let test = "database_user_logs_in_then_fails_after_revoke";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let Some(pg_url) = peer("ESI_TEST_PG_URL", test) else {
        return;
    };
    let pg: tokio_postgres::Config = pg_url.parse().expect("ESI_TEST_PG_URL");
    let port = pg.get_ports().first().copied().expect("port");
    let admin_pw = String::from_utf8(pg.get_password().expect("password").to_vec()).expect("utf8");

    let mount = format!("db-{}", suffix());
    bao.post(&format!("sys/mounts/{mount}"), json!({"type": "database"}))
        .await;
    bao.post(
        &format!("{mount}/config/pg"),
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{port}/postgres?sslmode=disable"),
            "username": "postgres",
            "password": admin_pw,
            "allowed_roles": "*",
        }),
    )
    .await;
    bao.post(
        &format!("{mount}/roles/app"),
        json!({
            "db_name": "pg",
            "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
            "default_ttl": "1h",
            "max_ttl": "2h",
        }),
    )
    .await;

    let g = build(
        "VaultDynamicSecret",
        json!({"secretStoreRef": {"name": "vault"}, "path": format!("{mount}/creds/app")}),
        Some(bao.root_store()),
    );
    let id = identity();
    let before = jiff::Timestamp::now();
    let cred = g
        .generate(&ctx(&id, "payments/VaultDynamicSecret/db"))
        .await
        .expect("issues a database user");
    let user = cred.data["username"].clone();
    let password = cred.data["password"].clone();
    assert!(user.starts_with("v-"), "{user}");
    let expires = cred.expires_at.expect("expiresAt from lease_duration");
    let secs = expires.duration_since(before).as_secs();
    assert!(
        (3590..=3610).contains(&secs),
        "expiresAt {secs}s after issue, want the role's 1h"
    );
    assert!(cred.renewable);
    let lease = cred.lease.clone().expect("a lease to revoke");
    assert!(
        !format!("{cred:?}").contains(&password),
        "Debug must not show the password"
    );

    let connect = |user: String, password: String| async move {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(port)
            .user(&user)
            .password(&password)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5));
        cfg.connect(tokio_postgres::NoTls).await
    };
    {
        let (client, conn) = connect(user.clone(), password.clone())
            .await
            .expect("the dynamic user logs in");
        let task = tokio::spawn(conn);
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .expect("query");
        assert_eq!(row.get::<_, String>(0), user);
        drop(client);
        let _ = task.await;
    }

    // The Authorization's maxTTL (10m, below the role's 1h) holds: the lease is renewed down
    // to it, and PostgreSQL's VALID UNTIL moves with it.
    let max = Duration::from_secs(600);
    let short = g
        .generate(&ctx_with_max_ttl(
            &id,
            "payments/VaultDynamicSecret/db",
            max,
        ))
        .await
        .expect("issues a database user held to maxTTL");
    let secs = short
        .expires_at
        .expect("expiresAt")
        .duration_since(jiff::Timestamp::now())
        .as_secs();
    assert!(
        (590..=601).contains(&secs),
        "expiresAt in {secs}s, want maxTTL 600s"
    );
    let short_lease = short.lease.clone().expect("a lease");
    let lease_id = short_lease.0["vault"]["leaseId"]
        .as_str()
        .expect("a lease id")
        .to_owned();
    let looked = bao
        .post("sys/leases/lookup", json!({"lease_id": lease_id}))
        .await;
    let ttl = looked["data"]["ttl"].as_i64().expect("ttl");
    assert!(
        (590..=600).contains(&ttl),
        "Vault's lease ttl {ttl}s, want <= 600s: {looked}"
    );
    {
        let (client, conn) = connect(user.clone(), password.clone())
            .await
            .expect("the first user still logs in");
        let task = tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT extract(epoch from rolvaliduntil - now())::bigint FROM pg_roles WHERE rolname = $1",
                &[&short.data["username"]],
            )
            .await
            .expect("query");
        let valid_for: i64 = row.get(0);
        // The database engine sets VALID UNTIL a 5 s buffer past the lease's end.
        assert!(
            (580..=606).contains(&valid_for),
            "the database user is valid for {valid_for}s, want maxTTL 600s"
        );
        drop(client);
        let _ = task.await;
    }
    assert!(
        g.revoke(&short_lease)
            .await
            .expect("revokes the short lease")
    );

    assert!(g.revoke(&lease).await.expect("revokes the lease"));
    let Err(err) = connect(user.clone(), password.clone()).await else {
        panic!("login must fail after revoke")
    };
    let msg = format!("{err}: {:?}", err.as_db_error().map(|e| e.message()));
    assert!(
        msg.contains("password authentication failed") || msg.contains("does not exist"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_certificates_are_issued_and_revoked() {
    let test = "pki_certificates_are_issued_and_revoked";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let mount = format!("pki-{}", suffix());
    bao.post(
        &format!("sys/mounts/{mount}"),
        json!({"type": "pki", "config": {"max_lease_ttl": "24h"}}),
    )
    .await;
    bao.post(
        &format!("{mount}/root/generate/internal"),
        json!({"common_name": "esi test root", "ttl": "24h"}),
    )
    .await;
    for (role, lease) in [("leased", true), ("plain", false)] {
        bao.post(
            &format!("{mount}/roles/{role}"),
            json!({"allowed_domains": "example.test", "allow_subdomains": true, "max_ttl": "1h", "generate_lease": lease}),
        )
        .await;
    }
    let id = identity();
    for role in ["leased", "plain"] {
        let g = build(
            "VaultDynamicSecret",
            json!({
                "secretStoreRef": {"name": "vault"},
                "path": format!("{mount}/issue/{role}"),
                "method": "POST",
                "parameters": {"common_name": "api.example.test", "ttl": "30m"},
            }),
            Some(bao.root_store()),
        );
        let before = jiff::Timestamp::now();
        let cred = g
            .generate(&ctx(&id, "payments/VaultDynamicSecret/cert"))
            .await
            .expect("issues a certificate");
        assert!(
            cred.data["certificate"].starts_with("-----BEGIN CERTIFICATE-----"),
            "{role}"
        );
        assert!(cred.data.contains_key("private_key"));
        let secs = cred
            .expires_at
            .expect("expiresAt")
            .duration_since(before)
            .as_secs();
        assert!(
            (1780..=1810).contains(&secs),
            "{role}: expiresAt {secs}s after issue, want 30m"
        );
        let serial = cred.data["serial_number"].clone();
        let revoked =
            |bao_cert: Value| bao_cert["data"]["revocation_time"].as_i64().unwrap_or(0) > 0;
        assert!(
            !revoked(bao.get(&format!("{mount}/cert/{serial}")).await),
            "{role}: fresh certificate already revoked"
        );
        assert!(
            g.revoke(&cred.lease.expect("revocable"))
                .await
                .expect("revokes")
        );
        assert!(
            revoked(bao.get(&format!("{mount}/cert/{serial}")).await),
            "{role}: certificate not revoked"
        );

        // A certificate's lifetime cannot be shortened after issue: one that would outlive
        // the Authorization's maxTTL (10m < 30m) is revoked and the request refused.
        let before = serials(bao.get(&format!("{mount}/certs?list=true")).await);
        let err = g
            .generate(&ctx_with_max_ttl(
                &id,
                "payments/VaultDynamicSecret/cert",
                Duration::from_secs(600),
            ))
            .await
            .expect_err("a certificate outliving maxTTL is refused");
        let BackendError::Rejected { message, .. } = &err else {
            panic!("{role}: want Rejected, got {err:?}")
        };
        assert!(
            message.contains("maxTTL of 10m") && message.contains("revoked"),
            "{role}: {message}"
        );
        let minted: Vec<String> = serials(bao.get(&format!("{mount}/certs?list=true")).await)
            .difference(&before)
            .cloned()
            .collect();
        assert_eq!(
            minted.len(),
            1,
            "{role}: one certificate minted: {minted:?}"
        );
        assert!(
            revoked(bao.get(&format!("{mount}/cert/{}", minted[0])).await),
            "{role}: the refused certificate was not revoked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_of_another_path_is_refused() {
    let test = "lease_of_another_path_is_refused";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let g = build(
        "VaultDynamicSecret",
        json!({"secretStoreRef": {"name": "vault"}, "path": "database/creds/app"}),
        Some(bao.root_store()),
    );
    let foreign = esi_backends::LeaseHandle(json!({"vault": {"leaseId": "pki/issue/web/abc"}}));
    assert!(matches!(
        g.revoke(&foreign).await,
        Err(BackendError::Invalid(_))
    ));
    let aws = esi_backends::LeaseHandle(json!({"aws": {}}));
    assert!(matches!(
        g.revoke(&aws).await,
        Err(BackendError::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_v1_and_v2_secrets_are_read() {
    let test = "kv_v1_and_v2_secrets_are_read";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let (kv2, _) = bao.kv2_fixture().await;
    let kv1 = format!("kv1-{}", suffix());
    bao.post(
        &format!("sys/mounts/{kv1}"),
        json!({"type": "kv", "options": {"version": "1"}}),
    )
    .await;
    bao.post(
        &format!("{kv1}/apps/db"),
        json!({"token": "kv1-secret", "n": 7}),
    )
    .await;
    let id = identity();
    let c = ctx(&id, "payments/VaultStaticSecret/db");

    let latest = build(
        "VaultStaticSecret",
        static_spec(&kv2, json!({})),
        Some(bao.root_store()),
    );
    let cred = latest.generate(&c).await.expect("reads kv v2");
    assert_eq!(cred.data["password"], "v2-secret");
    assert_eq!(cred.data["port"], "5432");
    assert_eq!(
        (cred.expires_at, cred.lease.is_none(), cred.renewable),
        (None, true, false)
    );

    let v1 = build(
        "VaultStaticSecret",
        static_spec(&kv2, json!({"version": 1, "keys": ["password"]})),
        Some(bao.root_store()),
    );
    let cred = v1.generate(&c).await.expect("reads kv v2 version 1");
    assert_eq!(
        cred.data.into_iter().collect::<Vec<_>>(),
        vec![("password".to_owned(), "v1-secret".to_owned())]
    );

    let old = build(
        "VaultStaticSecret",
        static_spec(&kv1, json!({"kvVersion": "v1"})),
        Some(bao.root_store()),
    );
    let cred = old.generate(&c).await.expect("reads kv v1");
    assert_eq!(
        (cred.data["token"].as_str(), cred.data["n"].as_str()),
        ("kv1-secret", "7")
    );

    let missing_key = static_spec(&kv2, json!({"keys": ["nope"]}));
    rejected(
        "VaultStaticSecret",
        missing_key,
        bao.root_store(),
        &c,
        "missing key",
    )
    .await;

    let mut missing = static_spec(&kv2, json!({}));
    missing["path"] = json!("apps/absent");
    rejected(
        "VaultStaticSecret",
        missing,
        bao.root_store(),
        &c,
        "absent secret",
    )
    .await;
}

/// A store authenticating with a token file keeps its connection across reloads; when the
/// token is rotated (new token in the file, old one revoked), the first refusal makes it read
/// the file again and retry, without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_read_again_after_a_refusal() {
    let test = "a_rotated_token_file_is_read_again_after_a_refusal";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let (kv2, policy) = bao.kv2_fixture().await;
    let create = json!({"policies": [policy], "ttl": "10m"});
    let first = bao.create_token(create.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("vault-token");
    std::fs::write(&token_file, format!("{first}\n")).expect("write");
    let store = bao.store(json!({"token": {"file": token_file}}));
    let id = identity();
    let c = ctx(&id, "payments/VaultStaticSecret/db");
    let g = build(
        "VaultStaticSecret",
        static_spec(&kv2, json!({})),
        Some(store),
    );
    assert_eq!(
        g.generate(&c).await.expect("first token").data["password"],
        "v2-secret"
    );
    let second = bao.create_token(create).await;
    std::fs::write(&token_file, format!("{second}\n")).expect("rotate");
    bao.post("auth/token/revoke", json!({"token": first})).await;
    assert_eq!(
        g.generate(&c)
            .await
            .expect("rotated token, read again")
            .data["password"],
        "v2-secret"
    );
    // Revoked with nothing new in the file: refused, no retry loop.
    bao.post("auth/token/revoke", json!({"token": second}))
        .await;
    let err = g.generate(&c).await.expect_err("revoked token");
    assert!(
        !err.to_string().contains(&second),
        "the token leaked into the error: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_login_reads_within_policy_and_is_refused_outside() {
    let test = "approle_login_reads_within_policy_and_is_refused_outside";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let (kv2, policy) = bao.kv2_fixture().await;
    // A 3 s token that cannot outlive its max TTL: the second read below needs a re-login.
    let (path, role_id) = bao
        .approle(json!({"token_policies": [policy], "token_ttl": "3s", "token_max_ttl": "3s"}))
        .await;
    let secret_id = bao.secret_id(&path).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("secret-id");
    std::fs::write(&secret_file, format!("{secret_id}\n")).expect("write");
    let store = bao.store(
        json!({"appRole": {"path": path, "roleId": role_id, "secretIdRef": {"file": secret_file}}}),
    );

    let id = identity();
    let c = ctx(&id, "payments/VaultStaticSecret/db");
    let g = build(
        "VaultStaticSecret",
        static_spec(&kv2, json!({})),
        Some(store.clone()),
    );
    assert_eq!(
        g.generate(&c).await.expect("approle login + read").data["password"],
        "v2-secret"
    );
    tokio::time::sleep(Duration::from_millis(3500)).await; // let the 3 s token lapse
    assert_eq!(
        g.generate(&c)
            .await
            .expect("re-login after token expiry")
            .data["password"],
        "v2-secret"
    );

    // Outside the policy: Vault's 403 becomes Rejected (after one re-login attempt).
    let mut other = static_spec(&kv2, json!({}));
    other["path"] = json!("other/secret");
    let err = rejected(
        "VaultStaticSecret",
        other,
        store.clone(),
        &c,
        "outside policy",
    )
    .await;
    assert!(err.detail().contains("403"), "{}", err.detail());
    assert!(!err.to_string().contains(&secret_id));

    // A wrong secret id: the login itself is refused.
    std::fs::write(&secret_file, "not-the-secret-id").expect("write");
    let spec = static_spec(&kv2, json!({}));
    rejected("VaultStaticSecret", spec, store, &c, "bad secret id").await;
}

/// An ES256 JWT signed with `key`.
fn sign_jwt(key: &aws_lc_rs::signature::EcdsaKeyPair, claims: &Value) -> String {
    let header = common::b64url(br#"{"alg":"ES256","typ":"JWT"}"#);
    let payload = common::b64url(claims.to_string().as_bytes());
    let input = format!("{header}.{payload}");
    let sig = key
        .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
        .expect("sign");
    format!("{input}.{}", common::b64url(sig.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_login_with_a_token_file() {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    let test = "jwt_login_with_a_token_file";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let (kv2, policy) = bao.kv2_fixture().await;
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
    let spki = key.public_key().as_der().expect("spki");
    let path = format!("jwt-{}", suffix());
    let issuer = "https://federation.esi.test";
    bao.post(&format!("sys/auth/{path}"), json!({"type": "jwt"}))
        .await;
    bao.post(
        &format!("auth/{path}/config"),
        json!({"jwt_validation_pubkeys": [common::pem("PUBLIC KEY", spki.as_ref())], "bound_issuer": issuer}),
    )
    .await;
    bao.post(
        &format!("auth/{path}/role/esi"),
        json!({"role_type": "jwt", "bound_audiences": ["openbao"], "user_claim": "sub", "token_policies": [policy], "token_ttl": "60s"}),
    )
    .await;
    let now = jiff::Timestamp::now().as_second();
    let claims = json!({"iss": issuer, "sub": "system:serviceaccount:esi:federation", "aud": "openbao", "iat": now, "nbf": now, "exp": now + 300});
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, sign_jwt(&key, &claims)).expect("write");
    let store = bao.store(json!({"jwt": {"path": path, "role": "esi", "tokenFile": token_file}}));

    let id = identity();
    let c = ctx(&id, "payments/VaultStaticSecret/db");
    let g = build(
        "VaultStaticSecret",
        static_spec(&kv2, json!({})),
        Some(store.clone()),
    );
    assert_eq!(
        g.generate(&c).await.expect("jwt login + read").data["user"],
        "app"
    );

    // A token signed by another key, or for another audience, is refused by OpenBao.
    let other = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("someone-else");
    for bad in [sign_jwt(&other, &claims), sign_jwt(&key, &wrong_aud)] {
        std::fs::write(&token_file, bad).expect("write");
        let spec = static_spec(&kv2, json!({}));
        rejected("VaultStaticSecret", spec, store.clone(), &c, "bad jwt").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_token_is_renewed_before_it_expires() {
    let test = "static_token_is_renewed_before_it_expires";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let (kv2, policy) = bao.kv2_fixture().await;
    let created = bao
        .post("auth/token/create", json!({"policies": [policy], "ttl": "6s", "explicit_max_ttl": "120s", "renewable": true}))
        .await;
    let token = created["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let accessor = created["auth"]["accessor"]
        .as_str()
        .expect("accessor")
        .to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).expect("write");
    let store = bao.store(json!({"token": {"file": token_file}}));
    let g = build(
        "VaultStaticSecret",
        static_spec(&kv2, json!({})),
        Some(store),
    );
    let id = identity();
    let c = ctx(&id, "payments/VaultStaticSecret/db");

    let t0 = tokio::time::Instant::now();
    g.generate(&c).await.expect("first read");
    // Past two thirds of the 6 s TTL: the next call renews the token.
    tokio::time::sleep_until(t0 + Duration::from_millis(4500)).await;
    g.generate(&c).await.expect("read that renews");
    // Past the original expiry: only a renewed token still works.
    tokio::time::sleep_until(t0 + Duration::from_millis(7500)).await;
    g.generate(&c)
        .await
        .expect("read after the original TTL, with the renewed token");
    let info = bao
        .post("auth/token/lookup-accessor", json!({"accessor": accessor}))
        .await;
    assert!(
        info["data"]["ttl"].as_i64().unwrap_or(0) > 0,
        "token still alive: {info}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_result_token_is_revoked_by_accessor() {
    let test = "auth_result_token_is_revoked_by_accessor";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let g = build(
        "VaultDynamicSecret",
        json!({
            "secretStoreRef": {"name": "vault"},
            "path": "auth/token/create",
            "method": "POST",
            "parameters": {"ttl": "10m", "policies": ["default"]},
            "resultType": "Auth",
        }),
        Some(bao.root_store()),
    );
    let id = identity();
    let cred = g
        .generate(&ctx(&id, "payments/VaultDynamicSecret/tok"))
        .await
        .expect("token");
    let accessor = cred.data["accessor"].clone();
    assert!(!cred.data["client_token"].is_empty());
    assert!(cred.expires_at.is_some());
    assert!(
        bao.try_call(
            reqwest::Method::POST,
            "auth/token/lookup-accessor",
            Some(json!({"accessor": accessor}))
        )
        .await
        .is_ok()
    );
    // A renewable token is renewed down to the Authorization's maxTTL (2m < 10m).
    let short = g
        .generate(&ctx_with_max_ttl(
            &id,
            "payments/VaultDynamicSecret/tok",
            Duration::from_secs(120),
        ))
        .await
        .expect("a token held to maxTTL");
    let looked = bao
        .post(
            "auth/token/lookup-accessor",
            json!({"accessor": short.data["accessor"]}),
        )
        .await;
    let ttl = looked["data"]["ttl"].as_i64().expect("ttl");
    assert!(
        (110..=120).contains(&ttl),
        "token ttl {ttl}s, want <= 120s: {looked}"
    );
    assert!(
        g.revoke(&short.lease.expect("lease"))
            .await
            .expect("revoke")
    );

    assert!(g.revoke(&cred.lease.expect("lease")).await.expect("revoke"));
    let after = bao
        .try_call(
            reqwest::Method::POST,
            "auth/token/lookup-accessor",
            Some(json!({"accessor": accessor})),
        )
        .await;
    assert!(after.is_err(), "token still exists: {after:?}");
}

/// The accessors of the tokens whose `meta.esi_test` is `tag`.
async fn tokens_tagged(bao: &Bao, tag: &str) -> Vec<String> {
    let listed = bao.get("auth/token/accessors?list=true").await;
    let mut found = Vec::new();
    for accessor in listed["data"]["keys"].as_array().into_iter().flatten() {
        // A token revoked between the listing and the lookup is simply gone.
        if let Ok(info) = bao
            .try_call(
                reqwest::Method::POST,
                "auth/token/lookup-accessor",
                Some(json!({"accessor": accessor})),
            )
            .await
            && info["data"]["meta"]["esi_test"] == tag
        {
            found.push(accessor.as_str().unwrap_or_default().to_owned());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_the_wanted_part_is_refused_and_revoked() {
    let test = "an_answer_without_the_wanted_part_is_refused_and_revoked";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let id = identity();
    let c = ctx(&id, "payments/VaultDynamicSecret/tok");

    // `auth/token/create` read as Data: Vault creates the token, the answer has no `data`.
    let tag = suffix();
    let spec = json!({
        "secretStoreRef": {"name": "vault"},
        "path": "auth/token/create",
        "method": "POST",
        "parameters": {"ttl": "10m", "policies": ["default"], "meta": {"esi_test": tag}},
    });
    let err = rejected("VaultDynamicSecret", spec, bao.root_store(), &c, "no data").await;
    let left = tokens_tagged(&bao, &tag).await;
    assert!(left.is_empty(), "orphan tokens left behind: {left:?}");
    let BackendError::Rejected { message, .. } = &err else {
        unreachable!()
    };
    assert!(
        message.contains("no secret") && message.contains("resultType: Auth"),
        "{message}"
    );
    assert!(message.contains("was revoked"), "{message}");

    // A leased PKI certificate read as Auth: the answer has no `auth`, its lease is revoked.
    let mount = format!("pki-{}", suffix());
    bao.post(&format!("sys/mounts/{mount}"), json!({"type": "pki"}))
        .await;
    bao.post(
        &format!("{mount}/root/generate/internal"),
        json!({"common_name": "esi test root", "ttl": "1h"}),
    )
    .await;
    bao.post(
        &format!("{mount}/roles/leased"),
        json!({"allowed_domains": "example.test", "allow_subdomains": true, "max_ttl": "1h", "generate_lease": true}),
    )
    .await;
    let before = serials(bao.get(&format!("{mount}/certs?list=true")).await);
    let spec = json!({
        "secretStoreRef": {"name": "vault"},
        "path": format!("{mount}/issue/leased"),
        "method": "POST",
        "parameters": {"common_name": "api.example.test", "ttl": "30m"},
        "resultType": "Auth",
    });
    let err = rejected("VaultDynamicSecret", spec, bao.root_store(), &c, "no auth").await;
    assert!(err.to_string().contains("resultType: Data"), "{err}");
    let minted: Vec<String> = serials(bao.get(&format!("{mount}/certs?list=true")).await)
        .difference(&before)
        .cloned()
        .collect();
    assert_eq!(minted.len(), 1, "one certificate issued: {minted:?}");
    let cert = bao.get(&format!("{mount}/cert/{}", minted[0])).await;
    assert!(
        cert["data"]["revocation_time"].as_i64().unwrap_or(0) > 0,
        "the certificate's lease was not revoked: {cert}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_unavailable_and_refusals_are_rejected() {
    let test = "unreachable_server_is_unavailable_and_refusals_are_rejected";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let id = identity();
    let c = ctx(&id, "payments/VaultDynamicSecret/db");
    let port = esi_test_support::ClosedPort::new();
    let closed = port.addr();
    let down = json!({"provider": {"vault": {"server": format!("http://{closed}"), "timeout": "2s", "auth": {"token": {"env": "ESI_TEST_OPENBAO_TOKEN"}}}}});
    let spec = json!({"secretStoreRef": {"name": "vault"}, "path": "database/creds/app", "retrySettings": {"maxRetries": 1, "retryInterval": "100ms"}});
    let err = build("VaultDynamicSecret", spec.clone(), Some(down))
        .generate(&c)
        .await
        .expect_err("down");
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    assert_eq!(err.code().as_str(), "backend_unavailable");

    let spec = json!({"secretStoreRef": {"name": "vault"}, "path": "nonexistent-mount/creds/app"});
    let err = rejected(
        "VaultDynamicSecret",
        spec,
        bao.root_store(),
        &c,
        "no such path",
    )
    .await;
    assert_eq!(err.code().as_str(), "backend_rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generators_on_one_store_share_its_login() {
    let test = "generators_on_one_store_share_its_login";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let (kv2, policy) = bao.kv2_fixture().await;
    // Every secret id below logs in once: a second login on it is refused.
    let (path, role_id) = bao
        .approle(json!({"token_policies": [policy], "token_ttl": "10m", "secret_id_num_uses": 1}))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store_with_fresh_secret_id = |name: &str| {
        let bao = &bao;
        let (path, role_id, file) = (&path, &role_id, dir.path().join(name));
        async move {
            std::fs::write(&file, bao.secret_id(path).await).expect("write");
            let store = bao.store(json!({"appRole": {"path": path, "roleId": role_id, "secretIdRef": {"file": file}}}));
            esi_backends::SecretStoreSpec::from_manifest(store).expect("valid store")
        }
    };
    let spec = |extra: Value| {
        esi_backends::GeneratorSpec::from_manifest(
            esi_backends::GeneratorKind::VaultStaticSecret,
            static_spec(&kv2, extra),
        )
        .expect("valid spec")
    };
    let (first, second) = (spec(json!({})), spec(json!({"version": 1})));
    let id = identity();
    let c = ctx(&id, "payments/VaultStaticSecret/db");

    // Built together, the two generators log in once between them.
    let store = store_with_fresh_secret_id("shared").await;
    let mut shared = esi_backends::Shared::default();
    let a =
        esi_backends::Generator::build_shared(&first, Some(&store), &mut shared).expect("builds");
    let b =
        esi_backends::Generator::build_shared(&second, Some(&store), &mut shared).expect("builds");
    assert_eq!(
        a.generate(&c).await.expect("first login").data["password"],
        "v2-secret"
    );
    assert_eq!(
        b.generate(&c).await.expect("shared login").data["password"],
        "v1-secret"
    );

    // Built apart, each would log in on its own: the single-use secret id refuses the second.
    let store = store_with_fresh_secret_id("apart").await;
    let a = esi_backends::Generator::build(&first, Some(&store)).expect("builds");
    let b = esi_backends::Generator::build(&second, Some(&store)).expect("builds");
    a.generate(&c).await.expect("first login");
    let err = b
        .generate(&c)
        .await
        .expect_err("a second login on a single-use secret id");
    assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
}

/// A FAKE of the one Kubernetes API call OpenBao's kubernetes auth method makes to check a
/// login's token: `POST /apis/authentication.k8s.io/v1/tokenreviews`. It authenticates exactly
/// `accepted`, as the ServiceAccount `esi/federation`, and counts the reviews.
async fn fake_token_review(accepted: String) -> (String, Arc<AtomicUsize>) {
    use axum::routing::post;
    let reviews = Arc::new(AtomicUsize::new(0));
    let seen = reviews.clone();
    let app = axum::Router::new().route(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        post(move |axum::Json(review): axum::Json<Value>| {
            let (accepted, seen) = (accepted.clone(), seen.clone());
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                let status = if review["spec"]["token"] == accepted.as_str() {
                    // The API server answers with the audiences it checked.
                    json!({"authenticated": true, "audiences": review["spec"]["audiences"], "user": {
                        "username": "system:serviceaccount:esi:federation",
                        "uid": "federation-sa-uid",
                        "groups": ["system:serviceaccounts", "system:serviceaccounts:esi", "system:authenticated"]}})
                } else {
                    json!({"authenticated": false, "error": "invalid bearer token"})
                };
                axum::Json(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status}))
            }
        }),
    );
    let url = common::serve_local(app).await;
    (url, reviews)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_login_is_reviewed_by_the_cluster() {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

    let test = "kubernetes_login_is_reviewed_by_the_cluster";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let (kv2, policy) = bao.kv2_fixture().await;
    // The federation's own projected ServiceAccount token, as the kubelet would mount it.
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
    let now = jiff::Timestamp::now().as_second();
    let sa_token = sign_jwt(
        &key,
        &json!({"iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:esi:federation",
                "aud": ["https://kubernetes.default.svc.cluster.local"], "iat": now, "nbf": now, "exp": now + 3600,
                "kubernetes.io": {"namespace": "esi", "serviceaccount": {"name": "federation", "uid": "federation-sa-uid"}}}),
    );
    let (api, reviews) = fake_token_review(sa_token.clone()).await;
    let path = format!("k8s-{}", suffix());
    bao.post(&format!("sys/auth/{path}"), json!({"type": "kubernetes"}))
        .await;
    // The method insists on a cluster CA even for a plain-http API server: any will do.
    let pki = format!("pki-{}", suffix());
    bao.post(&format!("sys/mounts/{pki}"), json!({"type": "pki"}))
        .await;
    let ca = bao
        .post(
            &format!("{pki}/root/generate/internal"),
            json!({"common_name": "fake cluster CA", "ttl": "1h"}),
        )
        .await["data"]["certificate"]
        .clone();
    bao.post(
        &format!("auth/{path}/config"),
        json!({"kubernetes_host": api, "kubernetes_ca_cert": ca, "disable_local_ca_jwt": true}),
    )
    .await;
    bao.post(
        &format!("auth/{path}/role/esi"),
        json!({"bound_service_account_names": ["federation"], "bound_service_account_namespaces": ["esi"],
               "token_policies": [policy], "token_ttl": "60s"}),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &sa_token).expect("write");
    let store =
        bao.store(json!({"kubernetes": {"path": path, "role": "esi", "tokenFile": token_file}}));

    let id = identity();
    let c = ctx(&id, "payments/VaultStaticSecret/db");
    let g = build(
        "VaultStaticSecret",
        static_spec(&kv2, json!({})),
        Some(store.clone()),
    );
    assert_eq!(
        g.generate(&c).await.expect("kubernetes login + read").data["user"],
        "app"
    );
    assert!(
        reviews.load(Ordering::SeqCst) >= 1,
        "OpenBao asked the cluster to review the token"
    );

    // A token the cluster does not vouch for is refused.
    let other = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
    std::fs::write(&token_file, sign_jwt(&other, &json!({"sub": "system:serviceaccount:esi:federation", "iat": now, "exp": now + 3600,
        "kubernetes.io": {"namespace": "esi", "serviceaccount": {"name": "federation", "uid": "federation-sa-uid"}}}))).expect("write");
    let spec = static_spec(&kv2, json!({}));
    rejected("VaultStaticSecret", spec, store, &c, "unreviewed token").await;
}

/// A `cert` auth mount whose role `esi` trusts `ca` (PEM) and grants `policy`: its path.
async fn cert_mount(bao: &Bao, ca: &str, policy: &str) -> String {
    let path = format!("cert-{}", suffix());
    bao.post(&format!("sys/auth/{path}"), json!({"type": "cert"}))
        .await;
    bao.post(
        &format!("auth/{path}/certs/esi"),
        json!({"certificate": ca, "token_policies": [policy], "token_ttl": "10m"}),
    )
    .await;
    path
}

/// Writes a certificate and its key where a store reads them (mode 0600).
fn write_pair(dir: &std::path::Path, (cert, key): &(String, String)) {
    use std::os::unix::fs::OpenOptionsExt as _;
    for (name, pem) in [("tls.crt", cert), ("tls.key", key)] {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join(name))
            .expect("open");
        std::io::Write::write_all(&mut f, pem.as_bytes()).expect("write");
    }
}

/// What Vault says of the token the generator's store holds (`auth/token/lookup-self`, read
/// through a `VaultDynamicSecret`): the common name of the certificate it logged in with, and
/// the token's accessor.
async fn logged_in_as(
    g: &esi_backends::Generator,
    c: &esi_backends::Context<'_>,
) -> (String, String) {
    let looked = g.generate(c).await.expect("lookup-self");
    let meta: Value = serde_json::from_str(&looked.data["meta"]).expect("meta as JSON");
    (
        meta["common_name"]
            .as_str()
            .expect("common_name")
            .to_owned(),
        looked.data["accessor"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_login_presents_the_certificate_and_a_renewed_one_after_a_refusal() {
    let test = "cert_login_presents_the_certificate_and_a_renewed_one_after_a_refusal";
    let Some((bao, bao_ca)) = Bao::tls_from_env(test) else {
        return;
    };
    let (kv2, policy) = bao.kv2_fixture().await;
    let ca = esi_test_support::ClientCa::new("esi-federation").expect("client CA");
    let path = cert_mount(&bao, &ca.ca_pem(), &policy).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_pair(dir.path(), &ca.issue("esi-a", &[]).expect("cert a"));
    let store = |name: &str| {
        json!({"provider": {"vault": {
            "server": bao.addr, "caBundle": bao_ca, "timeout": "5s",
            "auth": {"cert": {
                "path": path,
                "name": name,
                "clientCert": {"file": dir.path().join("tls.crt")},
                "clientKey": {"file": dir.path().join("tls.key")},
            }},
        }}})
    };
    let id = identity();
    let c = ctx(&id, "payments/VaultStaticSecret/db");

    // The certificate logs in, and the token reads within the role's policy.
    let g = build(
        "VaultStaticSecret",
        static_spec(&kv2, json!({})),
        Some(store("esi")),
    );
    assert_eq!(
        g.generate(&c).await.expect("cert login + read").data["password"],
        "v2-secret"
    );
    let lookup = json!({"secretStoreRef": {"name": "vault"}, "path": "auth/token/lookup-self"});
    let whoami = build("VaultDynamicSecret", lookup.clone(), Some(store("esi")));
    let (cn, accessor) = logged_in_as(&whoami, &c).await;
    assert_eq!(cn, "esi-a");

    // A renewed certificate is presented at the next login: while the token is good it is
    // kept; once Vault refuses it (revoked here), the store logs in again, reading the files
    // again.
    write_pair(dir.path(), &ca.issue("esi-b", &[]).expect("cert b"));
    assert_eq!(logged_in_as(&whoami, &c).await, (cn, accessor.clone()));
    bao.post("auth/token/revoke-accessor", json!({"accessor": accessor}))
        .await;
    let (cn, _) = logged_in_as(&whoami, &c).await;
    assert_eq!(cn, "esi-b", "the renewed certificate logged in");

    // The role is the one named: no other role is tried.
    let err = rejected(
        "VaultStaticSecret",
        static_spec(&kv2, json!({})),
        store("nobody"),
        &c,
        "a role that does not exist",
    )
    .await;
    assert!(err.detail().contains("cert login"), "{}", err.detail());

    // A certificate of a CA no role trusts: the login is refused.
    let (cert, key) = esi_test_support::ClientCa::new("stranger")
        .expect("CA")
        .issue("esi-a", &[])
        .expect("stranger's cert");
    write_pair(dir.path(), &(cert, key.clone()));
    rejected(
        "VaultStaticSecret",
        static_spec(&kv2, json!({})),
        store("esi"),
        &c,
        "an untrusted certificate",
    )
    .await;

    // A key that is not the certificate's: the federation's own credential is broken, said
    // without the key.
    write_pair(
        dir.path(),
        &(ca.issue("esi-a", &[]).expect("cert").0, key.clone()),
    );
    let err = build(
        "VaultStaticSecret",
        static_spec(&kv2, json!({})),
        Some(store("esi")),
    )
    .generate(&c)
    .await
    .expect_err("mismatched key");
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("client certificate cannot be used")
            && err.detail().contains("provider.vault.auth.cert"),
        "{err} / {}",
        err.detail()
    );
    let body = key.lines().nth(1).expect("key body");
    assert!(
        !err.detail().contains(body),
        "the key leaked: {}",
        err.detail()
    );
}

/// The accessor of the token the generator's store holds (`auth/token/lookup-self` through a
/// `VaultDynamicSecret`).
async fn accessor_of(g: &esi_backends::Generator, c: &esi_backends::Context<'_>) -> String {
    g.generate(c).await.expect("lookup-self").data["accessor"].clone()
}

/// A `VaultDynamicSecret` reading `auth/token/lookup-self` on an AppRole store whose role
/// grants `token_ttl` and `token_max_ttl`, and the directory holding its secret id.
async fn whoami_on_approle(
    bao: &Bao,
    token_ttl: &str,
    token_max_ttl: &str,
) -> (esi_backends::Generator, tempfile::TempDir) {
    let (path, role_id) = bao
        .approle(json!({"token_ttl": token_ttl, "token_max_ttl": token_max_ttl}))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("secret-id");
    std::fs::write(&secret_file, bao.secret_id(&path).await).expect("write");
    let store = bao.store(
        json!({"appRole": {"path": path, "roleId": role_id, "secretIdRef": {"file": secret_file}}}),
    );
    let g = build(
        "VaultDynamicSecret",
        json!({"secretStoreRef": {"name": "vault"}, "path": "auth/token/lookup-self"}),
        Some(store),
    );
    (g, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_token_renewed_short_of_its_ttl_is_replaced_by_a_new_login() {
    let test = "a_login_token_renewed_short_of_its_ttl_is_replaced_by_a_new_login";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let id = identity();
    let c = ctx(&id, "payments/VaultDynamicSecret/whoami");
    // Renewed in full at 6 s of 9 s (60 s of max TTL): the same token, renewed, not a new login.
    let (roomy, _roomy_dir) = whoami_on_approle(&bao, "9s", "60s").await;
    // Renewed at 6 s of 9 s with 13 s of max TTL: Vault grants ~6 s, short of the 9 s the login
    // got; a lease taken now would die with the token within seconds, so the store logs in
    // again.
    let (capped, _capped_dir) = whoami_on_approle(&bao, "9s", "13s").await;
    let (roomy_first, capped_first) =
        tokio::join!(accessor_of(&roomy, &c), accessor_of(&capped, &c));
    let kept = async {
        tokio::time::sleep(Duration::from_millis(6300)).await;
        accessor_of(&roomy, &c).await
    };
    let replaced = async {
        tokio::time::sleep(Duration::from_millis(6300)).await;
        accessor_of(&capped, &c).await
    };
    let (kept, replaced) = tokio::join!(kept, replaced);
    assert_eq!(kept, roomy_first, "a token renewed in full is kept");
    let looked = bao
        .post("auth/token/lookup-accessor", json!({"accessor": kept}))
        .await;
    let ttl = looked["data"]["ttl"].as_i64().expect("ttl");
    assert!(ttl >= 8, "the kept token was renewed: {ttl}s left");
    assert_ne!(
        replaced, capped_first,
        "a token near its max TTL is replaced by a new login"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userpass_login_reads_within_policy_and_a_wrong_password_is_refused() {
    let test = "userpass_login_reads_within_policy_and_a_wrong_password_is_refused";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let (kv2, policy) = bao.kv2_fixture().await;
    let path = format!("userpass-{}", suffix());
    bao.post(&format!("sys/auth/{path}"), json!({"type": "userpass"}))
        .await;
    let password = format!("pw-{}", suffix());
    bao.post(
        &format!("auth/{path}/users/esi-federation"),
        json!({"password": password, "token_policies": [policy], "token_ttl": "10m"}),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{password}\n")).expect("write");
    let store = bao.store(json!({"userPass": {
        "path": path, "username": "esi-federation", "passwordRef": {"file": password_file},
    }}));
    let id = identity();
    let c = ctx(&id, "payments/VaultStaticSecret/db");
    let g = build(
        "VaultStaticSecret",
        static_spec(&kv2, json!({})),
        Some(store.clone()),
    );
    assert_eq!(
        g.generate(&c).await.expect("userpass login + read").data["password"],
        "v2-secret"
    );

    std::fs::write(&password_file, "not-the-password").expect("write");
    let err = rejected(
        "VaultStaticSecret",
        static_spec(&kv2, json!({})),
        store,
        &c,
        "a wrong password",
    )
    .await;
    assert!(err.detail().contains("userpass login"), "{}", err.detail());
    assert!(
        !err.detail().contains("not-the-password") && !err.to_string().contains("not-the-password"),
        "the password leaked: {}",
        err.detail()
    );
}

/// A FAKE of Vault's `aws` auth method (OpenBao has none), in front of the real OpenBao dev
/// server: `POST /v1/auth/{mount}/login` does what Vault's IAM login does with the signed
/// `GetCallerIdentity` request (decodes it, requires the body to be that call and the
/// `X-Vault-AWS-IAM-Server-ID` header to hold the mount's value and be signed, sends the request
/// to the STS endpoint, here moto's, and binds the ARN STS answers to the role) and answers with
/// a real OpenBao token; every other path is passed on to OpenBao.
#[cfg(feature = "vault-iam")]
#[allow(
    clippy::unwrap_used,
    reason = "a test fake: a failed unwrap fails the test"
)]
mod iam_fake {
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::response::{IntoResponse, Response};
    use base64::Engine as _;
    use serde_json::{Value, json};

    pub struct Fake {
        pub bao: String,
        pub sts: String,
        pub server_id: String,
        /// The role `esi` binds this principal (an assumed-role ARN prefix, as Vault resolves
        /// `arn:aws:iam::<account>:role/<name>` for a session of it).
        pub bound: String,
        /// The OpenBao token a successful login hands out.
        pub token: String,
        /// Every login body.
        pub seen: Mutex<Vec<Value>>,
        pub http: reqwest::Client,
    }

    fn refuse(message: &str) -> Response {
        (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"errors": [message]})),
        )
            .into_response()
    }

    fn unb64(v: &Value) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str()?)
            .ok()
    }

    async fn login(
        State(fake): State<Arc<Fake>>,
        Path(_mount): Path<String>,
        axum::Json(body): axum::Json<Value>,
    ) -> Response {
        fake.seen.lock().unwrap().push(body.clone());
        if body["role"] != "esi" {
            return refuse("entry for role not found");
        }
        if body["iam_http_request_method"] != "POST" {
            return refuse("invalid iam_http_request_method; currently only 'POST' is supported");
        }
        let (Some(url), Some(req_body), Some(headers)) = (
            unb64(&body["iam_request_url"]),
            unb64(&body["iam_request_body"]),
            unb64(&body["iam_request_headers"]),
        ) else {
            return refuse("failed to base64 decode the request");
        };
        let (url, req_body) = (
            String::from_utf8(url).unwrap(),
            String::from_utf8(req_body).unwrap(),
        );
        let Ok(headers) = serde_json::from_slice::<serde_json::Map<String, Value>>(&headers) else {
            return refuse("failed to parse iam_request_headers");
        };
        if url != fake.sts {
            return refuse(&format!("unexpected iam_request_url {url}"));
        }
        if req_body != "Action=GetCallerIdentity&Version=2011-06-15" {
            return refuse("iam_request_body is not a GetCallerIdentity call");
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_array()?.first()?.as_str().map(str::to_owned))
        };
        if header("X-Vault-AWS-IAM-Server-ID").as_deref() != Some(fake.server_id.as_str()) {
            return refuse(
                "expected X-Vault-AWS-IAM-Server-ID header value to match the configured value",
            );
        }
        let authorization = header("Authorization").unwrap_or_default();
        let signed = authorization
            .split("SignedHeaders=")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or_default();
        if !signed.split(';').any(|h| h == "x-vault-aws-iam-server-id") {
            return refuse("the X-Vault-AWS-IAM-Server-ID header is not signed");
        }
        // What Vault does: the request, as signed, to STS.
        let mut forward = fake.http.post(&url).body(req_body);
        for (k, v) in &headers {
            for value in v.as_array().into_iter().flatten() {
                forward = forward.header(k.as_str(), value.as_str().unwrap_or_default());
            }
        }
        let answer = forward.send().await.unwrap();
        let status = answer.status();
        let xml = answer.text().await.unwrap();
        if !status.is_success() {
            return refuse(&format!("error making upstream request: {status}"));
        }
        let arn = xml
            .split("<Arn>")
            .nth(1)
            .and_then(|s| s.split("</Arn>").next())
            .unwrap_or_default();
        if !arn.starts_with(&fake.bound) {
            return refuse(&format!(
                "IAM Principal {arn:?} does not belong to the role \"esi\""
            ));
        }
        axum::Json(json!({"auth": {
            "client_token": fake.token, "accessor": "", "policies": [], "token_policies": [],
            "metadata": {"canonical_arn": arn}, "lease_duration": 600, "renewable": false,
            "entity_id": "", "token_type": "service", "orphan": true,
        }}))
        .into_response()
    }

    async fn pass_on(State(fake): State<Arc<Fake>>, req: axum::extract::Request) -> Response {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut forward = fake
            .http
            .request(parts.method, format!("{}{path}", fake.bao))
            .body(bytes.to_vec());
        for (k, v) in &parts.headers {
            if k != axum::http::header::HOST {
                forward = forward.header(k, v);
            }
        }
        let answer = forward.send().await.unwrap();
        let status = answer.status();
        (status, answer.bytes().await.unwrap()).into_response()
    }

    /// Serves the fake; its URL.
    pub async fn serve(fake: Arc<Fake>) -> String {
        let app = axum::Router::new()
            .route("/v1/auth/{mount}/login", axum::routing::post(login))
            .fallback(pass_on)
            .with_state(fake);
        super::common::serve_local(app).await
    }
}

#[cfg(feature = "vault-iam")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_login_is_a_signed_get_caller_identity_whose_principal_vault_binds() {
    let test = "iam_login_is_a_signed_get_caller_identity_whose_principal_vault_binds";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let Some(moto) = peer("ESI_TEST_MOTO_URL", test) else {
        return;
    };
    let (kv2, policy) = bao.kv2_fixture().await;
    let fake = Arc::new(iam_fake::Fake {
        bao: bao.addr.clone(),
        sts: format!("{moto}/"),
        server_id: "vault.example.com".to_owned(),
        bound: "arn:aws:sts::123456789012:assumed-role/esi-federation/".to_owned(),
        token: bao
            .create_token(json!({"policies": [policy], "ttl": "10m"}))
            .await,
        seen: std::sync::Mutex::default(),
        http: reqwest::Client::new(),
    });
    let server = iam_fake::serve(fake.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, value) in [
        ("key-id", "AKIAIOSFODNN7EXAMPLE"),
        ("secret", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ] {
        std::fs::write(dir.path().join(name), value).expect("write");
    }
    let store = |server_id: &str, assume: bool| {
        let mut sts = json!({"region": "us-east-1", "endpoint": moto, "credentials": {
            "accessKeyId": {"file": dir.path().join("key-id")},
            "secretAccessKey": {"file": dir.path().join("secret")},
        }});
        if assume {
            sts["assumeRole"] = json!({"roleArn": "arn:aws:iam::123456789012:role/esi-federation"});
        }
        json!({"provider": {"vault": {"server": server, "timeout": "5s", "auth": {"iam": {
            "path": "aws", "role": "esi", "serverId": server_id, "sts": sts,
        }}}}})
    };
    let id = identity();
    let c = ctx(&id, "payments/VaultStaticSecret/db");

    // A session of the bound role logs in, and reads within the token's policy.
    let g = build(
        "VaultStaticSecret",
        static_spec(&kv2, json!({})),
        Some(store("vault.example.com", true)),
    );
    assert_eq!(
        g.generate(&c).await.expect("iam login + read").data["password"],
        "v2-secret"
    );
    let login = fake.seen.lock().expect("lock")[0].clone();
    assert_eq!(login["role"], "esi");
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    assert!(
        !login.to_string().contains(secret),
        "the secret key was sent: {login}"
    );

    // A server id of another Vault, or a principal the role does not bind: refused.
    for (server_id, assume, what) in [
        ("vault.other.example", true, "another Vault's server id"),
        (
            "vault.example.com",
            false,
            "a principal the role does not bind",
        ),
    ] {
        let err = rejected(
            "VaultStaticSecret",
            static_spec(&kv2, json!({})),
            store(server_id, assume),
            &c,
            what,
        )
        .await;
        assert!(
            err.detail().contains("iam login"),
            "{what}: {}",
            err.detail()
        );
        assert!(!err.detail().contains(secret), "{}", err.detail());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_check_logs_in_and_names_the_token_and_its_policies() {
    let test = "a_login_check_logs_in_and_names_the_token_and_its_policies";
    let Some(bao) = Bao::from_env(test) else {
        return;
    };
    let (_kv2, policy) = bao.kv2_fixture().await;
    let (path, role_id) = bao
        .approle(json!({"token_policies": [policy], "token_ttl": "10m"}))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("secret-id");
    std::fs::write(&secret_file, bao.secret_id(&path).await).expect("write");
    let store = bao.store(
        json!({"appRole": {"path": path, "roleId": role_id, "secretIdRef": {"file": secret_file}}}),
    );
    let check = |store: Value| async move {
        esi_backends::SecretStoreSpec::from_manifest(store)
            .expect("store")
            .check_login(None)
            .await
    };
    match check(store.clone()).await {
        esi_backends::LoginCheck::LoggedIn(who) => {
            // Vault names an AppRole token after its mount; its TTL runs from the login.
            let named = format!("token \"{path}\", policies [default, {policy}], ttl ");
            assert!(who.starts_with(&named), "{who}");
            let ttl: u64 = who[named.len()..]
                .trim_end_matches('s')
                .parse()
                .expect("ttl");
            assert!((590..=600).contains(&ttl), "{who}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&secret_file, "not-the-secret-id").expect("write");
    match check(store).await {
        esi_backends::LoginCheck::Failed(e) => {
            assert!(e.detail().contains("approle login"), "{}", e.detail());
            assert!(!e.detail().contains("not-the-secret-id"), "{}", e.detail());
        }
        other => panic!("{other:?}"),
    }
}
