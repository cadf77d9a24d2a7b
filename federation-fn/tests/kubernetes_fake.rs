//! `KubernetesServiceAccountToken` and `KubernetesSecret` against a FAKE Kubernetes API server,
//! over a real socket.
//!
//! No API server can run on this machine; the fake implements the calls the generators make,
//! first as Kubernetes documents and answers it: `POST
//! /api/v1/namespaces/{namespace}/serviceaccounts/{name}/token` with an
//! `authentication.k8s.io/v1` `TokenRequest`. Its checks come in the API server's order:
//! authentication (a client certificate its client CA signed, verified in the TLS handshake
//! and checked before tokens; a static bearer token; or a JWT of a trusted issuer as a structured
//! authentication configuration's JWT authenticator verifies it: issuer, audience, signature
//! under the issuer's discovered JWKS, expiry, the username `esi:<sub>`) answering 401;
//! authorization (RBAC: `create` on `serviceaccounts/token` per namespace, optionally narrowed
//! by `resourceNames`) answering 403; validation (`expirationSeconds` at least 600) answering
//! 422; the ServiceAccount's existence answering 404; each with a `Status` body in the API
//! server's words. The token it mints is a bound ServiceAccount token signed by the cluster's
//! own key (a local OIDC issuer), with the audiences asked for (the API server's own when none
//! are), its lifetime capped by `--service-account-max-token-expiration`; the answer is `201`
//! with the `TokenRequest` and its `status.{token, expirationTimestamp}`.
//!
//! For `KubernetesSecret` it serves `GET /api/v1/namespaces/{namespace}/secrets/{name}` (RBAC
//! `get` on `secrets`, narrowed by `resourceNames`), the Secret as stored: `data` base64, its
//! `type`.
//!
//! The cluster's issuer is registered with the federation too, so a token minted for a
//! workload is checked the way the target cluster's own relying parties would check it: by the
//! federation's verifier, as a caller from that cluster.

#![cfg(feature = "k8s")]
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod admission_policy;
mod common;
mod relying_party;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use esi_api::Identity;
use esi_backends::identity::{Issuer, KeyAlgorithm};
use esi_backends::{
    BackendError, Context, Generate, Generator, GeneratorKind, GeneratorSpec, SecretStoreSpec,
    Shared,
};
use esi_federation::config;
use esi_federation::issuer::{LocalIssuer, TokenSpec};
use esi_federation::state::AppState;
use relying_party::{federation, identity, unverified_claims};
use serde_json::{Value, json};

/// The federation's static bearer token at the fake API server.
const FEDERATION_TOKEN: &str = "fed-static-token-5f1c2d";
/// The user that token authenticates as.
const FEDERATION_USER: &str = "system:serviceaccount:esi-system:esi-federation";
/// The API server's own audience, for a TokenRequest naming none.
const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// One RBAC grant in a namespace: `create` on `serviceaccounts/token`, for the named
/// ServiceAccounts only when `names` is set; `create` and `delete` on `secrets` when `secrets`;
/// `create`, `get` and `delete` on `leases` (coordination.k8s.io) when `leases`.
struct Grant {
    namespace: String,
    names: Option<Vec<String>>,
    secrets: bool,
    leases: bool,
    /// Secrets it may `get` (by `resourceNames`).
    readable: Vec<String>,
}

/// A Secret of the fake: its UID and body.
struct Secret {
    uid: String,
    body: Value,
}

/// A token the fake minted: its user and the Secret it is bound to (namespace, name, UID).
struct Minted {
    user: String,
    bound: Option<(String, String, String)>,
    expires: i64,
}

/// The fake API server's state.
struct ApiServer {
    /// The cluster's ServiceAccount token signer.
    cluster: Arc<LocalIssuer>,
    /// ServiceAccounts: namespace/name.
    accounts: Vec<String>,
    /// Static bearer tokens and the users they are.
    static_tokens: HashMap<String, String>,
    /// The structured authentication configuration's JWT authenticator: the issuer URL and
    /// the audience it requires.
    jwt: Option<(String, String)>,
    /// RBAC: user -> grants.
    rbac: HashMap<String, Vec<Grant>>,
    /// `--service-account-max-token-expiration`, seconds.
    max_expiration: i64,
    /// Add this many seconds to every token's lifetime (an API server misbehaving).
    extend: i64,
    /// Every request: path, authenticated user, body.
    requests: Vec<(String, String, Value)>,
    /// Secrets by namespace/name.
    secrets: HashMap<String, Secret>,
    /// Leases by namespace/name (their UID and body, as Secrets).
    leases: HashMap<String, Secret>,
    /// Every token minted.
    minted: HashMap<String, Minted>,
    /// Client certificates (DER) its client CA signed, and the users their common names make.
    x509_users: HashMap<Vec<u8>, String>,
    /// The users `kubernetes-target`'s ValidatingAdmissionPolicy is bound for, one module
    /// instance each (the federation's user): see [`refused_by_policy`].
    confined: Vec<String>,
    /// How long a Lease DELETE takes (none by default), and how many were in flight at
    /// once: now, and at most.
    delete_pause: Duration,
    deletes_in_flight: usize,
    most_deletes_in_flight: usize,
}

type Fake = Arc<Mutex<ApiServer>>;

/// A `Status` answer as the API server writes it.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    (
        code,
        Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16(),
        })),
    )
        .into_response()
}

/// The user a bearer token authenticates as, or `None`: a static token, a ServiceAccount
/// token the cluster minted (unexpired, its bound Secret still there with its UID), or a JWT
/// of the authenticator's issuer.
async fn authenticate(fake: &Fake, bearer: &str) -> Option<String> {
    let (jwt, known) = {
        let api = fake.lock().unwrap();
        let minted = api.minted.get(bearer).and_then(|m| {
            let live = m.expires > jiff::Timestamp::now().as_second();
            let bound = m.bound.as_ref().is_none_or(|(ns, name, uid)| {
                api.secrets
                    .get(&format!("{ns}/{name}"))
                    .is_some_and(|s| &s.uid == uid)
            });
            (live && bound).then(|| m.user.clone())
        });
        (
            api.jwt.clone(),
            api.static_tokens.get(bearer).cloned().or(minted),
        )
    };
    if known.is_some() {
        return known;
    }
    let (issuer, audience) = jwt?;
    let claims = unverified_claims(bearer)?;
    if claims["iss"] != issuer.as_str() {
        return None;
    }
    if !relying_party::audiences(&claims).contains(&audience.as_str()) {
        return None;
    }
    let verified = relying_party::verify_rsa(bearer, &issuer, |_| {})
        .await
        .ok()?;
    let now = jiff::Timestamp::now().as_second();
    if verified.claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
        return None;
    }
    let (claim, prefix) = username_mapping();
    Some(format!(
        "{prefix}{}",
        verified.claims[claim.as_str()].as_str()?
    ))
}

/// The JWT authenticator's `claimMappings.username` as `kubernetes-target` writes it in the
/// `authentication_config` it outputs for the API server (`local.jwt_authenticator`): the claim
/// and its prefix (`local.user_prefix`), read from the module once.
fn username_mapping() -> &'static (String, String) {
    static MAPPING: std::sync::LazyLock<(String, String)> = std::sync::LazyLock::new(|| {
        use esi_test_support::terraform;
        let body = terraform::module("kubernetes-target");
        let authenticator = terraform::local(&body, "jwt_authenticator");
        let username = terraform::field(
            &terraform::field(&authenticator, "claimMappings"),
            "username",
        );
        let claim = terraform::string(&terraform::field(&username, "claim"));
        let prefix = terraform::field(&username, "prefix");
        assert_eq!(prefix.to_string(), "local.user_prefix");
        (
            claim,
            terraform::string(&terraform::local(&body, "user_prefix")),
        )
    });
    &MAPPING
}

/// The header through which the fake's TLS layer tells its handlers the user a client
/// certificate authenticated (removed from every request first: no client can set it).
const X509_USER: &str = "x-fake-x509-user";

/// The user of the request: its client certificate's, as the API server's x509 authenticator
/// (checked before tokens) makes it, or else its bearer token's.
async fn authenticated(fake: &Fake, headers: &HeaderMap) -> Option<String> {
    if let Some(user) = headers.get(X509_USER) {
        return user.to_str().ok().map(str::to_owned);
    }
    authenticate(fake, &bearer(headers)).await
}

/// The TLS layer's part of authentication: the client certificate the handshake verified
/// against the client CA, as a user (see [`X509_USER`]).
async fn x509_user(
    State(fake): State<Fake>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    req.headers_mut().remove(X509_USER);
    let user = req
        .extensions()
        .get::<Arc<axum_server::tls::TlsInfo>>()
        .and_then(|tls| tls.peer_certificates.first())
        .and_then(|der| fake.lock().unwrap().x509_users.get(der).cloned());
    if let Some(user) = user {
        req.headers_mut().insert(X509_USER, user.parse().unwrap());
    }
    next.run(req).await
}

/// What every handler does first: authenticates the bearer (401 otherwise) and records the
/// request (`path`, the user, the JSON body or null). The user and the body.
async fn admit(
    fake: &Fake,
    headers: &HeaderMap,
    path: String,
    body: &str,
) -> Result<(String, Value), Response> {
    let Some(user) = authenticated(fake, headers).await else {
        return Err(status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
        ));
    };
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    fake.lock()
        .unwrap()
        .requests
        .push((path, user.clone(), body.clone()));
    Ok((user, body))
}

