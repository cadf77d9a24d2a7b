//! Hostile input on the federation's request path, through the router (`oneshot`, no socket;
//! the issuer's keys served over real HTTP): mutated and forged ServiceAccount tokens, tokens
//! validly signed around hostile claims, arbitrary requests to every route, and hostile leases
//! on `POST /v1/revoke`.
//!
//! Why: the release build aborts on a panic, so one request that panics ends every tenant's
//! requests; and the API promises a specific error for bad input in one shape, never a 5xx for
//! the caller's own mistake, and never the caller's token or a lease's content in an answer.
//! So each property states the exact answer for its inputs (a small model of the checks, made
//! in the order the code makes them) and checks the error shape of every refusal. Each
//! property also draws the untouched input among its cases and counts what it reached, so a
//! harness that stopped reaching the checks fails.
//!
//! Cases run with the fixed seed of `esi_test_support::hostile` (`PROPTEST_CASES` and
//! `ESI_PROPTEST_SEED` search further locally). The counts, given on each test, keep the file
//! to about 13 s in a debug build on two cores.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, Request, Uri};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use esi_api::{AuthorizeRequest, ErrorBody, ErrorCode, ErrorDetail, RevokeRequest};
use esi_backends::LeaseHandle;
use esi_federation::issuer::LocalIssuer;
use esi_federation::lease::{LeaseClaimsRef, LeaseKeys, LeaseSubjectRef};
use esi_federation::state::AppState;
use esi_federation::token::MAX_TOKEN_BYTES;
use esi_test_support::hostile::{self, Edit};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};

/// The issuance every token property asks for: allowed to `default/app`, minted locally.
const PASSWORD: &str = "/v1/generators/default/Password/db";
/// The generators of [`common::GENERATORS`].
const GENERATORS: [&str; 3] = [
    "default/Password/db",
    "default/Fake/creds",
    "default/UUID/id",
];
/// `Settings::default().max_body_bytes`.
const MAX_BODY: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// The federation under test and the checks every answer gets.

/// One federation with one cluster (`alpha`) whose issuer serves its keys on loopback, and a
/// valid token of `default/app`.
struct World {
    rt: tokio::runtime::Runtime,
    issuer: Arc<LocalIssuer>,
    state: AppState,
    token: String,
}

/// An answer, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    json: Value,
    text: String,
}

impl World {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (issuer, state) = rt.block_on(async {
            let issuer = common::issuer().await;
            let yaml = common::cluster("alpha", &issuer.issuer()) + common::GENERATORS;
            // A long cooldown: a hostile `kid` costs the issuer one JWKS fetch per run, not one
            // per case.
            let state = common::state(&yaml, common::settings(Duration::from_secs(60)));
            (issuer, state)
        });
        let token = common::token(&issuer, "default", "app");
        let world = World {
            rt,
            issuer,
            state,
            token,
        };
        let a = world.send(bearer_request(PASSWORD, world.token.as_bytes()).unwrap());
        assert_eq!(a.status, 200, "the untouched token is served: {}", a.text);
        world
    }

    fn send(&self, req: Request<Body>) -> Answer {
        let (status, headers, json, text) = self.rt.block_on(common::send(&self.state, req));
        Answer {
            status,
            headers,
            json,
            text,
        }
    }

    /// Sends `req` to the API as the server serves it, without the router in front.
    fn send_api(&self, req: Request<Body>) -> Answer {
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;
        self.rt.block_on(async {
            let resp = esi_federation::api(self.state.clone())
                .oneshot(req)
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            Answer {
                status,
                headers,
                json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                text,
            }
        })
    }

    /// A lease of `default/Fake/creds`, issued to `default/app`.
    fn lease(&self) -> String {
        let a = self.send(common::post(
            "/v1/generators/default/Fake/creds",
            Some(&self.token),
            None,
        ));
        assert_eq!(a.status, 200, "{}", a.text);
        a.json["lease"].as_str().unwrap().to_owned()
    }
}

/// `POST path` with `Authorization: Bearer <token>`, or `None` when HTTP cannot carry those
/// bytes in a header (a control character): no server would see that request.
fn bearer_request(path: &str, token: &[u8]) -> Option<Request<Body>> {
    let value = HeaderValue::from_bytes(&[b"Bearer ".as_slice(), token].concat()).ok()?;
    Some(
        Request::post(path)
            .header(AUTHORIZATION, value)
            .body(Body::empty())
            .unwrap(),
    )
}

/// The refusal `a` carries, after checking the one error shape: exactly
/// `{"error": {"code", "message", "requestId"[, "retryAfterSeconds"]}}` as JSON, a code of the
/// fixed set answered with its own status (never a 5xx here: every input is the caller's),
/// the request id of the `x-request-id` header, and `WWW-Authenticate: Bearer` on a 401.
fn refusal(a: &Answer) -> Result<ErrorDetail, TestCaseError> {
    let body: ErrorBody = serde_json::from_str(&a.text).map_err(|e| {
        TestCaseError::fail(format!(
            "{} is not the error shape ({e}): {}",
            a.status, a.text
        ))
    })?;
    let e = body.error;
    prop_assert!(ErrorCode::ALL.contains(&e.code));
    prop_assert_eq!(a.status, e.code.http_status(), "{}", a.text);
    prop_assert!(a.status < 500, "a 5xx for the caller's input: {}", a.text);
    prop_assert!(!e.message.is_empty());
    prop_assert_eq!(
        a.headers
            .get(esi_api::REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some(e.request_id.as_str())
    );
    prop_assert_eq!(
        a.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    if a.status == 401 {
        prop_assert_eq!(a.headers.get("www-authenticate").unwrap(), "Bearer");
    }
    Ok(e)
}

/// Fails when the answer holds one of `secrets`, as sent or JSON-escaped (those of at least
/// 16 bytes: shorter ones, a `.` or an `e`, turn up anywhere).
fn holds_none(a: &Answer, secrets: &[&str]) -> Result<(), TestCaseError> {
    let decoded = strings(&a.json).join("\n");
    for s in secrets.iter().filter(|s| s.len() >= 16) {
        prop_assert!(
            !a.text.contains(s) && !decoded.contains(s),
            "the answer holds {s:?}: {}",
            a.text
        );
    }
    Ok(())
}

/// The token's three base64url texts and the token itself.
fn token_parts(token: &str) -> Vec<&str> {
    let mut parts: Vec<&str> = token.split('.').collect();
    parts.push(token);
    parts
}

// ---------------------------------------------------------------------------------------------
// Hostile JSON.

/// Strings that mean something to the checks, and arbitrary and very long ones.
fn text() -> BoxedStrategy<String> {
    const MEANINGFUL: &[&str] = &[
        "",
        " ",
        "RS256",
        "rs256",
        "RS256 ",
        "ES256",
        "RS384",
        "HS256",
        "none",
        "JWT",
        "esi",
        "default",
        "app",
        "limited",
        "system:serviceaccount:default:app",
        "system:serviceaccount:default:app:x",
        "default/Password/db",
        "../..",
        "%2F",
        "\0",
        "\u{202e}evil",
        "\u{feff}",
        "\\",
        "\"",
        "\u{10ffff}",
    ];
    prop_oneof![
        3 => prop::sample::select(MEANINGFUL).prop_map(str::to_owned),
        3 => ".{0,24}",
        1 => (1usize..4000, prop::sample::select(&['a', 'é', '😀', '\0', '"'][..]))
            .prop_map(|(n, c)| std::iter::repeat_n(c, n).collect()),
    ]
    .boxed()
}

/// Numbers of every JSON shape: negative, above `i64::MAX`, fractional, huge. NaN and the
/// infinities, which JSON cannot carry, become `null`.
fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(
            &[
                0.0,
                -0.0,
                0.5,
                -1.0,
                1e300,
                -1e300,
                f64::MAX,
                f64::MIN_POSITIVE,
                9_007_199_254_740_993.0,
            ][..]
        )
        .prop_map(Value::from),
    ]
    .boxed()
}

