//! AWS generators against moto's STS server (scripts/peers/moto.sh). moto validates
//! nothing, so the assertions are on what the SDK sent: the peer script starts moto with
//! request recording on, and `/moto-api/recorder/download-recording` returns every request.

#![cfg(feature = "aws")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use esi_backends::{BackendError, Context, Generate};
use serde_json::{Value, json};

use common::{build, identity, peer, suffix};

struct Moto {
    url: String,
    keys: tempfile::TempDir,
}

impl Moto {
    fn from_env(test: &str) -> Option<Self> {
        let url = peer("ESI_TEST_MOTO_URL", test)?;
        let keys = tempfile::tempdir().expect("tempdir");
        std::fs::write(keys.path().join("ak"), "AKIAESITESTKEY000001").expect("write");
        std::fs::write(keys.path().join("sk"), "esi-test-secret-key\n").expect("write");
        std::fs::write(keys.path().join("st"), "esi-test-session-token").expect("write");
        Some(Moto { url, keys })
    }

    /// An `aws` store on moto signing with the test's static keys, `extra` added.
    fn store(&self, extra: Value) -> Value {
        let mut store = self.store_without_keys(extra);
        store["provider"]["aws"]["credentials"] = json!({
            "accessKeyId": {"file": self.keys.path().join("ak")},
            "secretAccessKey": {"file": self.keys.path().join("sk")},
        });
        store
    }

    /// An `aws` store on moto with `extra` and no credentials.
    fn store_without_keys(&self, extra: Value) -> Value {
        let mut aws = json!({"region": "eu-west-1", "endpoint": self.url, "timeout": "5s"});
        if let (Some(a), Some(e)) = (aws.as_object_mut(), extra.as_object()) {
            a.extend(e.clone());
        }
        json!({"provider": {"aws": aws}})
    }

    fn session_token_ref(&self) -> Value {
        json!({"file": self.keys.path().join("st")})
    }

    /// Every request moto recorded. Tests run concurrently, so the last line may be one
    /// moto is still writing: only that one may fail to parse, and is left out.
    async fn recording(&self) -> Vec<Value> {
        let text = reqwest::get(format!("{}/moto-api/recorder/download-recording", self.url))
            .await
            .expect("moto recording")
            .text()
            .await
            .expect("body");
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let last = lines.len().saturating_sub(1);
        lines
            .iter()
            .enumerate()
            .filter_map(|(i, line)| match serde_json::from_str(line) {
                Ok(entry) => Some(entry),
                Err(_) if i == last && !text.ends_with('\n') => None,
                Err(e) => panic!("recording line {i}: {e}"),
            })
            .collect()
    }

    /// The STS requests moto recorded, as form parameters plus the Authorization header.
    async fn recorded(&self) -> Vec<(BTreeMap<String, String>, String)> {
        self.recording()
            .await
            .iter()
            .map(|entry| {
                let body = String::from_utf8(recorded_body(entry)).unwrap_or_default();
                let url = reqwest::Url::parse(&format!("http://x/?{body}")).expect("form");
                let form: BTreeMap<String, String> = url
                    .query_pairs()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                (form, recorded_header(entry, "Authorization"))
            })
            .collect()
    }

    /// The recorded AssumeRole request with this session name.
    async fn assume_role_request(&self, session: &str) -> (BTreeMap<String, String>, String) {
        self.recorded()
            .await
            .into_iter()
            .find(|(f, _)| {
                f.get("Action").map(String::as_str) == Some("AssumeRole")
                    && f.get("RoleSessionName").map(String::as_str) == Some(session)
            })
            .unwrap_or_else(|| panic!("moto recorded no AssumeRole with RoleSessionName {session}"))
    }
}