/// `POST /api/v1/namespaces/{namespace}/serviceaccounts/{name}/token`.
async fn token_request(
    State(fake): State<Fake>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token");
    let (user, request) = match admit(&fake, &headers, path, &body).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let mut api = fake.lock().unwrap();
    let allowed = api.rbac.get(&user).is_some_and(|grants| {
        grants
            .iter()
            .any(|g| g.namespace == namespace && g.names.as_ref().is_none_or(|n| n.contains(&name)))
    });
    if !allowed {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "serviceaccounts \"{name}\" is forbidden: User \"{user}\" cannot create resource \
                 \"serviceaccounts/token\" in API group \"\" in the namespace \"{namespace}\""
            ),
        );
    }
    if request["apiVersion"] != "authentication.k8s.io/v1" || request["kind"] != "TokenRequest" {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body of the request was in an unknown format",
        );
    }
    let asked = request["spec"]["expirationSeconds"]
        .as_i64()
        .unwrap_or(3600);
    if asked < 600 {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!(
                "TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: \
                 Invalid value: {asked}: may not specify a duration less than 10 minutes"
            ),
        );
    }
    if !api.accounts.contains(&format!("{namespace}/{name}")) {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("serviceaccounts \"{name}\" not found"),
        );
    }
    let mut audiences: Vec<String> = request["spec"]["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    if audiences.is_empty() {
        audiences.push(API_AUDIENCE.to_owned());
    }
    let bound = &request["spec"]["boundObjectRef"];
    let bound = if bound.is_null() {
        None
    } else {
        let secret = bound["name"].as_str().unwrap_or_default().to_owned();
        let uid = bound["uid"].as_str().unwrap_or_default().to_owned();
        if bound["kind"] != "Secret" || bound["apiVersion"] != "v1" {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "cannot bind token to object of type this fake does not know",
            );
        }
        match api.secrets.get(&format!("{namespace}/{secret}")) {
            None => {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("secrets \"{secret}\" not found"),
                );
            }
            Some(s) if s.uid != uid => {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on secrets \"{secret}\": the UID in the bound \
                         object reference ({uid}) does not match the UID in record ({})",
                        s.uid
                    ),
                );
            }
            Some(_) => Some((namespace.clone(), secret, uid)),
        }
    };
    let lifetime = asked.min(api.max_expiration) + api.extend;
    let token = api.cluster.mint(&TokenSpec {
        audience: audiences.clone(),
        namespace: namespace.clone(),
        service_account: name.clone(),
        pod: None,
        lifetime,
    });
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(lifetime);
    api.minted.insert(
        token.clone(),
        Minted {
            user: format!("system:serviceaccount:{namespace}:{name}"),
            bound,
            expires: expires.as_second(),
        },
    );
    (
        StatusCode::CREATED,
        Json(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
            "spec": {"audiences": audiences, "expirationSeconds": lifetime, "boundObjectRef": null},
            "status": {"token": token, "expirationTimestamp": expires.to_string()},
        })),
    )
        .into_response()
}

/// The resources a [`Grant`] may edit: Secrets (`create`, `delete`) and Leases (`create`,
/// `get`, `delete`), each with its API group.
#[derive(Clone, Copy)]
enum Editable {
    Secrets,
    Leases,
}

impl Editable {
    /// The resource, its API group, and how the API server's messages name it.
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Editable::Secrets => ("secrets", "", "secrets"),
            Editable::Leases => (
                "leases",
                "coordination.k8s.io",
                "leases.coordination.k8s.io",
            ),
        }
    }
}

/// The API server's 403 for `verb` when `user` may not edit `what` in `namespace`.
fn refused_edit(
    api: &ApiServer,
    user: &str,
    what: Editable,
    verb: &str,
    namespace: &str,
) -> Option<Response> {
    let granted = api.rbac.get(user).is_some_and(|g| {
        g.iter().any(|g| {
            g.namespace == namespace
                && match what {
                    Editable::Secrets => g.secrets,
                    Editable::Leases => g.leases,
                }
        })
    });
    let (resource, group, prefix) = what.names();
    (!granted).then(|| {
        status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!(
            "{prefix} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API \
             group \"{group}\" in the namespace \"{namespace}\""
        ),
    )
    })
}

/// The ValidatingAdmissionPolicy of `infra/terraform/modules/kubernetes-target` (see
/// [`admission_policy`]) on `operation` of `what` by `user`: `None` when it admits the write,
/// else the API server's 422 with the failing validation's message. One module instance for
/// each of [`ApiServer::confined`], that instance's federation user; `object` is a create's
/// (named), `old` a delete's.
fn refused_by_policy(
    api: &ApiServer,
    user: &str,
    operation: &str,
    what: Editable,
    object: &Value,
    old: &Value,
) -> Option<Response> {
    let (resource, _, prefix) = what.names();
    let policy = admission_policy::policy();
    api.confined
        .iter()
        .find_map(|instance| {
            match policy.decide(instance, user, operation, resource, object, old) {
                admission_policy::Decision::Denied(why) => Some(why),
                _ => None,
            }
        })
        .map(|why| {
            let name = object["metadata"]["name"]
                .as_str()
                .or(old["metadata"]["name"].as_str())
                .unwrap_or_default();
            status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                &format!(
                    "{prefix} \"{name}\" is invalid: : ValidatingAdmissionPolicy \
                     'esi-federation-generators' with binding 'esi-federation-generators' denied \
                     request: {why}"
                ),
            )
        })
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned()
}

/// `POST /api/v1/namespaces/{namespace}/secrets` (with `generateName`).
async fn create_secret(
    State(fake): State<Fake>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = format!("/api/v1/namespaces/{namespace}/secrets");
    let (user, mut secret) = match admit(&fake, &headers, path, &body).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let mut api = fake.lock().unwrap();
    if let Some(refused) = refused_edit(&api, &user, Editable::Secrets, "create", &namespace) {
        return refused;
    }
    let Some(prefix) = secret["metadata"]["generateName"].as_str() else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata.name: Required value",
        );
    };
    // The API server's generateName suffix: five of these (no vowels, no confusable digits).
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    let suffix: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    let name = format!("{prefix}{suffix}");
    let owners: Vec<Value> = secret["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if owners.iter().any(|o| {
        ["apiVersion", "kind", "name", "uid"]
            .iter()
            .any(|f| o[f].as_str().is_none_or(str::is_empty))
    }) {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata.ownerReferences: Invalid value: apiVersion, kind, name and uid must not be empty",
        );
    }
    secret["metadata"]["name"] = json!(name);
    secret["metadata"]["namespace"] = json!(namespace);
    if let Some(refused) = refused_by_policy(
        &api,
        &user,
        "CREATE",
        Editable::Secrets,
        &secret,
        &Value::Null,
    ) {
        return refused;
    }
    let uid = format!("uid-{}", relying_party::random());
    secret["metadata"]["uid"] = json!(uid);
    let key = format!("{namespace}/{name}");
    api.secrets.insert(
        key.clone(),
        Secret {
            uid,
            body: secret.clone(),
        },
    );
    // The garbage collector: a dependent whose owners are all absent (no Lease of that name
    // and UID in its namespace) is deleted, soon after its creation.
    if !owners.is_empty()
        && !owners.iter().any(|o| {
            o["kind"] == "Lease"
                && o["apiVersion"] == "coordination.k8s.io/v1"
                && api
                    .leases
                    .get(&format!("{namespace}/{}", o["name"].as_str().unwrap()))
                    .is_some_and(|l| o["uid"] == l.uid.as_str())
        })
    {
        api.secrets.remove(&key);
    }
    (StatusCode::CREATED, Json(secret)).into_response()
}

/// `DELETE /api/v1/namespaces/{namespace}/secrets/{name}` (with a UID precondition).
async fn delete_secret(
    State(fake): State<Fake>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
    let (user, options) = match admit(&fake, &headers, path, &body).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let mut api = fake.lock().unwrap();
    if let Some(refused) = refused_edit(&api, &user, Editable::Secrets, "delete", &namespace) {
        return refused;
    }
    let key = format!("{namespace}/{name}");
    match api.secrets.get(&key) {
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("secrets \"{name}\" not found"),
        ),
        Some(s)
            if options["preconditions"]["uid"]
                .as_str()
                .is_some_and(|u| u != s.uid) =>
        {
            status(
                StatusCode::CONFLICT,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on secrets \"{name}\": Precondition failed: UID in \
                 precondition: {}, UID in object meta: {}",
                    options["preconditions"]["uid"], s.uid
                ),
            )
        }
        Some(s) => {
            if let Some(refused) = refused_by_policy(
                &api,
                &user,
                "DELETE",
                Editable::Secrets,
                &Value::Null,
                &s.body,
            ) {
                return refused;
            }
            let gone = api.secrets.remove(&key).unwrap();
            (StatusCode::OK, Json(gone.body)).into_response()
        }
    }
}

/// `GET /api/v1/namespaces/{namespace}/secrets/{name}`.
async fn get_secret(
    State(fake): State<Fake>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
    let (user, _) = match admit(&fake, &headers, path, "").await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let api = fake.lock().unwrap();
    let allowed = api.rbac.get(&user).is_some_and(|g| {
        g.iter()
            .any(|g| g.namespace == namespace && g.readable.contains(&name))
    });
    if !allowed {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "secrets \"{name}\" is forbidden: User \"{user}\" cannot get resource \"secrets\" in \
                 API group \"\" in the namespace \"{namespace}\""
            ),
        );
    }
    match api.secrets.get(&format!("{namespace}/{name}")) {
        Some(s) => (StatusCode::OK, Json(s.body.clone())).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("secrets \"{name}\" not found"),
        ),
    }
}