/// Any JSON value, a few levels deep.
fn json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A time claim: around `now` on both sides of every leeway (150 s after `exp`, 150 s before
/// `nbf`, 60 s for `iat`), integral or fractional; or any number; or any JSON. The model reads
/// the clock just before each request, so only a value within milliseconds of an edge could
/// be misjudged, and none is.
fn time(now: i64) -> BoxedStrategy<Value> {
    prop_oneof![
        3 => (
            prop::sample::select(&[-100_000i64, -3600, -200, -100, 0, 5, 100, 200, 3600, 100_000][..]),
            any::<bool>(),
        )
            .prop_map(move |(offset, fraction)| {
                if fraction {
                    Value::from((now + offset) as f64 + 0.5)
                } else {
                    Value::from(now + offset)
                }
            }),
        2 => number(),
        1 => json(),
    ]
    .boxed()
}

/// Sets (or, with `None`, removes) the member at `path` of a JSON document; nothing when a
/// parent on the way is not an object.
#[derive(Debug, Clone)]
struct Override {
    path: Vec<&'static str>,
    value: Option<Value>,
}

impl Override {
    fn apply(&self, doc: &mut Value) {
        let (last, parents) = self.path.split_last().unwrap();
        let mut at = doc;
        for p in parents {
            match at.get_mut(*p) {
                Some(v) => at = v,
                None => return,
            }
        }
        let Some(map) = at.as_object_mut() else {
            return;
        };
        match &self.value {
            Some(v) => {
                map.insert((*last).to_owned(), v.clone());
            }
            None => {
                map.remove(*last);
            }
        }
    }
}

fn any_value() -> BoxedStrategy<Value> {
    prop_oneof![json(), text().prop_map(Value::from)].boxed()
}

fn header_override() -> BoxedStrategy<Override> {
    let paths: Vec<Vec<&'static str>> = ["alg", "kid", "typ", "crit", "jku", "x5u", "b64", "zip"]
        .into_iter()
        .map(|p| vec![p])
        .collect();
    (
        prop::sample::select(paths),
        prop::option::weighted(0.85, any_value()),
    )
        .prop_map(|(path, value)| Override { path, value })
        .boxed()
}

fn claim_override(now: i64) -> BoxedStrategy<Override> {
    let times: Vec<Vec<&'static str>> = vec![vec!["exp"], vec!["nbf"], vec!["iat"]];
    let others: Vec<Vec<&'static str>> = vec![
        vec!["iss"],
        vec!["sub"],
        vec!["aud"],
        vec!["jti"],
        vec!["kubernetes.io"],
        vec!["kubernetes.io", "namespace"],
        vec!["kubernetes.io", "serviceaccount"],
        vec!["kubernetes.io", "serviceaccount", "name"],
        vec!["kubernetes.io", "serviceaccount", "uid"],
        vec!["kubernetes.io", "pod"],
        vec!["kubernetes.io", "pod", "name"],
        vec!["kubernetes.io", "pod", "uid"],
        vec!["kubernetes.io", "node"],
        vec!["extra"],
    ];
    let audiences = prop::sample::select(vec![
        json!("esi"),
        json!(["other", "esi"]),
        json!([]),
        json!(["esi", 1]),
        json!(["ESI"]),
        json!({"esi": true}),
    ]);
    prop_oneof![
        3 => (prop::sample::select(times), prop::option::weighted(0.85, time(now)))
            .prop_map(|(path, value)| Override { path, value }),
        4 => (prop::sample::select(others), prop::option::weighted(0.85, any_value()))
            .prop_map(|(path, value)| Override { path, value }),
        1 => audiences.prop_map(|v| Override { path: vec!["aud"], value: Some(v) }),
    ]
    .boxed()
}

/// A header: the issuer's own with up to three members set or removed, or any JSON.
fn hostile_header(base: Value) -> BoxedStrategy<Value> {
    prop_oneof![
        8 => prop::collection::vec(header_override(), 0..3).prop_map(move |overrides| {
            let mut h = base.clone();
            for o in &overrides {
                o.apply(&mut h);
            }
            h
        }),
        1 => json(),
    ]
    .boxed()
}

/// Claims: the issuer's own, maybe for another identity (its `sub` kept consistent, so the
/// request reaches the authorization), with up to three members set or removed; or any JSON.
fn hostile_claims(base: Value, now: i64) -> BoxedStrategy<Value> {
    let identity = prop_oneof![
        4 => Just(None),
        1 => Just(Some(("limited".to_owned(), "app".to_owned()))),
        2 => (text(), text()).prop_map(Some),
    ];
    prop_oneof![
        12 => (identity, prop::collection::vec(claim_override(now), 0..4)).prop_map(
            move |(identity, overrides)| {
                let mut c = base.clone();
                if let Some((ns, sa)) = identity {
                    c["sub"] = format!("system:serviceaccount:{ns}:{sa}").into();
                    c["kubernetes.io"]["namespace"] = ns.into();
                    c["kubernetes.io"]["serviceaccount"]["name"] = sa.into();
                }
                for o in &overrides {
                    o.apply(&mut c);
                }
                c
            }
        ),
        1 => json(),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// A model of the verifier, in the order of `token::verify`: header, algorithm, claims (serde's
// reading of them), issuer, signature, `exp`, `nbf`, `iat`, audience, `kubernetes.io`, `sub`;
// then the authorization of `default/Password/db`.

/// The members of a struct in declared order, by name (others ignored). The verifier reads
/// every struct of a token from an object only (serde's derive alone would read one from an
/// array by position too); `None` when `v` is not an object.
fn fields<'v>(v: &'v Value, names: &[&str]) -> Option<Vec<Option<&'v Value>>> {
    let m = v.as_object()?;
    Some(names.iter().map(|n| m.get(*n)).collect())
}

/// An `Option<T>` member: absent or `null` is `Some(None)`, `None` is a type error.
fn optional<'v, T>(
    v: Option<&'v Value>,
    read: impl Fn(&'v Value) -> Option<T>,
) -> Option<Option<T>> {
    match v {
        None | Some(Value::Null) => Some(None),
        Some(v) => read(v).map(Some),
    }
}

/// `(alg, kid, crit present)` of a header, `None` when it does not read.
fn read_header(h: &Value) -> Option<(&str, Option<&str>, bool)> {
    let f = fields(h, &["alg", "kid", "crit"])?;
    let alg = f[0]?.as_str()?;
    let kid = optional(f[1], Value::as_str)?;
    // Any `crit`, `null` included, is refused.
    let crit = f[2].is_some();
    Some((alg, kid, crit))
}

/// What the verifier reads from claims.
struct ModelClaims<'v> {
    iss: &'v str,
    sub: Option<&'v str>,
    aud: Option<Vec<&'v str>>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
    /// Namespace and ServiceAccount name.
    kube: Option<(&'v str, &'v str)>,
}

fn read_claims(c: &Value) -> Option<ModelClaims<'_>> {
    let f = fields(
        c,
        &["iss", "sub", "aud", "exp", "nbf", "iat", "kubernetes.io"],
    )?;
    let aud = optional(f[2], |v| match v {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(all) => all.iter().map(Value::as_str).collect(),
        _ => None,
    })?;
    Some(ModelClaims {
        iss: f[0]?.as_str()?,
        sub: optional(f[1], Value::as_str)?,
        aud,
        exp: optional(f[3], Value::as_f64)?,
        nbf: optional(f[4], Value::as_f64)?,
        iat: optional(f[5], Value::as_f64)?,
        kube: optional(f[6], read_kube)?,
    })
}

fn read_kube(v: &Value) -> Option<(&str, &str)> {
    let f = fields(v, &["namespace", "serviceaccount", "pod"])?;
    let namespace = f[0]?.as_str()?;
    let service_account = read_object_ref(f[1]?)?;
    optional(f[2], read_object_ref)?;
    Some((namespace, service_account))
}

/// `{name, uid}`: the name; `uid` may be left out but not `null` (a `String` with a default).
fn read_object_ref(v: &Value) -> Option<&str> {
    let f = fields(v, &["name", "uid"])?;
    let name = f[0]?.as_str()?;
    match f[1] {
        None | Some(Value::String(_)) => Some(name),
        Some(_) => None,
    }
}

