//! `RDSAuthToken`: an IAM authentication token for Amazon RDS and Aurora (MySQL, MariaDB,
//! PostgreSQL), the password a database user with IAM authentication logs in with. The token
//! is what `aws rds generate-db-auth-token` prints: a SigV4-presigned
//! `{host}:{port}/?Action=connect&DBUser={user}` for the service `rds-db`, valid 15 minutes for
//! new connections (an open connection stays up). Nothing is called: the federation signs with
//! the `aws` store's identity, or with `roleArn`'s session assumed for the caller (its tags
//! naming the caller's cluster, namespace and service account), so the IAM policy granting
//! `rds-db:connect` on `dbuser:{resource-id}/{user}` decides who may log in as whom.
//!
//! `host` and `username` are templates over the verified identity, so one generator serves
//! every namespace with its own database user (`{{namespace}}_app`). The token lives
//! 15 minutes, less under an Authorization's `maxTTL` (the presigned `X-Amz-Expires`), and
//! never longer than the signing credentials: a token signed by temporary credentials (a role
//! session, the store's base role or `selfIssued` session, credentials from the environment's
//! chain) stops working when they expire, so `expiresAt` says the earlier of the two. Static
//! keys given to the store are taken as long-lived. The store's credentials are kept while
//! they outlive a token by a minute, so tokens do not cost an STS call each. Nothing to
//! revoke.
//!
//! ```yaml
//! kind: RDSAuthToken
//! spec:
//!   secretStoreRef: {name: aws}
//!   host: payments.cluster-c1a2b3.eu-west-1.rds.amazonaws.com   # the endpoint the app connects to
//!   port: 5432
//!   username: "{{namespace}}_app"          # a user granted rds_iam (PostgreSQL) or AWSAuthenticationPlugin (MySQL)
//!   region: eu-west-1                      # optional: the store's region by default
//!   roleArn: arn:aws:iam::123456789012:role/db-connect   # optional
//! ```
//!
//! The credential: `host`, `port`, `username`, and the token as `password`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::aws::{CallerRole, validate_caller_role};
use crate::store::SecretStoreRef;
use crate::template::Template;
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

/// How long RDS accepts a token: its fixed maximum, 15 minutes.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// The SigV4 service name RDS IAM authentication signs for.
const SIGNING_SERVICE: &str = "rds-db";

/// `spec` of an `RDSAuthToken` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "RDSAuthToken",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RdsAuthTokenSpec {
    /// The `aws` SecretStore whose identity (or `roleArn`'s) signs the token.
    pub secret_store_ref: SecretStoreRef,
    /// The database endpoint's host name, as the app connects to it; may be templated.
    pub host: String,
    /// The database's port (5432 for PostgreSQL, 3306 for MySQL).
    pub port: u16,
    /// The database user to log in as; may be templated (`{{namespace}}_app`).
    pub username: String,
    /// The database's region; default the store's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A role to assume first, its session tagged with the caller's identity: the token then
    /// carries that role's `rds-db:connect` permissions. Without it, the store's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// External id the role's trust policy requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// Whether `user` can be a database user here: letters, digits, `_`, `-` and `.`, at most 63
/// (PostgreSQL's limit; MySQL's is 32), so that it needs no encoding in the token.
fn valid_username(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 63
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

impl RdsAuthTokenSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.templates()?;
        if self.port == 0 {
            return Err(SpecError::field("port", "must be 1 to 65535"));
        }
        if let Some(region) = &self.region
            && !crate::aws::is_region(region)
        {
            return Err(SpecError::field(
                "region",
                format!("{region:?} is not an AWS region"),
            ));
        }
        validate_caller_role(self.role_arn.as_deref(), self.external_id.as_deref())
    }

    /// The parsed `host` and `username`, checked with placeholder values standing in for the
    /// caller's.
    fn templates(&self) -> Result<(Template, Template), SpecError> {
        let host = Template::parse(&self.host, "host")?;
        if !crate::is_host_name(&host.sample()) {
            return Err(SpecError::field(
                "host",
                format!("{:?} is not a host name", self.host),
            ));
        }
        let user = Template::parse(&self.username, "username")?;
        if !valid_username(&user.sample()) {
            return Err(SpecError::field(
                "username",
                format!(
                    "{:?} is not a database user name here (letters, digits and _-. only, at \
                     most 63 characters)",
                    self.username
                ),
            ));
        }
        Ok((host, user))
    }
}

