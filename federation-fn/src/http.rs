//! The federation's HTTP API, [`Api`]: served as it is by the server (a Kubernetes
//! Deployment), and as an axum [`Router`] ([`router`]) by `lambda_http` (an AWS Lambda) and the
//! tests, from the same code.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use esi_api::{
    AuthorizeRequest, AuthorizeResponse, AuthorizeResult, Envelope, ErrorBody, ErrorCode,
    ErrorDetail, Identity, RevokeRequest, RevokeResponse, routes,
};
use esi_backends::{Context, Generate};
use futures_util::future::Either;

use crate::config::Snapshot;
use crate::lease::{LeaseClaimsRef, LeaseSubjectRef};
use crate::metrics::RouteLabel;
use crate::state::AppState;
use crate::token::{self, ClusterVerifier};

/// A failed request: its code, a safe message, and an optional retry hint. Rendered into the
/// one error shape by the outer middleware, which knows the request id.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The code.
    pub code: ErrorCode,
    /// Safe message.
    pub message: String,
    /// Retry hint.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = status.into_response();
        resp.extensions_mut().insert(self);
        resp
    }
}

/// The request id of the request being served: the caller's `x-request-id` when it is a
/// plain token, else a fresh UUID. Kept as the header value it is answered with.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    fn of(headers: &HeaderMap) -> Self {
        if let Some(v) = headers.get(esi_api::REQUEST_ID_HEADER)
            && !v.is_empty()
            && v.len() <= 128
            && v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        {
            return RequestId(v.clone());
        }
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
        // A UUID always is a valid header value; the fallback is never taken.
        RequestId(HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("unknown")))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        // Both sources are checked ASCII (see `of`).
        self.0.to_str().unwrap_or_default()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request's `Authorization` header (the bearer token), taken without copying the other
/// headers as axum's `HeaderMap` extractor would.
struct BearerHeader(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for BearerHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(BearerHeader(
            parts.headers.get(header::AUTHORIZATION).cloned(),
        ))
    }
}

/// The `{namespace}/{kind}/{name}` of an issuance route: the last three segments of its path,
/// percent-decoded as axum decodes a path parameter. A path without `%`
/// (every path esi-cli sends) is copied once as it is; a decoded `/` is refused, as no
/// Kubernetes name holds one.
struct GeneratorPath {
    /// `namespace/kind/name`.
    reference: String,
}

impl GeneratorPath {
    fn namespace_kind_name(&self) -> (&str, &str, &str) {
        let mut parts = self.reference.splitn(3, '/');
        let mut next = || parts.next().unwrap_or_default();
        (next(), next(), next())
    }

    /// The generator path of an issuance route's three segments, `tail`.
    fn of(tail: &str) -> Result<Self, ApiError> {
        if !tail.contains('%') {
            return Ok(GeneratorPath {
                reference: tail.to_owned(),
            });
        }
        let mut reference = String::with_capacity(tail.len());
        for (i, segment) in tail.split('/').enumerate() {
            let decoded = percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .ok()
                .filter(|d| !d.contains('/'))
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::BadRequest,
                        "generator path must be /{namespace}/{kind}/{name} with Kubernetes names",
                    )
                })?;
            if i > 0 {
                reference.push('/');
            }
            reference.push_str(&decoded);
        }
        Ok(GeneratorPath { reference })
    }
}

/// JSON body extractor whose rejections use the API's error shape.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if let Some(timed_out) = esi_serving::body_timed_out(&rejection) {
        return ApiError::new(ErrorCode::RequestTimeout, timed_out.to_string());
    }
    match rejection {
        // serde quotes the string it could not take: a lease or a token sent where it does not
        // belong would come back in the answer and reach the audit log. Names and positions
        // stay, shortened: an unknown member's name is the caller's text, of any length, and
        // is cut by itself so that serde's reason ("unknown field …, expected …") stays.
        JsonRejection::JsonDataError(e) => {
            let why = esi_api::json::explain_error(&e).unwrap_or_else(|| {
                // Not read with path bookkeeping after all: axum's text, cut as a whole.
                let mut why = esi_api::json::without_values(&e.body_text());
                esi_api::json::truncate_at_char_boundary(&mut why, esi_api::json::EXPLANATION_MAX);
                why
            });
            ApiError::new(
                ErrorCode::BadRequest,
                format!("invalid request body: {why}"),
            )
        }
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::new(ErrorCode::BadRequest, "request body is not valid JSON")
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::BadRequest,
            "request body must be JSON with content-type: application/json",
        ),
        JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
        }
        other => ApiError::new(
            ErrorCode::BadRequest,
            format!("cannot read request body ({})", other.status()),
        ),
    }
}

