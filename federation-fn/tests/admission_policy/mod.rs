//! The ValidatingAdmissionPolicy that `infra/terraform/modules/kubernetes-target` puts in a
//! target cluster to hold the federation to its own Secrets and Leases, read from the module's
//! `main.tf` and evaluated with a CEL interpreter ([`esi_test_support::terraform`]) the way the
//! API server evaluates it: after authorization, on the object as it would be stored (its
//! `generateName` already turned into a name) for a `CREATE`, on the stored object
//! (`oldObject`) for a `DELETE`, for the requests its match condition selects (the federation's
//! own user), denying with the first failing validation's message. `failurePolicy: Fail`: an
//! expression that cannot be evaluated denies too.
//!
//! The FAKE Kubernetes API server (`kubernetes_fake.rs`) runs every Secret and Lease write
//! through it, so each test of revocable tokens shows the policy lets the federation's real
//! requests through, and its own tests show what the policy refuses. What this does not
//! reproduce: the API server's type checking (`status.typeChecking`) and CEL cost limits, and
//! the binding's namespace selector (the fake grants Secret and Lease writes only where the
//! module would bind it).

#![allow(dead_code)]

use std::sync::LazyLock;

use esi_test_support::terraform::{self, Cel, hcl};
use serde_json::{Value, json};

/// The policy: its match condition and its validations (each with its message).
pub struct Policy {
    match_condition: Cel,
    validations: Vec<(Cel, String)>,
}

/// The CEL variable standing for the module's `${local.username_cel}` in the match condition:
/// the federation user of the module instance (the module writes it as a string literal).
const FEDERATION_USER: &str = "moduleFederationUser";

/// What the policy decided about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The match condition did not select the request: the policy does not apply.
    NotMatched,
    Allowed,
    /// The first failing validation's message, or why an expression could not be evaluated.
    Denied(String),
}

/// The module's policy, read and compiled once: `local.secret_writes_validations` (a list of
/// `{expression, message}` string literals) and the one match condition of
/// `local.secret_writes_policy`.
pub fn policy() -> &'static Policy {
    static POLICY: LazyLock<Policy> = LazyLock::new(|| {
        let body = terraform::module("kubernetes-target");
        let hcl::Expression::Array(rules) = terraform::local(&body, "secret_writes_validations")
        else {
            panic!("local.secret_writes_validations is not a list")
        };
        assert!(
            !rules.is_empty(),
            "local.secret_writes_validations is empty"
        );
        let validations = rules
            .iter()
            .map(|rule| {
                let text = |key| terraform::string(&terraform::field(rule, key));
                (Cel::compile(&text("expression")), text("message"))
            })
            .collect();
        let spec = terraform::field(&terraform::local(&body, "secret_writes_policy"), "spec");
        let Some(hcl::Expression::Array(conditions)) =
            terraform::field_opt(&spec, "matchConditions")
        else {
            panic!("local.secret_writes_policy has no spec.matchConditions list")
        };
        let [condition] = conditions.as_slice() else {
            panic!("local.secret_writes_policy needs exactly one match condition")
        };
        let condition = terraform::string(&terraform::field(condition, "expression"));
        assert!(
            condition.contains("${local.username_cel}"),
            "the match condition {condition} does not name local.username_cel"
        );
        Policy {
            match_condition: Cel::compile(
                &condition.replace("${local.username_cel}", FEDERATION_USER),
            ),
            validations,
        }
    });
    &POLICY
}

impl Policy {
    /// The decision on `operation` (`CREATE` or `DELETE`) of `object` (a create's) or
    /// `old_object` (a delete's) among `resource` (`secrets` or `leases`) by `user`, for a
    /// module instance whose federation user is `federation_user`.
    pub fn decide(
        &self,
        federation_user: &str,
        user: &str,
        operation: &str,
        resource: &str,
        object: &Value,
        old_object: &Value,
    ) -> Decision {
        let group = if resource == "leases" {
            "coordination.k8s.io"
        } else {
            ""
        };
        let request = json!({
            "operation": operation,
            "resource": {"group": group, "version": "v1", "resource": resource},
            "userInfo": {"username": user},
        });
        let federation_user = json!(federation_user);
        let vars = [
            ("request", &request),
            ("object", object),
            ("oldObject", old_object),
            (FEDERATION_USER, &federation_user),
        ];
        match self.match_condition.holds(&vars) {
            Ok(true) => {}
            Ok(false) => return Decision::NotMatched,
            Err(e) => return Decision::Denied(e),
        }
        for (validation, message) in &self.validations {
            match validation.holds(&vars) {
                Ok(true) => {}
                Ok(false) => return Decision::Denied(message.clone()),
                Err(e) => return Decision::Denied(e),
            }
        }
        Decision::Allowed
    }

    /// The number of validations.
    pub fn len(&self) -> usize {
        self.validations.len()
    }
}
