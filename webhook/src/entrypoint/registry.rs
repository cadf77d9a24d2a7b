//! The part of the OCI Distribution API that `entrypointLookup` reads: an image's manifest
//! (an index resolved to the webhook's own platform) and its configuration blob, with the
//! registry's Basic or token authentication. Every answer is read up to a bound (a manifest
//! and an index 4 MiB, Distribution's own limit on push; a token answer 64 KiB; the
//! configuration the size its manifest gives, itself at most 4 MiB) and checked against its
//! digest, so a registry on the list cannot make the webhook hold more than that per read,
//! nor hand it bytes other than the ones a digest names. Redirects (registries send blobs to
//! their storage) are followed over HTTPS only; the registry's `Authorization` is not sent to
//! another host.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use oci_spec::distribution::Reference;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use esi_backends::http::{ReadError, read_limited};

use super::{LookupError, Platform};
use crate::locked;

/// Largest manifest or image index read: what the Distribution registry accepts on push.
pub(super) const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest image configuration read (real ones are a few KB, tens of KB with a long history).
pub(super) const MAX_CONFIG_BYTES: usize = 4 << 20;
/// Largest token answer read (Docker Hub's are ~2 KB, a cloud registry's JWT a few KB).
const MAX_TOKEN_BYTES: usize = 64 << 10;
/// How much of an error answer is read, for the log.
const MAX_ERROR_BYTES: usize = 4 << 10;
/// How long a token lives when its answer does not say (the token specification's default).
const DEFAULT_TOKEN_SECONDS: u64 = 60;
/// Most repositories whose authorization is kept.
const MAX_GRANTS: usize = 1024;
/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

/// The manifest types asked for, images and indexes, OCI and Docker.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Who the webhook is to a registry.
#[derive(Debug)]
pub enum Credentials {
    /// Nobody.
    Anonymous,
    /// A user and password (sent as Basic, or to the registry's token service).
    Basic {
        /// The user.
        user: String,
        /// The password (redacted in `Debug`).
        password: SecretString,
    },
}