/// The federation's HTTP API as a router: [`api`] behind axum's `Router`, for the Lambda
/// (`lambda_http`) and for tests, which drive it with `oneshot`.
pub fn router(state: AppState) -> Router {
    Router::new().fallback_service(api(state))
}

/// The federation's HTTP API as the server serves it. It answers exactly as [`router`] does,
/// without the outer router's two path lookups and boxed route in front (see [`Api`]).
pub fn api(state: AppState) -> Api {
    let max_body = state.settings.max_body_bytes;
    let rest = Router::new()
        .route(routes::REVOKE, post(revoke))
        .route(routes::WHOAMI, get(whoami))
        .route(routes::AUTHORIZE, post(authorize))
        .route(routes::HEALTHZ, get(healthz))
        .route(routes::READYZ, get(readyz))
        .route(routes::METRICS, get(metrics))
        .route(esi_backends::identity::DISCOVERY_PATH, get(oidc_discovery))
        .route(esi_backends::identity::JWKS_PATH, get(oidc_jwks))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state.clone());
    Api { state, rest }
}

/// The federation's HTTP API: the issuance routes, its hot path, taken before axum's router
/// and handler machinery, every other route by an axum `Router` after them.
///
/// For an issuance, the path router would percent-decode and copy the three path parameters
/// into the request's extensions, and the per-route middleware layer, method router and
/// extractors each box or clone per request: taking the issuance routes first, and serving
/// this service without a router in front, raised figure 2 of `BENCHMARKS.md` (issuances per
/// second over loopback) by ~8 %. An issuance is answered as the other routes are behind
/// `observe` and axum's method router: the same error shape, request id and metrics, and
/// `405` with `Allow: POST`.
#[derive(Clone, Debug)]
pub struct Api {
    state: AppState,
    rest: Router,
}

impl Api {
    /// Adds `router`'s routes under `path` beside the API's own (dev mode's issuer).
    pub fn nest(self, path: &str, router: Router) -> Self {
        Api {
            rest: self.rest.nest(path, router),
            ..self
        }
    }
}

impl<B> tower::Service<axum::http::Request<B>> for Api
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>,
        <Router as tower::Service<Request>>::Future,
    >;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        match issuance_route(req.uri().path()) {
            Some(answer) => {
                let state = self.state.clone();
                // The body is not read: an issuance takes none.
                let (parts, _) = req.into_parts();
                Either::Left(Box::pin(async move {
                    Ok(issue_route(state, answer, parts).await)
                }))
            }
            None => Either::Right(self.rest.call(req.map(Body::new))),
        }
    }
}

/// The issuance route `path` takes, if any: [`routes::GENERATE`] or [`routes::ESE_GENERATE`],
/// whose three parameters match any three segments, empty ones too (which the issuance then
/// refuses as a bad request).
fn issuance_route(path: &str) -> Option<Answer> {
    let (answer, tail) = issuance_prefix(path)?;
    (tail.split('/').count() == 3).then_some(answer)
}

/// The issuance route whose prefix `path` starts with, and what follows the prefix.
fn issuance_prefix(path: &str) -> Option<(Answer, &str)> {
    [Answer::Envelope, Answer::Data]
        .into_iter()
        .find_map(|answer| Some((answer, path.strip_prefix(answer.prefix())?)))
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

fn route_label(path: &str) -> RouteLabel {
    if let Some((answer, _)) = issuance_prefix(path) {
        return answer.route_label();
    }
    match path {
        routes::REVOKE => RouteLabel::Revoke,
        routes::WHOAMI => RouteLabel::Whoami,
        routes::AUTHORIZE => RouteLabel::Authorize,
        routes::HEALTHZ => RouteLabel::Healthz,
        routes::READYZ => RouteLabel::Readyz,
        routes::METRICS => RouteLabel::Metrics,
        esi_backends::identity::DISCOVERY_PATH | esi_backends::identity::JWKS_PATH => {
            RouteLabel::Oidc
        }
        _ => RouteLabel::Other,
    }
}

/// Request id, error rendering, metrics: the outermost layer of every route but the issuance
/// routes, which do the same themselves (see [`Api`]).
async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(req.uri().path());
    let rid = RequestId::of(req.headers());
    req.extensions_mut().insert(rid.clone());
    let resp = next.run(req).await;
    finish(&state, route, rid, started, resp)
}