/// Session tags as the query protocol sends them: `Tags.member.N.Key/Value`.
fn tags(form: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    (1..=50)
        .map_while(|i| {
            Some((
                form.get(&format!("Tags.member.{i}.Key"))?.clone(),
                form.get(&format!("Tags.member.{i}.Value"))?.clone(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_sends_identity_tags_and_source_identity() {
    let test = "assume_role_sends_identity_tags_and_source_identity";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let run = suffix();
    let g = build(
        "AWSAssumeRole",
        json!({
            "secretStoreRef": {"name": "aws"},
            "roleArn": "arn:aws:iam::123456789012:role/esi-app",
            "sessionName": format!("t{run}-{{{{namespace}}}}-{{{{serviceAccount}}}}"),
            "durationSeconds": 1800,
            "externalId": "ext-123",
            "policy": "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"s3:GetObject\",\"Resource\":\"*\"}]}",
            "policyArns": ["arn:aws:iam::aws:policy/ReadOnlyAccess"],
            "tags": {"team": "payments"},
            "transitiveTagKeys": ["team"],
            "sourceIdentity": "{{serviceAccount}}@{{namespace}}.{{cluster}}",
        }),
        Some(moto.store(json!({}))),
    );
    let id = identity();
    let before = jiff::Timestamp::now();
    let cred = g
        .generate(&Context {
            identity: &id,
            generator: "payments/AWSAssumeRole/app",
            max_ttl: None,
        })
        .await
        .expect("assume role");
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        assert!(!cred.data[k].is_empty(), "{k}");
    }
    let secs = cred
        .expires_at
        .expect("expiration")
        .duration_since(before)
        .as_secs();
    assert!(
        (1790..=1810).contains(&secs),
        "expires {secs}s after issue, want 1800"
    );
    assert!(!format!("{cred:?}").contains(&cred.data["AWS_SECRET_ACCESS_KEY"]));

    let (form, auth) = moto
        .assume_role_request(&format!("t{run}-payments-api"))
        .await;
    assert_eq!(form["RoleArn"], "arn:aws:iam::123456789012:role/esi-app");
    assert_eq!(form["DurationSeconds"], "1800");
    assert_eq!(form["ExternalId"], "ext-123");
    assert_eq!(form["SourceIdentity"], "api@payments.prod-eu");
    assert!(form["Policy"].contains("s3:GetObject"));
    assert_eq!(
        form["PolicyArns.member.1.arn"],
        "arn:aws:iam::aws:policy/ReadOnlyAccess"
    );
    assert_eq!(form["TransitiveTagKeys.member.1"], "team");
    let sent = tags(&form);
    assert_eq!(sent.get("esi-cluster").map(String::as_str), Some("prod-eu"));
    assert_eq!(
        sent.get("kubernetes-namespace").map(String::as_str),
        Some("payments")
    );
    assert_eq!(
        sent.get("kubernetes-service-account").map(String::as_str),
        Some("api")
    );
    assert_eq!(
        sent.get("kubernetes-pod-name").map(String::as_str),
        Some("api-7d9f")
    );
    assert_eq!(sent.get("team").map(String::as_str), Some("payments"));
    assert!(
        auth.contains("Credential=AKIAESITESTKEY000001/"),
        "signed with the store's key: {auth}"
    );
    assert!(auth.contains("/eu-west-1/sts/aws4_request"), "{auth}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_honours_max_ttl_and_base_role() {
    let test = "assume_role_honours_max_ttl_and_base_role";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let run = suffix();
    let store = moto.store(json!({"assumeRole": {"roleArn": "arn:aws:iam::123456789012:role/esi-federation", "sessionName": format!("base{run}")}}));
    let g = build(
        "AWSAssumeRole",
        json!({"secretStoreRef": {"name": "aws"}, "roleArn": "arn:aws:iam::123456789012:role/esi-app", "sessionName": format!("m{run}"), "identityTags": false}),
        Some(store),
    );
    let id = identity();
    let c = Context {
        identity: &id,
        generator: "payments/AWSAssumeRole/app",
        max_ttl: Some(Duration::from_secs(1200)),
    };
    g.generate(&c)
        .await
        .expect("assume role through the base role");
    let (base, base_auth) = moto.assume_role_request(&format!("base{run}")).await;
    assert_eq!(
        base["RoleArn"],
        "arn:aws:iam::123456789012:role/esi-federation"
    );
    assert!(base_auth.contains("Credential=AKIAESITESTKEY000001/"));
    let (form, auth) = moto.assume_role_request(&format!("m{run}")).await;
    assert_eq!(
        form["DurationSeconds"], "1200",
        "lowered to the authorization's maxTTL"
    );
    assert!(tags(&form).is_empty(), "identityTags: false sends no tags");
    assert!(
        !auth.contains("AKIAESITESTKEY000001"),
        "signed with the base role's session, not the static key: {auth}"
    );

    let short = Context {
        max_ttl: Some(Duration::from_secs(300)),
        ..c
    };
    let err = g
        .generate(&short)
        .await
        .expect_err("maxTTL below STS minimum");
    assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
}

/// A store with no AWS credentials at all: the federation assumes its role with a token it
/// signs for itself, which STS gets unsigned; generators then sign with that role's session,
/// kept while it lives. moto checks nothing, so the test evaluates the token against the role's
/// trust policy as `trust-aws` writes it ([`trust_aws_admits`]), next to a workload's identity
/// token, which it must refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_issued_token_assumes_the_stores_role_with_no_aws_secret() {
    use esi_backends::identity::{FEDERATION_SUBJECT, KeyAlgorithm, TokenRequest};
    use esi_backends::{Generator, GeneratorKind, GeneratorSpec, SecretStoreSpec, Shared};
    use secrecy::ExposeSecret as _;
    let test = "a_self_issued_token_assumes_the_stores_role_with_no_aws_secret";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let run = suffix();
    let issuer = common::own_issuer(KeyAlgorithm::Rs256);
    let self_issued = json!({"selfIssued": {"roleArn": "arn:aws:iam::123456789012:role/esi-federation", "sessionName": format!("own{run}")}});
    let own = SecretStoreSpec::from_manifest(moto.store_without_keys(self_issued.clone()))
        .expect("valid store");
    let build = |kind: GeneratorKind, spec: Value| {
        let spec = GeneratorSpec::from_manifest(kind, spec).expect("valid spec");
        Generator::build_shared(
            &spec,
            Some(&own),
            &mut Shared::with_issuer(Some(issuer.clone())),
        )
    };
    let g = build(
        GeneratorKind::AwsAssumeRole,
        json!({"secretStoreRef": {"name": "aws"}, "roleArn": "arn:aws:iam::123456789012:role/esi-app", "sessionName": format!("m{run}"), "identityTags": false}),
    )
    .expect("builds");
    let id = identity();
    let c = Context {
        identity: &id,
        generator: "payments/AWSAssumeRole/app",
        max_ttl: None,
    };
    for _ in 0..2 {
        g.generate(&c)
            .await
            .expect("assumed through the store's own role");
    }

    let recorded = moto.recorded().await;
    let own_calls: Vec<_> = recorded
        .iter()
        .filter(|(f, _)| f.get("RoleSessionName") == Some(&format!("own{run}")))
        .collect();
    assert_eq!(
        own_calls.len(),
        1,
        "the role's session is kept while it lives"
    );
    let (form, auth) = own_calls[0];
    assert_eq!(form["Action"], "AssumeRoleWithWebIdentity");
    assert_eq!(
        form["RoleArn"],
        "arn:aws:iam::123456789012:role/esi-federation"
    );
    assert!(!auth.contains("Credential="), "sent unsigned: {auth}");
    // moto checks nothing: the role's trust policy as trust-aws writes it takes the token the
    // federation sent, and no workload's identity token of the same issuer and audience.
    let token = &form["WebIdentityToken"];
    assert_eq!(trust_aws_admits(&issuer, token), Ok(()));
    let claims = common::jwt_claims(token);
    assert_eq!(claims["sub"], FEDERATION_SUBJECT);
    let audiences = ["sts.amazonaws.com".to_owned()];
    let workload = issuer
        .mint(&TokenRequest {
            identity: &id,
            generator: "payments/IdentityToken/aws",
            audiences: &audiences,
            lifetime: Duration::from_secs(600),
            aws_session_tags: true,
        })
        .expect("signed");
    let refused = trust_aws_admits(&issuer, workload.token.expose_secret()).unwrap_err();
    assert!(refused.contains(":sub"), "{refused}");
    let stranger = common::own_issuer(KeyAlgorithm::Rs256);
    let forged = stranger
        .mint_own("sts.amazonaws.com", Duration::from_secs(300))
        .expect("signed");
    let refused = trust_aws_admits(&issuer, forged.token.expose_secret()).unwrap_err();
    assert!(refused.contains("signature"), "{refused}");
    let elsewhere = issuer
        .mint_own("api://AzureADTokenExchange", Duration::from_secs(300))
        .expect("signed");
    let refused = trust_aws_admits(&issuer, elsewhere.token.expose_secret()).unwrap_err();
    assert!(refused.contains(":aud"), "{refused}");
    let (_, auth) = moto.assume_role_request(&format!("m{run}")).await;
    assert!(
        auth.contains("Credential=") && !auth.contains("AKIAESITESTKEY000001"),
        "the generator signs with the role's session: {auth}"
    );

    // That session is role chaining (one hour at most), and temporary (no GetSessionToken).
    let e = build(
        GeneratorKind::AwsAssumeRole,
        json!({"secretStoreRef": {"name": "aws"}, "roleArn": "arn:aws:iam::123456789012:role/esi-app", "durationSeconds": 7200}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("provider.aws.selfIssued"), "{e}");
    let e = build(
        GeneratorKind::StsSessionToken,
        json!({"secretStoreRef": {"name": "aws"}}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("temporary"), "{e}");
    // Its credentials come from one place; and without an issuer there are none.
    let both = SecretStoreSpec::from_manifest(moto.store(self_issued)).unwrap_err();
    assert!(both.to_string().contains("not both"), "{both}");
    let spec = GeneratorSpec::from_manifest(
        GeneratorKind::AwsAssumeRole,
        json!({"secretStoreRef": {"name": "aws"}, "roleArn": "arn:aws:iam::123456789012:role/esi-app"}),
    )
    .expect("valid spec");
    let e = Generator::build_shared(&spec, Some(&own), &mut Shared::with_issuer(None)).unwrap_err();
    assert!(
        e.to_string().contains("selfIssued") && e.to_string().contains("--issuer-url"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_token_needs_long_term_keys() {
    let test = "session_token_needs_long_term_keys";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let id = identity();
    let c = Context {
        identity: &id,
        generator: "payments/STSSessionToken/t",
        max_ttl: None,
    };
    let spec = json!({"secretStoreRef": {"name": "aws"}, "durationSeconds": 900});

    let before = jiff::Timestamp::now();
    let cred = build("STSSessionToken", spec.clone(), Some(moto.store(json!({}))))
        .generate(&c)
        .await
        .expect("session token");
    assert!(!cred.data["AWS_SESSION_TOKEN"].is_empty());
    let secs = cred
        .expires_at
        .expect("expiration")
        .duration_since(before)
        .as_secs();
    assert!((890..=910).contains(&secs), "{secs}");
    let sent = moto.recorded().await;
    assert!(sent.iter().any(|(f, _)| f.get("Action").map(String::as_str)
        == Some("GetSessionToken")
        && f.get("DurationSeconds").map(String::as_str) == Some("900")));

    // Temporary store credentials: a clear refusal before any call.
    let mut temp = moto.store(json!({}));
    temp["provider"]["aws"]["credentials"]["sessionToken"] = moto.session_token_ref();
    let err = build("STSSessionToken", spec.clone(), Some(temp))
        .generate(&c)
        .await
        .expect_err("temporary credentials");
    assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
    assert!(
        err.to_string().contains("temporary") && err.to_string().contains("AWSAssumeRole"),
        "{err}"
    );

    // A store that assumes a role first is refused at load time.
    let assumed =
        moto.store(json!({"assumeRole": {"roleArn": "arn:aws:iam::123456789012:role/base"}}));
    let kind = esi_backends::GeneratorKind::parse("STSSessionToken").expect("kind");
    let spec = esi_backends::GeneratorSpec::from_manifest(kind, spec).expect("spec");
    let store = esi_backends::SecretStoreSpec::from_manifest(assumed).expect("store");
    let err = esi_backends::Generator::build(&spec, Some(&store)).expect_err("assumed-role store");
    assert!(err.to_string().contains("secretStoreRef"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_sts_is_unavailable() {
    let port = esi_test_support::ClosedPort::new();
    let closed = port.addr();
    let keys = tempfile::tempdir().expect("tempdir");
    std::fs::write(keys.path().join("ak"), "AKIAX").expect("write");
    std::fs::write(keys.path().join("sk"), "esi-unreachable-secret-key").expect("write");
    let store = json!({"provider": {"aws": {
        "region": "eu-west-1", "endpoint": format!("http://{closed}"), "timeout": "3s",
        "credentials": {"accessKeyId": {"file": keys.path().join("ak")}, "secretAccessKey": {"file": keys.path().join("sk")}},
    }}});
    let g = build(
        "AWSAssumeRole",
        json!({"secretStoreRef": {"name": "aws"}, "roleArn": "arn:aws:iam::123456789012:role/x"}),
        Some(store),
    );
    let id = identity();
    let err = g
        .generate(&Context {
            identity: &id,
            generator: "g",
            max_ttl: None,
        })
        .await
        .expect_err("down");
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    assert!(
        !err.to_string().contains("esi-unreachable-secret-key")
            && !err.detail().contains("esi-unreachable-secret-key"),
        "{err:?}"
    );
}

/// A recorded request's body, decoded when moto stored it as base64.
fn recorded_body(entry: &Value) -> Vec<u8> {
    use base64::Engine;
    let body = entry["body"].as_str().unwrap_or_default();
    if entry["body_encoded"].as_bool() == Some(true) {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("base64 body")
    } else {
        body.as_bytes().to_vec()
    }
}

/// A recorded request's header `name` (as sent, or lowercased), empty when absent.
fn recorded_header(entry: &Value, name: &str) -> String {
    let headers = &entry["headers"];
    headers[name]
        .as_str()
        .or(headers[name.to_ascii_lowercase().as_str()].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The calls of JSON-protocol services (ECR, Secrets Manager, SSM) moto recorded whose
/// `X-Amz-Target` ends with `operation` (`.GetAuthorizationToken`): each one's JSON body and
/// Authorization header.
#[cfg(any(feature = "ecr", feature = "secretsmanager", feature = "ssm"))]
async fn json_requests(moto: &Moto, operation: &str) -> Vec<(Value, String)> {
    moto.recording()
        .await
        .iter()
        .filter(|entry| recorded_header(entry, "X-Amz-Target").ends_with(operation))
        .map(|entry| {
            (
                serde_json::from_slice(&recorded_body(entry)).unwrap_or(Value::Null),
                recorded_header(entry, "Authorization"),
            )
        })
        .collect()
}

/// The Authorization headers of the recorded `GetAuthorizationToken` calls signed with the
/// store's own key (the role test's calls, running alongside, are signed by sessions).
#[cfg(feature = "ecr")]
async fn ecr_store_signed(moto: &Moto) -> Vec<String> {
    json_requests(moto, ".GetAuthorizationToken")
        .await
        .into_iter()
        .map(|(_, auth)| auth)
        .filter(|a| a.contains("Credential=AKIAESITESTKEY000001/"))
        .collect()
}

/// The Authorization headers of the recorded `GetSecretValue` calls for secrets whose id
/// contains `run` (tests running alongside read others).
#[cfg(feature = "secretsmanager")]
async fn secret_reads(moto: &Moto, run: &str) -> Vec<String> {
    json_requests(moto, ".GetSecretValue")
        .await
        .into_iter()
        .filter(|(body, _)| body["SecretId"].as_str().is_some_and(|id| id.contains(run)))
        .map(|(_, auth)| auth)
        .collect()
}

#[cfg(feature = "ecr")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_login_is_a_docker_login_for_the_registry() {
    use base64::Engine as _;
    let test = "ecr_login_is_a_docker_login_for_the_registry";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let before = ecr_store_signed(&moto).await.len();
    let g = build(
        "ECRAuthorizationToken",
        json!({"secretStoreRef": {"name": "aws"}}),
        Some(moto.store(json!({}))),
    );
    let id = identity();
    let cred = g
        .generate(&common::ctx(&id, "payments/ECRAuthorizationToken/pull"))
        .await
        .expect("ecr token");
    assert_eq!(cred.data["username"], "AWS");
    assert!(!cred.data["password"].is_empty());
    let registry = &cred.data["registry"];
    assert!(
        registry.ends_with(".dkr.ecr.eu-west-1.amazonaws.com"),
        "{registry}"
    );
    assert_eq!(cred.data["proxy_endpoint"], format!("https://{registry}"));
    let config: Value = serde_json::from_str(&cred.data["dockerconfigjson"]).expect("json");
    let auth = config["auths"][registry.as_str()]["auth"]
        .as_str()
        .expect("auth");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .expect("base64");
    assert_eq!(
        String::from_utf8(decoded).expect("utf-8"),
        format!("AWS:{}", cred.data["password"])
    );
    // ECR answers now + 12 h; moto answers a fixed date. Passed on as answered.
    assert!(cred.expires_at.is_some(), "no expiry");
    assert!(!format!("{cred:?}").contains(&cred.data["password"]));
    assert_eq!(cred.lease, None, "ECR tokens cannot be revoked");

    let sent = ecr_store_signed(&moto).await;
    assert_eq!(sent.len(), before + 1, "one GetAuthorizationToken");
    let auth = sent.last().expect("recorded");
    assert!(
        auth.contains("Credential=AKIAESITESTKEY000001/") && auth.contains("/eu-west-1/ecr/"),
        "signed with the store's key for ECR: {auth}"
    );
}

#[cfg(feature = "ecr")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_login_as_a_role_carries_the_callers_identity() {
    let test = "ecr_login_as_a_role_carries_the_callers_identity";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let role = format!("arn:aws:iam::123456789012:role/ecr-{}", suffix());
    let g = build(
        "ECRAuthorizationToken",
        json!({"secretStoreRef": {"name": "aws"}, "roleArn": role, "externalId": "ext-ecr"}),
        Some(moto.store(json!({}))),
    );
    let id = identity();
    // A maxTTL the role session could not meet: it bounds the token, not the session.
    let cred = g
        .generate(&common::ctx_with_max_ttl(
            &id,
            "payments/ECRAuthorizationToken/pull",
            Duration::from_secs(13 * 3600),
        ))
        .await
        .expect("ecr token");
    assert_eq!(cred.data["username"], "AWS");

    let (form, sts_auth) = moto
        .recorded()
        .await
        .into_iter()
        .find(|(f, _)| f.get("RoleArn") == Some(&role))
        .expect("an AssumeRole into the role");
    assert_eq!(form["ExternalId"], "ext-ecr");
    assert_eq!(form["DurationSeconds"], "900");
    let sent = tags(&form);
    assert_eq!(
        sent.get("kubernetes-namespace").map(String::as_str),
        Some("payments")
    );
    assert_eq!(sent.get("esi-cluster").map(String::as_str), Some("prod-eu"));
    assert!(
        sts_auth.contains("Credential=AKIAESITESTKEY000001/"),
        "{sts_auth}"
    );
    // The ECR call is signed by the role's session (moto's temporary keys start ASIA), not by
    // the store; this is the only test signing ECR calls with a session.
    let ecr = json_requests(&moto, ".GetAuthorizationToken").await;
    assert!(
        ecr.iter().any(|(_, a)| a.contains("Credential=ASIA")),
        "no ECR call signed by the role session: {ecr:?}"
    );
}

/// A Secrets Manager client on moto, to create the secrets the generator reads.
#[cfg(feature = "secretsmanager")]
fn secrets_manager(moto: &Moto) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&setup_config(moto))
}

/// The SDK configuration the tests create their fixtures in moto with (not the store's key).
#[cfg(any(feature = "secretsmanager", feature = "ssm"))]
fn setup_config(moto: &Moto) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("eu-west-1"))
        .endpoint_url(&moto.url)
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new(
                    "AKIAESITESTSETUP0001",
                    "setup",
                    None,
                    None,
                    "test-setup",
                ),
            ),
        )
        .build()
}

#[cfg(feature = "secretsmanager")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_manager_secrets_are_read_per_namespace_and_version() {
    use base64::Engine as _;
    let test = "secrets_manager_secrets_are_read_per_namespace_and_version";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let run = suffix();
    let sm = secrets_manager(&moto);
    let db = format!("apps/payments/db-{run}");
    sm.create_secret()
        .name(&db)
        .secret_string(r#"{"username": "app", "password": "s3cr3t-v1", "port": 5432}"#)
        .send()
        .await
        .expect("create the JSON secret");
    sm.put_secret_value()
        .secret_id(&db)
        .secret_string(r#"{"username": "app", "password": "s3cr3t-v2", "port": 5432}"#)
        .send()
        .await
        .expect("rotate it");
    let plain = format!("plain-{run}");
    sm.create_secret()
        .name(&plain)
        .secret_string("just text")
        .send()
        .await
        .expect("create the text secret");
    let blob = format!("blob-{run}");
    sm.create_secret()
        .name(&blob)
        .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(vec![
            0u8, 159, 255,
        ]))
        .send()
        .await
        .expect("create the binary secret");

    let id = identity();
    let read = |spec: Value| {
        let g = build("SecretsManagerSecret", spec, Some(moto.store(json!({}))));
        let id = &id;
        async move {
            g.generate(&common::ctx(id, "payments/SecretsManagerSecret/db"))
                .await
        }
    };

    // The caller's namespace picks the secret; a JSON object becomes its members, the current
    // version by default.
    let templated = format!("apps/{{{{namespace}}}}/db-{run}");
    let cred = read(json!({"secretStoreRef": {"name": "aws"}, "secretId": templated}))
        .await
        .expect("read the JSON secret");
    assert_eq!(cred.data["username"], "app");
    assert_eq!(cred.data["password"], "s3cr3t-v2");
    assert_eq!(cred.data["port"], "5432");
    assert_eq!((cred.expires_at, cred.lease.clone()), (None, None));
    assert!(!format!("{cred:?}").contains("s3cr3t"));

    // An older stage, narrowed to one key.
    let cred = read(json!({"secretStoreRef": {"name": "aws"}, "secretId": db,
                           "versionStage": "AWSPREVIOUS", "keys": ["password"]}))
    .await
    .expect("read the previous version");
    assert_eq!(
        cred.data.into_iter().collect::<Vec<_>>(),
        vec![("password".to_owned(), "s3cr3t-v1".to_owned())]
    );

    // A key the secret lacks is refused by name, without the secret's contents.
    let err = read(json!({"secretStoreRef": {"name": "aws"}, "secretId": db, "keys": ["host"]}))
        .await
        .expect_err("missing key");
    assert!(
        matches!(&err, BackendError::Rejected { message, .. } if message.contains("\"host\"")),
        "{err:?}"
    );
    assert!(!err.to_string().contains("s3cr3t") && !err.detail().contains("s3cr3t"));

    // Text under `key`; binary base64-encoded.
    let cred = read(json!({"secretStoreRef": {"name": "aws"}, "secretId": plain, "key": "token"}))
        .await
        .expect("read the text secret");
    assert_eq!(cred.data["token"], "just text");
    let cred = read(json!({"secretStoreRef": {"name": "aws"}, "secretId": blob}))
        .await
        .expect("read the binary secret");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&cred.data["value"])
            .expect("base64"),
        vec![0u8, 159, 255]
    );

    // Another namespace's secret does not exist for this caller: refused, named in the log.
    let err = read(json!({"secretStoreRef": {"name": "aws"},
                          "secretId": format!("apps/{{{{namespace}}}}/missing-{run}")}))
    .await
    .expect_err("no such secret");
    assert!(
        matches!(&err, BackendError::Rejected { message, .. } if message.contains("ResourceNotFoundException")),
        "{err:?}"
    );
    assert!(
        err.detail()
            .contains(&format!("apps/payments/missing-{run}")),
        "{}",
        err.detail()
    );

    let sent = secret_reads(&moto, &run).await;
    assert_eq!(sent.len(), 6, "one GetSecretValue per read");
    assert!(
        sent.iter()
            .all(|a| a.contains("Credential=AKIAESITESTKEY000001/")
                && a.contains("/eu-west-1/secretsmanager/")),
        "signed with the store's key for Secrets Manager: {sent:?}"
    );
}

#[cfg(feature = "secretsmanager")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_manager_read_as_a_role_carries_the_callers_identity() {
    let test = "secrets_manager_read_as_a_role_carries_the_callers_identity";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let run = suffix();
    let name = format!("role-read-{run}");
    secrets_manager(&moto)
        .create_secret()
        .name(&name)
        .secret_string("via-role")
        .send()
        .await
        .expect("create");
    let role = format!("arn:aws:iam::123456789012:role/sm-{run}");
    let g = build(
        "SecretsManagerSecret",
        json!({"secretStoreRef": {"name": "aws"}, "secretId": name, "roleArn": role}),
        Some(moto.store(json!({}))),
    );
    let id = identity();
    let cred = g
        .generate(&common::ctx(&id, "payments/SecretsManagerSecret/x"))
        .await
        .expect("read as the role");
    assert_eq!(cred.data["value"], "via-role");
    let (form, _) = moto
        .recorded()
        .await
        .into_iter()
        .find(|(f, _)| f.get("RoleArn") == Some(&role))
        .expect("an AssumeRole into the role");
    assert_eq!(form["DurationSeconds"], "900");
    assert_eq!(
        tags(&form).get("kubernetes-namespace").map(String::as_str),
        Some("payments")
    );
    let reads = secret_reads(&moto, &run).await;
    assert!(
        reads.len() == 1 && reads[0].contains("Credential=ASIA"),
        "the read is signed by the role's session: {reads:?}"
    );
}

#[cfg(feature = "ssm")]
fn ssm(moto: &Moto) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(&setup_config(moto))
}

#[cfg(feature = "ssm")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_parameters_are_read_decrypted_per_namespace_version_and_label() {
    use aws_sdk_ssm::types::ParameterType;
    let test = "ssm_parameters_are_read_decrypted_per_namespace_version_and_label";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let run = suffix();
    let c = ssm(&moto);
    let put = |name: String, kind: ParameterType, value: &'static str| {
        let c = c.clone();
        async move {
            c.put_parameter()
                .name(&name)
                .r#type(kind)
                .value(value)
                .overwrite(true)
                .send()
                .await
                .unwrap_or_else(|e| panic!("put {name}: {e:?}"))
                .version()
        }
    };
    let db = format!("/apps/payments/db-{run}");
    let v1 = put(
        db.clone(),
        ParameterType::SecureString,
        r#"{"username": "app", "password": "s3cr3t-v1", "port": 5432}"#,
    )
    .await;
    let v2 = put(
        db.clone(),
        ParameterType::SecureString,
        r#"{"username": "app", "password": "s3cr3t-v2", "port": 5432}"#,
    )
    .await;
    assert_eq!((v1, v2), (1, 2));
    c.label_parameter_version()
        .name(&db)
        .parameter_version(1)
        .labels("previous")
        .send()
        .await
        .expect("label version 1");
    let plain = format!("/apps/payments/plain-{run}");
    put(plain.clone(), ParameterType::String, "just text").await;
    let list = format!("/apps/payments/list-{run}");
    put(list.clone(), ParameterType::StringList, "a,b,c").await;

    let id = identity();
    let read = |spec: Value| {
        let g = build("SSMParameter", spec, Some(moto.store(json!({}))));
        let id = &id;
        async move {
            g.generate(&common::ctx(id, "payments/SSMParameter/db"))
                .await
        }
    };

    // The caller's namespace picks the parameter; a SecureString is decrypted, a JSON object
    // becomes its members, the latest version by default.
    let templated = format!("/apps/{{{{namespace}}}}/db-{run}");
    let cred = read(json!({"secretStoreRef": {"name": "aws"}, "name": templated}))
        .await
        .expect("read the JSON parameter");
    assert_eq!(cred.data["username"], "app");
    assert_eq!(cred.data["password"], "s3cr3t-v2");
    assert_eq!(cred.data["port"], "5432");
    assert_eq!((cred.expires_at, cred.lease.clone()), (None, None));
    assert!(!format!("{cred:?}").contains("s3cr3t"));

    // A pinned version, narrowed to one key; a label.
    for pin in [json!({"version": 1}), json!({"label": "previous"})] {
        let mut spec = json!({"secretStoreRef": {"name": "aws"}, "name": db, "keys": ["password"]});
        spec.as_object_mut()
            .unwrap()
            .extend(pin.as_object().unwrap().clone());
        let cred = read(spec).await.expect("read a pinned version");
        assert_eq!(
            cred.data.into_iter().collect::<Vec<_>>(),
            vec![("password".to_owned(), "s3cr3t-v1".to_owned())],
            "{pin}"
        );
    }

    // Text under `key`; a StringList as stored.
    let cred = read(json!({"secretStoreRef": {"name": "aws"}, "name": plain, "key": "token"}))
        .await
        .expect("read the text parameter");
    assert_eq!(cred.data["token"], "just text");
    let cred = read(json!({"secretStoreRef": {"name": "aws"}, "name": list}))
        .await
        .expect("read the list parameter");
    assert_eq!(cred.data["value"], "a,b,c");

    // A parameter that does not exist is refused, named in the log only.
    let err = read(json!({"secretStoreRef": {"name": "aws"},
                          "name": format!("/apps/{{{{namespace}}}}/missing-{run}")}))
    .await
    .expect_err("no such parameter");
    assert!(
        matches!(&err, BackendError::Rejected { message, .. } if message.contains("ParameterNotFound")),
        "{err:?}"
    );
    assert!(
        err.detail()
            .contains(&format!("/apps/payments/missing-{run}")),
        "{}",
        err.detail()
    );

    // One decrypting GetParameter per read, with the selector, signed with the store's key.
    let sent: Vec<(Value, String)> = json_requests(&moto, ".GetParameter")
        .await
        .into_iter()
        .filter(|(body, _)| body["Name"].as_str().is_some_and(|n| n.contains(&run)))
        .collect();
    let names: Vec<&str> = sent
        .iter()
        .filter_map(|(b, _)| b["Name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            db.clone(),
            format!("{db}:1"),
            format!("{db}:previous"),
            plain,
            list,
            format!("/apps/payments/missing-{run}"),
        ],
        "{sent:?}"
    );
    assert!(
        sent.iter().all(|(b, a)| b["WithDecryption"] == true
            && a.contains("Credential=AKIAESITESTKEY000001/")
            && a.contains("/eu-west-1/ssm/")),
        "{sent:?}"
    );
}

#[cfg(feature = "ssm")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_paths_are_read_whole_per_namespace_across_pages_and_refused_when_ambiguous() {
    use aws_sdk_ssm::types::ParameterType;
    let test = "ssm_paths_are_read_whole_per_namespace_across_pages_and_refused_when_ambiguous";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let run = suffix();
    let c = ssm(&moto);
    let put = |name: String, kind: ParameterType, value: String| {
        let c = c.clone();
        async move {
            c.put_parameter()
                .name(&name)
                .r#type(kind)
                .value(value)
                .overwrite(true)
                .send()
                .await
                .unwrap_or_else(|e| panic!("put {name}: {e:?}"));
        }
    };
    let tree = format!("/apps/payments/tree-{run}");
    put(
        format!("{tree}/DB_PASSWORD"),
        ParameterType::SecureString,
        "s3cr3t-by-path".to_owned(),
    )
    .await;
    put(
        format!("{tree}/API_URL"),
        ParameterType::String,
        "https://api.example".to_owned(),
    )
    .await;
    let config = r#"{"retries": 3}"#;
    put(
        format!("{tree}/CONFIG"),
        ParameterType::String,
        config.to_owned(),
    )
    .await;
    put(
        format!("{tree}/nested/token"),
        ParameterType::SecureString,
        "t0ken".to_owned(),
    )
    .await;
    for i in 0..12 {
        put(
            format!("{tree}/bulk/p{i:02}"),
            ParameterType::String,
            format!("v{i}"),
        )
        .await;
    }

    let id = identity();
    let read = |spec: Value| {
        let g = build("SSMParameter", spec, Some(moto.store(json!({}))));
        let id = &id;
        async move {
            g.generate(&common::ctx(id, "payments/SSMParameter/tree"))
                .await
        }
    };
    let templated = format!("/apps/{{{{namespace}}}}/tree-{run}/");

    // The direct children, one key each, a SecureString decrypted, a JSON value kept whole.
    let cred = read(json!({"secretStoreRef": {"name": "aws"}, "path": templated}))
        .await
        .expect("read the hierarchy");
    assert_eq!(
        cred.data.keys().collect::<Vec<_>>(),
        ["API_URL", "CONFIG", "DB_PASSWORD"]
    );
    assert_eq!(cred.data["DB_PASSWORD"], "s3cr3t-by-path");
    assert_eq!(cred.data["CONFIG"], config);
    assert_eq!((cred.expires_at, cred.lease.clone()), (None, None));
    assert!(!format!("{cred:?}").contains("s3cr3t"));

    // Recursive: the levels below too, `/` as `_`, across pages of 10.
    let cred = read(json!({"secretStoreRef": {"name": "aws"}, "path": templated,
                           "recursive": true}))
    .await
    .expect("read the hierarchy recursively");
    assert_eq!(cred.data.len(), 16, "{:?}", cred.data.keys());
    assert_eq!(cred.data["nested_token"], "t0ken");
    assert_eq!(cred.data["bulk_p11"], "v11");

    // Narrowed to keys, each of which must be there.
    let cred = read(json!({"secretStoreRef": {"name": "aws"}, "path": templated,
                           "recursive": true, "keys": ["DB_PASSWORD", "nested_token"]}))
    .await
    .expect("read two keys");
    assert_eq!(
        cred.data.keys().collect::<Vec<_>>(),
        ["DB_PASSWORD", "nested_token"]
    );
    let err = read(json!({"secretStoreRef": {"name": "aws"}, "path": templated,
                          "keys": ["nested_token"]}))
    .await
    .expect_err("nested_token is not a direct child");
    assert!(
        err.to_string().contains("gives the key \"nested_token\""),
        "{err}"
    );

    // Two parameters giving one key are refused, both named; so is an empty hierarchy.
    put(
        format!("{tree}/nested_token"),
        ParameterType::String,
        "other".to_owned(),
    )
    .await;
    let err = read(json!({"secretStoreRef": {"name": "aws"}, "path": templated,
                          "recursive": true}))
    .await
    .expect_err("nested/token and nested_token clash");
    let message = err.to_string();
    assert!(
        message.contains(&format!("{tree}/nested/token"))
            && message.contains(&format!("{tree}/nested_token"))
            && !message.contains("t0ken"),
        "{message}"
    );
    let err = read(json!({"secretStoreRef": {"name": "aws"},
                          "path": format!("/apps/{{{{namespace}}}}/empty-{run}")}))
    .await
    .expect_err("nothing there");
    assert!(err.to_string().contains("no parameters under"), "{err}");

    // A hierarchy wider than the limit is refused, not cut short.
    let wide = format!("/apps/payments/wide-{run}");
    for i in 0..=esi_backends::ssm_parameter::MAX_PARAMETERS {
        put(
            format!("{wide}/p{i:03}"),
            ParameterType::String,
            "v".to_owned(),
        )
        .await;
    }
    let err = read(json!({"secretStoreRef": {"name": "aws"}, "path": wide}))
        .await
        .expect_err("too many");
    assert!(err.to_string().contains("name a narrower path"), "{err}");

    // Decrypting GetParametersByPath calls on the path without its `/`, in pages of 10, the
    // second page asked for with the first's token; signed with the store's key.
    let sent: Vec<(Value, String)> = json_requests(&moto, ".GetParametersByPath")
        .await
        .into_iter()
        .filter(|(body, _)| body["Path"].as_str() == Some(tree.as_str()))
        .collect();
    let pages: Vec<(bool, bool)> = sent
        .iter()
        .map(|(b, _)| (b["Recursive"] == true, b.get("NextToken").is_some()))
        .collect();
    assert_eq!(
        pages,
        [
            (false, false),
            (true, false),
            (true, true),
            (true, false),
            (true, true),
            (false, false),
            (true, false),
            (true, true),
        ],
        "{sent:?}"
    );
    assert!(
        sent.iter().all(|(b, a)| b["WithDecryption"] == true
            && b["MaxResults"] == 10
            && a.contains("Credential=AKIAESITESTKEY000001/")
            && a.contains("/eu-west-1/ssm/")),
        "{sent:?}"
    );
}