impl Credentials {
    /// The `Authorization` value of Basic authentication, marked sensitive.
    fn basic(&self) -> Option<HeaderValue> {
        let Self::Basic { user, password } = self else {
            return None;
        };
        let pair = format!("{user}:{}", password.expose_secret());
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut value = HeaderValue::try_from(format!("Basic {encoded}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// How the registry was read, for a refusal.
    pub(super) fn how(&self) -> &'static str {
        match self {
            Self::Anonymous => "anonymously; list the registry in entrypointLookup.credentialsFile",
            Self::Basic { .. } => "with the credentials of entrypointLookup.credentialsFile",
        }
    }
}

/// An `Authorization` a registry accepted for a repository, until when, and with which
/// credentials it was obtained (their Basic value, sensitive; `None` anonymously): a token
/// obtained with credentials the file no longer holds is not used again.
#[derive(Clone)]
struct Grant {
    header: HeaderValue,
    until: Option<Instant>,
    basis: Option<HeaderValue>,
}

/// An image's configuration blob and its manifest's digest.
pub(super) type Config = (Vec<u8>, String);

/// What [`Registries::image_configs`] read.
pub(super) enum Configs {
    /// The image is not an index: its configuration serves every platform.
    Any(Config),
    /// The index's image for each platform asked, in order.
    PerPlatform(Vec<Result<Config, LookupError>>),
}

/// A reader of registries, keeping the authorization each repository got.
pub(super) struct Registries {
    http: reqwest::Client,
    /// Per `registry/repository`.
    grants: Mutex<HashMap<String, Grant>>,
}

/// One repository being read, and as whom.
struct Repository<'a> {
    /// `https://REGISTRY/v2/REPOSITORY`.
    base: String,
    /// `REGISTRY/REPOSITORY`, the key of its grant.
    key: String,
    /// The token scope to ask for.
    scope: String,
    credentials: &'a Credentials,
    /// `credentials` as a Basic `Authorization` value, built once.
    basic: Option<HeaderValue>,
}

impl Registries {
    /// A reader over `tls`, each request (body included) bounded by `timeout`.
    pub(super) fn new(tls: rustls::ClientConfig, timeout: Duration) -> Result<Self, String> {
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if attempt.url().scheme() != "https" {
                let to = attempt.url().clone();
                attempt.error(format!("a redirect to {to}, which is not https://"))
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(redirects)
            .user_agent(concat!("esi-webhook/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self {
            http,
            grants: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration blob of the image `reference` names, and the digest of that image's
    /// manifest: one for every platform when it is not an index, else its image for each of
    /// `platforms` (read at once; the index itself is read once).
    pub(super) async fn image_configs(
        &self,
        reference: &Reference,
        credentials: &Credentials,
        platforms: &[&Platform],
    ) -> Result<Configs, LookupError> {
        let registry = reference.resolve_registry();
        let repo = Repository {
            base: format!("https://{registry}/v2/{}", reference.repository()),
            key: format!("{registry}/{}", reference.repository()),
            scope: format!("repository:{}:pull", reference.repository()),
            credentials,
            basic: credentials.basic(),
        };
        let pinned = reference.digest();
        let named = pinned.or(reference.tag()).unwrap_or("latest");
        let (body, digest) = self.manifest(&repo, named, pinned).await?;
        let entries = match Manifest::parse(&body)? {
            Manifest::Image(image) => {
                return Ok(Configs::Any((self.config(&repo, image).await?, digest)));
            }
            Manifest::Index(entries) => entries,
        };
        let repo = &repo;
        let entries = &entries;
        let each = platforms.iter().map(|platform| async move {
            let chosen = choose(entries, platform)
                .ok_or_else(|| LookupError::NoPlatform((*platform).clone()))?;
            let (body, digest) = self.manifest(repo, &chosen, Some(&chosen)).await?;
            match Manifest::parse(&body)? {
                Manifest::Image(image) => Ok((self.config(repo, image).await?, digest)),
                Manifest::Index(_) => Err(LookupError::Unavailable(format!(
                    "{}: the index's entry for {platform} is another index",
                    repo.key
                ))),
            }
        });
        Ok(Configs::PerPlatform(
            futures_util::future::join_all(each).await,
        ))
    }

    /// The configuration blob `manifest` names, checked against its size and digest.
    async fn config(
        &self,
        repo: &Repository<'_>,
        manifest: ImageManifest,
    ) -> Result<Vec<u8>, LookupError> {
        let config = manifest.config;
        let size = usize::try_from(config.size)
            .ok()
            .filter(|size| *size <= MAX_CONFIG_BYTES)
            .ok_or(LookupError::TooLarge(config.size))?;
        let url = format!("{}/blobs/{}", repo.base, config.digest);
        let res = self.get(repo, &url, None).await?;
        let data = read_limited(res, size).await.map_err(|e| match e {
            ReadError::TooLarge => LookupError::Unavailable(format!(
                "{url}: the registry sent more than the {size} bytes the manifest gives the \
                 configuration"
            )),
            ReadError::Failed(e) => LookupError::Unavailable(failed(&url, &e)),
        })?;
        if digest_of(&data, &config.digest)? != config.digest {
            return Err(LookupError::Unavailable(format!(
                "{url}: the configuration's bytes do not match its digest"
            )));
        }
        Ok(data)
    }

    /// The manifest `named` (a tag or a digest) and its digest, checked against `pinned` and
    /// the registry's `Docker-Content-Digest`.
    async fn manifest(
        &self,
        repo: &Repository<'_>,
        named: &str,
        pinned: Option<&str>,
    ) -> Result<(Vec<u8>, String), LookupError> {
        let url = format!("{}/manifests/{named}", repo.base);
        let res = self.get(repo, &url, Some(MANIFEST_TYPES)).await?;
        let given = res
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_limited(res, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => LookupError::ManifestTooLarge,
                ReadError::Failed(e) => LookupError::Unavailable(failed(&url, &e)),
            })?;
        let expected = pinned.or(given.as_deref());
        let digest = digest_of(&body, expected.unwrap_or("sha256:"))?;
        if expected.is_some_and(|e| e != digest) {
            return Err(LookupError::Unavailable(format!(
                "{url}: the manifest's bytes do not match the digest {}",
                expected.unwrap_or_default()
            )));
        }
        Ok((body, digest))
    }

    /// GETs `url` with the repository's grant, answering one challenge of the registry; any
    /// answer but a success is the error it means.
    async fn get(
        &self,
        repo: &Repository<'_>,
        url: &str,
        accept: Option<&'static str>,
    ) -> Result<reqwest::Response, LookupError> {
        let unavailable = |e: reqwest::Error| LookupError::Unavailable(failed(url, &e));
        let mut challenged = false;
        loop {
            let mut req = self.http.get(url);
            if let Some(accept) = accept {
                req = req.header(ACCEPT, accept);
            }
            if let Some(grant) = self.grant(repo) {
                req = req.header(AUTHORIZATION, grant);
            }
            let res = req.send().await.map_err(unavailable)?;
            if res.status() == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let grant = self.answer(repo, res.headers()).await?;
                let mut grants = locked(&self.grants);
                if grants.len() >= MAX_GRANTS {
                    grants.clear();
                }
                grants.insert(repo.key.clone(), grant);
                continue;
            }
            return refusal(res, url, repo.credentials).await;
        }
    }

    /// The grant kept for `repo`, unless it expired or was obtained with other credentials.
    fn grant(&self, repo: &Repository<'_>) -> Option<HeaderValue> {
        let grants = locked(&self.grants);
        let grant = grants.get(&repo.key)?;
        (grant.until.is_none_or(|until| Instant::now() < until) && grant.basis == repo.basic)
            .then(|| grant.header.clone())
    }

    /// The authorization that answers a 401's challenge: the credentials as Basic, or a token
    /// from the registry's token service (asked with the credentials when there are some).
    async fn answer(
        &self,
        repo: &Repository<'_>,
        headers: &HeaderMap,
    ) -> Result<Grant, LookupError> {
        let refused = || LookupError::Unauthorized(repo.credentials.how());
        let challenges = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let Some(challenge) = Challenge::read(&challenges) else {
            return Err(refused());
        };
        let (realm, service) = match challenge {
            Challenge::Basic => {
                let header = repo.basic.clone().ok_or_else(refused)?;
                return Ok(Grant {
                    basis: Some(header.clone()),
                    header,
                    until: None,
                });
            }
            Challenge::Bearer { realm, service } => (realm, service),
        };
        let mut token_url = reqwest::Url::parse(&realm).map_err(|_| {
            LookupError::Unavailable(format!(
                "{}: the token service {realm:?} is not a URL",
                repo.key
            ))
        })?;
        if token_url.scheme() != "https" {
            return Err(LookupError::Unavailable(format!(
                "{}: the token service {realm} is not https://",
                repo.key
            )));
        }
        token_url
            .query_pairs_mut()
            .append_pair("scope", &repo.scope)
            .extend_pairs(service.as_deref().map(|s| ("service", s)));
        let mut req = self.http.get(token_url.clone());
        if let Some(basic) = &repo.basic {
            req = req.header(AUTHORIZATION, basic.clone());
        }
        let url = token_url.as_str();
        let res = req
            .send()
            .await
            .map_err(|e| LookupError::Unavailable(failed(url, &e)))?;
        let res = refusal(res, url, repo.credentials).await?;
        let body = read_limited(res, MAX_TOKEN_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => LookupError::Unavailable(format!(
                    "{url}: the token answer is larger than {MAX_TOKEN_BYTES} bytes"
                )),
                ReadError::Failed(e) => LookupError::Unavailable(failed(url, &e)),
            })?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            LookupError::Unavailable(format!("{url}: the answer is not a token's JSON"))
        })?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| LookupError::Unavailable(format!("{url}: the answer has no token")))?;
        let mut header = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
            LookupError::Unavailable(format!("{url}: the token is not a header value"))
        })?;
        header.set_sensitive(true);
        let seconds = answer.expires_in.unwrap_or(DEFAULT_TOKEN_SECONDS);
        Ok(Grant {
            header,
            until: Some(Instant::now() + Duration::from_secs(seconds.min(24 * 3600))),
            basis: repo.basic.clone(),
        })
    }
}