/// Renders an error response into the one error shape, answers with the request id and counts
/// the request.
fn finish(
    state: &AppState,
    route: RouteLabel,
    rid: RequestId,
    started: Instant,
    mut resp: Response,
) -> Response {
    let status = resp.status();
    let error = resp.extensions_mut().remove::<ApiError>().or_else(|| {
        (status.is_client_error() || status.is_server_error()).then(|| {
            let code = match status {
                StatusCode::NOT_FOUND => ErrorCode::NotFound,
                StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
                StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
                s if s.is_client_error() => ErrorCode::BadRequest,
                _ => ErrorCode::Internal,
            };
            let message = match code {
                ErrorCode::MethodNotAllowed => "method not allowed on this route",
                ErrorCode::PayloadTooLarge => "request body is too large",
                ErrorCode::NotFound => "no such route",
                ErrorCode::BadRequest => "bad request",
                _ => "internal error",
            };
            ApiError::new(code, message)
        })
    });
    let code = error.as_ref().map(|e| e.code);
    if let Some(err) = error {
        let status = StatusCode::from_u16(err.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = err
            .retry_after
            .or(err.code.retryable().then(|| Duration::from_secs(1)));
        let body = ErrorBody {
            error: ErrorDetail {
                code: err.code,
                message: err.message,
                request_id: rid.as_str().to_owned(),
                retry_after_seconds: retry_after.map(|d| d.as_secs().max(1)),
            },
        };
        let mut new = (status, Json(body)).into_response();
        if let Some(d) = retry_after {
            new.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(d.as_secs().max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            new.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // Keep the Allow header of a 405.
        if let Some(allow) = resp.headers().get(header::ALLOW) {
            new.headers_mut().insert(header::ALLOW, allow.clone());
        }
        resp = new;
    }
    resp.headers_mut().insert(esi_api::REQUEST_ID_HEADER, rid.0);
    state
        .metrics
        .request(route, code, started.elapsed().as_secs_f64());
    resp
}

fn snapshot(state: &AppState) -> Result<Arc<Snapshot>, ApiError> {
    state.snapshot().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotReady,
            "the federation has no configuration loaded yet",
        )
    })
}

fn bearer(header: &BearerHeader) -> Result<&str, ApiError> {
    let Some(value) = &header.0 else {
        return Err(ApiError::new(
            ErrorCode::MissingToken,
            "missing Authorization: Bearer <ServiceAccount token>",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::new(ErrorCode::InvalidToken, "Authorization header is not ASCII"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::new(
            ErrorCode::MissingToken,
            "Authorization header must use the Bearer scheme",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::new(
            ErrorCode::MissingToken,
            "Authorization: Bearer carries no token",
        ));
    }
    Ok(token)
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

async fn authenticate<'s>(
    snap: &'s Snapshot,
    header: &BearerHeader,
) -> Result<(Identity, &'s Arc<ClusterVerifier>), ApiError> {
    let token = bearer(header)?;
    token::verify(token, |iss| snap.clusters_for(iss), now_secs())
        .await
        .map_err(|r| ApiError::new(r.code, r.message))
}

fn valid_segment(s: &str, allow_upper: bool) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'-'
                || b == b'.'
                || (allow_upper && b.is_ascii_uppercase())
        })
}

/// The longest valid generator reference: three segments of [`valid_segment`] and two `/`.
const MAX_REFERENCE_BYTES: usize = 3 * 253 + 2;

