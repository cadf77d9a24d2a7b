//! The ValidatingAdmissionPolicy that `infra/terraform/modules/kubernetes-target` puts in a
//! target cluster to hold the federation to its own Secrets and Leases, read from the module's
//! `main.tf` and evaluated with a real CEL interpreter (the `cel` crate) the way the API server
//! evaluates it: after authorization, on the object as it would be stored (its `generateName`
//! already turned into a name) for a `CREATE`, on the stored object (`oldObject`) for a
//! `DELETE`, for the requests its match condition selects (the federation's own user), denying
//! with the first failing validation's message. `failurePolicy: Fail`: an expression that
//! cannot be evaluated denies too.
//!
//! The FAKE Kubernetes API server (`kubernetes_fake.rs`) runs every Secret and Lease write
//! through it, so each test of revocable tokens shows the policy lets the federation's real
//! requests through, and its own tests show what the policy refuses. What this does not
//! reproduce: the API server's type checking (`status.typeChecking`), its CEL cost limits,
//! Kubernetes' CEL extension libraries (the policy uses none), and the binding's namespace
//! selector (the fake grants Secret and Lease writes only where the module would bind it).

#![allow(dead_code)]

use std::sync::LazyLock;

use hcl::{Expression, ObjectKey};
use serde_json::{Value, json};

/// The module whose policy this is, from this crate's folder.
const MODULE: &str = "../infra/terraform/modules/kubernetes-target/main.tf";

/// The policy: its match condition and its validations (each compiled, with its source and
/// message).
pub struct Policy {
    match_condition: (cel::Program, String),
    validations: Vec<(cel::Program, String, String)>,
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

/// The module's policy, read and compiled once.
pub fn policy() -> &'static Policy {
    static POLICY: LazyLock<Policy> = LazyLock::new(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(MODULE);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Policy::from_module(&body)
    });
    &POLICY
}

impl Policy {
    /// The policy in the module's `locals`: `secret_writes_validations` (a list of
    /// `{expression, message}` string literals) and the match condition of
    /// `secret_writes_policy`.
    fn from_module(body: &hcl::Body) -> Self {
        let local = |name: &str| {
            body.blocks()
                .filter(|b| b.identifier() == "locals")
                .flat_map(|b| b.body().attributes())
                .find(|a| a.key() == name)
                .map(|a| a.expr().clone())
                .unwrap_or_else(|| panic!("the module has no local.{name}"))
        };
        let Expression::Array(items) = local("secret_writes_validations") else {
            panic!("local.secret_writes_validations is not a list")
        };
        let rules: Vec<(String, String)> = items
            .iter()
            .map(|item| (text(item, "expression"), text(item, "message")))
            .collect();
        assert!(
            !rules.is_empty(),
            "local.secret_writes_validations is empty"
        );
        let spec = field(&local("secret_writes_policy"), "spec");
        let Some(Expression::Array(conditions)) = field_opt(&spec, "matchConditions") else {
            panic!("local.secret_writes_policy has no spec.matchConditions list")
        };
        let [condition] = conditions.as_slice() else {
            panic!("local.secret_writes_policy needs exactly one match condition")
        };
        let condition = template(&field(condition, "expression"));
        assert!(
            condition.contains("${local.username_cel}"),
            "the match condition {condition} does not name local.username_cel"
        );
        let condition = condition.replace("${local.username_cel}", FEDERATION_USER);
        // The cel crate's parser (ANTLR) recurses deeply: compile on a thread with room for it.
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || {
                let compile = |source: &str| {
                    cel::Program::compile(source)
                        .unwrap_or_else(|e| panic!("{source}: not CEL: {e}"))
                };
                Policy {
                    match_condition: (compile(&condition), condition.clone()),
                    validations: rules
                        .into_iter()
                        .map(|(source, message)| (compile(&source), source, message))
                        .collect(),
                }
            })
            .unwrap()
            .join()
            .unwrap()
    }

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
        let (group, version) = match resource {
            "leases" => ("coordination.k8s.io", "v1"),
            _ => ("", "v1"),
        };
        let request = json!({
            "operation": operation,
            "resource": {"group": group, "version": version, "resource": resource},
            "userInfo": {"username": user},
        });
        let mut context = cel::Context::default();
        for (name, value) in [
            ("request", &request),
            ("object", object),
            ("oldObject", old_object),
            (FEDERATION_USER, &json!(federation_user)),
        ] {
            context
                .add_variable(name, cel::to_value(value).unwrap())
                .unwrap();
        }
        let (program, source) = &self.match_condition;
        match program.execute(&context) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => return Decision::NotMatched,
            other => return Decision::Denied(error(source, &other)),
        }
        for (program, source, message) in &self.validations {
            match program.execute(&context) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => return Decision::Denied(message.clone()),
                other => return Decision::Denied(error(source, &other)),
            }
        }
        Decision::Allowed
    }

    /// The number of validations.
    pub fn len(&self) -> usize {
        self.validations.len()
    }
}

/// The API server's words for an expression that did not give a boolean.
fn error(source: &str, result: &cel::ResolveResult) -> String {
    format!("expression '{source}' resulted in error: {result:?}")
}

/// The object expression's attribute `key`, or `None`.
fn field_opt(object: &Expression, key: &str) -> Option<Expression> {
    let Expression::Object(o) = object else {
        panic!("not an object: {object:?}")
    };
    o.iter()
        .find(|(k, _)| match k {
            ObjectKey::Identifier(i) => i.as_str() == key,
            ObjectKey::Expression(Expression::String(s)) => s == key,
            _ => false,
        })
        .map(|(_, v)| v.clone())
}

fn field(object: &Expression, key: &str) -> Expression {
    field_opt(object, key).unwrap_or_else(|| panic!("no {key} in {object:?}"))
}

/// The object's attribute `key`, a string literal.
fn text(object: &Expression, key: &str) -> String {
    match field(object, key) {
        Expression::String(s) => s,
        other => panic!("{key} is not a string literal: {other:?}"),
    }
}

/// A quoted string with interpolations (`"... ${local.x}"`), as written.
fn template(expression: &Expression) -> String {
    match expression {
        Expression::String(s) => s.clone(),
        Expression::TemplateExpr(t) => t.to_string(),
        other => panic!("not a string: {other:?}"),
    }
}
