//! `AdmissionReview` v1 in, `AdmissionReview` v1 out.
//!
//! Requests are read into [`crate::pod`]'s types (the fields the webhook reads); a request that
//! does not read is read again with kube-core's types, whose errors say what is wrong. The
//! response is our own small type: kube-core 5's
//! `AdmissionResponse` serializes `patch` as a JSON array of numbers, while the API server
//! expects the base64 string of the JSON patch (`[]byte` in Go). A test pins the wire format.
//! Every response carries the request's `uid`, including denials of malformed requests when
//! the `uid` can still be read.

use std::collections::BTreeMap;

use esi_api::json::Object;
use k8s_openapi::api::core::v1::Pod as FullPod;
use kube_core::admission::AdmissionReview;
use serde::{Deserialize as _, Serialize};
use serde_json::Value;
use serde_json::error::Category;

use crate::config::WebhookConfig;
use crate::mutate::{self, Outcome};
use crate::pod::{AdmissionRequest, Operation, Pod};

/// The `apiVersion` of `AdmissionReview` this webhook speaks.
pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";

/// The outcome class of one review, a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Patched.
    Injected,
    /// Admitted unchanged (not opted in, already injected, excluded namespace, not a Pod CREATE).
    Skipped,
    /// Denied: the Pod cannot be injected correctly.
    Denied,
    /// Denied: the request itself was malformed.
    Invalid,
}

impl Decision {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Injected => "injected",
            Self::Skipped => "skipped",
            Self::Denied => "denied",
            Self::Invalid => "invalid",
        }
    }
}

/// The `AdmissionReview` the webhook answers with; [`ReviewResponse::to_json`] writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewResponse {
    /// The answer.
    pub response: AdmissionAnswer,
}

/// The answer on the wire, all but its patch: serde_json would scan the ~5 KB of base64 for
/// characters to escape, which base64 never has (the scan cost more than the encoding), so
/// [`ReviewResponse::to_json`] copies the patch in after these fields.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: WireAnswer<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireAnswer<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a AnswerStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

/// Base64 (standard alphabet, padded) of a JSON patch. Only [`Base64Patch::encode`] makes one,
/// so it never holds a character JSON escapes and goes into the answer as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base64Patch(String);

impl Base64Patch {
    /// Encodes the patch's JSON text.
    pub fn encode(patch: &[u8]) -> Self {
        let mut text = String::with_capacity(patch.len().div_ceil(3) * 4);
        base64_simd::STANDARD.encode_append(patch, &mut text);
        Base64Patch(text)
    }

    /// The base64 text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ReviewResponse {
    /// The `AdmissionReview` answer's JSON, written into one buffer sized for it.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let a = &self.response;
        let patch = a.patch.as_ref().map(Base64Patch::as_str);
        let mut body = Vec::with_capacity(512 + patch.map_or(0, str::len));
        serde_json::to_writer(
            &mut body,
            &WireReview {
                api_version: ADMISSION_API_VERSION,
                kind: "AdmissionReview",
                response: WireAnswer {
                    uid: &a.uid,
                    allowed: a.allowed,
                    status: a.status.as_ref(),
                    patch_type: a.patch.as_ref().map(|_| "JSONPatch"),
                    warnings: &a.warnings,
                },
            },
        )?;
        if let Some(patch) = patch {
            // The two objects' closing braces come back after the patch.
            debug_assert!(body.ends_with(b"}}"));
            body.truncate(body.len() - 2);
            body.extend_from_slice(b",\"patch\":\"");
            body.extend_from_slice(patch.as_bytes());
            body.extend_from_slice(b"\"}}");
        }
        Ok(body)
    }
}

/// `response` of an `AdmissionReview`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionAnswer {
    /// The request's `uid`, copied.
    pub uid: String,
    /// Whether the Pod is admitted.
    pub allowed: bool,
    /// Why not, when denied.
    pub status: Option<AnswerStatus>,
    /// The JSON patch, sent with `patchType: JSONPatch`.
    pub patch: Option<Base64Patch>,
    /// Warnings shown to the client (`kubectl` prints them).
    pub warnings: Vec<String>,
}