/// Audit line for one decision. Never carries a token or a credential.
#[allow(clippy::too_many_arguments)]
fn audit(
    rid: &RequestId,
    action: &'static str,
    identity: Option<&Identity>,
    generator: &str,
    code: &'static str,
    reason: &str,
    rule: Option<&str>,
    started: Instant,
) {
    let allowed = code == "ok";
    // Before its checks the reference is the caller's text (up to a URI's 64 KiB): log at
    // most what a valid one can hold, so that unauthenticated calls cannot flood the log.
    let generator = esi_api::json::prefix_at_char_boundary(generator, MAX_REFERENCE_BYTES);
    let (cluster, namespace, sa, pod) = match identity {
        Some(i) => (
            i.cluster.as_str(),
            i.namespace.as_str(),
            i.service_account.name.as_str(),
            i.pod.as_ref().map(|p| p.name.as_str()).unwrap_or(""),
        ),
        None => ("", "", "", ""),
    };
    tracing::info!(
        target: "esi::audit",
        request_id = rid.as_str(),
        action,
        cluster,
        namespace,
        service_account = sa,
        pod,
        generator,
        allowed,
        code,
        reason,
        rule = rule.unwrap_or(""),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "decision"
    );
}

/// Verifies, authorizes and generates: the shared core of both issuance routes.
async fn issue(
    state: &AppState,
    rid: &RequestId,
    bearer: &BearerHeader,
    path: &GeneratorPath,
) -> Result<Envelope, ApiError> {
    let started = Instant::now();
    let reference = path.reference.as_str();
    let deny = |identity: Option<&Identity>, err: ApiError, rule: Option<&str>| {
        state.metrics.decision(Some(err.code));
        audit(
            rid,
            "generate",
            identity,
            reference,
            err.code.as_str(),
            &err.message,
            rule,
            started,
        );
        err
    };
    let snap = snapshot(state).map_err(|e| deny(None, e, None))?;
    let (identity, cluster) = authenticate(&snap, bearer)
        .await
        .map_err(|e| deny(None, e, None))?;
    let (ns, kind, name) = path.namespace_kind_name();
    if !(valid_segment(ns, false) && valid_segment(kind, true) && valid_segment(name, false)) {
        return Err(deny(
            Some(&identity),
            ApiError::new(
                ErrorCode::BadRequest,
                "generator path must be /{namespace}/{kind}/{name} with Kubernetes names",
            ),
            None,
        ));
    }
    let allowed = match snap
        .authorizer
        .authorize(&identity, &cluster.labels, reference)
    {
        Ok(a) => a,
        Err(d) => {
            let err = ApiError {
                code: d.code,
                message: d.message,
                retry_after: d.retry_after,
            };
            return Err(deny(Some(&identity), err, d.rule.as_deref()));
        }
    };
    let Some(entry) = snap.generators.get(reference) else {
        let err = ApiError::new(
            ErrorCode::GeneratorNotFound,
            format!("generator {reference:?} does not exist"),
        );
        return Err(deny(Some(&identity), err, Some(&allowed.rule)));
    };
    let ctx = Context {
        identity: &identity,
        generator: reference,
        max_ttl: allowed.max_ttl,
    };
    let issued_at = jiff::Timestamp::now();
    // Not cut short here: a mint cancelled half-way could leave a credential in the backend
    // that nobody holds. The caller's wait is bounded instead (`issue_detached`).
    let minted = match entry.generator.generate(&ctx).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(request_id = %rid, generator = %reference, code = e.code().as_str(), detail = %e.detail(), "generator failed");
            let mut err = ApiError::new(e.code(), e.to_string());
            if e.code().retryable() {
                err.retry_after = Some(Duration::from_secs(2));
            }
            return Err(deny(Some(&identity), err, Some(&allowed.rule)));
        }
    };
    let lease = match &minted.lease {
        None => None,
        Some(handle) => {
            let claims = LeaseClaimsRef {
                generator: reference,
                subject: LeaseSubjectRef::of(&identity),
                handle,
                issued_at: issued_at.as_second(),
            };
            match state.leases.seal(claims) {
                Ok(s) => Some(s),
                Err(e) => {
                    // Nothing minted may leak: revoke what we cannot hand out.
                    tracing::error!(request_id = %rid, generator = %reference, error = %e, "sealing failed; revoking the credential");
                    if let Err(e) = entry.generator.revoke(handle).await {
                        tracing::error!(request_id = %rid, generator = %reference, detail = %e.detail(), "revoking an unsealable credential failed");
                    }
                    return Err(deny(
                        Some(&identity),
                        ApiError::new(ErrorCode::Internal, "internal error"),
                        Some(&allowed.rule),
                    ));
                }
            }
        }
    };
    state.metrics.decision(None);
    audit(
        rid,
        "generate",
        Some(&identity),
        reference,
        "ok",
        "allowed",
        Some(&allowed.rule),
        started,
    );
    Ok(Envelope {
        data: minted.data,
        issued_at,
        expires_at: minted.expires_at,
        renewable: minted.renewable,
        lease,
    })
}