/// The answer to `POST /v1/generators/default/Password/db` with a token whose header and
/// claims are these, signed by the cluster's RS256 key `kid`, at `now`: served, or the code.
fn predict(h: &Value, c: &Value, issuer: &str, kid: &str, now: f64) -> Result<(), ErrorCode> {
    use ErrorCode::*;
    let (alg, token_kid, crit) = read_header(h).ok_or(InvalidToken)?;
    const ALGORITHMS: [&str; 5] = ["RS256", "RS384", "RS512", "ES256", "ES384"];
    if crit || !ALGORITHMS.contains(&alg) {
        return Err(InvalidToken);
    }
    let claims = read_claims(c).ok_or(InvalidToken)?;
    if claims.iss != issuer {
        return Err(UnknownIssuer);
    }
    // The cluster accepts RS256 and ES256; its one key is RS256. A `kid` picks the key.
    if alg != "RS256" || token_kid.is_some_and(|k| k != kid) {
        return Err(InvalidToken);
    }
    let exp = claims.exp.ok_or(InvalidToken)?;
    if now > exp + 150.0 {
        return Err(TokenExpired);
    }
    if claims.nbf.is_some_and(|nbf| now + 150.0 < nbf)
        || claims.iat.is_some_and(|iat| now + 60.0 < iat)
    {
        return Err(TokenNotYetValid);
    }
    if !claims.aud.is_some_and(|aud| aud.contains(&"esi")) {
        return Err(AudienceMismatch);
    }
    let (namespace, service_account) = claims.kube.ok_or(InvalidToken)?;
    if claims.sub
        != Some(&format!(
            "system:serviceaccount:{namespace}:{service_account}"
        ))
    {
        return Err(InvalidToken);
    }
    if (namespace, service_account) != ("default", "app") {
        return Err(PolicyDenied);
    }
    Ok(())
}

fn now() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
}

// ---------------------------------------------------------------------------------------------
// 1. Tokens.

/// A byte-level mutation of the valid token, or the token itself between spaces and tabs.
#[derive(Debug, Clone)]
enum TokenEdit {
    Bytes(Vec<Edit>),
    Padded(String, String),
}

/// The verifier's base64url is strict (`base64_simd`, not forgiving: no padding, unused
/// trailing bits must be zero), so a token decodes to the original's bytes exactly when it
/// is the original's text: the signature covers the header and claims as sent, and any other
/// signature text is another signature or none. Hence: served exactly when the token, with
/// the whitespace around it dropped, is the original. 800 cases.
#[test]
fn a_mutated_token_is_served_only_when_it_is_the_original() {
    let w = World::new();
    let original = w.token.clone();
    let strategy = prop_oneof![
        6 => hostile::edits(4).prop_map(TokenEdit::Bytes),
        1 => ("[ \t]{0,3}", "[ \t]{0,3}").prop_map(|(a, b)| TokenEdit::Padded(a, b)),
    ];
    let (carried, served) = (Cell::new(0u32), Cell::new(0u32));
    hostile::check("mutated tokens", 800, &strategy, |edit| {
        let sent = match &edit {
            TokenEdit::Bytes(edits) => hostile::apply(original.as_bytes(), edits),
            TokenEdit::Padded(before, after) => format!("{before}{original}{after}").into_bytes(),
        };
        let Some(req) = bearer_request(PASSWORD, &sent) else {
            return Ok(());
        };
        carried.set(carried.get() + 1);
        let a = w.send(req);
        let text = std::str::from_utf8(&sent).ok();
        let trimmed = text.map(|t| t.trim_matches([' ', '\t']));
        if trimmed == Some(original.as_str()) {
            prop_assert_eq!(a.status, 200, "{}", a.text);
            served.set(served.get() + 1);
            return Ok(());
        }
        let e = refusal(&a)?;
        match e.code {
            ErrorCode::MissingToken => prop_assert_eq!(trimmed, Some("")),
            ErrorCode::InvalidToken | ErrorCode::UnknownIssuer => {}
            other => prop_assert!(false, "{other:?} for a mutated token: {}", a.text),
        }
        holds_none(&a, &token_parts(&original))?;
        if let Some(text) = text {
            holds_none(&a, &token_parts(text))?;
        }
        Ok(())
    });
    // Most mutations can be carried by HTTP; the untouched token is among the cases.
    assert!(carried.get() > 600, "{} carried", carried.get());
    assert!(served.get() > 30, "{} served", served.get());
}

/// One part of a forged token.
#[derive(Debug, Clone)]
enum Part {
    /// The original's text.
    Original,
    /// base64url of this JSON.
    Json(Value),
    /// base64url of this text (JSON in shapes a `Value` cannot hold: deep, duplicated keys).
    Text(String),
    /// base64url of these bytes (mostly not UTF-8).
    Bytes(Vec<u8>),
    /// This text as it is, not base64url.
    Raw(String),
    /// The original signature with some of its last character's unused bits set: the same
    /// bytes for a forgiving decoder.
    UnusedBits(u8),
}

/// How the parts are joined.
#[derive(Debug, Clone)]
enum Shape {
    Jws,
    /// More segments after the signature.
    More(Vec<String>),
    /// `header.claims`.
    NoSignature,
}

#[derive(Debug, Clone)]
struct Forged {
    header: Part,
    claims: Part,
    signature: Part,
    shape: Shape,
}

/// JSON texts a `Value` cannot produce: nested 5000 deep (an ignored member, the whole
/// document, a typed member), duplicated members, trailing text, a BOM, a lone surrogate.
fn raw_json(issuer: String) -> BoxedStrategy<String> {
    let deep = |n: usize| ("[".repeat(n), "]".repeat(n));
    prop_oneof![
        (1usize..5000).prop_map(move |n| {
            let (open, close) = deep(n);
            format!(r#"{{"alg":"RS256","iss":"{issuer}","x":{open}{close}}}"#)
        }),
        (1usize..5000).prop_map(move |n| {
            let (open, close) = deep(n);
            format!("{open}{close}")
        }),
        (1usize..5000).prop_map(|n| r#"{"a":"#.repeat(n) + "1" + &"}".repeat(n)),
        (1usize..5000).prop_map(move |n| {
            let (open, close) = deep(n);
            format!(
                r#"{{"alg":"RS256","aud":{open}{close},"kubernetes.io":{{"pod":{open}{close}}}}}"#
            )
        }),
        prop::sample::select(
            &[
                r#"{"alg":"RS256","alg":"none"}"#,
                r#"{"iss":"a","iss":"b"}"#,
                r#"{"alg":"RS256"} x"#,
                "\u{feff}{\"alg\":\"RS256\"}",
                r#"{"alg":"RS\ud800"}"#,
                r#"{"alg":"RS256","kid":"\u0000"}"#,
                r#"{"alg":1e999}"#,
                r#"{"exp":1e999}"#,
                "",
                "null",
            ][..]
        )
        .prop_map(str::to_owned),
        ".{0,64}",
    ]
    .boxed()
}

fn forged_part(
    base: Value,
    raw: BoxedStrategy<String>,
    json: BoxedStrategy<Value>,
) -> BoxedStrategy<Part> {
    prop_oneof![
        3 => Just(Part::Original),
        1 => Just(Part::Json(base)),
        4 => json.prop_map(Part::Json),
        2 => raw.prop_map(Part::Text),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Part::Bytes),
        1 => "[A-Za-z0-9+/=_. -]{0,64}".prop_map(Part::Raw),
    ]
    .boxed()
}

/// The original signature with the unused bits of its last character ORed with `bits`.
fn with_unused_bits(signature: &str, bits: u8) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let unused = match signature.len() % 4 {
        2 => 0b1111,
        3 => 0b11,
        _ => panic!("a signature of whole 3-byte groups has no unused bits"),
    };
    let last = *signature.as_bytes().last().unwrap();
    let value = ALPHABET.iter().position(|&c| c == last).unwrap() as u8;
    let changed = value | (bits & unused).max(1);
    let mut out = signature[..signature.len() - 1].to_owned();
    out.push(ALPHABET[changed as usize] as char);
    out
}

