//! `EKSToken`: a bearer token for an Amazon EKS cluster's Kubernetes API, what
//! `aws eks get-token` prints: `k8s-aws-v1.` and the base64url of an STS
//! `GetCallerIdentity` URL presigned for the regional STS endpoint, with the cluster's name in
//! the signed header `x-k8s-aws-id`. EKS asks STS who signed it and maps that IAM principal to
//! Kubernetes users and groups (access entries or the `aws-auth` ConfigMap). Nothing is called
//! here: the federation signs with the `aws` store's identity, or with `roleArn`'s session
//! assumed for the caller (tagged with the caller's cluster, namespace and service account), so
//! a workload in any registered cluster deploys to an EKS cluster as a role, with no kubeconfig
//! secret.
//!
//! EKS accepts a token for 15 minutes after it was signed, whatever `X-Amz-Expires` says (STS
//! and the authenticator count from `X-Amz-Date`), so a token cannot be shortened: `expiresAt`
//! is 14 minutes after signing, as `aws eks get-token` says (earlier when the signing
//! credentials expire sooner), and an Authorization whose `maxTTL` is shorter than the token's
//! life is refused. The store's credentials are kept while they outlive a token, as for
//! `RDSAuthToken`. Nothing to revoke.
//!
//! ```yaml
//! kind: EKSToken
//! spec:
//!   secretStoreRef: {name: aws}
//!   clusterName: prod-eu                   # the EKS cluster's name
//!   region: eu-west-1                      # optional: the store's region by default
//!   roleArn: arn:aws:iam::123456789012:role/deployer   # optional
//!   # optional, for a ready kubeconfig (Terraform: aws_eks_cluster's endpoint and
//!   # certificate_authority[0].data; the AWS CLI: aws eks describe-cluster):
//!   endpoint: https://0123456789ABCDEF.gr7.eu-west-1.eks.amazonaws.com
//!   certificateAuthorityData: LS0tLS1CRUdJTi...   # base64 of the cluster CA's PEM
//! ```
//!
//! The credential: `token`, `clusterName`, and `execCredential`, an `ExecCredential` JSON
//! (`client.authentication.k8s.io/v1beta1`) a kubeconfig's `exec` can print as is. With
//! `endpoint`, also `kubeconfig`: a whole kubeconfig (JSON, which kubectl and every client
//! library read as YAML) whose one context reaches the cluster with the token, so an app or
//! `kubectl --kubeconfig` needs nothing else; `esi.dev/refresh` keeps the file's token fresh.
//! The endpoint and CA are given, not looked up: they are fixed for a cluster's life, and
//! `DescribeCluster` on every request would cost a call and a permission for nothing.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::aws::{CallerRole, validate_caller_role};
use crate::store::SecretStoreRef;
use crate::template::Template;
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

/// How long a token is handed out for: `aws eks get-token`'s 14 minutes, a minute inside the
/// 15 EKS accepts.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);

/// The header naming the cluster, signed into the token.
const CLUSTER_HEADER: &str = "x-k8s-aws-id";

/// The token's prefix (version 1 of the format).
const TOKEN_PREFIX: &str = "k8s-aws-v1.";

/// `spec` of an `EKSToken` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "EKSToken",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EksTokenSpec {
    /// The `aws` SecretStore whose identity (or `roleArn`'s) signs the token.
    pub secret_store_ref: SecretStoreRef,
    /// The EKS cluster's name; may be templated.
    pub cluster_name: String,
    /// The region of the STS endpoint signed for (the cluster's); default the store's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A role to assume first, its session tagged with the caller's identity: EKS then sees that
    /// role. Without it, the store's own identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// External id the role's trust policy requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The cluster's API server URL (`https://...eks.amazonaws.com`): adds a `kubeconfig` to
    /// the credential. Needs a literal `clusterName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The cluster's CA as EKS gives it (base64 of its PEM), trusted by the `kubeconfig`
    /// for `endpoint`; without it, the system's roots are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
}