/// What an issuance route answers with.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// The [`Envelope`] (`/v1/generators/...`).
    Envelope,
    /// Only its data (`/generators/...`, External Secrets' webhook provider).
    Data,
}

impl Answer {
    /// The route's path up to its parameters (`/v1/generators/`), cut at compile time.
    fn prefix(self) -> &'static str {
        match self {
            Answer::Envelope => const { up_to_parameters(routes::GENERATE) },
            Answer::Data => const { up_to_parameters(routes::ESE_GENERATE) },
        }
    }

    fn route_label(self) -> RouteLabel {
        match self {
            Answer::Envelope => RouteLabel::Generate,
            Answer::Data => RouteLabel::EseGenerate,
        }
    }
}

/// `route` up to its first `{parameter}`.
const fn up_to_parameters(route: &'static str) -> &'static str {
    let bytes = route.as_bytes();
    let mut end = 0;
    while end < bytes.len() && bytes[end] != b'{' {
        end += 1;
    }
    match std::str::from_utf8(bytes.split_at(end).0) {
        Ok(prefix) => prefix,
        Err(_) => panic!("a route's prefix ends before an ASCII byte"),
    }
}

/// A JSON answer, serialized into one buffer sized for an envelope with a sealed lease
/// (axum's `Json` starts at 128 bytes and grows, three times for such an envelope).
fn json_answer<T: serde::Serialize>(value: &T) -> Response {
    let mut body = Vec::with_capacity(1024);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize an answer");
            ApiError::new(ErrorCode::Internal, "internal error").into_response()
        }
    }
}

async fn issue_route(state: AppState, answer: Answer, parts: Parts) -> Response {
    let started = Instant::now();
    let rid = RequestId::of(&parts.headers);
    let resp = if parts.method != Method::POST {
        let mut resp = StatusCode::METHOD_NOT_ALLOWED.into_response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        resp
    } else {
        // `issuance_route` checked the prefix and the three segments after it.
        let segments = &parts.uri.path()[answer.prefix().len()..];
        match GeneratorPath::of(segments) {
            Err(e) => e.into_response(),
            Ok(path) => {
                let bearer = BearerHeader(parts.headers.get(header::AUTHORIZATION).cloned());
                match issue_detached(state.clone(), rid.clone(), bearer, path).await {
                    Ok(envelope) => match answer {
                        Answer::Envelope => json_answer(&envelope),
                        Answer::Data => json_answer(&envelope.data),
                    },
                    Err(e) => e.into_response(),
                }
            }
        }
    };
    finish(&state, answer.route_label(), rid, started, resp)
}

/// Runs [`issue`] so that it always runs to its end: neither a client that disconnects
/// mid-request (which drops the handler) nor the deadline may cancel a mint half-way, leaving
/// a credential in the backend that was never sealed, audited or revoked.
///
/// The issuance is polled once here first. One that does not wait on anything (the token's
/// keys cached, a local generator such as `Password`) is then already done: the handler cannot
/// be dropped inside a poll, so nothing can be cut short, and it pays neither a task nor a
/// timer. One that waits (a backend call, a JWKS fetch) moves, as it is, to its own task,
/// which a dropped handler does not cancel, and the handler waits for its answer for at most
/// the backend timeout. A credential that task mints for a handler no longer waiting is
/// revoked ([`revoke_undelivered`]). A panic becomes a 500 either way, as a task's would.
async fn issue_detached(
    state: AppState,
    rid: RequestId,
    bearer: BearerHeader,
    path: GeneratorPath,
) -> Result<Envelope, ApiError> {
    let deadline = state.settings.backend_timeout;
    let issuing_state = state.clone();
    let mut issuing = Box::pin(async move { issue(&issuing_state, &rid, &bearer, &path).await });
    let first = std::future::poll_fn(|cx| {
        Poll::Ready(std::panic::catch_unwind(AssertUnwindSafe(|| {
            issuing.as_mut().poll(cx)
        })))
    })
    .await;
    let failed = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "issuance failed");
        Err(ApiError::new(ErrorCode::Internal, "internal error"))
    };
    match first {
        Ok(Poll::Ready(result)) => result,
        Ok(Poll::Pending) => {
            let (answer, answered) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let result = issuing.await;
                if let Err(Ok(envelope)) = answer.send(result) {
                    revoke_undelivered(&state, envelope).await;
                }
            });
            match tokio::time::timeout(deadline, answered).await {
                Ok(Ok(result)) => result,
                // The task panicked, and dropped its end.
                Ok(Err(e)) => failed(&e),
                Err(_) => {
                    tracing::warn!(
                        deadline = ?deadline,
                        "issuance still waiting at its deadline; answering 503, and a \
                         credential it mints later will be revoked"
                    );
                    let mut err = ApiError::new(
                        ErrorCode::BackendUnavailable,
                        format!("the backend did not answer within {deadline:?}"),
                    );
                    err.retry_after = Some(Duration::from_secs(2));
                    Err(err)
                }
            }
        }
        Err(_) => failed(&"the issuance panicked"),
    }
}

