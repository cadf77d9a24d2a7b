//! A small template language for values derived from the verified identity: session names,
//! source identities, webhook bodies.
//!
//! `{{ name }}` is replaced by a value of the request; the names are `cluster`, `namespace`,
//! `serviceAccount`, `pod` (empty when the token names no pod), `podUid`, `generator`, and
//! `maxTTLSeconds`: the matching Authorization's `maxTTL` in whole seconds (empty when it sets
//! none), so an endpoint can be asked for a credential that lives no longer.
//! Nothing else is evaluated: templates come from manifests, values from the verified token and
//! the Authorization.

use std::borrow::Cow;

use crate::{Context, SpecError};

/// The placeholders a template may use.
pub const NAMES: &[&str] = &[
    "cluster",
    "namespace",
    "serviceAccount",
    "pod",
    "podUid",
    "generator",
    "maxTTLSeconds",
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Text(String),
    Var(&'static str),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

impl Template {
    /// Parses `src` over the request's placeholders ([`NAMES`]); `field` names the manifest
    /// field for errors.
    pub fn parse(src: &str, field: &str) -> Result<Self, SpecError> {
        Self::parse_names(src, field, NAMES)
    }

    /// Parses `src` where only `names` may be placeholders (a template rendered without a
    /// request, such as a webhook's revoke call, has other values).
    pub fn parse_names(src: &str, field: &str, names: &[&'static str]) -> Result<Self, SpecError> {
        let mut segments = Vec::new();
        let mut rest = src;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                segments.push(Segment::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| SpecError::field(field, "unclosed `{{` in template"))?;
            let name = after[..end].trim();
            let name = names.iter().copied().find(|n| *n == name).ok_or_else(|| {
                SpecError::field(
                    field,
                    format!("unknown placeholder {name:?} (known: {})", names.join(", ")),
                )
            })?;
            segments.push(Segment::Var(name));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Template { segments })
    }

    /// Renders with the request's values, each passed through `escape`.
    pub fn render(&self, ctx: &Context<'_>, escape: impl Fn(&str) -> String) -> String {
        self.render_with(|name| value(ctx, name), escape)
    }

    /// Rendered with `x` for every placeholder: what a load-time check holds to the field's
    /// grammar, before any caller's values exist.
    pub fn sample(&self) -> String {
        self.render_with(|_| "x".into(), str::to_owned)
    }

    /// Renders with the values `value` gives for the placeholders, each passed through
    /// `escape`.
    pub fn render_with<'v>(
        &self,
        value: impl Fn(&str) -> Cow<'v, str>,
        escape: impl Fn(&str) -> String,
    ) -> String {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Text(t) => out.push_str(t),
                Segment::Var(name) => out.push_str(&escape(&value(name))),
            }
        }
        out
    }
}

fn value<'a>(ctx: &'a Context<'_>, name: &str) -> Cow<'a, str> {
    let id = ctx.identity;
    Cow::Borrowed(match name {
        "cluster" => &id.cluster,
        "namespace" => &id.namespace,
        "serviceAccount" => &id.service_account.name,
        "pod" => id.pod.as_ref().map_or("", |p| p.name.as_str()),
        "podUid" => id.pod.as_ref().map_or("", |p| p.uid.as_str()),
        "generator" => ctx.generator,
        "maxTTLSeconds" => {
            return ctx
                .max_ttl
                .map_or(Cow::Borrowed(""), |t| Cow::Owned(t.as_secs().to_string()));
        }
        _ => "",
    })
}

/// Escapes a value for the inside of a JSON string literal.
pub fn json_escape(v: &str) -> String {
    let quoted = serde_json::Value::String(v.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use esi_api::{Identity, ObjectRef};

    /// An identity for tests.
    pub(crate) fn identity() -> Identity {
        Identity {
            cluster: "prod-eu".into(),
            issuer: "https://issuer.example".into(),
            namespace: "payments".into(),
            service_account: ObjectRef {
                name: "api".into(),
                uid: "sa-uid".into(),
            },
            pod: Some(ObjectRef {
                name: "api-7d9f".into(),
                uid: "pod-uid".into(),
            }),
            subject: "system:serviceaccount:payments:api".into(),
            token_expires_at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn renders_identity_placeholders() {
        let id = identity();
        let ctx = Context {
            identity: &id,
            generator: "payments/Webhook/x",
            max_ttl: None,
        };
        let t = Template::parse(
            "{{cluster}}/{{ namespace }}/{{serviceAccount}}/{{pod}}:{{generator}}",
            "f",
        )
        .unwrap();
        assert_eq!(
            t.render(&ctx, str::to_owned),
            "prod-eu/payments/api/api-7d9f:payments/Webhook/x"
        );
    }

    #[test]
    fn renders_the_max_ttl_in_seconds_or_nothing() {
        let id = identity();
        let t = Template::parse(r#"{"ttl": "{{maxTTLSeconds}}"}"#, "f").unwrap();
        let ctx = |max_ttl| Context {
            identity: &id,
            generator: "payments/Webhook/x",
            max_ttl,
        };
        assert_eq!(
            t.render(
                &ctx(Some(std::time::Duration::from_secs(900))),
                str::to_owned
            ),
            r#"{"ttl": "900"}"#
        );
        assert_eq!(t.render(&ctx(None), str::to_owned), r#"{"ttl": ""}"#);
    }

    #[test]
    fn rejects_unknown_and_unclosed_placeholders() {
        assert!(
            Template::parse("{{ secret }}", "f")
                .unwrap_err()
                .to_string()
                .contains("unknown placeholder")
        );
        assert!(
            Template::parse("a {{ namespace", "f")
                .unwrap_err()
                .to_string()
                .contains("unclosed")
        );
    }

    #[test]
    fn json_escape_keeps_json_valid() {
        assert_eq!(json_escape("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }
}