/// A token service's answer (the Docker token specification; `access_token` is OAuth 2's).
#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// The challenge of a 401 the webhook can answer: a token service's (preferred) or Basic.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    /// The challenge to answer among `WWW-Authenticate`'s: Bearer with a realm, else Basic.
    fn read(header: &str) -> Option<Self> {
        let mut basic = false;
        for challenge in http_auth::ChallengeParser::new(header) {
            let Ok(challenge) = challenge else {
                break;
            };
            if challenge.scheme.eq_ignore_ascii_case("basic") {
                basic = true;
            } else if challenge.scheme.eq_ignore_ascii_case("bearer") {
                let param = |name: &str| {
                    challenge
                        .params
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.to_unescaped())
                };
                if let Some(realm) = param("realm") {
                    return Some(Self::Bearer {
                        realm,
                        service: param("service"),
                    });
                }
            }
        }
        basic.then_some(Self::Basic)
    }
}

/// `res` when it is a success, else the error its status and body mean.
async fn refusal(
    res: reqwest::Response,
    url: &str,
    credentials: &Credentials,
) -> Result<reqwest::Response, LookupError> {
    let status = res.status();
    if status.is_success() {
        return Ok(res);
    }
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Err(LookupError::Unauthorized(credentials.how()));
    }
    if status == StatusCode::NOT_FOUND {
        return Err(LookupError::NotFound);
    }
    let body = read_limited(res, MAX_ERROR_BYTES).await.unwrap_or_default();
    #[derive(Deserialize)]
    struct Envelope {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        code: String,
    }
    let codes = serde_json::from_slice::<Envelope>(&body)
        .map(|e| e.errors.into_iter().map(|e| e.code).collect::<Vec<_>>())
        .unwrap_or_default();
    if codes.iter().any(|c| {
        matches!(
            c.as_str(),
            "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "BLOB_UNKNOWN" | "NOT_FOUND"
        )
    }) {
        return Err(LookupError::NotFound);
    }
    if codes
        .iter()
        .any(|c| matches!(c.as_str(), "UNAUTHORIZED" | "DENIED"))
    {
        return Err(LookupError::Unauthorized(credentials.how()));
    }
    let text: String = String::from_utf8_lossy(&body)
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Err(LookupError::Unavailable(format!(
        "{url}: HTTP {status}: {}",
        text.trim()
    )))
}