/// Revokes a credential minted for a request that was no longer waiting for it (its client
/// left, or its deadline passed): nobody holds it, so it must not outlive the request. One
/// without a lease (a password, STS credentials) cannot be revoked: it is counted and logged,
/// and expires on its own.
async fn revoke_undelivered(state: &AppState, envelope: Envelope) {
    let Some(sealed) = &envelope.lease else {
        tracing::warn!(
            "a credential was minted for a request no longer waiting; it has no lease to revoke"
        );
        state.metrics.undelivered("not_revocable");
        return;
    };
    let revoked = async {
        let claims = state.leases.open(sealed).map_err(|e| e.to_string())?;
        let snap = state.snapshot().ok_or("no configuration is loaded")?;
        let entry = snap
            .generators
            .get(claims.generator.as_str())
            .ok_or("its generator no longer exists")?;
        match tokio::time::timeout(
            state.settings.backend_timeout,
            entry.generator.revoke(&claims.handle),
        )
        .await
        {
            Ok(Ok(_)) => Ok(claims.generator),
            Ok(Err(e)) => Err(e.detail().to_string()),
            Err(_) => Err("the backend did not answer in time".to_owned()),
        }
    };
    match revoked.await {
        Ok(generator) => {
            tracing::warn!(generator = %generator, "a credential was minted for a request no longer waiting; revoked it");
            state.metrics.undelivered("revoked");
        }
        Err(detail) => {
            tracing::error!(detail = %detail, "a credential was minted for a request no longer waiting; revoking it failed, it lives until it expires");
            state.metrics.undelivered("revoke_failed");
        }
    }
}

async fn revoke(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    bearer: BearerHeader,
    body: Result<ApiJson<RevokeRequest>, ApiError>,
) -> Result<Json<RevokeResponse>, ApiError> {
    let started = Instant::now();
    let deny = |identity: Option<&Identity>, generator: &str, err: ApiError| {
        audit(
            &rid,
            "revoke",
            identity,
            generator,
            err.code.as_str(),
            &err.message,
            None,
            started,
        );
        err
    };
    let snap = snapshot(&state).map_err(|e| deny(None, "", e))?;
    let (identity, _) = authenticate(&snap, &bearer)
        .await
        .map_err(|e| deny(None, "", e))?;
    let ApiJson(req) = body.map_err(|e| deny(Some(&identity), "", e))?;
    let claims = state.leases.open(&req.lease).map_err(|e| {
        deny(
            Some(&identity),
            "",
            ApiError::new(ErrorCode::InvalidLease, e.to_string()),
        )
    })?;
    if !claims.subject.same_as(LeaseSubjectRef::of(&identity)) {
        return Err(deny(
            Some(&identity),
            &claims.generator,
            ApiError::new(
                ErrorCode::PolicyDenied,
                "this lease was issued to another workload; only its subject may revoke it",
            ),
        ));
    }
    let Some(entry) = snap.generators.get(claims.generator.as_str()) else {
        return Err(deny(
            Some(&identity),
            &claims.generator,
            ApiError::new(
                ErrorCode::GeneratorNotFound,
                format!(
                    "generator {:?} of this lease no longer exists",
                    claims.generator
                ),
            ),
        ));
    };
    let revoked = match tokio::time::timeout(
        state.settings.backend_timeout,
        entry.generator.revoke(&claims.handle),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(request_id = %rid, generator = %claims.generator, detail = %e.detail(), "revoke failed");
            return Err(deny(
                Some(&identity),
                &claims.generator,
                ApiError::new(e.code(), e.to_string()),
            ));
        }
        Err(_) => {
            return Err(deny(
                Some(&identity),
                &claims.generator,
                ApiError::new(
                    ErrorCode::BackendUnavailable,
                    "backend did not answer in time",
                ),
            ));
        }
    };
    audit(
        &rid,
        "revoke",
        Some(&identity),
        &claims.generator,
        "ok",
        if revoked {
            "revoked"
        } else {
            "nothing to revoke"
        },
        None,
        started,
    );
    Ok(Json(RevokeResponse { revoked }))
}