/// The `metav1.Status` of a denial.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerStatus {
    /// HTTP-like code the API server returns to the client.
    pub code: u16,
    /// The message the user sees.
    pub message: String,
    /// `Forbidden` or `BadRequest`.
    pub reason: &'static str,
}

impl ReviewResponse {
    fn new(answer: AdmissionAnswer) -> Self {
        Self { response: answer }
    }

    fn deny(uid: String, code: u16, reason: &'static str, message: String) -> Self {
        Self::new(AdmissionAnswer {
            uid,
            allowed: false,
            status: Some(AnswerStatus {
                code,
                message,
                reason,
            }),
            patch: None,
            warnings: vec![],
        })
    }

    fn allow(uid: String, warnings: Vec<String>) -> Self {
        Self::new(AdmissionAnswer {
            uid,
            allowed: true,
            status: None,
            patch: None,
            warnings,
        })
    }
}

/// What a review decided, with the fields logs want.
#[derive(Debug, Clone)]
pub struct Reviewed {
    /// The answer to send.
    pub response: ReviewResponse,
    /// The outcome class.
    pub decision: Decision,
    /// Finer reason for logs (`not_opted_in`, a denial message, ...).
    pub detail: String,
    /// Namespace of the Pod, when known.
    pub namespace: String,
    /// Name (or generateName) of the Pod, when known.
    pub pod: String,
}

/// A Pod CREATE request, parsed, waiting for its decision.
#[derive(Debug, Clone)]
pub struct PodRequest {
    /// The request's `uid`.
    pub uid: String,
    /// The Pod's namespace (the request's, else the Pod's, else `default`).
    pub namespace: String,
    /// Name (or generateName) of the Pod.
    pub pod_name: String,
    /// The Pod as sent by the API server.
    pub pod: Box<Pod>,
}

/// The first step of a review: either the answer is already known, or a Pod awaits a decision.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// Malformed, or not a Pod CREATE: nothing more to decide.
    Answered(Box<Reviewed>),
    /// A Pod CREATE.
    Pod(PodRequest),
}

/// The `AdmissionReview` v1 the API server sends for the CREATE of `pod` in `namespace` (by the
/// ReplicaSet controller): for tests, tools and the benchmark.
pub fn pod_create_review(pod: &Value, namespace: &str, uid: &str) -> Value {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    serde_json::json!({
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": name,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                          "uid": "4a1b8f2e-0000-4000-8000-000000000001",
                          "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

/// Answers one `AdmissionReview` body without ServiceAccount defaults.
pub fn review(body: &[u8], cfg: &WebhookConfig) -> Reviewed {
    match parse(body) {
        Parsed::Answered(r) => *r,
        Parsed::Pod(req) => decide(req, None, cfg),
    }
}

/// The review as read on the fast path. kube-core's `AdmissionReview` flattens its `TypeMeta`,
/// which makes serde buffer the whole body before reading it; this envelope reads the same
/// fields in one pass. Read as an [`Object`], as are the request and its parts.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default, deserialize_with = "esi_api::json::optional_object")]
    request: Option<AdmissionRequest>,
}

/// Reads an `AdmissionReview` body; anything but a well-formed Pod CREATE is answered here.
pub fn parse(body: &[u8]) -> Parsed {
    // A well-formed review takes one typed pass; anything else is read again by the careful
    // path below, which says precisely what is wrong and still answers with the uid. The body
    // is checked as UTF-8 once, whole: read from bytes, serde_json checks each of a review's
    // ~90 strings on its own, 6 % of an admission.
    if let Ok(text) = std::str::from_utf8(body)
        && let Ok(Object(Envelope {
            api_version,
            request: Some(req),
            ..
        })) = crate::pod::budgeted(|| serde_json::from_str::<Object<Envelope>>(text))
        && api_version == ADMISSION_API_VERSION
    {
        return parse_request(req);
    }
    parse_carefully(body)
}

/// The longest message a denial carries; longer ones are cut, marked with `…`.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `message` as one line `kubectl` can print: control characters, line separators and bidi
/// controls escaped (they come from the Pod as sent, which the API server validates only after
/// the mutating webhooks: a container name may hold an escape sequence or a newline), and at
/// most [`MAX_MESSAGE_BYTES`] (a name list of a Pod with a thousand containers).
pub fn one_line(message: String) -> String {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if message.len() <= MAX_MESSAGE_BYTES && !message.chars().any(unsafe_char) {
        return message;
    }
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_BYTES + 8));
    for c in message.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > MAX_MESSAGE_BYTES {
            break;
        }
    }
    if out.len() > MAX_MESSAGE_BYTES {
        esi_api::json::truncate_at_char_boundary(&mut out, MAX_MESSAGE_BYTES - '…'.len_utf8());
        out.push('…');
    }
    out
}