/// The digest of `data` with the algorithm `like` names (`sha256:` or `sha512:`).
fn digest_of(data: &[u8], like: &str) -> Result<String, LookupError> {
    let (name, algorithm) = match like.split_once(':').map(|(a, _)| a) {
        Some("sha256") => ("sha256", &aws_lc_rs::digest::SHA256),
        Some("sha512") => ("sha512", &aws_lc_rs::digest::SHA512),
        _ => {
            return Err(LookupError::Unavailable(format!(
                "the digest {like:?} is not sha256 or sha512"
            )));
        }
    };
    let digest = aws_lc_rs::digest::digest(algorithm, data);
    let mut out = String::with_capacity(name.len() + 1 + 2 * digest.as_ref().len());
    out.push_str(name);
    out.push(':');
    for byte in digest.as_ref() {
        use std::fmt::Write as _;
        let _ = write!(out, "{byte:02x}");
    }
    Ok(out)
}

/// `url: error: cause: cause`, reqwest's causes included (its own text is only the first).
fn failed(url: &str, e: &reqwest::Error) -> String {
    format!("{url}: {}", esi_backends::error_chain(e))
}

/// What a manifest is: an image's (its configuration's descriptor) or an index's entries.
enum Manifest {
    Image(ImageManifest),
    Index(Vec<IndexEntry>),
}

struct ImageManifest {
    config: Descriptor,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    size: i64,
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: String,
    platform: Option<EntryPlatform>,
}