/// Tokens forged around the original's parts: a header or claims replaced by other JSON (the
/// original's own among them, re-encoded), by JSON no `Value` makes, by bytes that are not
/// UTF-8, by text that is not base64url; a signature of other bytes or with its unused bits
/// set; too few or too many segments. None is signed for what it says, so each is refused
/// (401, `invalid_token`, or `unknown_issuer` for a foreign `iss`) unless it is the original
/// text, and no answer holds the token or a part of it. 600 cases.
#[test]
fn a_forged_token_is_refused_unless_it_is_the_original() {
    let w = World::new();
    let original = w.token.clone();
    let parts: Vec<&str> = original.split('.').collect();
    let decode = |i: usize| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[i]).unwrap()).unwrap()
    };
    let (header, claims) = (decode(0), decode(1));
    let now_s = now() as i64;
    let issuer = w.issuer.issuer();
    let strategy = (
        forged_part(
            header.clone(),
            raw_json(issuer.clone()),
            hostile_header(header),
        ),
        forged_part(
            claims.clone(),
            raw_json(issuer),
            hostile_claims(claims, now_s),
        ),
        prop_oneof![
            6 => Just(Part::Original),
            2 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Part::Bytes),
            1 => (1u8..16).prop_map(Part::UnusedBits),
            1 => "[A-Za-z0-9+/=_. -]{0,64}".prop_map(Part::Raw),
        ],
        prop_oneof![
            8 => Just(Shape::Jws),
            1 => prop::collection::vec("[A-Za-z0-9_-]{0,16}", 1..3).prop_map(Shape::More),
            1 => Just(Shape::NoSignature),
        ],
    )
        .prop_map(|(header, claims, signature, shape)| Forged {
            header,
            claims,
            signature,
            shape,
        });
    let (served, refused) = (Cell::new(0u32), Cell::new(0u32));
    hostile::check("forged tokens", 600, &strategy, |f| {
        let text = |part: &Part, i: usize| match part {
            Part::Original => parts[i].to_owned(),
            Part::Json(v) => URL_SAFE_NO_PAD.encode(v.to_string()),
            Part::Text(t) => URL_SAFE_NO_PAD.encode(t),
            Part::Bytes(b) => URL_SAFE_NO_PAD.encode(b),
            Part::Raw(r) => r.clone(),
            Part::UnusedBits(bits) => with_unused_bits(parts[i], *bits),
        };
        let mut token = format!("{}.{}", text(&f.header, 0), text(&f.claims, 1));
        match &f.shape {
            Shape::Jws => token = format!("{token}.{}", text(&f.signature, 2)),
            Shape::More(more) => {
                token = format!("{token}.{}.{}", text(&f.signature, 2), more.join("."))
            }
            Shape::NoSignature => {}
        }
        let Some(req) = bearer_request(PASSWORD, token.as_bytes()) else {
            return Ok(());
        };
        let a = w.send(req);
        if token.trim_matches([' ', '\t']) == original {
            prop_assert_eq!(a.status, 200, "{}", a.text);
            served.set(served.get() + 1);
            return Ok(());
        }
        let e = refusal(&a)?;
        refused.set(refused.get() + 1);
        match e.code {
            ErrorCode::InvalidToken => {}
            ErrorCode::UnknownIssuer => prop_assert!(
                !matches!(f.claims, Part::Original),
                "the original claims' issuer is registered: {}",
                a.text
            ),
            other => prop_assert!(false, "{other:?} for a forged token: {}", a.text),
        }
        if !matches!(f.shape, Shape::Jws)
            && token.len() <= MAX_TOKEN_BYTES
            && token.matches('.').count() != 2
        {
            prop_assert_eq!(e.code, ErrorCode::InvalidToken);
            prop_assert!(e.message.contains("not a compact JWS"), "{}", e.message);
        }
        holds_none(&a, &token_parts(&original))?;
        holds_none(&a, &token_parts(&token))?;
        Ok(())
    });
    assert!(served.get() > 5, "{} served", served.get());
    assert!(refused.get() > 400, "{} refused", refused.get());
}

/// Decided: a signature whose last character sets unused bits is not the signature, even
/// though a forgiving base64 decoder reads the same bytes from it (the verifier's is strict).
#[test]
fn a_signature_with_unused_bits_set_is_refused() {
    let w = World::new();
    let (input, signature) = w.token.rsplit_once('.').unwrap();
    for bits in [1u8, 0b1111] {
        let forged = format!("{input}.{}", with_unused_bits(signature, bits));
        assert_ne!(forged, w.token);
        // Same bytes for a decoder that ignores the unused bits.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::GeneralPurposeConfig::new()
                .with_encode_padding(false)
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
        );
        assert_eq!(
            lenient.decode(forged.rsplit_once('.').unwrap().1).unwrap(),
            URL_SAFE_NO_PAD.decode(signature).unwrap()
        );
        let a = w.send(bearer_request(PASSWORD, forged.as_bytes()).unwrap());
        assert_eq!(a.status, 401, "{}", a.text);
        assert_eq!(a.json["error"]["code"], "invalid_token");
        assert_eq!(
            a.json["error"]["message"],
            "token signature is not base64url"
        );
    }
}

/// Tokens validly signed by the cluster's key around hostile headers and claims (what a
/// compromised or buggy issuer could send, and the only way to reach the checks after the
/// signature): `alg`, `kid`, `crit` and `typ` of any value; `exp`/`nbf`/`iat` huge, negative,
/// fractional, of the wrong type, on either side of each leeway; audiences of every shape;
/// `kubernetes.io` members of the wrong types; identities of long and odd strings. The answer
/// is the one [`predict`] gives, code for code, and every code of the verifier and the
/// authorization is reached. 700 cases.
#[test]
fn a_signed_token_is_answered_as_its_claims_say() {
    let w = World::new();
    let key = w.issuer.signing_key();
    let issuer = w.issuer.issuer();
    let now_s = now() as i64;
    let header = json!({"alg": "RS256", "kid": key.kid, "typ": "JWT"});
    let claims = esi_federation::issuer::TokenSpec::new("default", "app").claims(&issuer);
    let strategy = (hostile_header(header), hostile_claims(claims, now_s));
    let seen = RefCell::new(BTreeSet::new());
    hostile::check("signed tokens", 700, &strategy, |(mut header, claims)| {
        // As the signer does: an object header without `alg` gets the key's.
        if let Some(h) = header.as_object_mut() {
            h.entry("alg").or_insert_with(|| json!("RS256"));
        }
        let token = key.sign(header.clone(), &claims, false);
        let expected = if token.len() > MAX_TOKEN_BYTES {
            Err(ErrorCode::InvalidToken)
        } else {
            predict(&header, &claims, &issuer, &key.kid, now())
        };
        let a = w.send(bearer_request(PASSWORD, token.as_bytes()).unwrap());
        match expected {
            Ok(()) => {
                prop_assert_eq!(a.status, 200, "{}", a.text);
                prop_assert_eq!(a.json["data"]["password"].as_str().map(str::len), Some(20));
                seen.borrow_mut().insert("ok");
            }
            Err(code) => {
                let e = refusal(&a)?;
                prop_assert_eq!(e.code, code, "{}", e.message);
                seen.borrow_mut().insert(code.as_str());
            }
        }
        holds_none(&a, &token_parts(&token))?;
        Ok(())
    });
    let seen = seen.into_inner();
    for reached in [
        "ok",
        "invalid_token",
        "unknown_issuer",
        "token_expired",
        "token_not_yet_valid",
        "audience_mismatch",
        "policy_denied",
    ] {
        assert!(
            seen.contains(reached),
            "no case reached {reached}: {seen:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Arbitrary requests.

/// An `Authorization` header.
#[derive(Debug, Clone)]
enum Auth {
    /// `scheme` `gap` token `tail`.
    Scheme {
        scheme: &'static str,
        gap: &'static str,
        token: Tok,
        tail: &'static str,
    },
    /// Any bytes.
    Raw(Vec<u8>),
}

/// The token of an [`Auth`].
#[derive(Debug, Clone)]
enum Tok {
    Valid,
    Mutated(Vec<Edit>),
    Text(String),
    /// `n` bytes of token characters: beyond [`MAX_TOKEN_BYTES`] for most `n`.
    Huge(usize),
}

impl Auth {
    fn bytes(&self, valid: &str) -> Vec<u8> {
        match self {
            Auth::Raw(b) => b.clone(),
            Auth::Scheme {
                scheme,
                gap,
                token,
                tail,
            } => {
                let token = match token {
                    Tok::Valid => valid.as_bytes().to_vec(),
                    Tok::Mutated(edits) => hostile::apply(valid.as_bytes(), edits),
                    Tok::Text(t) => t.as_bytes().to_vec(),
                    Tok::Huge(n) => "eyJ".repeat(n / 3 + 1).into_bytes(),
                };
                [scheme.as_bytes(), gap.as_bytes(), &token, tail.as_bytes()].concat()
            }
        }
    }
}

fn auth() -> BoxedStrategy<Auth> {
    let scheme = prop::sample::select(
        &[
            "Bearer", "Bearer", "Bearer", "Bearer", "Bearer", "bearer", "BEARER", "BeArEr",
            "Basic", "Token", "", "Bearer:",
        ][..],
    );
    let gap = prop::sample::select(&[" ", " ", " ", " ", "  ", "\t", " \t", ""][..]);
    let tail = prop::sample::select(&["", "", " ", "\t", " x"][..]);
    let token = prop_oneof![
        8 => Just(Tok::Valid),
        2 => hostile::edits(3).prop_map(Tok::Mutated),
        1 => text().prop_map(Tok::Text),
        1 => (1usize..40_000).prop_map(Tok::Huge),
    ];
    prop_oneof![
        8 => (scheme, gap, token, tail).prop_map(|(scheme, gap, token, tail)| Auth::Scheme {
            scheme,
            gap,
            token,
            tail,
        }),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Auth::Raw),
    ]
    .boxed()
}

/// Who the federation takes the caller for, from the first `Authorization` header: as
/// `http::bearer` reads it (an ASCII header, the Bearer scheme in any case, the token after
/// the first space with the whitespace around it dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// `missing_token`.
    Anonymous,
    /// `invalid_token` (or `unknown_issuer`, for a mutation that changed the issuer).
    Refused,
    /// `default/app`.
    App,
}

fn caller(first: Option<&[u8]>, token: &str) -> Caller {
    let Some(value) = first else {
        return Caller::Anonymous;
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return Caller::Refused;
    };
    if !value.bytes().all(|b| (32..127).contains(&b) || b == b'\t') {
        return Caller::Refused;
    }
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Caller::Anonymous;
    }
    match rest.trim() {
        "" => Caller::Anonymous,
        t if t == token => Caller::App,
        _ => Caller::Refused,
    }
}