fn invalid(uid: String, message: String) -> Parsed {
    let message = one_line(message);
    Parsed::Answered(Box::new(Reviewed {
        response: ReviewResponse::deny(uid, 400, "BadRequest", message.clone()),
        decision: Decision::Invalid,
        detail: message,
        namespace: String::new(),
        pod: String::new(),
    }))
}

/// The largest malformed body the careful path explains with kube-core's types, which read
/// every field of a Pod into owned values (a 3-byte `{}` container becomes a k8s-openapi
/// `Container` of over a kilobyte). A larger one is explained by the webhook's own types,
/// under their budget ([`crate::pod::budgeted`]): a hostile body must not take more memory
/// than the webhook has. Reviews the API server sends pass the first read, whatever their size.
pub const EXPLAINED_IN_FULL: usize = 16 * 1024;

fn parse_carefully(body: &[u8]) -> Parsed {
    if body.len() > EXPLAINED_IN_FULL {
        return explain_briefly(body);
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return invalid(
                String::new(),
                format!("esi: malformed AdmissionReview JSON: {e}"),
            );
        }
    };
    let uid = value
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if value.get("apiVersion").and_then(Value::as_str) != Some(ADMISSION_API_VERSION) {
        return invalid(
            uid,
            format!("esi: only {ADMISSION_API_VERSION} AdmissionReview is supported"),
        );
    }
    let review = match AdmissionReview::<FullPod>::deserialize(&value) {
        Ok(r) => r,
        Err(e) => {
            return invalid(
                uid,
                format!(
                    "esi: AdmissionReview does not hold a valid Pod request: {}",
                    esi_api::json::without_values(&e.to_string())
                ),
            );
        }
    };
    if review.request.is_none() {
        return invalid(uid, "esi: AdmissionReview has no request".to_owned());
    }
    // kube-core read it; the webhook's own types read a subset of the same fields.
    match Object::<AdmissionRequest>::deserialize(&value["request"]) {
        Ok(Object(req)) => parse_request(req),
        Err(e) => invalid(
            uid,
            format!(
                "esi: AdmissionReview does not hold a valid Pod request: {}",
                esi_api::json::without_values(&e.to_string())
            ),
        ),
    }
}

/// The careful path for a body over [`EXPLAINED_IN_FULL`]: the uid, if one can be read,
/// and what the webhook's own types found wrong. Nothing is read into a value tree.
fn explain_briefly(body: &[u8]) -> Parsed {
    let uid = readable_uid(body).unwrap_or_default();
    // Read from bytes, serde_json checks the UTF-8 of the strings it keeps, not of those it
    // skips: a body the first read refused as a whole would read here, and be decided.
    if let Err(e) = std::str::from_utf8(body) {
        return invalid(
            uid,
            format!("esi: malformed AdmissionReview JSON: the body is not UTF-8 ({e})"),
        );
    }
    match crate::pod::budgeted(|| serde_json::from_slice::<Object<Envelope>>(body)).map(|o| o.0) {
        Err(e) if matches!(e.classify(), Category::Syntax | Category::Eof) => {
            invalid(uid, format!("esi: malformed AdmissionReview JSON: {e}"))
        }
        Err(e) => invalid(
            uid,
            format!(
                "esi: AdmissionReview does not hold a valid Pod request: {}",
                esi_api::json::without_values(&e.to_string())
            ),
        ),
        Ok(review) if review.api_version != ADMISSION_API_VERSION => invalid(
            uid,
            format!("esi: only {ADMISSION_API_VERSION} AdmissionReview is supported"),
        ),
        Ok(Envelope { request: None, .. }) => {
            invalid(uid, "esi: AdmissionReview has no request".to_owned())
        }
        Ok(Envelope {
            request: Some(req), ..
        }) => parse_request(req),
    }
}

