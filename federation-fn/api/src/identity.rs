//! The verified identity of a workload, as the federation derives it from a token.

use serde::{Deserialize, Serialize};

/// A Kubernetes object named in a token: name and uid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectRef {
    /// Object name.
    pub name: String,
    /// Object uid (empty when the token does not carry one).
    #[serde(default)]
    pub uid: String,
}

/// Who is calling, after the token was verified: what `GET /v1/whoami` returns and what
/// Authorization matches and audit logs record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    /// Name of the registered Cluster whose keys verified the token's signature.
    pub cluster: String,
    /// The token's issuer (`iss`).
    pub issuer: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's ServiceAccount.
    pub service_account: ObjectRef,
    /// The Pod the token is bound to, when it is a bound (projected) token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    /// The token's `sub`: `system:serviceaccount:<namespace>:<name>`.
    pub subject: String,
    /// When the token expires.
    pub token_expires_at: jiff::Timestamp,
}

impl Identity {
    /// The subject string Kubernetes uses for a service account.
    pub fn service_account_subject(namespace: &str, name: &str) -> String {
        format!("{SERVICE_ACCOUNT_SUBJECT_PREFIX}{namespace}:{name}")
    }

    /// Whether `subject` is [`Identity::service_account_subject`] of `namespace` and `name`,
    /// without building it.
    pub fn is_service_account_subject(subject: &str, namespace: &str, name: &str) -> bool {
        subject
            .strip_prefix(SERVICE_ACCOUNT_SUBJECT_PREFIX)
            .and_then(|rest| rest.strip_prefix(namespace))
            .and_then(|rest| rest.strip_prefix(':'))
            == Some(name)
    }
}

const SERVICE_ACCOUNT_SUBJECT_PREFIX: &str = "system:serviceaccount:";

#[cfg(test)]
mod tests {
    use super::Identity;

    #[test]
    fn subject_check_matches_the_built_subject_only() {
        let built = Identity::service_account_subject("team-a", "app");
        assert_eq!(built, "system:serviceaccount:team-a:app");
        assert!(Identity::is_service_account_subject(
            &built, "team-a", "app"
        ));
        for (sub, ns, name) in [
            ("system:serviceaccount:team-a:app", "team-a", "ap"),
            ("system:serviceaccount:team-a:app", "team", "a:app"),
            ("system:serviceaccount:team-a:app:x", "team-a", "app"),
            ("system:serviceaccounts:team-a:app", "team-a", "app"),
            ("", "", ""),
        ] {
            assert!(
                !Identity::is_service_account_subject(sub, ns, name),
                "{sub} {ns} {name}"
            );
        }
    }
}