/// A request body.
#[derive(Debug, Clone)]
enum Payload {
    Empty,
    Bytes(Vec<u8>),
    Json(Value),
    /// JSON text a `Value` cannot make (deep, duplicated, trailing), or any text.
    Text(String),
    /// `{"lease": <the real lease>}` with these members added.
    Revoke(Vec<(String, Value)>),
    /// `{"lease": ...}`.
    Lease(String),
    /// `{"generators": [...]}`.
    Authorize(Vec<String>),
    /// A revoke body of this many bytes: beyond the body limit for most.
    Oversized(usize),
}

impl Payload {
    fn bytes(&self, lease: &str) -> Vec<u8> {
        match self {
            Payload::Empty => Vec::new(),
            Payload::Bytes(b) => b.clone(),
            Payload::Json(v) => v.to_string().into_bytes(),
            Payload::Text(t) => t.clone().into_bytes(),
            Payload::Revoke(extra) => {
                let mut body = json!({ "lease": lease });
                for (k, v) in extra {
                    body[k] = v.clone();
                }
                body.to_string().into_bytes()
            }
            Payload::Lease(l) => json!({ "lease": l }).to_string().into_bytes(),
            Payload::Authorize(generators) => {
                json!({ "generators": generators }).to_string().into_bytes()
            }
            Payload::Oversized(n) => {
                let filler = "a".repeat(n.saturating_sub(14));
                format!(r#"{{"lease":"{filler}"}}"#).into_bytes()
            }
        }
    }
}

fn payload() -> BoxedStrategy<Payload> {
    let deep =
        (1usize..100_000, prop::sample::select(&["[", "{\"a\":"][..])).prop_map(|(n, open)| {
            let close = if open == "[" { "]" } else { "}" };
            format!("{}{}", open.repeat(n), close.repeat(n))
        });
    let texts = prop_oneof![
        deep,
        prop::sample::select(
            &[
                r#"{"lease":"a","lease":"b"}"#,
                r#"{"lease":"v1.x.y"} trailing"#,
                r#"{"Lease":"v1.x.y"}"#,
                r#"["v1.ephemeral.AAAA"]"#,
                r#"{"lease":null}"#,
                r#"{"generators":"default/Password/db"}"#,
                r#"{"generators":[1,2]}"#,
                "\u{feff}{}",
                "",
                "null",
            ][..]
        )
        .prop_map(str::to_owned),
        ".{0,64}",
    ];
    let generators = prop::collection::vec(
        prop_oneof![
            prop::sample::select(&GENERATORS[..]).prop_map(str::to_owned),
            text(),
            "[a-z]{1,8}/[A-Za-z]{1,8}/[a-z]{1,8}",
        ],
        0..80,
    );
    prop_oneof![
        2 => Just(Payload::Empty),
        1 => prop::collection::vec(any::<u8>(), 0..128).prop_map(Payload::Bytes),
        2 => json().prop_map(Payload::Json),
        2 => texts.prop_map(Payload::Text),
        2 => prop::collection::vec(("[a-z]{1,8}", json()), 0..2).prop_map(Payload::Revoke),
        3 => text().prop_map(Payload::Lease),
        2 => generators.prop_map(Payload::Authorize),
        1 => (MAX_BODY - 64..MAX_BODY * 2).prop_map(Payload::Oversized),
    ]
    .boxed()
}

/// One path segment of an issuance route.
fn segment() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(&["default", "Password", "db", "Fake", "creds", "UUID", "id", "limited"][..])
            .prop_map(str::to_owned),
        2 => prop::sample::select(
            &["", ".", "..", "%2F", "%2f", "%", "%2", "%zz", "%00", "%64efault", "%C3%A9", "%FF", "é", "a%20b", "*", "default%2FPassword"][..]
        )
        .prop_map(str::to_owned),
        2 => "[a-z0-9.-]{1,12}",
        1 => prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| {
            percent_encoding::percent_encode(&b, percent_encoding::NON_ALPHANUMERIC).to_string()
        }),
        1 => (250usize..300).prop_map(|n| "a".repeat(n)),
    ]
    .boxed()
}