/// `POST /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases` (named, no generateName):
/// 409 `AlreadyExists` when one of that name is there.
async fn create_lease(
    State(fake): State<Fake>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases");
    let (user, mut lease) = match admit(&fake, &headers, path, &body).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let mut api = fake.lock().unwrap();
    if let Some(refused) = refused_edit(&api, &user, Editable::Leases, "create", &namespace) {
        return refused;
    }
    if lease["apiVersion"] != "coordination.k8s.io/v1" || lease["kind"] != "Lease" {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body of the request was in an unknown format",
        );
    }
    let Some(name) = lease["metadata"]["name"].as_str().map(str::to_owned) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata.name: Required value",
        );
    };
    lease["metadata"]["namespace"] = json!(namespace);
    if let Some(refused) = refused_by_policy(
        &api,
        &user,
        "CREATE",
        Editable::Leases,
        &lease,
        &Value::Null,
    ) {
        return refused;
    }
    let key = format!("{namespace}/{name}");
    if api.leases.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("leases.coordination.k8s.io \"{name}\" already exists"),
        );
    }
    let uid = format!("uid-{}", relying_party::random());
    lease["metadata"]["uid"] = json!(uid);
    api.leases.insert(
        key,
        Secret {
            uid,
            body: lease.clone(),
        },
    );
    (StatusCode::CREATED, Json(lease)).into_response()
}

/// `GET /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}`.
async fn get_lease(
    State(fake): State<Fake>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}");
    let (user, _) = match admit(&fake, &headers, path, "").await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let api = fake.lock().unwrap();
    if let Some(refused) = refused_edit(&api, &user, Editable::Leases, "get", &namespace) {
        return refused;
    }
    match api.leases.get(&format!("{namespace}/{name}")) {
        Some(l) => (StatusCode::OK, Json(l.body.clone())).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("leases.coordination.k8s.io \"{name}\" not found"),
        ),
    }
}

/// `DELETE /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}`; with the
/// garbage collector's background cascade (unless `propagationPolicy: Orphan`): the Secrets
/// it owns are deleted too.
async fn delete_lease(
    State(fake): State<Fake>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}");
    let (user, options) = match admit(&fake, &headers, path, &body).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let pause = {
        let mut api = fake.lock().unwrap();
        api.deletes_in_flight += 1;
        api.most_deletes_in_flight = api.most_deletes_in_flight.max(api.deletes_in_flight);
        api.delete_pause
    };
    tokio::time::sleep(pause).await;
    let mut api = fake.lock().unwrap();
    api.deletes_in_flight -= 1;
    if let Some(refused) = refused_edit(&api, &user, Editable::Leases, "delete", &namespace) {
        return refused;
    }
    let key = format!("{namespace}/{name}");
    let Some(stored) = api.leases.get(&key) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("leases.coordination.k8s.io \"{name}\" not found"),
        );
    };
    if let Some(refused) = refused_by_policy(
        &api,
        &user,
        "DELETE",
        Editable::Leases,
        &Value::Null,
        &stored.body,
    ) {
        return refused;
    }
    let gone = api.leases.remove(&key).unwrap();
    if options["propagationPolicy"] != "Orphan" {
        let prefix = format!("{namespace}/");
        api.secrets.retain(|key, s| {
            !(key.starts_with(&prefix)
                && s.body["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|o| o["uid"] == gone.uid.as_str())))
        });
    }
    (StatusCode::OK, Json(gone.body)).into_response()
}

/// Stores a Secret of `kind` with `data` (values base64-encoded as the API server stores them).
fn put_secret(fake: &Fake, namespace: &str, name: &str, kind: &str, data: &[(&str, &[u8])]) {
    use base64::Engine as _;
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                json!(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    let uid = format!("uid-{}", relying_party::random());
    let body = json!({
        "apiVersion": "v1", "kind": "Secret", "type": kind, "data": data,
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
    });
    fake.lock()
        .unwrap()
        .secrets
        .insert(format!("{namespace}/{name}"), Secret { uid, body });
}

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews` (`kubectl auth whoami`): who the
/// bearer is, or 401.
async fn self_subject_review(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    match authenticated(&fake, &headers).await {
        Some(user) => (
            StatusCode::CREATED,
            Json(json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                "status": {"userInfo": {"username": user}},
            })),
        )
            .into_response(),
        None => status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized"),
    }
}

/// Who the API server at `server` takes `token` for (`None`: 401).
async fn whoami(server: &str, token: &str) -> Option<String> {
    let resp = reqwest::Client::new()
        .post(format!(
            "{server}/apis/authentication.k8s.io/v1/selfsubjectreviews"
        ))
        .bearer_auth(token)
        .json(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}))
        .send()
        .await
        .unwrap();
    if resp.status() == 401 {
        return None;
    }
    assert_eq!(resp.status(), 201);
    let review: Value = resp.json().await.unwrap();
    Some(
        review["status"]["userInfo"]["username"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

/// The fake API server of the cluster `cluster` (already served as an issuer), on a loopback
/// port, with `accounts` and the federation's static token granted `grants`.
async fn api_server(
    cluster: Arc<LocalIssuer>,
    accounts: &[&str],
    grants: Vec<Grant>,
) -> (Fake, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (fake, app) = api(cluster, accounts, grants);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, url)
}

/// [`api_server`] over HTTPS (`https://localhost:PORT`) with a certificate of a fresh private
/// CA: the fake, its URL and the CA's PEM.
async fn api_server_tls(
    cluster: Arc<LocalIssuer>,
    accounts: &[&str],
    grants: Vec<Grant>,
) -> (Fake, String, String) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = esi_test_support::pki("localhost").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        pki.cert_pem.into_bytes(),
        pki.key_pem.into_bytes(),
    )
    .await
    .unwrap();
    let (fake, app) = api(cluster, accounts, grants);
    let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
    tokio::spawn(async move { server.serve(app.into_make_service()).await });
    (fake, url, pki.ca_pem)
}

/// [`api_server_tls`] that also authenticates client certificates signed by `client_ca`
/// (PEM), as an API server started with `--client-ca-file` does: a certificate the CA did not
/// sign fails the handshake, one it signed is the user [`ApiServer::x509_users`] names for it,
/// and a client without one goes on to the bearer token.
async fn api_server_mtls(
    cluster: Arc<LocalIssuer>,
    accounts: &[&str],
    grants: Vec<Grant>,
    client_ca: &str,
) -> (Fake, String, String) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = esi_test_support::pki("localhost").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .unwrap();
    let chain = CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let (fake, app) = api(cluster, accounts, grants);
    let app = app.layer(axum::middleware::from_fn_with_state(
        fake.clone(),
        x509_user,
    ));
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
    let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
    tokio::spawn(async move { server.serve(app.into_make_service()).await });
    (fake, url, pki.ca_pem)
}

/// The DER of a PEM certificate.
fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// The fake's state and routes.
fn api(cluster: Arc<LocalIssuer>, accounts: &[&str], grants: Vec<Grant>) -> (Fake, Router) {
    let fake = Arc::new(Mutex::new(ApiServer {
        cluster,
        accounts: accounts.iter().map(|a| (*a).to_owned()).collect(),
        static_tokens: HashMap::from([(FEDERATION_TOKEN.to_owned(), FEDERATION_USER.to_owned())]),
        jwt: None,
        rbac: HashMap::from([(FEDERATION_USER.to_owned(), grants)]),
        max_expiration: 48 * 3600,
        extend: 0,
        requests: Vec::new(),
        secrets: HashMap::new(),
        leases: HashMap::new(),
        minted: HashMap::new(),
        x509_users: HashMap::new(),
        confined: vec![FEDERATION_USER.to_owned()],
        delete_pause: Duration::ZERO,
        deletes_in_flight: 0,
        most_deletes_in_flight: 0,
    }));
    let app = Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            post(token_request),
        )
        .route(
            "/api/v1/namespaces/{namespace}/secrets",
            post(create_secret),
        )
        .route(
            "/api/v1/namespaces/{namespace}/secrets/{name}",
            axum::routing::delete(delete_secret).get(get_secret),
        )
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
            post(create_lease),
        )
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}",
            axum::routing::delete(delete_lease).get(get_lease),
        )
        .route(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            post(self_subject_review),
        )
        .with_state(fake.clone());
    (fake, app)
}

fn grant(namespace: &str, names: Option<&[&str]>) -> Grant {
    Grant {
        namespace: namespace.to_owned(),
        names: names.map(|n| n.iter().map(|s| (*s).to_owned()).collect()),
        secrets: false,
        leases: false,
        readable: Vec::new(),
    }
}

/// [`grant`] with what revocable tokens need too: `create` and `delete` on `secrets`, `create`,
/// `get` and `delete` on `leases`.
fn grant_with_secrets(namespace: &str, names: Option<&[&str]>) -> Grant {
    Grant {
        secrets: true,
        leases: true,
        ..grant(namespace, names)
    }
}

/// A file holding the federation's static token, mode 0600, in a directory kept alive.
fn token_file(dir: &tempfile::TempDir, token: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.path().join("token");
    std::fs::write(&path, token).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_str().unwrap().to_owned()
}