/// The token for `user` at `host:port` in `region`, signed with `credentials` at `time`,
/// accepted for `expires` (at most [`TOKEN_LIFETIME`]): the presigned URL without its scheme,
/// as the AWS SDKs make it.
pub fn presign(
    host: &str,
    port: u16,
    user: &str,
    region: &str,
    credentials: aws_credential_types::Credentials,
    time: SystemTime,
    expires: Duration,
) -> Result<String, String> {
    // `user` needs no encoding (`valid_username`).
    let url = crate::aws_presign::presigned_url(
        &format!("https://{host}:{port}/?Action=connect&DBUser={user}"),
        &[],
        SIGNING_SERVICE,
        region,
        credentials,
        time,
        expires.min(TOKEN_LIFETIME),
    )?;
    Ok(url.strip_prefix("https://").unwrap_or(&url).to_owned())
}

/// The built `RDSAuthToken` generator.
#[derive(Debug)]
pub struct RdsAuthTokenGenerator {
    spec: RdsAuthTokenSpec,
    host: Template,
    username: Template,
    signer: CallerRole<aws_config::SdkConfig>,
    kept: crate::aws_presign::KeptCredentials,
}

impl RdsAuthTokenGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: RdsAuthTokenSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        let (host, username) = spec.templates()?;
        Ok(Self {
            host,
            username,
            signer: CallerRole::new(
                aws_config::SdkConfig::clone,
                store,
                &spec.secret_store_ref,
                spec.role_arn.as_deref(),
                spec.external_id.as_deref(),
                shared,
            )?,
            kept: crate::aws_presign::KeptCredentials::default(),
            spec,
        })
    }
}