/// Paths: every route as it is and slightly off, issuance routes with hostile segments (and
/// two or four of them), arbitrary and very long paths.
fn path() -> BoxedStrategy<String> {
    const ROUTES: &[&str] = &[
        "/v1/revoke",
        "/v1/authorize",
        "/v1/whoami",
        "/healthz",
        "/readyz",
        "/metrics",
        "/.well-known/openid-configuration",
        "/openid/v1/jwks",
        PASSWORD,
        "/generators/default/UUID/id",
        "/v1/generators/default/Fake/creds",
    ];
    let route = prop::sample::select(ROUTES);
    let issuance = (
        prop::sample::select(&["/v1/generators/", "/generators/"][..]),
        prop_oneof![2 => Just("default".to_owned()), 1 => Just("limited".to_owned()), 1 => segment()],
        prop::collection::vec(segment(), 1..4),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(prefix, namespace, mut segments, three)| {
            segments.insert(0, namespace);
            if three {
                segments.truncate(3);
                while segments.len() < 3 {
                    segments.push("db".to_owned());
                }
            }
            format!("{prefix}{}", segments.join("/"))
        });
    let off = (
        route.clone(),
        prop::sample::select(&["/", "//", "/..", "/.", "?x=1", "%20", "#x", "/../healthz"][..]),
        any::<bool>(),
    )
        .prop_map(|(r, suffix, upper)| {
            let r = if upper {
                r.to_uppercase()
            } else {
                r.to_owned()
            };
            format!("{r}{suffix}")
        });
    prop_oneof![
        4 => route.prop_map(str::to_owned),
        4 => issuance,
        2 => off,
        1 => "/[ -~]{0,40}",
        // Request targets in other forms: asterisk, authority, absolute.
        1 => prop::sample::select(
            &[
                "*",
                "example.com:443",
                "http://evil.example/v1/whoami",
                "https://evil.example:8443/v1/generators/default/Password/db?x=1",
                "http://evil.example",
            ][..]
        )
        .prop_map(str::to_owned),
        1 => "/\\PC{0,20}",
        1 => (1usize..70_000).prop_map(|n| format!("/v1/generators/default/Password/{}", "a".repeat(n))),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
struct Call {
    method: &'static str,
    path: String,
    auths: Vec<Auth>,
    content_type: Option<String>,
    request_id: Option<String>,
    payload: Payload,
}

/// Content types and whether axum's JSON extractor takes them (`application/json` or a
/// `+json` suffix, with parameters).
const CONTENT_TYPES: &[(&str, bool)] = &[
    ("application/json", true),
    ("application/json; charset=utf-8", true),
    ("application/merge-patch+json", true),
    ("text/plain", false),
    ("application/x-www-form-urlencoded", false),
    ("application/jsonp", false),
    ("json", false),
    ("", false),
    ("application/", false),
    ("multipart/form-data; boundary=x", false),
];

fn call() -> BoxedStrategy<Call> {
    let method = prop_oneof![
        6 => Just("POST"),
        3 => Just("GET"),
        2 => prop::sample::select(
            &["HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "post", "FOO"][..]
        ),
    ];
    let content_type = prop_oneof![
        1 => Just(None),
        3 => prop::sample::select(CONTENT_TYPES).prop_map(|(t, _)| Some(t.to_owned())),
        1 => "[ -~]{0,30}"
            .prop_filter("an arbitrary type without json", |t| !t.to_ascii_lowercase().contains("json"))
            .prop_map(Some),
    ];
    let request_id = prop_oneof![
        2 => Just(None),
        2 => "[A-Za-z0-9._:-]{1,128}".prop_map(Some),
        1 => "[ -~]{0,140}".prop_map(Some),
        1 => "[A-Za-z0-9]{129,200}".prop_map(Some),
    ];
    let auths = prop_oneof![1 => Just(Vec::new()), 4 => prop::collection::vec(auth(), 1..3)];
    // A call each route serves.
    let valid = (
        prop::sample::select(
            &[
                ("POST", PASSWORD),
                ("POST", "/generators/default/UUID/id"),
                ("POST", "/v1/revoke"),
                ("POST", "/v1/revoke"),
                ("POST", "/v1/revoke"),
                ("POST", "/v1/authorize"),
                ("POST", "/v1/authorize"),
                ("GET", "/v1/whoami"),
                ("GET", "/healthz"),
                ("GET", "/readyz"),
                ("GET", "/metrics"),
            ][..],
        ),
        prop::collection::vec(
            prop::sample::select(&GENERATORS[..]).prop_map(str::to_owned),
            0..4,
        ),
    )
        .prop_map(|((method, path), generators)| Call {
            method,
            path: path.to_owned(),
            auths: vec![Auth::Scheme {
                scheme: "Bearer",
                gap: " ",
                token: Tok::Valid,
                tail: "",
            }],
            content_type: Some("application/json".to_owned()),
            request_id: None,
            payload: match path {
                "/v1/revoke" => Payload::Revoke(Vec::new()),
                "/v1/authorize" => Payload::Authorize(generators),
                _ => Payload::Empty,
            },
        });
    // A call each route serves with one or two of its parts hostile, so that every check is
    // reached with the others passing; or every part hostile.
    (
        valid,
        (method, path(), auths, content_type, request_id, payload()),
        prop::sample::select(&[31u8, 31, 31, 1, 2, 4, 8, 16, 3, 6, 12, 20, 0][..]),
    )
        .prop_map(
            |(valid, (method, path, auths, content_type, request_id, payload), hostile)| {
                let pick = |bit: u8| hostile & bit != 0;
                Call {
                    method: if pick(1) { method } else { valid.method },
                    path: if pick(2) { path } else { valid.path },
                    auths: if pick(4) { auths } else { valid.auths },
                    content_type: if pick(8) {
                        content_type
                    } else {
                        valid.content_type
                    },
                    // Always hostile: it cannot change the answer, only its id.
                    request_id,
                    payload: if pick(16) { payload } else { valid.payload },
                }
            },
        )
        .boxed()
}

/// What the model expects.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Ok,
    Code(ErrorCode),
    /// A refused token: `invalid_token`, or `unknown_issuer` from a mutation of its issuer.
    RefusedToken,
}

impl From<Caller> for Result<(), Expect> {
    fn from(c: Caller) -> Self {
        match c {
            Caller::Anonymous => Err(Expect::Code(ErrorCode::MissingToken)),
            Caller::Refused => Err(Expect::RefusedToken),
            Caller::App => Ok(()),
        }
    }
}

/// `http::valid_segment`: a Kubernetes name (upper case too for a kind).
fn kubernetes_name(s: &str, kind: bool) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'-'
                || b == b'.'
                || (kind && b.is_ascii_uppercase())
        })
}

/// The answer to a request for `path` (as the server sees it) by `method`, from `caller`, with
/// `body` of content type `json` (whether the JSON extractor takes it), given the real lease.
fn expect(
    method: &str,
    path: &str,
    caller: Caller,
    json: bool,
    body: &[u8],
    lease: &str,
) -> Expect {
    use ErrorCode::*;
    let as_caller = |then: Expect| match Result::<(), Expect>::from(caller) {
        Ok(()) => then,
        Err(e) => e,
    };
    let issuance = ["/v1/generators/", "/generators/"]
        .into_iter()
        .find_map(|prefix| path.strip_prefix(prefix))
        .filter(|tail| tail.split('/').count() == 3);
    if let Some(tail) = issuance {
        if method != "POST" {
            return Expect::Code(MethodNotAllowed);
        }
        // `GeneratorPath::of`, before the token: each segment percent-decoded to UTF-8
        // without a `/`.
        let mut decoded = Vec::new();
        for s in tail.split('/') {
            let d = if tail.contains('%') {
                match percent_encoding::percent_decode_str(s).decode_utf8() {
                    Ok(d) if !d.contains('/') => d.into_owned(),
                    _ => return Expect::Code(BadRequest),
                }
            } else {
                s.to_owned()
            };
            decoded.push(d);
        }
        let (ns, kind, name) = (&decoded[0], &decoded[1], &decoded[2]);
        return as_caller(
            if !(kubernetes_name(ns, false)
                && kubernetes_name(kind, true)
                && kubernetes_name(name, false))
            {
                Expect::Code(BadRequest)
            } else if ns != "default" {
                // `default/app` may use `default/*/*` only.
                Expect::Code(PolicyDenied)
            } else if GENERATORS.contains(&format!("{ns}/{kind}/{name}").as_str()) {
                Expect::Ok
            } else {
                Expect::Code(GeneratorNotFound)
            },
        );
    }
    let get = matches!(method, "GET" | "HEAD");
    match path {
        "/healthz" | "/readyz" | "/metrics" if get => Expect::Ok,
        "/.well-known/openid-configuration" | "/openid/v1/jwks" if get => Expect::Code(NotFound),
        "/v1/whoami" if get => as_caller(Expect::Ok),
        "/v1/revoke" | "/v1/authorize" if method == "POST" => {
            // The token is checked before the body is, the content type before the size.
            let read = if !json {
                Err(BadRequest)
            } else if body.len() > MAX_BODY {
                Err(PayloadTooLarge)
            } else {
                Ok(())
            };
            as_caller(match (path, read) {
                (_, Err(code)) => Expect::Code(code),
                ("/v1/revoke", Ok(())) => match serde_json::from_slice::<RevokeRequest>(body) {
                    Err(_) => Expect::Code(BadRequest),
                    Ok(r) if r.lease == lease => Expect::Ok,
                    Ok(_) => Expect::Code(InvalidLease),
                },
                (_, Ok(())) => match serde_json::from_slice::<AuthorizeRequest>(body) {
                    Ok(r) if r.generators.len() <= esi_api::authorize::MAX_GENERATORS => Expect::Ok,
                    _ => Expect::Code(BadRequest),
                },
            })
        }
        "/healthz"
        | "/readyz"
        | "/metrics"
        | "/.well-known/openid-configuration"
        | "/openid/v1/jwks"
        | "/v1/whoami"
        | "/v1/revoke"
        | "/v1/authorize" => Expect::Code(MethodNotAllowed),
        _ => Expect::Code(NotFound),
    }
}