/// The longest `certificateAuthorityData` taken (an EKS cluster CA is about 1.5 KB).
const MAX_CA_DATA: usize = 64 * 1024;

/// The user and context name the kubeconfig gives the token.
const KUBECONFIG_USER: &str = "esi";

/// Whether `name` can name an EKS cluster: 1 to 100 letters, digits, `-` and `_`, starting
/// with a letter or digit.
fn valid_cluster_name(name: &str) -> bool {
    name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The host of `url` when it is `https://host[:port]` with nothing else (a trailing `/` aside).
fn https_host(url: &str) -> Option<&str> {
    let authority = url.strip_prefix("https://")?.trim_end_matches('/');
    let host = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok_and(|p| p > 0))
        .map_or(authority, |(host, _)| host);
    crate::is_host_name(host).then_some(host)
}

/// A kubeconfig (JSON) with one cluster, `cluster` at `endpoint` trusting `ca` (base64 PEM)
/// or the system's roots, one user holding `token`, and one context joining them, current.
fn kubeconfig(cluster: &str, endpoint: &str, ca: Option<&str>, token: &str) -> String {
    let mut server = serde_json::json!({"server": endpoint});
    if let Some(ca) = ca {
        server["certificate-authority-data"] = ca.trim().into();
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": server}],
        "users": [{"name": KUBECONFIG_USER, "user": {"token": token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": KUBECONFIG_USER}}],
        "current-context": cluster,
    })
    .to_string()
}

impl EksTokenSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.cluster_template()?;
        if let Some(region) = &self.region
            && !crate::aws::is_region(region)
        {
            return Err(SpecError::field(
                "region",
                format!("{region:?} is not an AWS region"),
            ));
        }
        self.check_kubeconfig()?;
        validate_caller_role(self.role_arn.as_deref(), self.external_id.as_deref())
    }

    /// Checks `endpoint` and `certificateAuthorityData`.
    fn check_kubeconfig(&self) -> Result<(), SpecError> {
        let Some(endpoint) = &self.endpoint else {
            if self.certificate_authority_data.is_some() {
                return Err(SpecError::field(
                    "certificateAuthorityData",
                    "goes with endpoint: the CA the kubeconfig trusts for it",
                ));
            }
            return Ok(());
        };
        https_host(endpoint).ok_or_else(|| {
            SpecError::field(
                "endpoint",
                format!(
                    "{endpoint:?} is not an https:// URL of a host (the cluster's API server \
                     endpoint, no path, query or user)"
                ),
            )
        })?;
        if self.cluster_template()?.sample() != self.cluster_name {
            return Err(SpecError::field(
                "endpoint",
                "names one cluster's API server, so clusterName must be that cluster's name, \
                 not a template",
            ));
        }
        if let Some(ca) = &self.certificate_authority_data {
            let pem = (ca.len() <= MAX_CA_DATA)
                .then(|| {
                    base64::engine::general_purpose::STANDARD
                        .decode(ca.trim())
                        .ok()
                })
                .flatten();
            if !pem.is_some_and(|p| p.starts_with(b"-----BEGIN CERTIFICATE-----")) {
                return Err(SpecError::field(
                    "certificateAuthorityData",
                    "must be base64 of a PEM certificate, as EKS gives it \
                     (certificateAuthority.data)",
                ));
            }
        }
        Ok(())
    }

    /// The parsed `clusterName`, checked with placeholder values standing in for the caller's.
    fn cluster_template(&self) -> Result<Template, SpecError> {
        let t = Template::parse(&self.cluster_name, "clusterName")?;
        if !valid_cluster_name(&t.sample()) {
            return Err(SpecError::field(
                "clusterName",
                format!(
                    "{:?} is not an EKS cluster name (1 to 100 letters, digits, - and _)",
                    self.cluster_name
                ),
            ));
        }
        Ok(t)
    }
}

