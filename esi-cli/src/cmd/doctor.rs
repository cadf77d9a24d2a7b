//! `esi-cli doctor`: explains a failing setup, step by step, for a person or (`--json`) a
//! machine.
//!
//! 1. The token, decoded without trusting it: issuer, audiences, subject, Pod, expiry.
//! 2. The federation: reachable, over TLS or not (`/healthz`, `/readyz`).
//! 3. The identity the federation derives from the token (`GET /v1/whoami`), or the check that
//!    failed (`token_expired`, `audience_mismatch`, `unknown_issuer`, ...).
//! 4. Per generator, whether this identity may use it and, if not, which check failed — the
//!    federation's dry run (`POST /v1/authorize`: nothing minted, no rate limit consumed). With
//!    `--issue`, doctor also issues a real credential per allowed generator (its values are
//!    discarded, never shown) and revokes it at once when it has a lease, to test the backend.
//!
//! Exit status 0 when every check passed, 1 otherwise. Never prints the token or a credential.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use esi_api::inject::GeneratorRef;
use esi_api::{ErrorCode, Identity};
use serde::Serialize;

use crate::Global;
use crate::client::CallError;
use crate::cmd::fetch::{federation, parse_generator};
use crate::token::{Claims, Token};

/// Options of `doctor`.
pub struct Options {
    /// `--federation-url`.
    pub federation_url: Option<String>,
    /// `--ca-file`.
    pub ca_file: Option<PathBuf>,
    /// `--generator`.
    pub generators: Vec<String>,
    /// `--issue`.
    pub issue: bool,
    /// `--json`.
    pub json: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    ok: bool,
    token: TokenCheck,
    federation: FederationCheck,
    whoami: WhoamiCheck,
    generators: Vec<GeneratorCheck>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenCheck {
    ok: bool,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    claims: Option<Claims>,
    expired: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FederationCheck {
    ok: bool,
    url: String,
    tls: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthz: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    readyz: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WhoamiCheck {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<Identity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeneratorCheck {
    alias: String,
    generator: String,
    /// `true` allowed, `false` refused, absent when not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    authorized: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
    /// Keys of the issued credential (never values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    keys: Vec<String>,
    /// Whether the test credential was revoked again.
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked: Option<bool>,
}

/// A remedy for the codes a misconfiguration produces.
fn hint(code: ErrorCode, generator: Option<&str>) -> Option<String> {
    Some(match code {
        ErrorCode::TokenExpired => "the token has expired: the kubelet rotates projected tokens, so check that the token volume is projected (not a copied Secret); outside Kubernetes mint a fresh token".into(),
        ErrorCode::TokenNotYetValid => "the token is not valid yet: check the clocks of the node and the federation".into(),
        ErrorCode::AudienceMismatch => "the token's audience must be one of the Cluster's spec.audiences: fix esi.dev/token-audience or the Cluster resource".into(),
        ErrorCode::UnknownIssuer => "no Cluster resource has this token's issuer: register the cluster (spec.issuer must equal the token's iss)".into(),
        ErrorCode::InvalidToken => "the token's signature or shape was refused: check that the Cluster's keys (discovery, jwksUri or inline JWKS) are this cluster's".into(),
        ErrorCode::MissingToken => "no token was sent".into(),
        ErrorCode::PolicyDenied => format!(
            "add an Authorization whose subjects match this identity and whose generators include {}",
            generator.unwrap_or("the generator")
        ),
        ErrorCode::GeneratorNotFound => "no such generator: check its namespace/kind/name in the federation's configuration".into(),
        ErrorCode::RateLimited => "this identity hit its Authorization's rate limit".into(),
        ErrorCode::BackendUnavailable | ErrorCode::BackendRejected => "the generator's backend failed; the federation's logs have the detail (search for the request id)".into(),
        _ => return None,
    })
}

fn parse_check(s: &str) -> anyhow::Result<(String, GeneratorRef)> {
    match s.split_once('=') {
        Some((alias, g)) => Ok((alias.trim().to_owned(), parse_generator(g.trim())?)),
        None => Ok((s.to_owned(), parse_generator(s)?)),
    }
}

/// Runs `doctor`.
pub async fn run(g: &Global, opts: Options) -> anyhow::Result<ExitCode> {
    let spec = g.spec_from_env()?;
    let deadline = || Instant::now() + g.deadline.min(Duration::from_secs(15));

    // 1. The token.
    let token_path = g.token_path(spec.as_ref());
    let now = jiff::Timestamp::now();
    let mut token_check = TokenCheck {
        ok: false,
        path: token_path.display().to_string(),
        claims: None,
        expired: false,
        expires_in_seconds: None,
        error: None,
    };
    let token = match Token::read(&token_path) {
        Ok(t) => {
            match t.claims() {
                Ok(c) => {
                    token_check.expired = c.expired(now);
                    token_check.expires_in_seconds =
                        c.expires_at.map(|e| e.duration_since(now).as_secs());
                    token_check.ok = !token_check.expired && c.expires_at.is_some();
                    if c.expires_at.is_none() {
                        token_check.error = Some("the token has no exp claim".into());
                    } else if token_check.expired {
                        token_check.error = Some("the token has expired".into());
                    }
                    token_check.claims = Some(c);
                }
                Err(e) => token_check.error = Some(format!("{e:#}")),
            }
            Some(t)
        }
        Err(e) => {
            token_check.error = Some(format!("{e:#}"));
            None
        }
    };

    // 2. The federation.
    let client = federation(
        g,
        opts.federation_url.clone(),
        opts.ca_file.clone(),
        spec.as_ref(),
    );
    let mut fed = FederationCheck {
        ok: false,
        url: String::new(),
        tls: false,
        healthz: None,
        readyz: None,
        error: None,
    };
    let client = match client {
        Ok(c) => {
            fed.url = c.base().to_owned();
            fed.tls = c.base().starts_with("https://");
            match c.probe(esi_api::routes::HEALTHZ).await {
                Ok(status) => {
                    fed.healthz = Some(status);
                    fed.readyz = c.probe(esi_api::routes::READYZ).await.ok();
                    fed.ok = status == 200 && fed.readyz == Some(200);
                    if !fed.ok {
                        fed.error = Some(format!(
                            "unhealthy: /healthz {status}, /readyz {}",
                            fed.readyz.map_or("unreachable".into(), |s| s.to_string())
                        ));
                    }
                }
                Err(e) => fed.error = Some(e),
            }
            Some(c)
        }
        Err(e) => {
            fed.error = Some(format!("{e:#}"));
            None
        }
    };

    // 3. Identity.
    let mut whoami = WhoamiCheck {
        ok: false,
        identity: None,
        code: None,
        message: None,
        hint: None,
    };
    let reachable = fed.healthz.is_some();
    if let (Some(c), Some(t), true) = (&client, &token, reachable) {
        match c.whoami(t, deadline()).await {
            Ok(id) => {
                whoami.ok = true;
                whoami.identity = Some(id);
            }
            Err(e) => fill_error(
                &e,
                None,
                &mut whoami.code,
                &mut whoami.message,
                &mut whoami.hint,
            ),
        }
    } else {
        whoami.message = Some("not checked: no usable token or federation".into());
    }

    // 4. Generators.
    let mut targets: Vec<(String, GeneratorRef)> = Vec::new();
    for s in &opts.generators {
        targets.push(parse_check(s)?);
    }
    if targets.is_empty()
        && let Some(spec) = &spec
    {
        targets.extend(spec.generators.iter().map(|(a, g)| (a.clone(), g.clone())));
    }
    let mut gens = Vec::new();
    let mut refs = Vec::new();
    for (alias, gref) in targets {
        let check = GeneratorCheck {
            alias,
            generator: gref.to_string(),
            authorized: None,
            code: None,
            message: None,
            hint: None,
            keys: Vec::new(),
            revoked: None,
        };
        gens.push(check);
        refs.push(gref);
    }
    if let (Some(c), Some(t)) = (&client, &token)
        && whoami.ok
        && !gens.is_empty()
    {
        let names: Vec<String> = gens.iter().map(|g| g.generator.clone()).collect();
        match c.authorize(t, &names, deadline()).await {
            Ok(verdicts) => {
                for (check, v) in gens.iter_mut().zip(verdicts.results) {
                    check.authorized = Some(v.allowed);
                    check.message = Some(v.message);
                    check.code = v.code.map(|c| c.to_string());
                    check.hint = v.code.and_then(|code| hint(code, Some(&check.generator)));
                }
            }
            Err(e) => {
                for check in &mut gens {
                    fill_error(
                        &e,
                        Some(&check.generator),
                        &mut check.code,
                        &mut check.message,
                        &mut check.hint,
                    );
                }
            }
        }
        if opts.issue {
            for (check, gref) in gens.iter_mut().zip(&refs) {
                if check.authorized != Some(true) {
                    continue;
                }
                match c.generate(t, gref, deadline()).await {
                    Ok(env) => {
                        check.keys = env.data.keys().cloned().collect();
                        if let Some(lease) = &env.lease {
                            check.revoked = Some(c.revoke(t, lease, deadline()).await.is_ok());
                        }
                    }
                    Err(e) => {
                        check.authorized = Some(false);
                        fill_error(
                            &e,
                            Some(&check.generator),
                            &mut check.code,
                            &mut check.message,
                            &mut check.hint,
                        );
                    }
                }
            }
        }
    } else {
        for check in &mut gens {
            check.message = Some("not checked: the identity check failed".into());
        }
    }

    let ok =
        token_check.ok && fed.ok && whoami.ok && gens.iter().all(|c| c.authorized == Some(true));
    let report = Report {
        ok,
        token: token_check,
        federation: fed,
        whoami,
        generators: gens,
    };
    let text = if opts.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        human(&report)
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn fill_error(
    e: &CallError,
    generator: Option<&str>,
    code: &mut Option<String>,
    message: &mut Option<String>,
    hint_out: &mut Option<String>,
) {
    match e {
        CallError::Refused {
            code: c,
            message: m,
            ..
        } => {
            *code = c.map(|c| c.to_string());
            *message = Some(m.clone());
            *hint_out = c.and_then(|c| hint(c, generator));
        }
        other => *message = Some(other.to_string()),
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "ok  " } else { "FAIL" }
}

fn human(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let t = &r.token;
    let _ = writeln!(o, "[{}] token       {}", mark(t.ok), t.path);
    if let Some(c) = &t.claims {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let _ = writeln!(o, "       issuer      {}", opt(&c.issuer));
        let _ = writeln!(o, "       audience    {}", c.audiences.join(", "));
        let _ = writeln!(o, "       subject     {}", opt(&c.subject));
        let _ = writeln!(
            o,
            "       identity    namespace {}, service account {}, pod {}",
            opt(&c.namespace),
            opt(&c.service_account),
            opt(&c.pod)
        );
        let _ = writeln!(
            o,
            "       algorithm   {}{}",
            c.alg,
            c.kid
                .as_deref()
                .map(|k| format!(" (kid {k})"))
                .unwrap_or_default()
        );
        if let (Some(exp), Some(secs)) = (c.expires_at, t.expires_in_seconds) {
            let when = if secs >= 0 {
                format!("in {}", human_secs(secs))
            } else {
                format!("EXPIRED {} ago", human_secs(-secs))
            };
            let _ = writeln!(o, "       expires     {exp} ({when})");
        }
    }
    if let Some(e) = &t.error {
        let _ = writeln!(o, "       problem     {e}");
    }
    let f = &r.federation;
    let _ = writeln!(
        o,
        "[{}] federation  {} ({})",
        mark(f.ok),
        f.url,
        if f.tls { "TLS" } else { "plain HTTP" }
    );
    if let Some(h) = f.healthz {
        let _ = writeln!(
            o,
            "       reachable   /healthz {h}, /readyz {}",
            f.readyz.map_or("-".into(), |s| s.to_string())
        );
    }
    if let Some(e) = &f.error {
        let _ = writeln!(o, "       problem     {e}");
    }
    let w = &r.whoami;
    let _ = writeln!(o, "[{}] whoami", mark(w.ok));
    if let Some(id) = &w.identity {
        let _ = writeln!(o, "       cluster     {}", id.cluster);
        let _ = writeln!(o, "       namespace   {}", id.namespace);
        let _ = writeln!(o, "       account     {}", id.service_account.name);
        if let Some(p) = &id.pod {
            let _ = writeln!(o, "       pod         {}", p.name);
        }
    }
    error_lines(
        &mut o,
        w.code.as_deref(),
        w.message.as_deref(),
        w.hint.as_deref(),
    );
    for gc in &r.generators {
        let state = match gc.authorized {
            Some(true) => "ok  ",
            Some(false) => "DENY",
            None => "----",
        };
        let _ = writeln!(o, "[{state}] generator   {} = {}", gc.alias, gc.generator);
        if gc.authorized == Some(true) && !gc.keys.is_empty() {
            let _ = writeln!(
                o,
                "       issued      keys {}{}",
                gc.keys.join(", "),
                match gc.revoked {
                    Some(true) => "; test credential revoked",
                    Some(false) => "; test credential NOT revoked",
                    None => "",
                }
            );
        }
        error_lines(
            &mut o,
            gc.code.as_deref(),
            gc.message.as_deref(),
            gc.hint.as_deref(),
        );
    }
    let _ = writeln!(
        o,
        "{}",
        if r.ok {
            "result: everything works"
        } else {
            "result: PROBLEMS FOUND (see FAIL/DENY above)"
        }
    );
    o
}

fn error_lines(o: &mut String, code: Option<&str>, message: Option<&str>, hint: Option<&str>) {
    use std::fmt::Write as _;
    match (code, message) {
        (Some(c), Some(m)) => {
            let _ = writeln!(o, "       refused     {c}: {m}");
        }
        (None, Some(m)) => {
            let _ = writeln!(o, "       note        {m}");
        }
        _ => {}
    }
    if let Some(h) = hint {
        let _ = writeln!(o, "       hint        {h}");
    }
}

fn human_secs(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}