/// Requests of every method, path, `Authorization` (none, several, every scheme spelling,
/// spacing, mutated, huge, not ASCII), content type, request id and body (bytes, JSON with
/// unknown members, nested 100 000 deep, beyond the body limit) to every route. The answer is
/// the one [`expect`] gives: its status, and for a refusal its code in the one error shape,
/// with the caller's request id when it is a plain token, else a fresh UUID; never a 5xx;
/// never the caller's token. The metrics keep to their fixed labels. 1200 cases.
#[test]
fn an_arbitrary_request_gets_its_specific_answer() {
    let w = World::new();
    let lease = w.lease();
    let (carried, served) = (Cell::new(0u32), Cell::new(0u32));
    let seen = RefCell::new(BTreeSet::new());
    hostile::check("arbitrary requests", 1200, &call(), |c| {
        let Ok(uri) = Uri::try_from(c.path.as_str()) else {
            return Ok(());
        };
        let path = uri.path().to_owned();
        let body = c.payload.bytes(&lease);
        let request = || {
            let mut req = Request::builder()
                .method(Method::from_bytes(c.method.as_bytes()).unwrap())
                .uri(uri.clone());
            for a in &c.auths {
                let bytes = a.bytes(&w.token);
                if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                    req = req.header(AUTHORIZATION, v);
                }
            }
            if let Some(t) = &c.content_type {
                req = req.header(CONTENT_TYPE, t.as_str());
            }
            if let Some(id) = &c.request_id {
                req = req.header(esi_api::REQUEST_ID_HEADER, id.as_str());
            }
            req.body(Body::from(body.clone())).unwrap()
        };
        let req = request();
        // The server reads the first.
        let first = req
            .headers()
            .get(AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        carried.set(carried.get() + 1);
        let json = c
            .content_type
            .as_deref()
            .is_some_and(|t| CONTENT_TYPES.iter().any(|&(k, json)| k == t && json));
        let expected = expect(
            c.method,
            &path,
            caller(first.as_deref(), &w.token),
            json,
            &body,
            &lease,
        );
        let a = w.send(req);
        // The server serves `api` without the router in front: the same answer.
        let served_alone = w.send_api(request());
        prop_assert_eq!(served_alone.status, a.status, "{} alone", served_alone.text);
        prop_assert_eq!(
            &served_alone.json["error"]["code"],
            &a.json["error"]["code"]
        );

        let id = a
            .headers
            .get(esi_api::REQUEST_ID_HEADER)
            .unwrap()
            .to_str()
            .unwrap();
        let plain = c.request_id.as_deref().filter(|id| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        });
        match plain {
            Some(sent) => prop_assert_eq!(id, sent),
            None => prop_assert!(uuid::Uuid::parse_str(id).is_ok(), "request id {id:?}"),
        }
        holds_none(&a, &[&w.token])?;
        if expected == Expect::Ok {
            prop_assert!(
                (200..300).contains(&a.status),
                "{expected:?} for {c:?}: {} {}",
                a.status,
                a.text
            );
            served.set(served.get() + 1);
            seen.borrow_mut().insert("ok");
            return Ok(());
        }
        let codes: &[ErrorCode] = match &expected {
            Expect::Code(code) => std::slice::from_ref(code),
            _ => &[ErrorCode::InvalidToken, ErrorCode::UnknownIssuer],
        };
        prop_assert!(
            codes.iter().any(|code| code.http_status() == a.status),
            "{expected:?} for {} {path} ({:?}): {} {}",
            c.method,
            c.payload,
            a.status,
            a.text
        );
        if a.status == 405 {
            prop_assert!(a.headers.contains_key(ALLOW));
        }
        // A HEAD answer has no body to read (a server sends none).
        if c.method != "HEAD" {
            let e = refusal(&a)?;
            prop_assert!(codes.contains(&e.code), "{expected:?}: {}", a.text);
            seen.borrow_mut().insert(e.code.as_str());
            // A body's values never come back (a lease or a token sent where it does not
            // belong would be in the answer and the audit log); the names of its members may.
            if let Ok(sent) = serde_json::from_slice::<Value>(&body) {
                let values = string_values(&sent);
                holds_none(&a, &values.iter().map(String::as_str).collect::<Vec<_>>())?;
            }
        }
        Ok(())
    });
    assert!(carried.get() > 1000, "{} carried", carried.get());
    assert!(served.get() > 50, "{} served", served.get());
    let seen = seen.into_inner();
    for reached in [
        "ok",
        "bad_request",
        "missing_token",
        "invalid_token",
        "policy_denied",
        "generator_not_found",
        "invalid_lease",
        "payload_too_large",
        "not_found",
        "method_not_allowed",
    ] {
        assert!(
            seen.contains(reached),
            "no case reached {reached}: {seen:?}"
        );
    }

    // Metrics are labelled by route and code from fixed sets, whatever the paths were.
    let a = w.send(common::get("/metrics", None));
    let routes = [
        "generate",
        "ese_generate",
        "revoke",
        "whoami",
        "authorize",
        "healthz",
        "readyz",
        "metrics",
        "oidc",
        "other",
    ];
    for line in a.text.lines().filter(|l| !l.starts_with('#')) {
        for (label, allowed) in [("route", &routes[..]), ("code", &[][..])] {
            if let Some(at) = line.find(&format!("{label}=\"")) {
                let value = line[at + label.len() + 2..].split('"').next().unwrap();
                let known = allowed.contains(&value)
                    || (label == "code"
                        && (value == "ok" || ErrorCode::ALL.iter().any(|c| c.as_str() == value)));
                assert!(known, "label {label}={value:?} in {line}");
            }
        }
    }
}

/// Found by the property above: a body of the wrong shape was explained with serde's message,
/// which quotes the string it could not take, so a lease sent bare (not in `{"lease": ...}`)
/// or a token sent as a generator came back in the answer, and the revoke's into the audit
/// log. The explanation names the member and the kind of value only.
#[test]
fn a_body_of_the_wrong_shape_is_explained_without_its_values() {
    let w = World::new();
    let lease = w.lease();
    for (path, body, secret) in [
        ("/v1/revoke", json!(lease), lease.as_str()),
        (
            "/v1/authorize",
            json!({ "generators": w.token }),
            w.token.as_str(),
        ),
    ] {
        let a = w.send(common::post(path, Some(&w.token), Some(&body.to_string())));
        assert_eq!(a.status, 400, "{}", a.text);
        assert_eq!(common::code(&a.json), "bad_request");
        let message = a.json["error"]["message"].as_str().unwrap();
        assert!(message.contains("invalid type: a string"), "{message}");
        assert!(!a.text.contains(secret), "{message}");
    }
}