/// A query parameter of an RDS token or an EKS token's URL, still encoded.
#[cfg(any(feature = "rds", feature = "eks"))]
fn token_param<'a>(token: &'a str, name: &str) -> &'a str {
    token
        .split_once('?')
        .map_or("", |(_, q)| q)
        .split('&')
        .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in the token"))
}

/// When a presigned token was signed: its `X-Amz-Date`.
#[cfg(any(feature = "rds", feature = "eks"))]
fn amz_date(token: &str) -> jiff::Timestamp {
    jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", token_param(token, "X-Amz-Date"))
        .expect("X-Amz-Date")
        .to_zoned(jiff::tz::TimeZone::UTC)
        .expect("UTC")
        .timestamp()
}

/// Signs again what the generator signed, at the token's own `X-Amz-Date`: the generator
/// must have signed exactly host, port, user, region, keys and lifetime (the signer itself is
/// held to botocore's tokens in the unit tests).
#[cfg(feature = "rds")]
fn resigned(
    token: &str,
    host: &str,
    port: u16,
    user: &str,
    keys: (&str, &str, Option<String>),
) -> String {
    let at = amz_date(token);
    let expires: u64 = token_param(token, "X-Amz-Expires")
        .parse()
        .expect("seconds");
    esi_backends::rds_auth_token::presign(
        host,
        port,
        user,
        "eu-west-1",
        aws_credential_types::Credentials::new(keys.0, keys.1, keys.2, None, "resign"),
        std::time::SystemTime::from(at),
        std::time::Duration::from_secs(expires),
    )
    .expect("sign")
}

