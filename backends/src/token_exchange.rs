//! What the generators that trade an identity token of the federation's own issuer (see
//! [`crate::identity`]) for a relying party's token share (`QuayAccessToken`,
//! `CloudsmithAccessToken`, `AzureAccessToken`, which takes the token's expiry from Entra ID's
//! `expires_in` and its words from `error_description` instead): the identity token itself, short-lived and shortened to the
//! Authorization's `maxTTL`; the check that the party can verify the issuer's signatures; the
//! party's own words in a refusal, cleaned; and the expiry of the token it answers with, read
//! from its `exp` without verifying and held to `maxTTL`.
//!
//! The party fetches the issuer's discovery document and JWKS itself and checks the token at
//! once, so the identity token lives five minutes: long enough for a slow exchange, too short
//! to be worth stealing from a log it never reaches anyway.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::identity::{Issuer, Minted, TokenRequest};
use crate::{BackendError, Context, SpecError};

/// How long an identity token shown to a relying party lives (the Authorization's `maxTTL`
/// shortens it): the party checks it once, at once.
pub(crate) const IDENTITY_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// The federation's issuer and an identity token it signed for `ctx`'s caller, `aud`
/// `audiences`, living [`IDENTITY_TOKEN_LIFETIME`] or the Authorization's `maxTTL` if shorter.
/// Without an issuer (a configuration checked without the federation's settings), the request
/// is refused before the party is asked.
pub(crate) fn mint<'i>(
    issuer: Option<&'i Arc<Issuer>>,
    ctx: &Context<'_>,
    audiences: &[String],
) -> Result<(&'i Issuer, Minted), BackendError> {
    let issuer = crate::identity_token::issuer_of(issuer)?;
    let lifetime = ctx
        .max_ttl
        .map_or(IDENTITY_TOKEN_LIFETIME, |m| m.min(IDENTITY_TOKEN_LIFETIME));
    let minted = issuer.mint(&TokenRequest {
        identity: ctx.identity,
        generator: ctx.generator,
        audiences,
        lifetime,
        aws_session_tags: false,
    })?;
    Ok((issuer, minted))
}

/// Refuses an issuer whose tokens `party` cannot verify: it takes RSA-signed tokens (RS256)
/// only, and would refuse every exchange.
pub(crate) fn require_rs256(issuer: &Issuer, party: &str) -> Result<(), SpecError> {
    match issuer.signing_alg() {
        "RS256" => Ok(()),
        alg => Err(SpecError::Invalid {
            path: String::new(),
            message: format!(
                "{party} verifies only RSA-signed identity tokens (RS256), and the federation's \
                 issuer signs with {alg}: put an RSA key first among the issuer keys \
                 (esi-federation issuer-key --algorithm rs256)"
            ),
        }),
    }
}

/// The text of the string member `member` of a JSON error body (`{"error": ...}`,
/// `{"detail": ...}`), if there is some: control characters dropped, at most 200 characters,
/// since it reaches the caller. A party's refusal names what it refused, never the token.
#[cfg_attr(not(any(feature = "quay", feature = "cloudsmith")), allow(dead_code))]
pub(crate) fn said(body: &[u8], member: &str) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(body).ok()?;
    let clean: String = body
        .get(member)?
        .as_str()?
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    (!clean.trim().is_empty()).then_some(clean)
}

/// The refusal of a `party`'s answer that cannot be used: `endpoint` and `what` go to the log.
pub(crate) fn unreadable(party: &str, endpoint: &str, what: &str) -> BackendError {
    BackendError::Unavailable {
        message: format!("{party}'s answer could not be read"),
        detail: format!("{endpoint}: {what}"),
    }
}

/// When a token expires: its `exp` claim if it is a JWT with one (read without verifying: the
/// token is its issuer's to check), else `None`.
#[cfg_attr(not(any(feature = "quay", feature = "cloudsmith")), allow(dead_code))]
pub(crate) fn jwt_expiry(token: &str) -> Option<jiff::Timestamp> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let claims: serde_json::Value = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())?;
    let exp = claims.get("exp")?;
    let secs = exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64))?;
    jiff::Timestamp::from_second(secs).ok()
}