fn ctx(id: &Identity, max_ttl: Option<Duration>) -> Context<'_> {
    Context {
        identity: id,
        generator: "payments/KubernetesServiceAccountToken/deploy",
        max_ttl,
    }
}

/// A generator on a `kubernetes` store `provider`, built as a serving federation with `issuer`
/// builds it.
fn generator(issuer: Option<&Arc<Issuer>>, provider: Value, spec: Value) -> Generator {
    let store =
        SecretStoreSpec::from_manifest(json!({"provider": {"kubernetes": provider}})).unwrap();
    let spec =
        GeneratorSpec::from_manifest(GeneratorKind::KubernetesServiceAccountToken, spec).unwrap();
    Generator::build_shared(
        &spec,
        Some(&store),
        &mut Shared::with_issuer(issuer.cloned()),
    )
    .unwrap()
}

fn rejected(e: BackendError) -> String {
    match e {
        BackendError::Rejected { message, .. } => message,
        other => panic!("not a refusal: {other:?}"),
    }
}

/// A federation serving the clusters `clusters` (Cluster manifests), the common generators,
/// a `kubernetes` store `beta` at `server` presenting the token in `file`, and `generator` (a
/// manifest of the namespace `default`).
fn configured(clusters: &str, server: &str, file: &str, generator: &str) -> AppState {
    let yaml = format!(
        "{clusters}{}apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: beta, namespace: default}}
spec: {{provider: {{kubernetes: {{server: \"{server}\", auth: {{token: {{file: \"{file}\"}}}}}}}}}}
---
apiVersion: esi.dev/v1alpha1
{generator}",
        common::GENERATORS
    );
    common::state(&yaml, common::settings(Duration::from_secs(1)))
}

/// `POST /v1/generators/default/{kind}/{name}` as `caller`: the status, JSON and text.
async fn call(state: &AppState, caller: &str, kind_name: &str) -> (u16, Value, String) {
    let (status, _, json, text) = common::send(
        state,
        common::post(
            &format!("/v1/generators/default/{kind_name}"),
            Some(caller),
            None,
        ),
    )
    .await;
    (status, json, text)
}

#[tokio::test]
async fn a_workload_gets_a_token_of_its_twin_in_another_cluster_that_the_cluster_accepts() {
    let alpha = common::issuer().await;
    let beta = common::issuer().await;
    let (fake, server) = api_server(
        beta.clone(),
        &["deploy/ci-default"],
        vec![grant("deploy", Some(&["ci-default"]))],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir, FEDERATION_TOKEN);
    let state = configured(
        &(common::cluster("alpha", &alpha.issuer()) + &common::cluster("beta", &beta.issuer())),
        &server,
        &file,
        "kind: KubernetesServiceAccountToken
metadata: {name: deploy, namespace: default}
spec:
  secretStoreRef: {name: beta}
  serviceAccount: {namespace: deploy, name: \"ci-{{namespace}}\"}
  audiences: [esi]
  expiration: 30m
",
    );
    let before = jiff::Timestamp::now().as_second();
    let caller = common::token(&alpha, "default", "app");
    let (status, json, text) = call(&state, &caller, "KubernetesServiceAccountToken/deploy").await;
    assert_eq!(status, 200, "{text}");
    let data = json["data"].as_object().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        [
            "kubeconfig",
            "namespace",
            "server",
            "serviceAccount",
            "token"
        ]
    );
    assert_eq!(data["namespace"], "deploy");
    assert_eq!(data["serviceAccount"], "ci-default");
    assert_eq!(data["server"], server.as_str());
    let expires: jiff::Timestamp = json["expiresAt"].as_str().unwrap().parse().unwrap();
    assert!(
        (before + 1795..=before + 1802).contains(&expires.as_second()),
        "expiresAt is the API server's expirationTimestamp, 30m: {expires}"
    );
    assert!(json.get("lease").is_none(), "nothing to revoke: {json}");

    // Asked as kubectl create token asks, as the federation's user.
    {
        let api = fake.lock().unwrap();
        assert_eq!(api.requests.len(), 1);
        let (path, user, body) = &api.requests[0];
        assert_eq!(
            path,
            "/api/v1/namespaces/deploy/serviceaccounts/ci-default/token"
        );
        assert_eq!(user, FEDERATION_USER);
        assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(body["kind"], "TokenRequest");
        assert_eq!(body["spec"]["audiences"], json!(["esi"]));
        assert_eq!(body["spec"]["expirationSeconds"], 1800);
    }

    // The token is beta's: the federation's verifier takes it as beta's deploy/ci-default.
    let token = data["token"].as_str().unwrap();
    let (status, _, who, text) = common::send(&state, common::get("/v1/whoami", Some(token))).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(who["cluster"], "beta", "{who}");
    assert_eq!(who["namespace"], "deploy");
    assert_eq!(who["serviceAccount"]["name"], "ci-default");

    // The kubeconfig holds the same token, for the same server, in the namespace.
    let kubeconfig: Value = serde_json::from_str(data["kubeconfig"].as_str().unwrap()).unwrap();
    assert_eq!(
        kubeconfig["clusters"][0]["cluster"]["server"],
        server.as_str()
    );
    assert_eq!(kubeconfig["users"][0]["user"]["token"], token);
    assert_eq!(kubeconfig["contexts"][0]["context"]["namespace"], "deploy");
    assert!(
        !text.contains(FEDERATION_TOKEN) && !format!("{json}").contains(FEDERATION_TOKEN),
        "the federation's own token reached the caller"
    );
}

#[tokio::test]
async fn the_federation_logs_in_with_its_own_token_which_the_api_server_trusts_by_its_issuer() {
    let beta = common::issuer().await;
    let (issuer, _state, url) = federation(KeyAlgorithm::Rs256, None).await;
    let (fake, server) = api_server(beta, &["deploy/ci"], Vec::new()).await;
    {
        let mut api = fake.lock().unwrap();
        api.jwt = Some((url.clone(), server.clone()));
        api.rbac
            .insert("esi:esi-federation".into(), vec![grant("deploy", None)]);
    }
    let id = identity("payments", "api");
    let spec = json!({"secretStoreRef": {"name": "beta"}, "serviceAccount": {"namespace": "deploy", "name": "ci"}});
    let g = generator(
        Some(&issuer),
        json!({"server": server, "auth": {"selfIssued": {}}}),
        spec.clone(),
    );
    let cred = g.generate(&ctx(&id, None)).await.unwrap();
    let claims = unverified_claims(&cred.data["token"]).unwrap();
    assert_eq!(
        claims["aud"],
        json!([API_AUDIENCE]),
        "no audiences: the API server's"
    );
    assert_eq!(claims["sub"], "system:serviceaccount:deploy:ci");
    assert_eq!(fake.lock().unwrap().requests[0].1, "esi:esi-federation");
    assert!(!format!("{cred:?}").contains(&cred.data["token"]));

    // Another audience than the authenticator's: the federation is not authenticated (401 is
    // the federation's own configuration, unavailable, not the caller's fault).
    let g = generator(
        Some(&issuer),
        json!({"server": server, "auth": {"selfIssued": {"audience": "elsewhere"}}}),
        spec,
    );
    match g.generate(&ctx(&id, None)).await.unwrap_err() {
        BackendError::Unavailable { message, .. } => assert!(message.contains("401"), "{message}"),
        other => panic!("{other:?}"),
    }

    // A workload may not hold an identity token for the store's own audience: it would be
    // the federation at that API server.
    let (_issuer, state, _url) = federation(KeyAlgorithm::Rs256, None).await;
    let clash = format!(
        "apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: beta, namespace: default}}
spec: {{provider: {{kubernetes: {{server: \"{server}\", auth: {{selfIssued: {{}}}}}}}}}}
---
apiVersion: esi.dev/v1alpha1
kind: IdentityToken
metadata: {{name: id, namespace: default}}
spec: {{audiences: [\"{server}\"]}}
"
    );
    let err = config::load_text("clash.yaml", &clash, &state)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("provider.kubernetes.auth.selfIssued"), "{err}");
}

#[tokio::test]
async fn refusals_say_what_the_api_server_refused_and_lifetimes_follow_max_ttl() {
    let beta = common::issuer().await;
    let (fake, server) = api_server(
        beta,
        &["deploy/ci", "deploy/admin", "payments/api"],
        vec![
            grant("deploy", Some(&["ci", "ghost"])),
            grant("payments", None),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir, FEDERATION_TOKEN);
    let provider = json!({"server": server, "auth": {"token": {"file": file}}});
    let sa = |ns: &str, name: &str| json!({"secretStoreRef": {"name": "beta"}, "serviceAccount": {"namespace": ns, "name": name}});
    let id = identity("payments", "api");
    let requests = || fake.lock().unwrap().requests.len();

    // RBAC narrows the federation to some ServiceAccounts.
    let err = rejected(
        generator(None, provider.clone(), sa("deploy", "admin"))
            .generate(&ctx(&id, None))
            .await
            .unwrap_err(),
    );
    assert!(
        err.contains("may not create tokens for ServiceAccount deploy/admin"),
        "{err}"
    );
    assert!(err.contains("serviceaccounts/token"), "{err}");
    // Allowed, but not there.
    let err = rejected(
        generator(None, provider.clone(), sa("deploy", "ghost"))
            .generate(&ctx(&id, None))
            .await
            .unwrap_err(),
    );
    assert!(
        err.contains("ServiceAccount deploy/ghost does not exist"),
        "{err}"
    );

    // Placeholders: the caller's twin.
    let twin = generator(
        None,
        provider.clone(),
        sa("{{namespace}}", "{{serviceAccount}}"),
    );
    let cred = twin.generate(&ctx(&id, None)).await.unwrap();
    assert_eq!(cred.data["serviceAccount"], "api");
    assert_eq!(
        unverified_claims(&cred.data["token"]).unwrap()["sub"],
        "system:serviceaccount:payments:api"
    );

    // maxTTL lowers the expiration; under ten minutes nothing is asked.
    let g = generator(None, provider.clone(), sa("deploy", "ci"));
    let before = jiff::Timestamp::now().as_second();
    let cred = g
        .generate(&ctx(&id, Some(Duration::from_secs(900))))
        .await
        .unwrap();
    let lives = cred.expires_at.unwrap().as_second() - before;
    assert!((895..=902).contains(&lives), "{lives}");
    assert_eq!(
        fake.lock().unwrap().requests.last().unwrap().2["spec"]["expirationSeconds"],
        900
    );
    let asked = requests();
    let err = rejected(
        g.generate(&ctx(&id, Some(Duration::from_secs(300))))
            .await
            .unwrap_err(),
    );
    assert!(err.contains("under ten minutes"), "{err}");
    assert_eq!(requests(), asked, "nothing asked under ten minutes");

    // The API server's own cap shortens the token: expiresAt says so.
    fake.lock().unwrap().max_expiration = 1200;
    let before = jiff::Timestamp::now().as_second();
    let cred = g.generate(&ctx(&id, None)).await.unwrap();
    let lives = cred.expires_at.unwrap().as_second() - before;
    assert!((1195..=1202).contains(&lives), "the server's cap: {lives}");

    // A token living past maxTTL anyway is dropped, not handed out.
    {
        let mut api = fake.lock().unwrap();
        api.max_expiration = 48 * 3600;
        api.extend = 7200;
    }
    let err = rejected(
        g.generate(&ctx(&id, Some(Duration::from_secs(3600))))
            .await
            .unwrap_err(),
    );
    assert!(
        err.contains("longer than the Authorization's maxTTL"),
        "{err}"
    );
    assert!(err.contains("dropped"), "{err}");
    fake.lock().unwrap().extend = 0;

    // The federation's token refused (rotated away): unavailable, the file re-read next time.
    std::fs::write(file_path(&dir), "stale-token").unwrap();
    match g.generate(&ctx(&id, None)).await.unwrap_err() {
        BackendError::Unavailable { message, detail } => {
            assert!(message.contains("401"), "{message}");
            assert!(!detail.contains("stale-token"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(file_path(&dir), FEDERATION_TOKEN).unwrap();
    assert!(
        g.generate(&ctx(&id, None)).await.is_ok(),
        "a rotated file needs no restart"
    );
}

fn file_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("token")
}

#[tokio::test]
async fn a_revocable_token_is_void_once_its_lease_is_revoked() {
    let alpha = common::issuer().await;
    let beta = common::issuer().await;
    let (fake, server) = api_server(
        beta.clone(),
        &["deploy/ci"],
        vec![grant_with_secrets("deploy", Some(&["ci"]))],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir, FEDERATION_TOKEN);
    let state = configured(
        &common::cluster("alpha", &alpha.issuer()),
        &server,
        &file,
        "kind: KubernetesServiceAccountToken
metadata: {name: deploy, namespace: default}
spec:
  secretStoreRef: {name: beta}
  serviceAccount: {namespace: deploy, name: ci}
  revocable: true
",
    );
    let caller = common::token(&alpha, "default", "app");
    let (status, json, text) = call(&state, &caller, "KubernetesServiceAccountToken/deploy").await;
    assert_eq!(status, 200, "{text}");
    let token = json["data"]["token"].as_str().unwrap().to_owned();
    let lease = json["lease"]
        .as_str()
        .expect("a revocable token has a lease")
        .to_owned();
    assert_eq!(
        whoami(&server, &token).await.as_deref(),
        Some("system:serviceaccount:deploy:ci"),
        "the token works at its cluster"
    );

    // The Secret it is bound to: made for it, empty, labelled and annotated; the TokenRequest
    // named it with its UID.
    let (secret, uid) = {
        let api = fake.lock().unwrap();
        assert_eq!(api.secrets.len(), 1);
        let (key, s) = api.secrets.iter().next().unwrap();
        assert!(key.starts_with("deploy/esi-token-"), "{key}");
        assert_eq!(s.body["type"], "esi.dev/token-binding");
        assert_eq!(s.body["immutable"], true);
        assert!(s.body.get("data").is_none());
        assert_eq!(
            s.body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "esi-federation"
        );
        let notes = &s.body["metadata"]["annotations"];
        assert_eq!(notes["esi.dev/service-account"], "ci");
        assert_eq!(
            notes["esi.dev/issued-to"],
            "alpha:system:serviceaccount:default:app"
        );
        let at: jiff::Timestamp = notes["esi.dev/expires-at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let expires: jiff::Timestamp = json["expiresAt"].as_str().unwrap().parse().unwrap();
        assert!(
            (at.as_second() - expires.as_second()).abs() <= 5,
            "{at} vs {expires}"
        );
        let request = &api
            .requests
            .iter()
            .find(|r| r.0.ends_with("/token"))
            .unwrap()
            .2;
        let bound = &request["spec"]["boundObjectRef"];
        assert_eq!(bound["kind"], "Secret");
        assert_eq!(format!("deploy/{}", bound["name"].as_str().unwrap()), *key);
        assert_eq!(bound["uid"], s.uid.as_str());
        (key.clone(), s.uid.clone())
    };

    // Revoked by its lease: the Secret is deleted (with its UID as precondition) and the API
    // server refuses the token.
    let body = json!({ "lease": lease }).to_string();
    let (status, _, answer, text) = common::send(
        &state,
        common::post("/v1/revoke", Some(&caller), Some(&body)),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(answer["revoked"], true);
    assert!(fake.lock().unwrap().secrets.is_empty());
    let delete = fake.lock().unwrap().requests.last().unwrap().2.clone();
    assert_eq!(delete["preconditions"]["uid"], uid.as_str(), "{secret}");
    assert_eq!(whoami(&server, &token).await, None, "the token is void");
    // Revoking again: nothing left.
    let (status, _, answer, text) = common::send(
        &state,
        common::post("/v1/revoke", Some(&caller), Some(&body)),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(answer["revoked"], false);
}

#[tokio::test]
async fn a_revocable_token_minted_but_not_handed_out_leaves_no_secret_and_no_live_token() {
    let beta = common::issuer().await;
    let (fake, server) = api_server(
        beta,
        &["deploy/ci"],
        vec![grant_with_secrets("deploy", None), grant("other", None)],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir, FEDERATION_TOKEN);
    let provider = json!({"server": server, "auth": {"token": {"file": file}}});
    let sa = |ns: &str, name: &str| {
        json!({"secretStoreRef": {"name": "beta"}, "revocable": true,
               "serviceAccount": {"namespace": ns, "name": name}})
    };
    let id = identity("payments", "api");

    // A ServiceAccount that does not exist: its Secret made, then deleted.
    let err = rejected(
        generator(None, provider.clone(), sa("deploy", "ghost"))
            .generate(&ctx(&id, None))
            .await
            .unwrap_err(),
    );
    assert!(
        err.contains("ServiceAccount deploy/ghost does not exist"),
        "{err}"
    );
    assert!(
        fake.lock().unwrap().secrets.is_empty(),
        "the binding Secret was left"
    );

    // A token the API server made longer than maxTTL: its Secret deleted, the token void.
    fake.lock().unwrap().extend = 7200;
    let err = rejected(
        generator(None, provider.clone(), sa("deploy", "ci"))
            .generate(&ctx(&id, Some(Duration::from_secs(3600))))
            .await
            .unwrap_err(),
    );
    assert!(
        err.contains("it was revoked (its binding Secret deleted)"),
        "{err}"
    );
    let minted: Vec<String> = fake.lock().unwrap().minted.keys().cloned().collect();
    assert_eq!(minted.len(), 1);
    assert_eq!(
        whoami(&server, &minted[0]).await,
        None,
        "the dropped token is void"
    );
    assert!(fake.lock().unwrap().secrets.is_empty());
    fake.lock().unwrap().extend = 0;

    // No right to make Secrets there: refused naming the rule, no token asked for.
    let err = rejected(
        generator(None, provider.clone(), sa("other", "ci"))
            .generate(&ctx(&id, None))
            .await
            .unwrap_err(),
    );
    assert!(
        err.contains("`create` on `secrets`, which `revocable` needs"),
        "{err}"
    );
    assert!(
        !fake
            .lock()
            .unwrap()
            .requests
            .iter()
            .any(|r| r.0.starts_with("/api/v1/namespaces/other/serviceaccounts")),
        "a token asked without its binding"
    );

    // A lease naming a Secret since replaced by another of the same name: nothing deleted.
    let g = generator(None, provider, sa("deploy", "ci"));
    let cred = g.generate(&ctx(&id, None)).await.unwrap();
    {
        let mut api = fake.lock().unwrap();
        let s = api.secrets.values_mut().next().unwrap();
        s.uid = "uid-of-a-newer-secret".into();
    }
    assert!(!g.revoke(cred.lease.as_ref().unwrap()).await.unwrap());
    assert_eq!(
        fake.lock().unwrap().secrets.len(),
        1,
        "another Secret was deleted"
    );
}

/// The name of the anchor Lease of the UTC day of `t`.
fn anchor_of(t: jiff::Timestamp) -> String {
    let day = t.to_zoned(jiff::tz::TimeZone::UTC).date();
    format!("esi-token-bindings-{}", day.strftime("%Y%m%d"))
}

/// `t` moved by `days` days.
fn days_from(t: jiff::Timestamp, days: i64) -> jiff::Timestamp {
    t + jiff::SignedDuration::from_hours(24 * days)
}

/// Puts the Lease `name` in `namespace` with a binding Secret it owns, as a replica would have
/// made them: the Lease's UID.
fn put_anchor(fake: &Fake, namespace: &str, name: &str) -> String {
    let uid = format!("uid-{}", relying_party::random());
    let secret = format!("esi-token-of-{name}");
    let mut api = fake.lock().unwrap();
    api.leases.insert(
        format!("{namespace}/{name}"),
        Secret {
            uid: uid.clone(),
            body: json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "metadata": {"name": name, "namespace": namespace, "uid": uid}, "spec": {}}),
        },
    );
    api.secrets.insert(
        format!("{namespace}/{secret}"),
        Secret {
            uid: format!("uid-{}", relying_party::random()),
            body: json!({"apiVersion": "v1", "kind": "Secret", "type": "esi.dev/token-binding",
                         "metadata": {"name": secret, "namespace": namespace, "ownerReferences": [
                             {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "name": name, "uid": uid}]}}),
        },
    );
    uid
}

/// The requests made to the fake whose path contains `part`, by method-less path.
fn requests_to(fake: &Fake, part: &str) -> Vec<String> {
    fake.lock()
        .unwrap()
        .requests
        .iter()
        .filter(|r| r.0.contains(part))
        .map(|r| r.0.clone())
        .collect()
}

#[tokio::test]
async fn binding_secrets_go_with_their_days_anchor_and_past_days_anchors_are_swept() {
    let beta = common::issuer().await;
    let (fake, server) = api_server(
        beta,
        &["deploy/ci"],
        vec![grant_with_secrets("deploy", Some(&["ci"]))],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir, FEDERATION_TOKEN);
    let provider = json!({"server": server, "auth": {"token": {"file": file}}});
    let spec = json!({"secretStoreRef": {"name": "beta"}, "revocable": true,
                      "serviceAccount": {"namespace": "deploy", "name": "ci"}});
    let id = identity("payments", "api");

    // Left by earlier days: anchors two to four days back and nine days back, each owning a
    // binding Secret; and this day's, made by another replica (for each day a one-hour token
    // may end on: the mint below is a moment later).
    let now = jiff::Timestamp::now();
    let past: Vec<String> = [-2, -3, -4]
        .iter()
        .map(|d| anchor_of(days_from(now, *d)))
        .collect();
    for name in &past {
        put_anchor(&fake, "deploy", name);
    }
    let old = anchor_of(days_from(now, -9));
    put_anchor(&fake, "deploy", &old);
    let hour = jiff::SignedDuration::from_hours(1);
    let mut theirs = HashMap::new();
    for t in [now + hour, now + hour + jiff::SignedDuration::from_mins(1)] {
        let name = anchor_of(t);
        theirs
            .entry(name)
            .or_insert_with_key(|name| put_anchor(&fake, "deploy", name));
    }
    let theirs_secrets = fake.lock().unwrap().secrets.len() - past.len() - 1;

    // Each DELETE takes a while, as over a long way to the API server.
    fake.lock().unwrap().delete_pause = Duration::from_millis(300);
    let g = generator(None, provider.clone(), spec.clone());
    let first = g.generate(&ctx(&id, None)).await.unwrap();
    let secret_of = |cred: &esi_backends::Credential| {
        let lease = serde_json::to_value(cred.lease.as_ref().unwrap().0.clone()).unwrap();
        let key = format!("deploy/{}", lease["secret"].as_str().unwrap());
        fake.lock()
            .unwrap()
            .secrets
            .get(&key)
            .map(|s| s.body.clone())
    };
    let body = secret_of(&first).expect("the binding Secret exists");
    let owners = body["metadata"]["ownerReferences"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(owners.len(), 1, "{owners:?}");
    let anchor = owners[0]["name"].as_str().unwrap().to_owned();
    assert_eq!(owners[0]["kind"], "Lease");
    assert_eq!(owners[0]["apiVersion"], "coordination.k8s.io/v1");
    assert_eq!(
        owners[0]["uid"],
        theirs[&anchor].as_str(),
        "the other replica's anchor, learned after a 409"
    );
    let expires: jiff::Timestamp = first.expires_at.unwrap();
    assert_eq!(
        anchor,
        anchor_of(expires),
        "the anchor of the day the token ends"
    );
    assert_eq!(
        requests_to(&fake, "/leases/")
            .iter()
            .filter(|p| p.ends_with(&anchor))
            .count(),
        1,
        "one GET of the existing anchor"
    );

    // The sweep: the anchors of days ended are deleted, and the garbage collector deletes
    // their Secrets; the week-old one is out of its reach, this day's stays.
    {
        let api = fake.lock().unwrap();
        for name in &past {
            assert!(
                !api.leases.contains_key(&format!("deploy/{name}")),
                "{name} stays"
            );
            assert!(
                !api.secrets
                    .contains_key(&format!("deploy/esi-token-of-{name}"))
            );
        }
        assert!(api.leases.contains_key(&format!("deploy/{old}")));
        assert!(
            api.secrets
                .contains_key(&format!("deploy/esi-token-of-{old}"))
        );
        assert!(api.leases.contains_key(&format!("deploy/{anchor}")));
        assert_eq!(api.secrets.len(), 1 + theirs_secrets + 1);
        let deletes: Vec<&Value> = api
            .requests
            .iter()
            .filter(|r| r.0.contains("/leases/") && r.2.is_object())
            .map(|r| &r.2)
            .collect();
        assert_eq!(deletes.len(), 7, "seven past days swept");
        // Sent at once: the request that swept waited for about one DELETE, not seven.
        assert!(
            api.most_deletes_in_flight > 1,
            "the sweep's deletes went one after another"
        );
        assert!(
            deletes
                .iter()
                .all(|d| d["propagationPolicy"] == "Background")
        );
    }
    let token = first.data["token"].clone();
    assert_eq!(
        whoami(&server, &token).await.as_deref(),
        Some("system:serviceaccount:deploy:ci")
    );

    // A second token: the anchor known, no sweep again this day.
    let asked = fake.lock().unwrap().requests.len();
    let second = g.generate(&ctx(&id, None)).await.unwrap();
    let body = secret_of(&second).unwrap();
    assert_eq!(
        body["metadata"]["ownerReferences"][0]["name"],
        anchor.as_str()
    );
    let paths: Vec<String> = fake.lock().unwrap().requests[asked..]
        .iter()
        .map(|r| r.0.clone())
        .collect();
    assert!(paths.iter().all(|p| !p.contains("/leases")), "{paths:?}");

    // Deleting the day's anchor (a later day's sweep, or an operator revoking the day's
    // tokens at once) deletes both Secrets, and the API server refuses both tokens.
    let api_path =
        format!("{server}/apis/coordination.k8s.io/v1/namespaces/deploy/leases/{anchor}");
    let answer = reqwest::Client::new()
        .delete(api_path)
        .bearer_auth(FEDERATION_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(secret_of(&first).is_none() && secret_of(&second).is_none());
    assert_eq!(whoami(&server, &token).await, None);
    assert_eq!(whoami(&server, &second.data["token"]).await, None);
}

#[tokio::test]
async fn without_rights_on_leases_a_revocable_token_is_minted_with_an_unowned_secret() {
    let beta = common::issuer().await;
    let (fake, server) = api_server(
        beta,
        &["deploy/ci"],
        vec![Grant {
            leases: false,
            ..grant_with_secrets("deploy", None)
        }],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir, FEDERATION_TOKEN);
    let provider = json!({"server": server, "auth": {"token": {"file": file}}});
    let spec = json!({"secretStoreRef": {"name": "beta"}, "revocable": true,
                      "serviceAccount": {"namespace": "deploy", "name": "ci"}});
    let id = identity("payments", "api");
    let g = generator(None, provider, spec);
    let cred = g.generate(&ctx(&id, None)).await.unwrap();
    {
        let api = fake.lock().unwrap();
        assert_eq!(api.secrets.len(), 1);
        let s = api.secrets.values().next().unwrap();
        assert!(
            s.body["metadata"].get("ownerReferences").is_none(),
            "{}",
            s.body
        );
        assert!(api.leases.is_empty());
    }
    // Asked once, not again while it knows (nor swept: there is nothing of it to sweep).
    g.generate(&ctx(&id, None)).await.unwrap();
    assert_eq!(requests_to(&fake, "/leases").len(), 1);
    // Still revocable.
    assert!(g.revoke(cred.lease.as_ref().unwrap()).await.unwrap());
    assert_eq!(whoami(&server, &cred.data["token"]).await, None);
}

#[tokio::test]
async fn a_token_outliving_its_anchors_day_is_revoked_not_handed_out() {
    let beta = common::issuer().await;
    let (fake, server) = api_server(
        beta,
        &["deploy/ci"],
        vec![grant_with_secrets("deploy", None)],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir, FEDERATION_TOKEN);
    let provider = json!({"server": server, "auth": {"token": {"file": file}}});
    let spec = json!({"secretStoreRef": {"name": "beta"}, "revocable": true,
                      "serviceAccount": {"namespace": "deploy", "name": "ci"}});
    let id = identity("payments", "api");
    // An API server making tokens two days longer than asked (no maxTTL to catch it).
    fake.lock().unwrap().extend = 2 * 86_400;
    let err = generator(None, provider, spec)
        .generate(&ctx(&id, None))
        .await
        .unwrap_err();
    let BackendError::Unavailable { message, .. } = err else {
        panic!("not unavailable: {err:?}");
    };
    assert!(
        message.contains("living past the day it was asked to end on"),
        "{message}"
    );
    assert!(
        fake.lock().unwrap().secrets.is_empty(),
        "the binding Secret stays"
    );
    let minted: Vec<String> = fake.lock().unwrap().minted.keys().cloned().collect();
    assert_eq!(whoami(&server, &minted[0]).await, None, "the token is void");
}

#[tokio::test]
async fn a_workload_reads_a_secret_kept_in_another_cluster() {
    let alpha = common::issuer().await;
    let beta = common::issuer().await;
    let (fake, server) = api_server(beta, &[], Vec::new()).await;
    fake.lock().unwrap().rbac.insert(
        FEDERATION_USER.into(),
        vec![Grant {
            readable: ["db-default", "keystore", "legacy", "empty"]
                .map(str::to_owned)
                .into(),
            ..grant("shared", None)
        }],
    );
    put_secret(
        &fake,
        "shared",
        "db-default",
        "Opaque",
        &[
            ("username", b"app"),
            ("password", b"s3cr3t-pw"),
            ("host", b"db.internal"),
        ],
    );
    put_secret(
        &fake,
        "shared",
        "keystore",
        "Opaque",
        &[("ks.p12", &[0x30, 0x82, 0xff, 0x00])],
    );
    put_secret(
        &fake,
        "shared",
        "legacy",
        "kubernetes.io/service-account-token",
        &[("token", b"eyJ-never-expires")],
    );
    put_secret(&fake, "shared", "empty", "Opaque", &[]);
    put_secret(&fake, "shared", "unreadable", "Opaque", &[("x", b"y")]);
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir, FEDERATION_TOKEN);
    let state = configured(
        &common::cluster("alpha", &alpha.issuer()),
        &server,
        &file,
        "kind: KubernetesSecret
metadata: {name: db, namespace: default}
spec:
  secretStoreRef: {name: beta}
  namespace: shared
  name: \"db-{{namespace}}\"
  keys: [username, password]
",
    );
    let caller = common::token(&alpha, "default", "app");
    let (status, json, text) = call(&state, &caller, "KubernetesSecret/db").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        json["data"],
        json!({"username": "app", "password": "s3cr3t-pw"})
    );
    assert!(
        json.get("lease").is_none() && json.get("expiresAt").is_none(),
        "{json}"
    );
    assert_eq!(
        fake.lock().unwrap().requests.last().unwrap().0,
        "/api/v1/namespaces/shared/secrets/db-default"
    );

    let provider = json!({"server": server, "auth": {"token": {"file": file}}});
    let read = |extra: Value| {
        let mut spec = json!({"secretStoreRef": {"name": "beta"}, "namespace": "shared"});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let store =
            SecretStoreSpec::from_manifest(json!({"provider": {"kubernetes": provider.clone()}}))
                .unwrap();
        let spec = GeneratorSpec::from_manifest(GeneratorKind::KubernetesSecret, spec).unwrap();
        Generator::build_shared(&spec, Some(&store), &mut Shared::default()).unwrap()
    };
    let id = identity("payments", "api");

    // Every key, as text.
    let cred = read(json!({"name": "db-default"}))
        .generate(&ctx(&id, None))
        .await
        .unwrap();
    assert_eq!(cred.data.len(), 3);
    assert_eq!(cred.data["host"], "db.internal");
    assert!(cred.expires_at.is_none() && cred.lease.is_none());

    // Bytes: refused as text naming the key, never the value; handed over as base64.
    let err = rejected(
        read(json!({"name": "keystore"}))
            .generate(&ctx(&id, None))
            .await
            .unwrap_err(),
    );
    assert!(
        err.contains("\"ks.p12\" is not text") && err.contains("encoding: base64"),
        "{err}"
    );
    let cred = read(json!({"name": "keystore", "encoding": "base64"}))
        .generate(&ctx(&id, None))
        .await
        .unwrap();
    assert_eq!(cred.data["ks.p12"], "MIL/AA==");

    // A missing key; an empty Secret; a legacy ServiceAccount token; RBAC; a missing Secret.
    let err = rejected(
        read(json!({"name": "db-default", "keys": ["port"]}))
            .generate(&ctx(&id, None))
            .await
            .unwrap_err(),
    );
    assert!(
        err.contains("Secret shared/db-default has no key \"port\""),
        "{err}"
    );
    let err = rejected(
        read(json!({"name": "empty"}))
            .generate(&ctx(&id, None))
            .await
            .unwrap_err(),
    );
    assert!(err.contains("holds no data"), "{err}");
    let err = rejected(
        read(json!({"name": "legacy"}))
            .generate(&ctx(&id, None))
            .await
            .unwrap_err(),
    );
    assert!(err.contains("never expires"), "{err}");
    assert!(!err.contains("eyJ-never-expires"), "{err}");
    let err = rejected(
        read(json!({"name": "unreadable"}))
            .generate(&ctx(&id, None))
            .await
            .unwrap_err(),
    );
    assert!(err.contains("`get` on `secrets`"), "{err}");
    fake.lock().unwrap().rbac.get_mut(FEDERATION_USER).unwrap()[0]
        .readable
        .push("ghost".into());
    let err = rejected(
        read(json!({"name": "ghost"}))
            .generate(&ctx(&id, None))
            .await
            .unwrap_err(),
    );
    assert!(err.contains("Secret shared/ghost does not exist"), "{err}");
}

#[tokio::test]
async fn the_stores_ca_bundle_is_the_api_servers_trust_and_the_kubeconfigs() {
    use base64::Engine as _;
    let beta = common::issuer().await;
    let (_fake, server, ca) =
        api_server_tls(beta, &["deploy/ci"], vec![grant("deploy", Some(&["ci"]))]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir, FEDERATION_TOKEN);
    let spec = json!({"secretStoreRef": {"name": "beta"}, "serviceAccount": {"namespace": "deploy", "name": "ci"}});
    let id = identity("payments", "api");
    let store = |ca: Option<&str>| {
        let mut p = json!({"server": server, "auth": {"token": {"file": file}}});
        if let Some(ca) = ca {
            p["caBundle"] = json!(ca);
        }
        p
    };

    // Trusted through the cluster's CA; the kubeconfig carries it.
    let cred = generator(None, store(Some(&ca)), spec.clone())
        .generate(&ctx(&id, None))
        .await
        .unwrap();
    let kubeconfig: Value = serde_json::from_str(&cred.data["kubeconfig"]).unwrap();
    let data = kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    assert_eq!(String::from_utf8(pem).unwrap(), ca.trim());
    assert_eq!(kubeconfig["clusters"][0]["name"], "localhost");

    // Without it, or with another CA, the API server is not trusted: nothing is sent.
    let other = esi_test_support::pki("localhost").unwrap().ca_pem;
    for bundle in [None, Some(other.as_str())] {
        match generator(None, store(bundle), spec.clone())
            .generate(&ctx(&id, None))
            .await
            .unwrap_err()
        {
            BackendError::Unavailable { detail, .. } => {
                assert!(detail.to_lowercase().contains("certificate"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn the_federation_presents_its_client_certificate_and_a_renewed_one_on_the_next_call() {
    let beta = common::issuer().await;
    let client_ca = esi_test_support::ClientCa::new("beta clients").unwrap();
    let (fake, server, ca) =
        api_server_mtls(beta, &["deploy/ci"], Vec::new(), &client_ca.ca_pem()).await;
    let first = client_ca.issue("esi-federation", &["esi"]).unwrap();
    let renewed = client_ca.issue("esi-federation", &["esi"]).unwrap();
    {
        let mut api = fake.lock().unwrap();
        api.x509_users
            .insert(der(&first.0), "esi-federation".to_owned());
        api.x509_users
            .insert(der(&renewed.0), "esi-federation-renewed".to_owned());
        for user in ["esi-federation", "esi-federation-renewed"] {
            api.rbac
                .insert(user.to_owned(), vec![grant("deploy", None)]);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let write = |(cert, key): &(String, String)| {
        std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), key).unwrap();
    };
    write(&first);
    let provider = json!({"server": server, "caBundle": ca, "auth": {"cert": {
        "clientCert": {"file": dir.path().join("tls.crt")},
        "clientKey": {"file": dir.path().join("tls.key")},
    }}});
    let spec = json!({"secretStoreRef": {"name": "beta"}, "serviceAccount": {"namespace": "deploy", "name": "ci"}});
    let id = identity("payments", "api");
    let g = generator(None, provider.clone(), spec.clone());

    let cred = g.generate(&ctx(&id, None)).await.unwrap();
    assert_eq!(
        unverified_claims(&cred.data["token"]).unwrap()["sub"],
        "system:serviceaccount:deploy:ci"
    );
    // The same connection settings present the renewed certificate from the next call on.
    write(&renewed);
    g.generate(&ctx(&id, None)).await.unwrap();
    let users: Vec<String> = fake
        .lock()
        .unwrap()
        .requests
        .iter()
        .map(|r| r.1.clone())
        .collect();
    assert_eq!(users, ["esi-federation", "esi-federation-renewed"]);

    // A certificate of another CA: the handshake fails, nothing is minted.
    write(
        &esi_test_support::ClientCa::new("stranger")
            .unwrap()
            .issue("esi-federation", &[])
            .unwrap(),
    );
    match g.generate(&ctx(&id, None)).await.unwrap_err() {
        BackendError::Unavailable { detail, .. } => {
            assert!(detail.contains("Kubernetes API server"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.lock().unwrap().requests.len(), 2);

    // Over plain HTTP a certificate cannot be presented: refused at load.
    let mut plain = provider;
    plain["server"] = json!("http://127.0.0.1:6443");
    plain.as_object_mut().unwrap().remove("caBundle");
    let err = SecretStoreSpec::from_manifest(json!({"provider": {"kubernetes": plain}}))
        .and_then(|s| s.validate().map(|()| s))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("provider.kubernetes.server") && err.contains("client certificate"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_login_check_names_the_user_the_api_server_takes_the_federation_for() {
    let beta = common::issuer().await;
    let (_fake, server) = api_server(beta, &["deploy/ci"], Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let check = |token: &str| {
        let file = token_file(&dir, token);
        let store = SecretStoreSpec::from_manifest(json!({"provider": {"kubernetes": {
            "server": server, "auth": {"token": {"file": file}},
        }}}))
        .unwrap();
        async move { store.check_login(None).await }
    };
    match check(FEDERATION_TOKEN).await {
        esi_backends::LoginCheck::LoggedIn(who) => {
            assert_eq!(who, format!("user {FEDERATION_USER:?}, groups []"));
        }
        other => panic!("{other:?}"),
    }
    // A token the API server does not know: 401, the federation's own credential.
    match check("not-a-token-it-knows").await {
        esi_backends::LoginCheck::Failed(BackendError::Unavailable { message, detail }) => {
            assert!(message.contains("401"), "{message}");
            assert!(!detail.contains("not-a-token-it-knows"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

/// `kubernetes-target`'s ValidatingAdmissionPolicy, evaluated by the fake with a real CEL
/// interpreter, refuses every Secret and Lease write of the federation's user but the ones the
/// federation makes (which every revocable-token test above sends through it), says which rule
/// failed, stores nothing it refused, and leaves other users alone (its match condition).
#[tokio::test]
async fn the_modules_admission_policy_holds_the_federation_to_its_binding_secrets_and_anchors() {
    const ADMIN_TOKEN: &str = "admin-static-token-0b7e";
    let beta = common::issuer().await;
    let (fake, server) = api_server(beta, &[], vec![grant_with_secrets("deploy", None)]).await;
    {
        let mut api = fake.lock().unwrap();
        api.static_tokens
            .insert(ADMIN_TOKEN.into(), "kubernetes-admin".into());
        api.rbac.insert(
            "kubernetes-admin".into(),
            vec![grant_with_secrets("deploy", None)],
        );
    }
    assert_eq!(admission_policy::policy().len(), 10, "the module's rules");
    let anchor = anchor_of(jiff::Timestamp::now());
    let anchor_uid = put_anchor(&fake, "deploy", &anchor);
    // Not the federation's: an application's Secret and a controller's leader-election Lease.
    put_secret(&fake, "deploy", "app-config", "Opaque", &[("k", b"v")]);
    fake.lock().unwrap().leases.insert(
        "deploy/controller-leader".into(),
        Secret {
            uid: "uid-leader".into(),
            body: json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "metadata": {"name": "controller-leader", "namespace": "deploy", "uid": "uid-leader"}}),
        },
    );
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, token: &str, body: Value| {
        let request = http
            .request(method, format!("{server}{path}"))
            .bearer_auth(token)
            .json(&body);
        async move {
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap())
        }
    };
    let binding = || {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "esi.dev/token-binding", "immutable": true,
               "metadata": {"generateName": "esi-token-",
                            "labels": {"app.kubernetes.io/managed-by": "esi-federation"},
                            "ownerReferences": [{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                                 "name": anchor, "uid": anchor_uid}]}})
    };
    let anchor_lease = |name: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "esi-federation"}},
               "spec": {}})
    };
    let secrets = "/api/v1/namespaces/deploy/secrets";
    let leases = "/apis/coordination.k8s.io/v1/namespaces/deploy/leases";
    let stored = || {
        let api = fake.lock().unwrap();
        (api.secrets.len(), api.leases.len())
    };

    // What the federation writes passes (an unowned binding too: without rights on Leases).
    let (status, body) = send(reqwest::Method::POST, secrets, FEDERATION_TOKEN, binding()).await;
    assert_eq!(status, 201, "{body}");
    let mut unowned = binding();
    unowned["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    let (status, body) = send(reqwest::Method::POST, secrets, FEDERATION_TOKEN, unowned).await;
    assert_eq!(status, 201, "{body}");
    let tomorrow = anchor_of(days_from(jiff::Timestamp::now(), 1));
    let (status, body) = send(
        reqwest::Method::POST,
        leases,
        FEDERATION_TOKEN,
        anchor_lease(&tomorrow),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // Anything else, each refused by the rule it breaks.
    let mutate = |edit: &dyn Fn(&mut Value)| {
        let mut body = binding();
        edit(&mut body);
        body
    };
    let refused_creates = [
        (
            mutate(&|b| b["type"] = json!("Opaque")),
            "only Secrets of type esi.dev/token-binding",
        ),
        (
            mutate(&|b| b["immutable"] = json!(false)),
            "only immutable Secrets",
        ),
        (
            mutate(&|b| {
                b.as_object_mut().unwrap().remove("immutable");
            }),
            "only immutable Secrets",
        ),
        (
            mutate(&|b| b["data"] = json!({"token": "c2VjcmV0"})),
            "without data or stringData",
        ),
        (
            mutate(&|b| b["stringData"] = json!({"token": "secret"})),
            "without data or stringData",
        ),
        (
            mutate(&|b| b["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "helm"})),
            "labelled app.kubernetes.io/managed-by=esi-federation",
        ),
        (
            mutate(&|b| {
                b["metadata"].as_object_mut().unwrap().remove("labels");
            }),
            "labelled app.kubernetes.io/managed-by=esi-federation",
        ),
        (
            mutate(&|b| b["metadata"]["generateName"] = json!("app-")),
            "only Secrets named esi-token-*",
        ),
        (
            mutate(&|b| {
                b["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment",
                                                           "name": "api", "uid": "uid-deployment"}]);
            }),
            "whose owners (ownerReferences) are its anchors",
        ),
        (
            mutate(&|b| {
                b["metadata"]["ownerReferences"][0]["name"] = json!("esi-token-bindings-2026120")
            }),
            "whose owners (ownerReferences) are its anchors",
        ),
    ];
    let before = stored();
    for (body, rule) in refused_creates {
        let (status, answer) = send(
            reqwest::Method::POST,
            secrets,
            FEDERATION_TOKEN,
            body.clone(),
        )
        .await;
        let message = answer["message"].as_str().unwrap_or_default();
        assert_eq!(
            (status, answer["reason"].as_str()),
            (422, Some("Invalid")),
            "{body}: {answer}"
        );
        assert!(
            message.contains("ValidatingAdmissionPolicy") && message.contains(rule),
            "{body}: {message}"
        );
    }
    let mut unlabelled = anchor_lease(&tomorrow);
    unlabelled["metadata"]["labels"] = json!({});
    for (body, rule) in [
        (
            anchor_lease("controller-leader-2"),
            "only Leases named esi-token-bindings-YYYYMMDD",
        ),
        (
            anchor_lease("esi-token-bindings-2026-12-02"),
            "only Leases named esi-token-bindings-YYYYMMDD",
        ),
        (
            unlabelled,
            "only Leases labelled app.kubernetes.io/managed-by=esi-federation",
        ),
    ] {
        let (status, answer) = send(
            reqwest::Method::POST,
            leases,
            FEDERATION_TOKEN,
            body.clone(),
        )
        .await;
        let message = answer["message"].as_str().unwrap_or_default();
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(message.contains(rule), "{body}: {message}");
    }
    for (path, rule) in [
        (
            format!("{secrets}/app-config"),
            "delete only Secrets of type esi.dev/token-binding",
        ),
        (
            format!("{leases}/controller-leader"),
            "delete only Leases named esi-token-bindings-YYYYMMDD",
        ),
    ] {
        let (status, answer) =
            send(reqwest::Method::DELETE, &path, FEDERATION_TOKEN, json!({})).await;
        let message = answer["message"].as_str().unwrap_or_default();
        assert_eq!(status, 422, "{path}: {answer}");
        assert!(message.contains(rule), "{path}: {message}");
    }
    assert_eq!(stored(), before, "a refused write changes nothing");

    // The federation deletes its own: an anchor, and with it the Secrets it owns.
    let (status, body) = send(
        reqwest::Method::DELETE,
        &format!("{leases}/{anchor}"),
        FEDERATION_TOKEN,
        json!({"propagationPolicy": "Background"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The policy is the federation's alone: an administrator with the same RBAC writes as it
    // likes.
    let mut config = binding();
    config["type"] = json!("Opaque");
    config["data"] = json!({"k": "dg=="});
    config["metadata"] = json!({"generateName": "app-"});
    let (status, body) = send(reqwest::Method::POST, secrets, ADMIN_TOKEN, config).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(
        reqwest::Method::DELETE,
        &format!("{leases}/controller-leader"),
        ADMIN_TOKEN,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}