#[cfg(feature = "rds")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rds_tokens_are_signed_for_the_callers_user_for_at_most_15_minutes() {
    let test = "rds_tokens_are_signed_for_the_callers_user_for_at_most_15_minutes";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let id = identity();
    let host = "payments.cluster-c1a2b3.eu-west-1.rds.amazonaws.com";
    let spec = json!({"secretStoreRef": {"name": "aws"}, "host": host, "port": 5432,
                      "username": "{{namespace}}_app"});

    // Signed with the store's own key: nothing is called, the token is the password.
    let g = build("RDSAuthToken", spec.clone(), Some(moto.store(json!({}))));
    let before = jiff::Timestamp::now();
    let cred = g
        .generate(&common::ctx(&id, "payments/RDSAuthToken/db"))
        .await
        .expect("a token");
    assert_eq!(cred.data["host"], host);
    assert_eq!(cred.data["port"], "5432");
    assert_eq!(cred.data["username"], "payments_app");
    let token = &cred.data["password"];
    assert!(
        token.starts_with(&format!("{host}:5432/?Action=connect&DBUser=payments_app&")),
        "{token}"
    );
    assert!(
        token_param(token, "X-Amz-Credential").starts_with("AKIAESITESTKEY000001%2F")
            && token_param(token, "X-Amz-Credential")
                .ends_with("%2Feu-west-1%2Frds-db%2Faws4_request"),
        "{token}"
    );
    assert_eq!(token_param(token, "X-Amz-Expires"), "900");
    assert_eq!(
        *token,
        resigned(
            token,
            host,
            5432,
            "payments_app",
            ("AKIAESITESTKEY000001", "esi-test-secret-key", None)
        )
    );
    let expires = cred.expires_at.expect("an expiry");
    let lifetime = expires.duration_since(before).as_secs_f64();
    assert!((899.0..=901.0).contains(&lifetime), "{lifetime}");
    assert_eq!((cred.renewable, cred.lease.clone()), (false, None));
    assert!(!format!("{cred:?}").contains("X-Amz-Signature"));

    // An Authorization's maxTTL shortens the token itself.
    let cred = g
        .generate(&common::ctx_with_max_ttl(
            &id,
            "payments/RDSAuthToken/db",
            std::time::Duration::from_secs(120),
        ))
        .await
        .expect("a short token");
    assert_eq!(token_param(&cred.data["password"], "X-Amz-Expires"), "120");

    // As a role: signed by the session assumed for the caller, which the token carries, and
    // no longer than that session lives.
    let run = suffix();
    let role = format!("arn:aws:iam::123456789012:role/db-{run}");
    let mut as_role = spec.clone();
    as_role["roleArn"] = json!(role);
    let g = build("RDSAuthToken", as_role, Some(moto.store(json!({}))));
    let cred = g
        .generate(&common::ctx(&id, "payments/RDSAuthToken/db"))
        .await
        .expect("a token as the role");
    let token = &cred.data["password"];
    assert!(
        token_param(token, "X-Amz-Credential").starts_with("ASIA"),
        "{token}"
    );
    assert!(!token_param(token, "X-Amz-Security-Token").is_empty());
    let (form, _) = moto
        .recorded()
        .await
        .into_iter()
        .find(|(f, _)| f.get("RoleArn") == Some(&role))
        .expect("an AssumeRole into the role");
    assert_eq!(
        tags(&form).get("kubernetes-namespace").map(String::as_str),
        Some("payments")
    );
}