/// What a relying party's token is called and what becomes of one outliving `maxTTL`, for
/// [`crate::credential::within_max_ttl`]: `(what, fate, backend)`.
pub(crate) type OverMaxTtl = (&'static str, &'static str, &'static str);

/// The expiry of `token`, a relying party's answer that can be neither shortened nor revoked:
/// its `exp` ([`jwt_expiry`]), else `default_lifetime` from now. A token already expired is an
/// answer `party` got wrong (`endpoint` names where, for the log); one outliving the
/// Authorization's `maxTTL` is refused, as `over` says, and never handed out.
#[cfg_attr(not(any(feature = "quay", feature = "cloudsmith")), allow(dead_code))]
pub(crate) fn expiry(
    token: &str,
    default_lifetime: Duration,
    max_ttl: Option<Duration>,
    over: OverMaxTtl,
    (party, endpoint): (&str, &str),
) -> Result<jiff::Timestamp, BackendError> {
    let now = jiff::Timestamp::now();
    let expires_at = jwt_expiry(token).unwrap_or_else(|| {
        now + jiff::SignedDuration::from_secs(
            i64::try_from(default_lifetime.as_secs()).unwrap_or(i64::MAX),
        )
    });
    if expires_at <= now {
        return Err(unreadable(
            party,
            endpoint,
            &format!("the token expired already ({expires_at})"),
        ));
    }
    if let Some(max) = max_ttl {
        crate::credential::within_max_ttl(expires_at, now, max, over)?;
    }
    Ok(expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{KeyAlgorithm, generate_key_pem};
    use secrecy::ExposeSecret as _;

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    const OVER: OverMaxTtl = ("the test token", "it was dropped", "test");

    #[test]
    fn expiry_is_read_from_a_jwt_exp_claim_only() {
        assert_eq!(
            jwt_expiry(&jwt(serde_json::json!({"exp": 1_800_000_000})))
                .unwrap()
                .as_second(),
            1_800_000_000
        );
        assert_eq!(
            jwt_expiry(&jwt(serde_json::json!({"exp": 1.8e9})))
                .unwrap()
                .as_second(),
            1_800_000_000
        );
        for none in [
            jwt(serde_json::json!({"sub": "org+bot"})),
            jwt(serde_json::json!({"exp": "soon"})),
            jwt(serde_json::json!({"exp": i64::MAX})),
            "opaque-token".to_owned(),
            "a.b".to_owned(),
            "a.!!.c".to_owned(),
            "a.b.c.d".to_owned(),
        ] {
            assert_eq!(jwt_expiry(&none), None, "{none}");
        }
    }

    #[test]
    fn a_token_without_exp_gets_the_default_and_one_over_max_ttl_or_expired_is_refused() {
        let hour = Duration::from_secs(3600);
        let now = jiff::Timestamp::now().as_second();
        let lives = expiry("opaque", hour, None, OVER, ("Test", "test")).unwrap();
        assert!((now + 3599..=now + 3601).contains(&lives.as_second()));
        let in_ten = jwt(serde_json::json!({"exp": now + 600}));
        let exp = expiry(&in_ten, hour, Some(hour), OVER, ("Test", "test")).unwrap();
        assert_eq!(exp.as_second(), now + 600);
        let err = expiry(
            &in_ten,
            hour,
            Some(Duration::from_secs(120)),
            OVER,
            ("Test", "test"),
        )
        .unwrap_err();
        assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("the test token would live 10m, longer than the Authorization's maxTTL of 2m; it was dropped"),
            "{err}"
        );
        let old = jwt(serde_json::json!({"exp": now - 1}));
        let err = expiry(&old, hour, None, OVER, ("Test", "test")).unwrap_err();
        assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
        assert!(err.to_string().contains("Test's answer could not be read"));
        assert!(err.detail().contains("expired already"), "{}", err.detail());
    }

    #[test]
    fn a_partys_words_are_bounded_and_cleaned() {
        assert_eq!(
            said(br#"{"error": "Token does not match robot"}"#, "error").as_deref(),
            Some("Token does not match robot")
        );
        assert_eq!(
            said(br#"{"detail": "Invalid OIDC token."}"#, "detail").as_deref(),
            Some("Invalid OIDC token.")
        );
        let long = format!(r#"{{"detail": "a\nb{}"}}"#, "x".repeat(500));
        let words = said(long.as_bytes(), "detail").unwrap();
        assert!(
            words.starts_with("abx") && words.chars().count() == 200,
            "{words}"
        );
        assert_eq!(said(b"<html>", "detail"), None);
        assert_eq!(said(br#"{"detail": " "}"#, "detail"), None);
        assert_eq!(said(br#"{"detail": ["a"]}"#, "detail"), None);
        assert_eq!(said(br#"{"error": "x"}"#, "detail"), None);
    }

    #[test]
    fn only_an_rsa_signing_key_is_taken() {
        let issuer = |alg| {
            let pem = generate_key_pem(alg).unwrap();
            Issuer::new("https://esi.example.com", pem.expose_secret()).unwrap()
        };
        assert!(require_rs256(&issuer(KeyAlgorithm::Rs256), "Party").is_ok());
        let err = require_rs256(&issuer(KeyAlgorithm::Es256), "Party")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Party verifies only RSA-signed identity tokens (RS256), and the federation's issuer signs with ES256"),
            "{err}"
        );
    }

    #[test]
    fn the_identity_token_lives_five_minutes_or_max_ttl_for_the_caller() {
        let pem = generate_key_pem(KeyAlgorithm::Rs256).unwrap();
        let issuer = Arc::new(Issuer::new("https://esi.example.com", pem.expose_secret()).unwrap());
        let id = crate::identity::tests::identity();
        let auds = ["party".to_owned()];
        for (max_ttl, lives) in [
            (None, 300),
            (Some(Duration::from_secs(120)), 120),
            (Some(Duration::from_secs(3600)), 300),
        ] {
            let ctx = Context {
                identity: &id,
                generator: "payments/Kind/name",
                max_ttl,
            };
            let (used, minted) = mint(Some(&issuer), &ctx, &auds).unwrap();
            assert_eq!(used.url(), "https://esi.example.com");
            let claims = crate::identity::tests::verify(&issuer, minted.token.expose_secret());
            assert_eq!(claims["sub"], "prod-eu:system:serviceaccount:payments:api");
            assert_eq!(claims["aud"], "party");
            assert_eq!(claims["esi"]["generator"], "payments/Kind/name");
            let exp = claims["exp"].as_i64().unwrap();
            assert_eq!(exp - claims["iat"].as_i64().unwrap(), lives, "{max_ttl:?}");
        }
        let ctx = Context {
            identity: &id,
            generator: "g",
            max_ttl: None,
        };
        let Err(err) = mint(None, &ctx, &auds) else {
            panic!("minted without an issuer");
        };
        assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
    }
}