/// `request.uid`, read member by member without building the rest: a member given twice is
/// taken the second time, as a [`Value`] takes it (a typed read refuses the body, and would
/// lose the uid a smaller body keeps).
fn readable_uid(body: &[u8]) -> Option<String> {
    type Members<'a> = BTreeMap<String, &'a serde_json::value::RawValue>;
    let top: Members<'_> = serde_json::from_slice(body).ok()?;
    let request: Members<'_> = serde_json::from_str(top.get("request")?.get()).ok()?;
    serde_json::from_str(request.get("uid")?.get()).ok()
}

fn parse_request(req: AdmissionRequest) -> Parsed {
    let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod" && req.sub_resource.is_none();
    if req.operation != Operation::Create || !is_pod {
        // Only Pod CREATE is registered; anything else is not ours to change.
        return Parsed::Answered(Box::new(Reviewed {
            response: ReviewResponse::allow(req.uid, vec![]),
            decision: Decision::Skipped,
            detail: "not_pod_create".into(),
            namespace: req.namespace.unwrap_or_default(),
            pod: req.name,
        }));
    }
    let Some(pod) = req.object else {
        return invalid(
            req.uid,
            "esi: Pod CREATE request without an object".to_owned(),
        );
    };
    let namespace = req
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".to_owned());
    let pod_name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();
    Parsed::Pod(PodRequest {
        uid: req.uid,
        namespace,
        pod_name,
        pod: Box::new(pod),
    })
}

/// Decides a Pod CREATE; `sa` holds the annotations of the Pod's ServiceAccount when they were
/// read (their `esi.dev/` keys are defaults the Pod overrides).
pub fn decide(
    req: PodRequest,
    sa: Option<&BTreeMap<String, String>>,
    cfg: &WebhookConfig,
) -> Reviewed {
    let outcome = mutate::mutate(&req.pod, &req.namespace, sa, cfg);
    answer(req, outcome, Vec::new())
}

/// The answer to a Pod CREATE whose decision is `outcome`, with `warnings` added to an
/// admission's own. A Pod whose containers' entrypoints were to be read and were not is
/// denied, naming them.
pub fn answer(
    req: PodRequest,
    outcome: Result<Outcome, mutate::Denial>,
    warnings: Vec<String>,
) -> Reviewed {
    let denial = match outcome {
        Ok(Outcome::Skip {
            reason,
            warnings: mut own,
        }) => {
            own.extend(warnings);
            return reviewed(
                req,
                ReviewResponse::allow(String::new(), own),
                Decision::Skipped,
                reason.as_str().to_owned(),
            );
        }
        Ok(Outcome::Patch {
            patch,
            warnings: mut own,
            ..
        }) => {
            own.extend(warnings);
            let answer = AdmissionAnswer {
                uid: String::new(),
                allowed: true,
                status: None,
                patch: Some(Base64Patch::encode(patch.as_bytes())),
                warnings: own,
            };
            return reviewed(
                req,
                ReviewResponse::new(answer),
                Decision::Injected,
                "injected".to_owned(),
            );
        }
        Ok(Outcome::NeedsEntrypoints(wanted)) => format!(
            "esi: the entrypoints of {} were not read from their images; set {}<container> or command",
            wanted
                .iter()
                .map(|w| format!("container {} ({})", w.container, w.image))
                .collect::<Vec<_>>()
                .join(", "),
            esi_api::inject::ANN_ENTRYPOINT_PREFIX
        ),
        Err(denial) => denial.0,
    };
    let message = one_line(denial);
    reviewed(
        req,
        ReviewResponse::deny(String::new(), 403, "Forbidden", message.clone()),
        Decision::Denied,
        message,
    )
}

/// The review of `req` answered with `response` (its UID set to the request's).
fn reviewed(
    req: PodRequest,
    mut response: ReviewResponse,
    decision: Decision,
    detail: String,
) -> Reviewed {
    response.response.uid = req.uid;
    Reviewed {
        response,
        decision,
        detail,
        namespace: req.namespace,
        pod: req.pod_name,
    }
}