/// The token for `cluster`, signed for STS in `region` with `credentials` at `time`, as
/// `aws eks get-token` makes it.
pub fn token(
    cluster: &str,
    region: &str,
    credentials: aws_credential_types::Credentials,
    time: SystemTime,
) -> Result<String, String> {
    let url = crate::aws_presign::presigned_url(
        &format!(
            "https://{}/?Action=GetCallerIdentity&Version=2011-06-15",
            crate::aws::sts_host(region)
        ),
        &[(CLUSTER_HEADER, cluster)],
        "sts",
        region,
        credentials,
        time,
        // What the SDKs sign; EKS counts 15 minutes from X-Amz-Date regardless.
        Duration::from_secs(60),
    )?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
    ))
}

/// The built `EKSToken` generator.
#[derive(Debug)]
pub struct EksTokenGenerator {
    spec: EksTokenSpec,
    cluster: Template,
    signer: CallerRole<aws_config::SdkConfig>,
    kept: crate::aws_presign::KeptCredentials,
}

impl EksTokenGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: EksTokenSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        Ok(Self {
            cluster: spec.cluster_template()?,
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

impl Generate for EksTokenGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let cluster = self.cluster.render(ctx, str::to_owned);
        if !valid_cluster_name(&cluster) {
            return Err(BackendError::Rejected {
                message: "the caller's identity does not make a valid EKS cluster name here"
                    .to_owned(),
                detail: format!("eks: rendered clusterName {cluster:?} is not valid"),
            });
        }
        let signing = crate::aws_presign::signing(
            &self.signer,
            &self.kept,
            self.spec.region.as_deref(),
            ctx,
            "the EKS token",
            "eks",
        )
        .await?;
        let lifetime = signing
            .left
            .map_or(TOKEN_LIFETIME, |left| left.min(TOKEN_LIFETIME));
        if let Some(max) = ctx.max_ttl
            && lifetime > max
        {
            return Err(BackendError::Rejected {
                message: format!(
                    "an EKS token works for {} minutes and cannot be shortened; this \
                     Authorization's maxTTL is {}s",
                    lifetime.as_secs() / 60,
                    max.as_secs()
                ),
                detail: format!("eks: maxTTL {max:?} below the token's {lifetime:?}"),
            });
        }
        let signed_at = signing.signed_at();
        let token =
            token(&cluster, &signing.region, signing.credentials, signing.at).map_err(|e| {
                BackendError::Unavailable {
                    message: "the federation's AWS credentials could not sign the EKS token"
                        .to_owned(),
                    detail: format!("eks: signing failed: {e}"),
                }
            })?;
        let expires_at = signed_at.checked_add(lifetime).ok();
        let exec_credential = serde_json::json!({
            "kind": "ExecCredential",
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "spec": {},
            "status": {
                "expirationTimestamp": expires_at.map(|t| t.to_string()),
                "token": token,
            },
        });
        let mut data = BTreeMap::new();
        if let Some(endpoint) = &self.spec.endpoint {
            let config = kubeconfig(
                &cluster,
                endpoint,
                self.spec.certificate_authority_data.as_deref(),
                &token,
            );
            data.insert("kubeconfig".to_owned(), config);
        }
        data.extend([
            ("token".to_owned(), token),
            ("clusterName".to_owned(), cluster),
            ("execCredential".to_owned(), exec_credential.to_string()),
        ]);
        Ok(Credential {
            data,
            expires_at,
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
        GeneratorSpec::from_manifest(GeneratorKind::EksToken, j)
    }

    /// Tokens made by AWS's own implementation: botocore 1.44 presigning `GetCallerIdentity`
    /// with the `x-k8s-aws-id` header, as `aws eks get-token` does, `datetime` fixed at
    /// 2022-11-04T06:26:11Z.
    #[test]
    fn tokens_match_the_ones_aws_eks_get_token_makes() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_667_543_171);
        let url_of = |token: &str| {
            let b64 = token.strip_prefix(TOKEN_PREFIX).unwrap();
            String::from_utf8(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(b64)
                    .unwrap(),
            )
            .unwrap()
        };
        let plain = token(
            "prod-eu",
            "eu-west-1",
            aws_credential_types::Credentials::new("test_id", "test_key", None, None, "t"),
            time,
        )
        .unwrap();
        assert_eq!(
            plain,
            "k8s-aws-v1.aHR0cHM6Ly9zdHMuZXUtd2VzdC0xLmFtYXpvbmF3cy5jb20vP0FjdGlvbj1HZXRDYWxsZXJJZGVudGl0eSZWZXJzaW9uPTIwMTEtMDYtMTUmWC1BbXotQWxnb3JpdGhtPUFXUzQtSE1BQy1TSEEyNTYmWC1BbXotQ3JlZGVudGlhbD10ZXN0X2lkJTJGMjAyMjExMDQlMkZldS13ZXN0LTElMkZzdHMlMkZhd3M0X3JlcXVlc3QmWC1BbXotRGF0ZT0yMDIyMTEwNFQwNjI2MTFaJlgtQW16LUV4cGlyZXM9NjAmWC1BbXotU2lnbmVkSGVhZGVycz1ob3N0JTNCeC1rOHMtYXdzLWlkJlgtQW16LVNpZ25hdHVyZT02M2YwMDU2NzEyMTZhZWY5YmEyOTg5OWYzYWI3MzVkODFkY2NkMzBmODdlMTU1OWUyNGEyMzBjMTNlODdmMGFj",
            "{}",
            url_of(&plain)
        );
        // With a session token: the same signature; the signer appends the token after it,
        // where botocore puts it before, and STS reads the query by name.
        let session = url_of(
            &token(
                "payments",
                "us-east-1",
                aws_credential_types::Credentials::new(
                    "ASIAESITEST",
                    "test_key",
                    Some("FwoGZX+IvYXdz/EJ=".into()),
                    None,
                    "t",
                ),
                time,
            )
            .unwrap(),
        );
        let sorted = crate::aws_presign::sorted_query;
        assert_eq!(
            sorted(&session),
            sorted(
                "https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15\
                 &X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAESITEST%2F20221104%2Fus-east-1%2Fsts%2Faws4_request\
                 &X-Amz-Date=20221104T062611Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id\
                 &X-Amz-Security-Token=FwoGZX%2BIvYXdz%2FEJ%3D\
                 &X-Amz-Signature=18b3aae3333c0a2ac7b21bce9ddfc44d7461c0d2beda4fd490200f36248c6aaf"
            ),
            "{session}"
        );
    }

    #[test]
    fn the_sts_host_is_the_regional_one_of_the_partition() {
        use crate::aws::sts_host;
        assert_eq!(sts_host("eu-west-1"), "sts.eu-west-1.amazonaws.com");
        assert_eq!(sts_host("us-gov-west-1"), "sts.us-gov-west-1.amazonaws.com");
        assert_eq!(sts_host("cn-north-1"), "sts.cn-north-1.amazonaws.com.cn");
    }

    #[test]
    fn round_trips_and_validates() {
        let j = serde_json::json!({
            "secretStoreRef": {"name": "aws"},
            "clusterName": "prod-eu",
            "region": "eu-west-1",
            "roleArn": "arn:aws:iam::123456789012:role/deployer",
            "externalId": "x",
        });
        let spec = parse(j.clone()).unwrap();
        let GeneratorSpec::EksToken(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(parse(serde_json::to_value(s).unwrap()).unwrap(), spec);
        for (field, value, says) in [
            ("clusterName", serde_json::json!(""), "spec.clusterName"),
            (
                "clusterName",
                serde_json::json!("-prod"),
                "spec.clusterName",
            ),
            (
                "clusterName",
                serde_json::json!("prod eu"),
                "spec.clusterName",
            ),
            (
                "clusterName",
                serde_json::json!("a".repeat(101)),
                "spec.clusterName",
            ),
            (
                "clusterName",
                serde_json::json!("{{secret}}"),
                "unknown placeholder",
            ),
            ("region", serde_json::json!("EU"), "spec.region"),
            ("roleArn", serde_json::json!("deployer"), "spec.roleArn"),
            (
                "kubeconfig",
                serde_json::json!("x"),
                "unknown field `kubeconfig`",
            ),
        ] {
            let mut b = j.clone();
            b[field] = value;
            let err = parse(b).unwrap_err().to_string();
            assert!(err.contains(says), "{field}: {err}");
        }
    }

    /// base64 of a PEM block, as EKS gives `certificateAuthority.data`.
    fn ca_data() -> String {
        base64::engine::general_purpose::STANDARD
            .encode("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    }

    #[test]
    fn an_endpoint_and_its_ca_are_checked_and_need_one_named_cluster() {
        let j = serde_json::json!({
            "secretStoreRef": {"name": "aws"},
            "clusterName": "prod-eu",
            "endpoint": "https://0123456789ABCDEF.gr7.eu-west-1.eks.amazonaws.com",
            "certificateAuthorityData": ca_data(),
        });
        let spec = parse(j.clone()).unwrap();
        let GeneratorSpec::EksToken(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(parse(serde_json::to_value(s).unwrap()).unwrap(), spec);
        let mut ok = j.clone();
        ok["endpoint"] = serde_json::json!("https://k8s.internal.example:6443/");
        ok.as_object_mut()
            .unwrap()
            .remove("certificateAuthorityData");
        parse(ok).expect("an endpoint trusting the system's roots");
        for (field, value, says) in [
            (
                "endpoint",
                serde_json::json!("http://k8s.example"),
                "https://",
            ),
            (
                "endpoint",
                serde_json::json!("https://k8s.example/api"),
                "no path",
            ),
            (
                "endpoint",
                serde_json::json!("https://u@k8s.example"),
                "no path",
            ),
            (
                "endpoint",
                serde_json::json!("https://k8s.example:0"),
                "no path",
            ),
            ("endpoint", serde_json::json!("https://"), "no path"),
            (
                "clusterName",
                serde_json::json!("{{namespace}}"),
                "not a template",
            ),
            (
                "certificateAuthorityData",
                serde_json::json!("not base64!"),
                "PEM certificate",
            ),
            (
                "certificateAuthorityData",
                serde_json::json!(base64::engine::general_purpose::STANDARD.encode("hello")),
                "PEM certificate",
            ),
        ] {
            let mut b = j.clone();
            b[field] = value;
            let err = parse(b).unwrap_err().to_string();
            assert!(err.contains(says), "{field}: {err}");
        }
        let mut b = j.clone();
        b.as_object_mut().unwrap().remove("endpoint");
        let err = parse(b).unwrap_err().to_string();
        assert!(err.contains("goes with endpoint"), "{err}");
    }

    #[test]
    fn the_kubeconfig_reaches_the_cluster_with_the_token() {
        let config = kubeconfig(
            "prod-eu",
            "https://k.example",
            Some(&ca_data()),
            "k8s-aws-v1.abc",
        );
        let v: serde_json::Value = serde_json::from_str(&config).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "prod-eu", "cluster": {
                    "server": "https://k.example",
                    "certificate-authority-data": ca_data(),
                }}],
                "users": [{"name": "esi", "user": {"token": "k8s-aws-v1.abc"}}],
                "contexts": [{"name": "prod-eu", "context": {"cluster": "prod-eu", "user": "esi"}}],
                "current-context": "prod-eu",
            })
        );
        let v: serde_json::Value =
            serde_json::from_str(&kubeconfig("c", "https://k.example", None, "t")).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"],
            serde_json::json!({"server": "https://k.example"})
        );
    }
}
