//! The project's Terraform modules as the tests read them (hcl-rs), and the CEL expressions in
//! them run as the services that take them run CEL (the `cel` crate): Kubernetes'
//! ValidatingAdmissionPolicy in `kubernetes-target`, Google's workload identity pool provider
//! in `trust-gcp`. A fake then enforces what the module writes, not a copy of it.
//!
//! What `cel` does not reproduce: the services' type checking and cost limits, and the
//! extension libraries of Kubernetes' and Google's CEL (the modules use none).

use std::path::{Path, PathBuf};

pub use cel;
pub use hcl;
use hcl::{Expression, ObjectKey};
use serde_json::Value;

/// `infra/terraform/modules/<name>/main.tf`, parsed; panics (a failed test) when it cannot be
/// read or parsed.
pub fn module(name: &str) -> hcl::Body {
    let path = workspace()
        .join("infra/terraform/modules")
        .join(name)
        .join("main.tf");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The workspace's root (this crate's parent folder).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is in the workspace")
        .to_owned()
}

/// The expression of `local.<name>` in `body`'s `locals` blocks.
pub fn local(body: &hcl::Body, name: &str) -> Expression {
    body.blocks()
        .filter(|b| b.identifier() == "locals")
        .flat_map(|b| b.body().attributes())
        .find(|a| a.key() == name)
        .map(|a| a.expr().clone())
        .unwrap_or_else(|| panic!("the module has no local.{name}"))
}

/// The expression of the argument `argument` of `resource "<kind>" "<name>"`.
pub fn resource_argument(body: &hcl::Body, kind: &str, name: &str, argument: &str) -> Expression {
    self::argument(block(body, "resource", &[kind, name]).body(), argument)
}

/// The one block `<identifier> "<labels>"...` of `body` (`data`, `["aws_iam_policy_document",
/// "trust"]`); panics when there is none.
pub fn block<'a>(body: &'a hcl::Body, identifier: &str, labels: &[&str]) -> &'a hcl::Block {
    body.blocks()
        .find(|b| {
            b.identifier() == identifier
                && b.labels()
                    .iter()
                    .map(|l| l.as_str())
                    .eq(labels.iter().copied())
        })
        .unwrap_or_else(|| panic!("no block {identifier} {labels:?}"))
}

/// The blocks `<identifier>` nested in `body` (a resource's `statement`s, say).
pub fn blocks<'a>(
    body: &'a hcl::Body,
    identifier: &'a str,
) -> impl Iterator<Item = &'a hcl::Block> + 'a {
    body.blocks().filter(move |b| b.identifier() == identifier)
}

/// The expression of the argument `name` of `body`; panics when it has none.
pub fn argument(body: &hcl::Body, name: &str) -> Expression {
    body.attributes()
        .find(|a| a.key() == name)
        .map(|a| a.expr().clone())
        .unwrap_or_else(|| panic!("no argument {name}"))
}

/// A list of string literals, as written.
pub fn strings(expression: &Expression) -> Vec<String> {
    match expression {
        Expression::Array(items) => items.iter().map(string).collect(),
        other => panic!("not a list: {other:?}"),
    }
}

/// The object `object`'s attribute `key` (an identifier or a quoted key), or `None`.
pub fn field_opt(object: &Expression, key: &str) -> Option<Expression> {
    entries(object)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The object `object`'s attribute `key`; panics when it has none.
pub fn field(object: &Expression, key: &str) -> Expression {
    field_opt(object, key).unwrap_or_else(|| panic!("no {key} in {object:?}"))
}

/// The object's attributes in order: each key (an identifier, or a quoted key's text) and its
/// expression; panics when `object` is not an object.
pub fn entries(object: &Expression) -> Vec<(String, Expression)> {
    let Expression::Object(o) = object else {
        panic!("not an object: {object:?}")
    };
    o.iter()
        .map(|(k, v)| {
            let key = match k {
                ObjectKey::Identifier(i) => i.as_str().to_owned(),
                ObjectKey::Expression(Expression::String(s)) => s.clone(),
                other => panic!("a computed object key: {other:?}"),
            };
            (key, v.clone())
        })
        .collect()
}

/// A string literal's text, or a quoted template's text with its `${...}` as written; panics on
/// anything else.
pub fn string(expression: &Expression) -> String {
    match expression {
        Expression::String(s) => s.clone(),
        Expression::TemplateExpr(t) => t.to_string(),
        other => panic!("not a string: {other:?}"),
    }
}

/// A CEL expression, compiled, with its source.
pub struct Cel {
    program: cel::Program,
    /// The expression as written.
    pub source: String,
}

impl Cel {
    /// Compiles `source`; panics (a failed test) when it is not CEL. The `cel` crate's parser
    /// (ANTLR) recurses deeply, more than a test thread's stack holds for some expressions, so
    /// it runs on a thread of its own with room for it.
    pub fn compile(source: &str) -> Self {
        let owned = source.to_owned();
        let program = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || cel::Program::compile(&owned).map_err(|e| e.to_string()))
            .expect("a thread")
            .join()
            .expect("the compiler does not panic")
            .unwrap_or_else(|e| panic!("{source}: not CEL: {e}"));
        Cel {
            program,
            source: source.to_owned(),
        }
    }

    /// The expression's value with the variables `vars` (JSON values); an evaluation error in
    /// the words of the services (`expression '...' resulted in error: ...`).
    pub fn eval(&self, vars: &[(&str, &Value)]) -> Result<cel::Value, String> {
        let mut context = cel::Context::default();
        for (name, value) in vars {
            let value = cel::to_value(value).map_err(|e| format!("{name}: {e}"))?;
            context
                .add_variable(*name, value)
                .map_err(|e| format!("{name}: {e}"))?;
        }
        self.program
            .execute(&context)
            .map_err(|e| format!("expression '{}' resulted in error: {e}", self.source))
    }

    /// [`Cel::eval`] of an expression that must give a boolean.
    pub fn holds(&self, vars: &[(&str, &Value)]) -> Result<bool, String> {
        match self.eval(vars)? {
            cel::Value::Bool(b) => Ok(b),
            other => Err(format!(
                "expression '{}' gave {other:?}, not a boolean",
                self.source
            )),
        }
    }
}