/// Denies a Pod whose container `wanted` has no `command` and whose image's entrypoint could
/// not be read (`e` says why): `503 ServiceUnavailable` when a retry may succeed (the registry
/// did not answer), `403 Forbidden` otherwise. `note` says which `esi.dev/` keys the Pod
/// inherits from its ServiceAccount (they may be why it gets env vars at all).
pub fn deny_entrypoint(
    req: PodRequest,
    wanted: &mutate::EntrypointWanted,
    e: &crate::entrypoint::LookupError,
    note: Option<&str>,
) -> Reviewed {
    use crate::entrypoint::LookupError;
    let (code, reason) = match e {
        LookupError::Timeout(_) | LookupError::Unavailable(_) => (503, "ServiceUnavailable"),
        _ => (403, "Forbidden"),
    };
    let message = one_line(format!(
        "esi: container {c} has no command, and the entrypoint of its image {image} could not be read: {e}; \
         set the annotation {prefix}{c} to the image's ENTRYPOINT (plus CMD when the Pod sets no args) as a \
         JSON array, e.g. [\"/app/server\"], or set command in the Pod{note}",
        c = wanted.container,
        image = wanted.image,
        prefix = esi_api::inject::ANN_ENTRYPOINT_PREFIX,
        note = note.map(|n| format!(" {n}")).unwrap_or_default(),
    ));
    reviewed(
        req,
        ReviewResponse::deny(String::new(), code, reason, message.clone()),
        Decision::Denied,
        message,
    )
}