/// The presigned URL inside an EKS token.
#[cfg(feature = "eks")]
fn eks_url(token: &str) -> String {
    use base64::Engine as _;
    let b64 = token
        .strip_prefix("k8s-aws-v1.")
        .expect("the token's prefix");
    String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .expect("base64url"),
    )
    .expect("a URL")
}

#[cfg(feature = "eks")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eks_tokens_name_the_cluster_and_are_signed_by_the_callers_role() {
    let test = "eks_tokens_name_the_cluster_and_are_signed_by_the_callers_role";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let id = identity();
    let spec = json!({"secretStoreRef": {"name": "aws"}, "clusterName": "{{cluster}}-apps"});

    // The store's own key: the URL of `aws eks get-token`, for this cluster, signed now.
    let g = build("EKSToken", spec.clone(), Some(moto.store(json!({}))));
    let before = jiff::Timestamp::now();
    let cred = g
        .generate(&common::ctx(&id, "payments/EKSToken/prod"))
        .await
        .expect("a token");
    assert_eq!(cred.data["clusterName"], "prod-eu-apps");
    let token = &cred.data["token"];
    let url = eks_url(token);
    assert!(
        url.starts_with(
            "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"
        ),
        "{url}"
    );
    assert_eq!(
        token_param(&url, "X-Amz-SignedHeaders"),
        "host%3Bx-k8s-aws-id"
    );
    assert!(token_param(&url, "X-Amz-Credential").starts_with("AKIAESITESTKEY000001%2F"));
    // Signed again at its own X-Amz-Date with the same inputs: the same token.
    let at = amz_date(&url);
    assert_eq!(
        *token,
        esi_backends::eks_token::token(
            "prod-eu-apps",
            "eu-west-1",
            aws_credential_types::Credentials::new(
                "AKIAESITESTKEY000001",
                "esi-test-secret-key",
                None,
                None,
                "resign"
            ),
            std::time::SystemTime::from(at),
        )
        .expect("sign")
    );
    let lifetime = cred
        .expires_at
        .expect("an expiry")
        .duration_since(before)
        .as_secs_f64();
    assert!((838.0..=841.0).contains(&lifetime), "{lifetime}");
    let exec: Value = serde_json::from_str(&cred.data["execCredential"]).expect("JSON");
    assert_eq!(exec["kind"], "ExecCredential");
    assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1beta1");
    assert_eq!(exec["status"]["token"], *token);
    assert_eq!(
        exec["status"]["expirationTimestamp"],
        cred.expires_at.unwrap().to_string()
    );
    assert!(!format!("{cred:?}").contains("k8s-aws-v1"));
    assert!(!cred.data.contains_key("kubeconfig"), "no endpoint given");

    // With the cluster's endpoint and CA, a kubeconfig that reaches it with the same token.
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD
        .encode("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    let endpoint = "https://0123456789ABCDEF.gr7.eu-west-1.eks.amazonaws.com";
    let with_endpoint = json!({"secretStoreRef": {"name": "aws"}, "clusterName": "prod-eu-apps",
                               "endpoint": endpoint, "certificateAuthorityData": ca});
    let cred = build("EKSToken", with_endpoint, Some(moto.store(json!({}))))
        .generate(&common::ctx(&id, "payments/EKSToken/prod"))
        .await
        .expect("a token and its kubeconfig");
    let config: Value = serde_json::from_str(&cred.data["kubeconfig"]).expect("JSON kubeconfig");
    assert_eq!(config["current-context"], "prod-eu-apps");
    assert_eq!(config["clusters"][0]["cluster"]["server"], endpoint);
    assert_eq!(
        config["clusters"][0]["cluster"]["certificate-authority-data"],
        ca
    );
    assert_eq!(config["users"][0]["user"]["token"], cred.data["token"]);
    assert!(cred.data["token"].starts_with("k8s-aws-v1."));

    // The token cannot be shortened: a shorter maxTTL is refused, saying so.
    let err = g
        .generate(&common::ctx_with_max_ttl(
            &id,
            "payments/EKSToken/prod",
            std::time::Duration::from_secs(300),
        ))
        .await
        .expect_err("maxTTL below the token's life");
    assert!(
        matches!(&err, BackendError::Rejected { message, .. } if message.contains("cannot be shortened")),
        "{err:?}"
    );

    // As a role: the session assumed for the caller signs (EKS then maps that role). moto
    // cannot answer a presigned GetCallerIdentity (it routes by the Authorization header), so
    // what reaches STS is checked by the signature tests above.
    let run = suffix();
    let role = format!("arn:aws:iam::123456789012:role/deployer-{run}");
    let mut as_role = spec.clone();
    as_role["roleArn"] = json!(role);
    let g = build("EKSToken", as_role, Some(moto.store(json!({}))));
    let cred = g
        .generate(&common::ctx(&id, "payments/EKSToken/prod"))
        .await
        .expect("a token as the role");
    let url = eks_url(&cred.data["token"]);
    assert!(
        token_param(&url, "X-Amz-Credential").starts_with("ASIA"),
        "{url}"
    );
    assert!(!token_param(&url, "X-Amz-Security-Token").is_empty());
    let (form, _) = moto
        .recorded()
        .await
        .into_iter()
        .find(|(f, _)| f.get("RoleArn") == Some(&role))
        .expect("an AssumeRole into the role");
    assert_eq!(
        tags(&form).get("esi-cluster").map(String::as_str),
        Some("prod-eu")
    );
}