async fn whoami(
    State(state): State<AppState>,
    bearer: BearerHeader,
) -> Result<Json<Identity>, ApiError> {
    let snap = snapshot(&state)?;
    let (identity, _) = authenticate(&snap, &bearer).await?;
    Ok(Json(identity))
}

/// Dry run: would each generator be allowed for this caller? Nothing is minted, no rate limit
/// is consumed, and existence is only revealed for generators the caller may use.
async fn authorize(
    State(state): State<AppState>,
    bearer: BearerHeader,
    body: Result<ApiJson<AuthorizeRequest>, ApiError>,
) -> Result<Json<AuthorizeResponse>, ApiError> {
    let snap = snapshot(&state)?;
    let (identity, cluster) = authenticate(&snap, &bearer).await?;
    let ApiJson(req) = body?;
    if req.generators.len() > esi_api::authorize::MAX_GENERATORS {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "at most {} generators per check",
                esi_api::authorize::MAX_GENERATORS
            ),
        ));
    }
    let results = req
        .generators
        .into_iter()
        .map(|generator| {
            let parts: Vec<&str> = generator.split('/').collect();
            let well_formed = parts.len() == 3
                && valid_segment(parts[0], false)
                && valid_segment(parts[1], true)
                && valid_segment(parts[2], false);
            if !well_formed {
                return AuthorizeResult {
                    generator,
                    allowed: false,
                    code: Some(ErrorCode::BadRequest),
                    message: "not namespace/kind/name with Kubernetes names".to_owned(),
                };
            }
            match snap
                .authorizer
                .check(&identity, &cluster.labels, &generator)
            {
                Err(d) => AuthorizeResult {
                    generator,
                    allowed: false,
                    code: Some(d.code),
                    message: d.message,
                },
                Ok(_) if !snap.generators.contains_key(generator.as_str()) => AuthorizeResult {
                    message: format!("generator {generator:?} does not exist"),
                    generator,
                    allowed: false,
                    code: Some(ErrorCode::GeneratorNotFound),
                },
                Ok(a) => AuthorizeResult {
                    generator,
                    allowed: true,
                    code: None,
                    message: format!("allowed by Authorization {:?}", a.rule),
                },
            }
        })
        .collect();
    Ok(Json(AuthorizeResponse { identity, results }))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// The federation's OIDC discovery document, when it is an issuer (`--issuer-url`).
async fn oidc_discovery(State(state): State<AppState>) -> Result<Response, ApiError> {
    oidc_document(&state, esi_backends::identity::Issuer::discovery_json)
}

/// The federation's JWKS, when it is an issuer.
async fn oidc_jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    oidc_document(&state, esi_backends::identity::Issuer::jwks_json)
}

/// One of the issuer's public JSON documents, cacheable for five minutes by relying parties
/// and proxies (a rotation publishes the new key long before it signs); 404 on a federation
/// that is no issuer.
fn oidc_document(
    state: &AppState,
    doc: fn(&esi_backends::identity::Issuer) -> &str,
) -> Result<Response, ApiError> {
    let issuer = state.issuer.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            "this federation is not configured as an OIDC issuer",
        )
    })?;
    let mut resp = Response::new(Body::from(doc(issuer).to_owned()));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(resp)
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    snapshot(&state).map(|_| "ready\n")
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render();
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
