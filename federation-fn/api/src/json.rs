//! Reading JSON another service sent (Vault's answer, Google's, the federation's answer to
//! esi-cli) without letting its values into an error message.
//!
//! serde_json's messages quote what they could not read: `invalid type: string "hvs.CAES…",
//! expected a map`. In a credential answer that string can be the secret itself, and the
//! message ends up in a log line or a Pod's log. [`from_answer`] says where the document went
//! wrong (the field's path and the position) and what kind of problem it was, never a value.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::error::Category;

/// Why an answer could not be read. Its text names fields and positions, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerError(String);

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AnswerError {}

/// Reads `T` from `bytes` like `serde_json::from_slice`, with an [`AnswerError`] on failure.
pub fn from_answer<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AnswerError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        AnswerError(describe(e.inner(), &path))
    })?;
    de.end().map_err(|e| AnswerError(describe(&e, ".")))?;
    Ok(value)
}

fn describe(e: &serde_json::Error, path: &str) -> String {
    match e.classify() {
        // Syntax messages name tokens and positions ("expected `,` or `}`"), never values.
        Category::Syntax | Category::Eof | Category::Io => e.to_string(),
        Category::Data => {
            let message = e.to_string();
            // These name a field (of ours, or a key of the document), not a value.
            let about_a_field = ["missing field `", "unknown field `", "duplicate field `"]
                .iter()
                .any(|p| message.starts_with(p));
            if about_a_field {
                message
            } else {
                format!(
                    "a value of the wrong type or form at {path} (line {} column {})",
                    e.line(),
                    e.column()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Answer {
        #[allow(dead_code)]
        data: BTreeMap<String, String>,
        #[allow(dead_code)]
        #[serde(default)]
        lease_duration: u64,
    }

    fn error(json: &str) -> String {
        from_answer::<Answer>(json.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_value_of_the_wrong_type_is_placed_not_quoted() {
        for json in [
            r#"{"data": "s3cr3t-value"}"#,
            r#"{"data": {}, "lease_duration": "s3cr3t-value"}"#,
            r#"{"data": {"password": 12345678}}"#,
        ] {
            let plain = serde_json::from_str::<Answer>(json)
                .unwrap_err()
                .to_string();
            let ours = error(json);
            assert!(
                plain.contains("s3cr3t-value") || plain.contains("12345678"),
                "serde_json quotes it: {plain}"
            );
            assert!(
                !ours.contains("s3cr3t") && !ours.contains("12345678"),
                "{ours}"
            );
            assert!(
                ours.starts_with("a value of the wrong type or form at "),
                "{ours}"
            );
        }
        assert_eq!(
            error(r#"{"data": {"password": 1}}"#),
            "a value of the wrong type or form at data.password (line 1 column 23)"
        );
    }

    #[test]
    fn fields_and_syntax_are_named() {
        assert_eq!(
            error(r#"{"lease_duration": 3}"#),
            "missing field `data` at line 1 column 21"
        );
        assert_eq!(
            error(r#"{"data": {}, "extra": 1}"#),
            "unknown field `extra`, expected `data` or `lease_duration` at line 1 column 20"
        );
        assert_eq!(
            error(r#"{"data": {"a": "b"#),
            "EOF while parsing a string at line 1 column 17"
        );
        assert_eq!(
            error(r#"{"data": {}} trailing"#),
            "trailing characters at line 1 column 14"
        );
        let ok: Answer = from_answer(br#"{"data": {"a": "b"}}"#).unwrap();
        assert_eq!(ok.data["a"], "b");
    }
}