#[test]
fn an_unknown_member_is_named_shortened() {
    let w = World::new();
    let name = "m".repeat(60_000);
    let body = format!(r#"{{"lease": "x", "{name}": 1}}"#);
    let a = w.send(common::post("/v1/revoke", Some(&w.token), Some(&body)));
    assert_eq!(a.status, 400, "{}", a.text);
    let message = a.json["error"]["message"].as_str().unwrap();
    // axum names the member's path first, then serde's reason: cut after the name's start.
    assert!(message.starts_with("invalid request body: "), "{message}");
    assert!(message.contains("mmmm"), "{message}");
    assert!(
        message.len() <= "invalid request body: ".len() + esi_api::json::EXPLANATION_MAX,
        "{} bytes",
        message.len()
    );
}

/// A member name of 1 KiB took the whole explanation (cut at 200 bytes after axum's path
/// prefix): serde's reason fell off. The name is cut by itself, and the reason stays.
#[test]
fn a_long_unknown_member_name_leaves_room_for_the_reason() {
    let w = World::new();
    let name = format!("{}\u{1b}[2J`é", "m".repeat(1024));
    for (path, body, expected) in [
        (
            "/v1/revoke",
            json!({"lease": "x", name.as_str(): 1}),
            "expected `lease`",
        ),
        (
            "/v1/authorize",
            json!({"generators": [], name.as_str(): 1}),
            "expected `generators`",
        ),
    ] {
        let a = w.send(common::post(path, Some(&w.token), Some(&body.to_string())));
        assert_eq!(a.status, 400, "{}", a.text);
        assert_eq!(common::code(&a.json), "bad_request");
        let message = a.json["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("invalid request body: mmmm"),
            "{message}"
        );
        assert!(
            message.contains(&format!("unknown field `{}…`", "m".repeat(64))),
            "{message}"
        );
        assert!(message.contains(expected), "{message}");
        assert!(
            message.len() <= "invalid request body: ".len() + esi_api::json::EXPLANATION_MAX,
            "{} bytes: {message}",
            message.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Hostile leases.

/// Whose a lease sealed by the federation's own key says it is, against the caller
/// `alpha/default/app` (uid `sa-uid-app`).
#[derive(Debug, Clone)]
enum Holder {
    Caller,
    /// The caller without the uid: a lease of a token that carried none.
    NoUid,
    OtherUid,
    OtherServiceAccount,
    OtherNamespace,
    OtherCluster,
    /// Any strings.
    Any([String; 4]),
}

#[derive(Debug, Clone)]
enum LeaseCase {
    /// The real lease, edited.
    Mutated(Vec<Edit>),
    /// Any text, lease-shaped or not.
    Text(String),
    /// Sealed by the federation's own key for this generator, holder and handle.
    Sealed {
        generator: String,
        holder: Holder,
        handle: Value,
    },
    /// The real lease's claims sealed by another federation under the same key id.
    Foreign,
}

fn lease_case() -> BoxedStrategy<LeaseCase> {
    let holder = prop_oneof![
        3 => Just(Holder::Caller),
        1 => Just(Holder::NoUid),
        1 => Just(Holder::OtherUid),
        1 => Just(Holder::OtherServiceAccount),
        1 => Just(Holder::OtherNamespace),
        1 => Just(Holder::OtherCluster),
        1 => [text(), text(), text(), text()].prop_map(Holder::Any),
    ];
    let handle = prop_oneof![
        3 => "[a-f0-9-]{36}".prop_map(|id| json!({ "fake": format!("handle-{id}") })),
        1 => json(),
        1 => text().prop_map(|t| json!({ "fake": t })),
    ];
    let generator = prop_oneof![
        4 => prop::sample::select(&GENERATORS[..]).prop_map(str::to_owned),
        1 => text(),
    ];
    prop_oneof![
        4 => hostile::edits(3).prop_map(LeaseCase::Mutated),
        1 => Just(LeaseCase::Mutated(Vec::new())),
        2 => prop_oneof![
            text(),
            "v1\\.[a-z]{0,12}\\.[A-Za-z0-9_-]{0,200}",
            prop::collection::vec(any::<u8>(), 0..300)
                .prop_map(|b| format!("v1.ephemeral.{}", URL_SAFE_NO_PAD.encode(b))),
            (8000usize..9000).prop_map(|n| format!("v1.ephemeral.{}", "A".repeat(n))),
        ]
        .prop_map(LeaseCase::Text),
        4 => (generator, holder, handle).prop_map(|(generator, holder, handle)| LeaseCase::Sealed {
            generator,
            holder,
            handle,
        }),
        1 => Just(LeaseCase::Foreign),
    ]
    .boxed()
}

/// `POST /v1/revoke` by `default/app` with hostile leases: the real one edited byte-wise,
/// any text (lease-shaped, over the 8 KiB limit), leases the federation itself sealed for other
/// subjects, generators and handles, and a lease another federation sealed under the same key
/// id. Only the real lease, or one sealed for the caller, revokes (200); another holder's is
/// `policy_denied`, an unknown generator `generator_not_found`, a handle its generator does not
/// know `invalid_lease`, anything else `invalid_lease`. No answer holds the lease's handle or
/// the lease itself. 600 cases.
#[test]
fn a_hostile_lease_revokes_nothing_it_does_not_own() {
    let w = World::new();
    let lease = w.lease();
    let real = w.state.leases.open(&lease).unwrap();
    let real_handle = real.handle.0["fake"].as_str().unwrap().to_owned();
    let foreign = LeaseKeys::ephemeral()
        .seal(LeaseClaimsRef::from(&real))
        .unwrap();
    assert!(foreign.starts_with("v1.ephemeral."));
    let revoked = Cell::new(0u32);
    let seen = RefCell::new(BTreeSet::new());
    hostile::check("hostile leases", 600, &lease_case(), |case| {
        let mut secrets = vec![real_handle.clone()];
        let (sent, expected) = match &case {
            LeaseCase::Mutated(edits) => {
                let sent =
                    String::from_utf8_lossy(&hostile::apply(lease.as_bytes(), edits)).into_owned();
                let expected = if sent == lease {
                    Ok(true)
                } else {
                    Err(ErrorCode::InvalidLease)
                };
                (sent, expected)
            }
            LeaseCase::Text(t) => (t.clone(), Err(ErrorCode::InvalidLease)),
            LeaseCase::Foreign => (foreign.clone(), Err(ErrorCode::InvalidLease)),
            LeaseCase::Sealed {
                generator,
                holder,
                handle,
            } => {
                let caller = ["alpha", "default", "app", "sa-uid-app"].map(str::to_owned);
                let [c, n, a, u] = match holder {
                    Holder::Caller => caller.clone(),
                    Holder::NoUid => ["alpha", "default", "app", ""].map(str::to_owned),
                    Holder::OtherUid => {
                        ["alpha", "default", "app", "sa-uid-other"].map(str::to_owned)
                    }
                    Holder::OtherServiceAccount => {
                        ["alpha", "default", "intruder", "sa-uid-app"].map(str::to_owned)
                    }
                    Holder::OtherNamespace => {
                        ["alpha", "limited", "app", "sa-uid-app"].map(str::to_owned)
                    }
                    Holder::OtherCluster => {
                        ["beta", "default", "app", "sa-uid-app"].map(str::to_owned)
                    }
                    Holder::Any(any) => any.clone(),
                };
                let handle = LeaseHandle(handle.clone());
                let claims = LeaseClaimsRef {
                    generator,
                    subject: LeaseSubjectRef {
                        cluster: &c,
                        namespace: &n,
                        service_account: &a,
                        service_account_uid: &u,
                    },
                    handle: &handle,
                    issued_at: now() as i64,
                };
                let Ok(sealed) = w.state.leases.seal(claims) else {
                    // Too large to seal (a long generator or handle): never handed out.
                    return Ok(());
                };
                let same = (c.as_str(), n.as_str(), a.as_str()) == ("alpha", "default", "app")
                    && (u.is_empty() || u == "sa-uid-app");
                let expected = if !same {
                    Err(ErrorCode::PolicyDenied)
                } else if !GENERATORS.contains(&generator.as_str()) {
                    Err(ErrorCode::GeneratorNotFound)
                } else if generator != "default/Fake/creds" {
                    // Password and UUID leave nothing to revoke.
                    Ok(false)
                } else if handle.0.get("fake").is_some_and(Value::is_string) {
                    Ok(true)
                } else {
                    Err(ErrorCode::InvalidLease)
                };
                secrets.extend(strings(&handle.0));
                if !same {
                    secrets.extend([c, n, a, u].into_iter().filter(|s| !caller.contains(s)));
                }
                (sealed, expected)
            }
        };
        let body = json!({ "lease": sent }).to_string();
        let expected = if body.len() > MAX_BODY {
            Err(ErrorCode::PayloadTooLarge)
        } else {
            expected
        };
        let a = w.send(common::post("/v1/revoke", Some(&w.token), Some(&body)));
        match expected {
            Ok(done) => {
                prop_assert_eq!(a.status, 200, "{}", a.text);
                prop_assert_eq!(&a.json, &json!({ "revoked": done }));
                revoked.set(revoked.get() + 1);
                seen.borrow_mut().insert("ok");
            }
            Err(code) => {
                let e = refusal(&a)?;
                prop_assert_eq!(e.code, code, "{}", e.message);
                seen.borrow_mut().insert(code.as_str());
            }
        }
        secrets.push(sent);
        holds_none(&a, &secrets.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(())
    });
    assert!(revoked.get() > 30, "{} revoked", revoked.get());
    let seen = seen.into_inner();
    for reached in [
        "ok",
        "invalid_lease",
        "policy_denied",
        "generator_not_found",
    ] {
        assert!(
            seen.contains(reached),
            "no case reached {reached}: {seen:?}"
        );
    }
}

/// Every string value inside a JSON value (not the keys).
fn string_values(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(string_values).collect(),
        Value::Object(m) => m.values().flat_map(string_values).collect(),
        _ => Vec::new(),
    }
}

/// Every string inside a JSON value, keys too.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        Value::Object(m) => m
            .iter()
            .flat_map(|(k, v)| std::iter::once(k.clone()).chain(strings(v)))
            .collect(),
        _ => Vec::new(),
    }
}