#[derive(Deserialize)]
struct EntryPlatform {
    architecture: String,
    os: String,
    variant: Option<String>,
}

impl Manifest {
    /// Reads an image manifest or an index, OCI's or Docker's schema 2.
    fn parse(body: &[u8]) -> Result<Self, LookupError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Any {
            schema_version: Option<u32>,
            media_type: Option<String>,
            config: Option<Descriptor>,
            manifests: Option<Vec<IndexEntry>>,
        }
        let any: Any = serde_json::from_slice(body)
            .map_err(|e| LookupError::Unavailable(format!("the manifest is not one: {e}")))?;
        if any.schema_version != Some(2) {
            return Err(LookupError::Unavailable(format!(
                "the manifest's schemaVersion is {:?}, not 2",
                any.schema_version
            )));
        }
        let index = matches!(
            any.media_type.as_deref(),
            Some(
                "application/vnd.oci.image.index.v1+json"
                    | "application/vnd.docker.distribution.manifest.list.v2+json"
            )
        );
        match (any.config, any.manifests) {
            (Some(config), _) if !index => Ok(Self::Image(ImageManifest { config })),
            (_, Some(entries)) => Ok(Self::Index(entries)),
            _ => Err(LookupError::Unavailable(format!(
                "the manifest ({}) is neither an image's nor an index",
                any.media_type.as_deref().unwrap_or("no mediaType")
            ))),
        }
    }
}