/// Denies a Pod whose ServiceAccount could not be read (`why` says what happened, for the user):
/// without its defaults the webhook cannot know what the Pod asked for. The API server shows
/// the message to the client; `503 ServiceUnavailable` tells it a retry may succeed.
pub fn deny_unavailable(req: PodRequest, service_account: &str, why: &str) -> Reviewed {
    let msg = one_line(format!(
        "esi: cannot read ServiceAccount {ns}/{service_account} for its esi.dev/ defaults: {why}; \
         the Pod was not admitted, retry later (an administrator can check the webhook's access \
         to the API server)",
        ns = req.namespace
    ));
    Reviewed {
        response: ReviewResponse::deny(req.uid, 503, "ServiceUnavailable", msg.clone()),
        decision: Decision::Denied,
        detail: msg,
        namespace: req.namespace,
        pod: req.pod_name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: &ReviewResponse) -> Value {
        serde_json::from_slice(&r.to_json().unwrap()).unwrap()
    }

    #[test]
    fn patch_is_a_base64_string_on_the_wire() {
        // kube-core 5's AdmissionResponse would write an array of numbers here; the API server
        // wants base64. Pin our format.
        let r = ReviewResponse::new(AdmissionAnswer {
            uid: "u".into(),
            allowed: true,
            status: None,
            patch: Some(Base64Patch::encode(b"[]")),
            warnings: vec![],
        });
        assert_eq!(
            wire(&r),
            serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": "u", "allowed": true, "patchType": "JSONPatch", "patch": "W10="}})
        );
        let warned = ReviewResponse::new(AdmissionAnswer {
            warnings: vec!["esi: \"w\"".into()],
            uid: "u\"2".into(),
            ..r.response
        });
        assert_eq!(
            wire(&warned)["response"],
            serde_json::json!({"uid": "u\"2", "allowed": true, "patchType": "JSONPatch",
                "patch": "W10=", "warnings": ["esi: \"w\""]})
        );
    }

    #[test]
    fn denials_and_plain_admissions_on_the_wire() {
        assert_eq!(
            wire(&ReviewResponse::deny(
                "u".into(),
                403,
                "Forbidden",
                "esi: no".into()
            )),
            serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": "u", "allowed": false,
                    "status": {"code": 403, "message": "esi: no", "reason": "Forbidden"}}})
        );
        assert_eq!(
            wire(&ReviewResponse::allow("u".into(), vec!["careful".into()]))["response"],
            serde_json::json!({"uid": "u", "allowed": true, "warnings": ["careful"]})
        );
    }

    fn body(review: &Value) -> Vec<u8> {
        serde_json::to_vec(review).unwrap()
    }

    /// A request the webhook's own types refuse is read again by kube-core's, whose message
    /// names the field; one that only the strict first read refuses (a duplicated key, which
    /// the API server never sends) is still decided.
    #[test]
    fn requests_read_by_both_paths() {
        let pod = serde_json::json!({"metadata": {"labels": {"esi.dev/inject": "false"}},
            "spec": {"containers": [{"name": "app"}]}});
        let r = review(
            &body(&pod_create_review(&pod, "team", "u1")),
            &WebhookConfig::default(),
        );
        assert_eq!(
            (r.decision, r.detail.as_str()),
            (Decision::Skipped, "not_opted_in")
        );
        assert_eq!(
            (r.namespace.as_str(), r.response.response.uid.as_str()),
            ("team", "u1")
        );

        let mut no_user = pod_create_review(&serde_json::json!({}), "team", "u1");
        no_user["request"]
            .as_object_mut()
            .unwrap()
            .remove("userInfo");
        let r = review(&body(&no_user), &WebhookConfig::default());
        assert_eq!(r.decision, Decision::Invalid);
        assert!(r.detail.contains("userInfo"), "{}", r.detail);
        assert_eq!(r.response.response.uid, "u1");

        let bad_pod = serde_json::json!({"spec": {"containers": [{"name": 7}]}});
        let r = review(
            &body(&pod_create_review(&bad_pod, "team", "u1")),
            &WebhookConfig::default(),
        );
        assert_eq!(r.decision, Decision::Invalid);
        assert!(r.detail.contains("valid Pod request"), "{}", r.detail);

        let text = String::from_utf8(body(&pod_create_review(
            &serde_json::json!({"spec": {}}),
            "team",
            "u1",
        )))
        .unwrap();
        let dup = text.replacen("\"uid\":\"u1\"", "\"uid\":\"u0\",\"uid\":\"u1\"", 1);
        assert_ne!(dup, text);
        let r = review(dup.as_bytes(), &WebhookConfig::default());
        assert_eq!(
            (r.decision, r.response.response.uid.as_str()),
            (Decision::Skipped, "u1")
        );
    }

    /// `text` with its first `é` written as Latin-1 (one byte, not UTF-8).
    fn latin1(text: &[u8]) -> Vec<u8> {
        let at = text
            .windows(2)
            .position(|w| w == "\u{e9}".as_bytes())
            .unwrap();
        let mut latin1 = text.to_vec();
        latin1.splice(at..at + 2, [0xe9]);
        latin1
    }

    /// Found by tests/hostile_admission.rs: a body over [`EXPLAINED_IN_FULL`] whose only
    /// invalid UTF-8 sat in a string the webhook skips (an env value) was read by the brief
    /// explanation and injected, where a smaller one was refused.
    #[test]
    fn a_large_body_that_is_not_utf8_is_refused_too() {
        let pod = serde_json::json!({
            "metadata": {"labels": {"esi.dev/inject": "true"},
                         "annotations": {"esi.dev/generators": "db=team/Password/p",
                                         "esi.dev/env": "A=db.k"}},
            "spec": {"securityContext": {"runAsUser": 1000},
                     "containers": [{"name": "app", "command": ["/app"],
                                     "env": [{"name": "X", "value": "\u{e9}"}],
                                     "image": "x".repeat(EXPLAINED_IN_FULL)}]}
        });
        let text = body(&pod_create_review(&pod, "team", "u1"));
        let latin1 = latin1(&text);
        assert_eq!(
            review(&text, &WebhookConfig::default()).decision,
            Decision::Denied,
            "no default federation URL: denied, but decided"
        );
        let r = review(&latin1, &WebhookConfig::default());
        assert_eq!(r.decision, Decision::Invalid, "{}", r.detail);
        assert!(r.detail.contains("not UTF-8"), "{}", r.detail);
    }

    /// The first read checks the body as UTF-8 once, whole; a body that is not UTF-8 is
    /// refused by the careful read, which says where.
    #[test]
    fn a_body_that_is_not_utf8_is_refused() {
        let pod = serde_json::json!({"metadata": {"name": "api-\u{e9}"}, "spec": {}});
        let text = body(&pod_create_review(&pod, "team", "u1"));
        let latin1 = latin1(&text);
        assert_eq!(
            review(&text, &WebhookConfig::default()).decision,
            Decision::Skipped
        );
        let r = review(&latin1, &WebhookConfig::default());
        assert_eq!(r.decision, Decision::Invalid);
        assert!(
            r.detail.contains("malformed AdmissionReview JSON"),
            "{}",
            r.detail
        );
        assert!(!r.response.response.allowed);
    }

    /// A list entry such as `{}` is 3 bytes of JSON and ~130 bytes read: a body of them is
    /// refused by the budget, not read into hundreds of megabytes.
    #[test]
    fn a_body_of_countless_entries_is_refused_by_the_budget() {
        let containers = vec![serde_json::json!({}); crate::pod::MAX_ENTRIES + 1];
        let pod = serde_json::json!({"spec": {"containers": containers}});
        let text = body(&pod_create_review(&pod, "team", "u1"));
        let r = review(&text, &WebhookConfig::default());
        assert_eq!(r.decision, Decision::Invalid);
        assert_eq!(r.response.response.uid, "u1");
        assert!(r.detail.contains("list and map entries"), "{}", r.detail);
        // Below the budget, the same shape is read.
        let pod = serde_json::json!({"spec": {"containers": vec![serde_json::json!({"name": "c"}); 1000]}});
        let r = review(
            &body(&pod_create_review(&pod, "team", "u1")),
            &WebhookConfig::default(),
        );
        assert_ne!(r.decision, Decision::Invalid, "{}", r.detail);
    }

    /// A malformed review is explained with its uid, never quoting a value (a Pod's env and
    /// annotations hold secrets), whether it is small enough for kube-core's types or not.
    #[test]
    fn a_malformed_review_is_explained_without_its_values() {
        for padding in [0, EXPLAINED_IN_FULL] {
            let pod = serde_json::json!({
                "metadata": {"annotations": {"pad": "x".repeat(padding)}},
                "spec": {"containers": [{"name": "app", "command": "s3cret-value"}]}
            });
            let text = body(&pod_create_review(&pod, "team", "u1"));
            assert_eq!(text.len() > EXPLAINED_IN_FULL, padding > 0);
            let r = review(&text, &WebhookConfig::default());
            assert_eq!(r.decision, Decision::Invalid);
            assert_eq!(r.response.response.uid, "u1");
            assert!(r.detail.contains("valid Pod request"), "{}", r.detail);
            assert!(!r.detail.contains("s3cret"), "{}", r.detail);
            let answer = String::from_utf8(r.response.to_json().unwrap()).unwrap();
            assert!(!answer.contains("s3cret"), "{answer}");
        }
    }

    #[test]
    fn messages_are_one_short_line() {
        assert_eq!(one_line("esi: plain".into()), "esi: plain");
        assert_eq!(
            one_line("esi: a\nb\u{1b}[2J\u{202e}c\u{2028}".into()),
            "esi: a\\nb\\u{1b}[2J\\u{202e}c\\u{2028}"
        );
        let long = one_line(format!("esi: {}", "é".repeat(MAX_MESSAGE_BYTES)));
        assert!(
            long.len() <= MAX_MESSAGE_BYTES && long.ends_with('…'),
            "{long}"
        );
    }

    /// Found by tests/hostile_admission.rs: a large body with `request` or its `uid` given
    /// twice was answered without the uid a smaller one got back.
    #[test]
    fn a_duplicated_uid_is_read_as_the_last_one_whatever_the_size() {
        for padding in [0, EXPLAINED_IN_FULL] {
            let pod = serde_json::json!({"metadata": {"annotations": {"pad": "x".repeat(padding)}},
                                         "spec": {"containers": 7}});
            let text = String::from_utf8(body(&pod_create_review(&pod, "team", "u1"))).unwrap();
            for dup in [
                text.replacen("\"uid\":\"u1\"", "\"uid\":null,\"uid\":\"u1\"", 1),
                text.replacen("\"request\":", "\"request\":null,\"request\":", 1),
            ] {
                assert_ne!(dup, text);
                let r = review(dup.as_bytes(), &WebhookConfig::default());
                assert_eq!(r.decision, Decision::Invalid, "{}", r.detail);
                assert_eq!(r.response.response.uid, "u1", "{padding}: {}", r.detail);
            }
        }
    }

    #[test]
    fn wrong_api_version_is_denied_with_uid() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#;
        let r = review(body, &WebhookConfig::default());
        assert_eq!(r.decision, Decision::Invalid);
        assert_eq!(r.response.response.uid, "x");
        assert!(!r.response.response.allowed);
    }
}