impl Generate for RdsAuthTokenGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let host = self.host.render(ctx, str::to_owned);
        let username = self.username.render(ctx, str::to_owned);
        if !crate::is_host_name(&host) || !valid_username(&username) {
            return Err(BackendError::Rejected {
                message: "the caller's identity does not make a valid database host and user here"
                    .to_owned(),
                detail: format!(
                    "rds: rendered host {host:?} or username {username:?} is not valid"
                ),
            });
        }
        let signing = crate::aws_presign::signing(
            &self.signer,
            &self.kept,
            self.spec.region.as_deref(),
            ctx,
            "the RDS token",
            "rds",
        )
        .await?;
        let mut lifetime = ctx
            .max_ttl
            .map_or(TOKEN_LIFETIME, |m| m.min(TOKEN_LIFETIME));
        if let Some(left) = signing.left {
            lifetime = lifetime.min(left);
        }
        // Whole seconds: X-Amz-Expires is a number of seconds, and RDS counts from X-Amz-Date.
        let lifetime = Duration::from_secs(lifetime.as_secs().max(1));
        let signed_at = signing.signed_at();
        let token = presign(
            &host,
            self.spec.port,
            &username,
            &signing.region,
            signing.credentials,
            signing.at,
            lifetime,
        )
        .map_err(|e| BackendError::Unavailable {
            message: "the federation's AWS credentials could not sign the RDS token".to_owned(),
            detail: format!("rds: signing failed: {e}"),
        })?;
        Ok(Credential {
            data: BTreeMap::from([
                ("host".to_owned(), host),
                ("port".to_owned(), self.spec.port.to_string()),
                ("username".to_owned(), username),
                ("password".to_owned(), token),
            ]),
            expires_at: signed_at.checked_add(lifetime).ok(),
            renewable: false,
            lease: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    fn parse(j: serde_json::Value) -> Result<GeneratorSpec, SpecError> {
        GeneratorSpec::from_manifest(GeneratorKind::RdsAuthToken, j)
    }

    /// Tokens made by AWS's own implementation, botocore 1.44 (the Python SDK, in moto's venv):
    /// `generate_db_auth_token` with `datetime` fixed at 2022-11-04T06:26:11Z, keys
    /// `test_id`/`test_key` (and `ASIAESITEST`/`test_key` with a session token). The default
    /// port is left out of the signed host, as the SDKs do (Kong's signer keeps `:443` and
    /// signs differently).
    #[test]
    fn tokens_match_the_ones_aws_sdks_make() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_667_543_171);
        let keys = |id: &str, session: Option<&str>| {
            aws_credential_types::Credentials::new(
                id,
                "test_key",
                session.map(str::to_owned),
                None,
                "test",
            )
        };
        for (host, port, user, region, credentials, want) in [
            (
                "test_database.test_cluster.us-east-1.rds.amazonaws.com",
                443,
                "test_user",
                "us-east-1",
                keys("test_id", None),
                "test_database.test_cluster.us-east-1.rds.amazonaws.com:443/?Action=connect&DBUser=test_user\
                 &X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=test_id%2F20221104%2Fus-east-1%2Frds-db%2Faws4_request\
                 &X-Amz-Date=20221104T062611Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
                 &X-Amz-Signature=d916f2f2897aca6648512c44f9efbcca0fdbe8f92a47799156caaa69d3cb0f41",
            ),
            (
                "payments.cluster-c1a2b3.eu-west-1.rds.amazonaws.com",
                5432,
                "payments_app",
                "eu-west-1",
                keys("test_id", None),
                "payments.cluster-c1a2b3.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=payments_app\
                 &X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=test_id%2F20221104%2Feu-west-1%2Frds-db%2Faws4_request\
                 &X-Amz-Date=20221104T062611Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
                 &X-Amz-Signature=9a15befb3388cfc0d0408c80232e013fa3262bbb6f2407f253068b4425a8b04f",
            ),
            (
                "db.example",
                3306,
                "app",
                "eu-west-1",
                keys("ASIAESITEST", Some("FwoGZX+IvYXdz/EJ=")),
                "db.example:3306/?Action=connect&DBUser=app&X-Amz-Algorithm=AWS4-HMAC-SHA256\
                 &X-Amz-Credential=ASIAESITEST%2F20221104%2Feu-west-1%2Frds-db%2Faws4_request\
                 &X-Amz-Date=20221104T062611Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
                 &X-Amz-Security-Token=FwoGZX%2BIvYXdz%2FEJ%3D\
                 &X-Amz-Signature=c0d2b13ce043d9c07451f8f74f9603483fa9e67db668f4dbe514428b83786fc8",
            ),
        ] {
            let token =
                presign(host, port, user, region, credentials, time, TOKEN_LIFETIME).unwrap();
            let sorted = crate::aws_presign::sorted_query;
            assert_eq!(sorted(&token), sorted(want), "{token}");
            assert!(
                token.starts_with(want.split_once("&X-Amz").unwrap().0),
                "{token}"
            );
        }
        // Longer asked for, 15 minutes given; shorter is signed as asked.
        let capped = |asked| {
            presign(
                "db.example",
                5432,
                "app",
                "eu-west-1",
                keys("test_id", None),
                time,
                asked,
            )
            .unwrap()
        };
        assert!(capped(Duration::from_secs(3600)).contains("&X-Amz-Expires=900&"));
        assert!(capped(Duration::from_secs(300)).contains("&X-Amz-Expires=300&"));
    }

    #[test]
    fn round_trips_and_validates() {
        let j = serde_json::json!({
            "secretStoreRef": {"name": "aws"},
            "host": "payments.cluster-c1a2b3.eu-west-1.rds.amazonaws.com",
            "port": 5432,
            "username": "{{namespace}}_app",
            "region": "eu-west-1",
            "roleArn": "arn:aws:iam::123456789012:role/db",
            "externalId": "x",
        });
        let spec = parse(j.clone()).unwrap();
        let GeneratorSpec::RdsAuthToken(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(parse(serde_json::to_value(s).unwrap()).unwrap(), spec);
        for (field, value, says) in [
            ("host", serde_json::json!(""), "spec.host"),
            ("host", serde_json::json!("db.example:5432"), "spec.host"),
            ("host", serde_json::json!("https://db.example"), "spec.host"),
            ("host", serde_json::json!("-db.example"), "spec.host"),
            ("port", serde_json::json!(0), "spec.port"),
            ("port", serde_json::json!(70000), "spec.port"),
            (
                "username",
                serde_json::json!("app&DBUser=admin"),
                "spec.username",
            ),
            ("username", serde_json::json!("a b"), "spec.username"),
            (
                "username",
                serde_json::json!("{{secret}}"),
                "unknown placeholder",
            ),
            ("region", serde_json::json!("EU west"), "spec.region"),
            ("roleArn", serde_json::json!("db"), "spec.roleArn"),
            (
                "password",
                serde_json::json!("x"),
                "unknown field `password`",
            ),
        ] {
            let mut b = j.clone();
            b[field] = value;
            let err = parse(b).unwrap_err().to_string();
            assert!(err.contains(says), "{field}: {err}");
        }
    }
}