/// The digest of the first entry of `entries` for `platform`.
fn choose(entries: &[IndexEntry], platform: &Platform) -> Option<String> {
    platform.fallbacks().iter().find_map(|wanted| {
        entries
            .iter()
            .find(|e| {
                e.platform
                    .as_ref()
                    .is_some_and(|p| wanted.matches(&p.os, &p.architecture, p.variant.as_deref()))
            })
            .map(|e| e.digest.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_challenge_is_answered_before_basic() {
        assert_eq!(
            Challenge::read(
                r#"Basic realm="x", Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
            })
        );
        assert_eq!(
            Challenge::read(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::read(r#"bearer realm="https://a/t""#),
            Some(Challenge::Bearer {
                realm: "https://a/t".into(),
                service: None
            })
        );
        for unanswerable in ["", "Negotiate", "Bearer service=\"x\"", "garbage \u{1}"] {
            assert_eq!(Challenge::read(unanswerable), None, "{unanswerable:?}");
        }
    }

    /// The entry [`choose`] takes in the index `json` for `platform`.
    fn choose_in(json: &[u8], platform: &str) -> Option<String> {
        let Ok(Manifest::Index(entries)) = Manifest::parse(json) else {
            panic!("not an index");
        };
        choose(&entries, &platform.parse().unwrap())
    }

    #[test]
    fn a_manifest_is_an_image_or_an_index() {
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:aa","size":7},"layers":[]}"#;
        assert!(matches!(
            Manifest::parse(image),
            Ok(Manifest::Image(ImageManifest { config })) if config.size == 7
        ));
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"digest":"sha256:bb","platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:cc","platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"digest":"sha256:dd","platform":{"os":"linux","architecture":"arm","variant":"v6"}},
            {"digest":"sha256:ee","platform":{"os":"linux","architecture":"arm","variant":"v7"}},
            {"digest":"sha256:ff","platform":{"os":"unknown","architecture":"unknown"}}]}"#;
        let chosen = |p: &str| choose_in(index, p);
        assert_eq!(chosen("linux/amd64").as_deref(), Some("sha256:bb"));
        // Without a variant, any; with one, that one.
        assert_eq!(chosen("linux/arm64").as_deref(), Some("sha256:cc"));
        assert_eq!(chosen("linux/arm").as_deref(), Some("sha256:dd"));
        assert_eq!(chosen("linux/arm/v7").as_deref(), Some("sha256:ee"));
        // No arm64/v9 image: the 32-bit arm one an arm64 node runs, as containerd falls back.
        assert_eq!(chosen("linux/arm64/v9").as_deref(), Some("sha256:ee"));
        assert_eq!(chosen("linux/riscv64"), None);
        // An entry without a variant is its architecture's default one, as containerd
        // reads it; a bare number is that version.
        let plain = br#"{"schemaVersion":2,"manifests":[
            {"digest":"sha256:11","platform":{"os":"linux","architecture":"arm64"}},
            {"digest":"sha256:22","platform":{"os":"linux","architecture":"arm"}},
            {"digest":"sha256:33","platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:44","platform":{"os":"linux","architecture":"riscv64"}},
            {"digest":"sha256:55","platform":{"os":"linux","architecture":"ppc64le","variant":"8"}}]}"#;
        let chosen = |p: &str| choose_in(plain, p);
        assert_eq!(chosen("linux/arm64/v8").as_deref(), Some("sha256:11"));
        assert_eq!(chosen("linux/arm/v7").as_deref(), Some("sha256:22"));
        assert_eq!(chosen("linux/amd64/v1").as_deref(), Some("sha256:33"));
        assert_eq!(chosen("linux/ppc64le/v8").as_deref(), Some("sha256:55"));
        assert_eq!(chosen("linux/riscv64/v1"), None);
        // No image for the platform itself: the one its nodes also run, as containerd
        // falls back (lower amd64 and arm versions, 386 on amd64, 32-bit arm on arm64).
        assert_eq!(chosen("linux/amd64/v3").as_deref(), Some("sha256:33"));
        assert_eq!(chosen("linux/arm/v6"), None);
        let older = br#"{"schemaVersion":2,"manifests":[
            {"digest":"sha256:a6","platform":{"os":"linux","architecture":"arm","variant":"v6"}},
            {"digest":"sha256:a5","platform":{"os":"linux","architecture":"arm","variant":"v5"}},
            {"digest":"sha256:86","platform":{"os":"linux","architecture":"386"}},
            {"digest":"sha256:w2","platform":{"os":"windows","architecture":"amd64","variant":"v2"}}]}"#;
        let chosen = |p: &str| choose_in(older, p);
        assert_eq!(chosen("linux/arm/v7").as_deref(), Some("sha256:a6"));
        assert_eq!(chosen("linux/arm/v6").as_deref(), Some("sha256:a6"));
        assert_eq!(chosen("linux/arm/v5").as_deref(), Some("sha256:a5"));
        assert_eq!(chosen("linux/arm64").as_deref(), Some("sha256:a6"));
        assert_eq!(chosen("linux/amd64").as_deref(), Some("sha256:86"));
        assert_eq!(chosen("windows/amd64/v3").as_deref(), Some("sha256:w2"));
        assert_eq!(chosen("linux/s390x"), None);
        assert_eq!(chosen("windows/arm64"), None);
        assert_eq!(choose_in(index, "windows/amd64"), None);
        assert_eq!(choose(&[], &Platform::own()), None);
        for (bad, why) in [
            (
                &br#"{"schemaVersion":1,"fsLayers":[]}"#[..],
                "schemaVersion",
            ),
            (br#"{"schemaVersion":2}"#, "neither"),
            (b"[]", "not one"),
        ] {
            let Err(LookupError::Unavailable(e)) = Manifest::parse(bad) else {
                panic!("{bad:?} was read");
            };
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn digests_are_sha256_or_sha512() {
        assert_eq!(
            digest_of(b"", "sha256:").unwrap(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(
            digest_of(b"", "sha512:x")
                .unwrap()
                .starts_with("sha512:cf83e135")
        );
        assert!(matches!(
            digest_of(b"", "md5:x"),
            Err(LookupError::Unavailable(_))
        ));
    }

    #[test]
    fn basic_credentials_are_a_sensitive_header() {
        let c = Credentials::Basic {
            user: "bot".into(),
            password: SecretString::from("hunter2"),
        };
        let header = c.basic().unwrap();
        assert!(header.is_sensitive());
        assert_eq!(header, "Basic Ym90Omh1bnRlcjI=");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(Credentials::Anonymous.basic().is_none());
    }
}