/// Tokens signed with a store's temporary credentials (its base role here; a web identity or
/// `selfIssued` alike) reuse them while they outlive a token, instead of asking STS per token.
#[cfg(all(feature = "rds", feature = "eks"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_tokens_reuse_the_stores_session_while_it_outlives_them() {
    let test = "presigned_tokens_reuse_the_stores_session_while_it_outlives_them";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let run = suffix();
    let store = json!({"assumeRole": {"roleArn": "arn:aws:iam::123456789012:role/esi-federation",
                                      "sessionName": format!("base{run}")}});
    let id = identity();
    let rds = build(
        "RDSAuthToken",
        json!({"secretStoreRef": {"name": "aws"}, "host": "db.example", "port": 5432, "username": "app"}),
        Some(moto.store(store.clone())),
    );
    let eks = build(
        "EKSToken",
        json!({"secretStoreRef": {"name": "aws"}, "clusterName": "prod"}),
        Some(moto.store(store)),
    );
    for _ in 0..3 {
        let cred = rds
            .generate(&common::ctx(&id, "payments/RDSAuthToken/db"))
            .await
            .expect("an RDS token");
        assert!(
            token_param(&cred.data["password"], "X-Amz-Credential").starts_with("ASIA"),
            "signed by the base role's session"
        );
        eks.generate(&common::ctx(&id, "payments/EKSToken/prod"))
            .await
            .expect("an EKS token");
    }
    let base_sessions = moto
        .recorded()
        .await
        .into_iter()
        .filter(|(f, _)| f.get("RoleSessionName") == Some(&format!("base{run}")))
        .count();
    // One session per generator (each keeps its own), not one per token. moto's sessions
    // last an hour, longer than a token.
    assert_eq!(base_sessions, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_check_names_the_caller_sts_takes_the_store_for() {
    let test = "a_login_check_names_the_caller_sts_takes_the_store_for";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let check = |store: Value| async move {
        esi_backends::SecretStoreSpec::from_manifest(store)
            .expect("store")
            .check_login(None)
            .await
    };
    // The store's keys, then a role it assumes first: GetCallerIdentity says which.
    match check(moto.store(json!({}))).await {
        esi_backends::LoginCheck::LoggedIn(who) => assert!(who.starts_with("arn:aws:"), "{who}"),
        other => panic!("{other:?}"),
    }
    let role = format!("arn:aws:iam::123456789012:role/esi-check-{}", suffix());
    match check(moto.store(json!({"assumeRole": {"roleArn": role}}))).await {
        esi_backends::LoginCheck::LoggedIn(who) => {
            assert!(who.contains(":assumed-role/esi-check-"), "{who}");
        }
        other => panic!("{other:?}"),
    }
    // Keys that are missing fail the check, naming where they were looked for.
    let mut missing = moto.store(json!({}));
    missing["provider"]["aws"]["credentials"]["accessKeyId"] =
        json!({"env": "ESI_SURELY_UNSET_AK"});
    match check(missing).await {
        esi_backends::LoginCheck::Failed(e) => {
            assert!(e.detail().contains("ESI_SURELY_UNSET_AK"), "{}", e.detail());
        }
        other => panic!("{other:?}"),
    }
}

/// Whether `infra/terraform/modules/trust-aws`'s role trust policy (its
/// `data "aws_iam_policy_document" "trust"`, read from the module) lets `token` assume the role
/// with AssumeRoleWithWebIdentity, as IAM evaluates it, for the OIDC provider of `issuer`: the
/// token verifies under the provider's keys with `iss` its URL and has not expired; an `Allow`
/// statement names the action and a `Federated` principal; each of its conditions holds, a
/// condition key `<provider host and path>:<claim>` naming the token's claim. The module uses
/// only `StringEquals`; any other operator or a `Deny` fails the test, to be taught here first.
/// `Err` names what failed.
fn trust_aws_admits(issuer: &esi_backends::identity::Issuer, token: &str) -> Result<(), String> {
    use esi_test_support::terraform::{self, hcl};
    let jws = common::entra::Jws::parse(token).ok_or("not a JWT")?;
    let jwks: Value = serde_json::from_str(issuer.jwks_json()).expect("jwks");
    if !jws.verifies_under(&jwks) {
        return Err("the signature does not verify under the provider's keys".into());
    }
    if jws.claims["iss"] != issuer.url() || !jws.unexpired() {
        return Err(format!("iss {} or exp refused", jws.claims["iss"]));
    }
    let body = terraform::module("trust-aws");
    let policy = terraform::block(&body, "data", &["aws_iam_policy_document", "trust"]);
    let host = issuer.url().trim_start_matches("https://");
    let text = |e: &hcl::Expression| terraform::string(e);
    let mut refusals = Vec::new();
    for statement in terraform::blocks(policy.body(), "statement") {
        let s = statement.body();
        assert_eq!(text(&terraform::argument(s, "effect")), "Allow", "a Deny");
        if !terraform::strings(&terraform::argument(s, "actions"))
            .iter()
            .any(|a| a == "sts:AssumeRoleWithWebIdentity")
        {
            continue;
        }
        if !terraform::blocks(s, "principals")
            .any(|p| text(&terraform::argument(p.body(), "type")) == "Federated")
        {
            continue;
        }
        let failed: Vec<String> = terraform::blocks(s, "condition")
            .filter_map(|c| {
                let c = c.body();
                let test = text(&terraform::argument(c, "test"));
                assert_eq!(test, "StringEquals", "the fake evaluates StringEquals only");
                let variable = text(&terraform::argument(c, "variable"))
                    .replace("${local.issuer_host_path}", host);
                let claim = variable
                    .strip_prefix(&format!("{host}:"))
                    .unwrap_or_else(|| panic!("condition key {variable}"));
                let values = terraform::strings(&terraform::argument(c, "values"));
                let holds = jws.claims[claim]
                    .as_str()
                    .is_some_and(|v| values.iter().any(|want| want == v));
                (!holds).then(|| format!("{variable} {} not in {values:?}", jws.claims[claim]))
            })
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        refusals.extend(failed);
    }
    Err(format!("no statement allows it: {}", refusals.join("; ")))
}
