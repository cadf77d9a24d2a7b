//! Reading JSON another service sent (Vault's answer, Google's, the federation's answer to
//! esi-cli) without letting its values into an error message.
//!
//! serde_json's messages quote what they could not read: `invalid type: string "hvs.CAES…",
//! expected a map`. In a credential answer that string can be the secret itself, and the
//! message ends up in a log line or a Pod's log. [`from_answer`] says where the document went
//! wrong (the field's path and the position) and what kind of problem it was, never a value.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

/// The longest explanation [`explain`] gives, in bytes: a hostile document's key can be long.
pub const EXPLANATION_MAX: usize = 200;

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

/// Why `text` is not a `T`, named as [`from_answer`] names it (the field's path and the
/// position, never a value), at most [`EXPLANATION_MAX`] bytes. For a reader that takes the
/// fast path first (plain `serde_json::from_str`) and explains only a failure: `text` is read
/// again, with path bookkeeping. `None` when it reads as a `T` after all.
pub fn explain<'de, T: Deserialize<'de>>(text: &'de str) -> Option<String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut why = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(e) => describe(e.inner(), &e.path().to_string()),
        Ok(_) => describe(&de.end().err()?, "."),
    };
    truncate_at_char_boundary(&mut why, EXPLANATION_MAX);
    Some(why)
}

/// The most bytes of a name (a member's, a variant's) an explanation shows; a longer one is
/// cut on a character boundary, marked with `…`. A member name is the caller's text, of any
/// length.
pub const NAME_MAX: usize = 64;

/// Why a document did not read as its type, from the error of a reader with path bookkeeping
/// found in `error`'s chain of sources (axum's `Json` extractor reads with
/// `serde_path_to_error`): `{path}: {reason}`, no value quoted ([`without_values`]), every
/// name cut at [`NAME_MAX`] bytes, at most [`EXPLANATION_MAX`] bytes. Serde's reason
/// ("unknown field `…`, expected `lease`") is kept whole, the path gives way first. `None`
/// when the chain holds no such error.
pub fn explain_error(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    let e = std::iter::from_fn(|| {
        let e = next?;
        next = e.source();
        Some(e)
    })
    .find_map(|e| e.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>())?;
    let mut reason = e.inner().to_string();
    // The member at fault is the path's last segment, and is quoted by the reason: cut there
    // by name, so a name holding a backtick is cut whole.
    for segment in e.path() {
        if let serde_path_to_error::Segment::Map { key }
        | serde_path_to_error::Segment::Enum { variant: key } = segment
            && key.len() > NAME_MAX
        {
            reason = reason.replace(&format!("`{key}`"), &format!("`{}`", short_name(key)));
        }
    }
    let mut reason = without_values(&shorten_quoted_names(&reason));
    let mut path = String::new();
    for segment in e.path() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&short_name(key));
            }
            _ => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push('?');
            }
        }
    }
    const SEPARATOR: &str = ": ";
    let room = EXPLANATION_MAX.saturating_sub(reason.len() + SEPARATOR.len());
    if path.is_empty() || path.chars().all(|c| matches!(c, '?' | '.')) || room < 8 {
        truncate_at_char_boundary(&mut reason, EXPLANATION_MAX);
        return Some(reason);
    }
    if path.len() > room {
        truncate_at_char_boundary(&mut path, room - '…'.len_utf8());
        path.push('…');
    }
    Some(format!("{path}{SEPARATOR}{reason}"))
}

/// `name` cut at [`NAME_MAX`] bytes, marked with `…`.
fn short_name(name: &str) -> Cow<'_, str> {
    if name.len() <= NAME_MAX {
        return Cow::Borrowed(name);
    }
    Cow::Owned(format!("{}…", prefix_at_char_boundary(name, NAME_MAX)))
}

/// `message` with every name it quotes in backticks (serde's way: "unknown variant `…`")
/// cut at [`NAME_MAX`] bytes.
fn shorten_quoted_names(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(4 * EXPLANATION_MAX));
    let mut parts = message.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    // Odd parts are quoted (an unpaired backtick leaves its tail as it is).
    let rest: Vec<&str> = parts.collect();
    for (i, part) in rest.iter().enumerate() {
        out.push('`');
        let quoted = i % 2 == 0 && i + 1 < rest.len();
        if quoted {
            out.push_str(&short_name(part));
        } else {
            out.push_str(part);
        }
    }
    out
}

/// `message` (a serde error's) with every quoted string value it shows replaced by its kind:
/// `invalid type: string "hvs.CAES…", expected struct SecretRef` becomes `invalid type: a
/// string, expected struct SecretRef`. For messages about documents that may hold a secret
/// where it does not belong (a token written inline), which then reach a log.
pub fn without_values(message: &str) -> String {
    const QUOTED: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(QUOTED) {
        out.push_str(&rest[..at]);
        let value = &rest[at + QUOTED.len()..];
        // serde quotes with `{:?}`: the value ends at the first `"` not escaped by a `\`.
        let mut escaped = false;
        let end = value.char_indices().find_map(|(i, c)| match c {
            '\\' if !escaped => {
                escaped = true;
                None
            }
            '"' if !escaped => Some(i),
            _ => {
                escaped = false;
                None
            }
        });
        match end {
            Some(end) => {
                out.push_str("a string");
                rest = &value[end + 1..];
            }
            None => {
                // Unterminated (cut short): drop the rest.
                out.push_str("a string");
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Shortens `text` to at most `max` bytes, cutting before the character that would cross it
/// (`String::truncate` panics inside a character).
pub fn truncate_at_char_boundary(text: &mut String, max: usize) {
    let cut = prefix_at_char_boundary(text, max).len();
    text.truncate(cut);
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn prefix_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let cut = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    &text[..cut]
}

/// A struct read from a JSON object only. serde's derive also reads a struct from an array of
/// its fields in order (`["team", {"name": "app"}]` as `{namespace, serviceaccount}`), a shape
/// none of the documents esi reads this way may take: a Pod's parts are addressed by member
/// name (a patch cannot apply to such an array), and a token's claims are objects (RFC 7519
/// §4). Read through `deserialize_map`, in the same pass and without buffering: anything but an
/// object is refused as a value of the wrong type.
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Members<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(Members(std::marker::PhantomData))
    }
}

/// An [`Object`], for `#[serde(deserialize_with = "esi_api::json::object")]`.
pub fn object<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Object::deserialize(d).map(|o| o.0)
}

/// An optional [`Object`]; `null` reads as absent, as `Option` reads it (with
/// `#[serde(default)]` for a member that may be left out).
pub fn optional_object<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Option::<Object<T>>::deserialize(d)?.map(|o| o.0))
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

    #[test]
    fn an_explanation_places_the_fault_and_stays_short() {
        let long = format!(
            r#"{{"data": {{}}, "lease_duration": "{}é"}}"#,
            "a".repeat(300)
        );
        assert!(serde_json::from_str::<Answer>(&long).is_err());
        assert_eq!(
            explain::<Answer>(&long).unwrap(),
            "a value of the wrong type or form at lease_duration (line 1 column 335)"
        );
        // A document key is named, however long, within the bound and on a character boundary.
        let key = format!(r#"{{"data": {{}}, "{}": 1}}"#, "é".repeat(300));
        let why = explain::<Answer>(&key).unwrap();
        assert!(why.starts_with("unknown field `éé"), "{why}");
        assert!(
            why.len() <= EXPLANATION_MAX && why.len() >= EXPLANATION_MAX - 1,
            "{why}"
        );
        assert_eq!(explain::<Answer>(r#"{"data": {}}"#), None);
    }

    #[test]
    fn values_leave_messages_and_the_rest_stays() {
        let inline: Result<BTreeMap<String, u8>, _> =
            serde_json::from_value(serde_json::json!({"token": "hvs.CAES\"x\\y"}));
        let message = inline.unwrap_err().to_string();
        assert!(message.contains("hvs.CAES"), "{message}");
        assert_eq!(
            without_values(&message),
            "invalid type: a string, expected u8"
        );
        assert_eq!(
            without_values(r#"a: string "x", b: string "y\"z", c"#),
            "a: a string, b: a string, c"
        );
        assert_eq!(
            without_values("missing field `data`"),
            "missing field `data`"
        );
        assert_eq!(without_values(r#"cut string "abc"#), "cut a string");
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Named {
        name: String,
        #[serde(default, deserialize_with = "optional_object")]
        inner: Option<Box<Named>>,
    }

    #[test]
    fn an_object_is_read_from_an_object_only() {
        let read = |json: &str| serde_json::from_str::<Object<Named>>(json).map(|o| o.0);
        assert_eq!(
            read(r#"{"name": "a", "inner": {"name": "b"}}"#).unwrap(),
            Named {
                name: "a".into(),
                inner: Some(Box::new(Named {
                    name: "b".into(),
                    inner: None
                }))
            }
        );
        assert_eq!(read(r#"{"name": "a", "inner": null}"#).unwrap().inner, None);
        // serde's derive alone reads both arrays by position.
        assert!(serde_json::from_str::<Named>(r#"["a"]"#).is_ok());
        for json in [
            r#"["a"]"#,
            r#"{"name": "a", "inner": ["b"]}"#,
            r#""a""#,
            "1",
        ] {
            let e = read(json).unwrap_err().to_string();
            assert!(e.contains("expected an object"), "{json}: {e}");
        }
        // The path of a fault inside it is kept.
        assert_eq!(
            explain::<Object<Named>>(r#"{"name": "a", "inner": {"name": 1}}"#).unwrap(),
            "a value of the wrong type or form at inner.name (line 1 column 33)"
        );
    }

    fn read_error(body: &str) -> serde_path_to_error::Error<serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(body);
        serde_path_to_error::deserialize::<_, Answer>(&mut de).unwrap_err()
    }

    #[test]
    fn a_long_member_name_is_cut_and_the_reason_kept() {
        let short = format!("{}…", "é".repeat(NAME_MAX / 2));
        for name in [
            "é".repeat(1024),
            format!("{}`, expected `x", "é".repeat(1024)),
        ] {
            let body = format!(r#"{{"data": {{}}, "{name}": 1}}"#);
            let why = explain_error(&read_error(&body)).unwrap();
            let (path, reason) = why.split_once(": ").unwrap();
            assert!(short.starts_with(path.trim_end_matches('…')), "{why}");
            assert!(
                reason.starts_with(&format!(
                    "unknown field `{short}`, expected `data` or `lease_duration` at line 1 column "
                )),
                "{why}"
            );
            assert!(why.len() <= EXPLANATION_MAX, "{} bytes", why.len());
        }
        // Inside the document, the path is named; a name of a value's kind is not quoted.
        let why = explain_error(&read_error(r#"{"data": {"k": 5}}"#)).unwrap();
        assert_eq!(
            why,
            "data.k: invalid type: integer `5`, expected a string at line 1 column 16"
        );
        let why = explain_error(&read_error(
            r#"{"data": {"k": "s3cret"}, "lease_duration": "s3cret"}"#,
        ))
        .unwrap();
        assert_eq!(
            why,
            "lease_duration: invalid type: a string, expected u64 at line 1 column 52"
        );
        // A path too long for the bound gives way to the reason.
        let deep = format!(r#"{{"data": {{"{}": 5}}}}"#, "k".repeat(300));
        let why = explain_error(&read_error(&deep)).unwrap();
        assert!(
            why.starts_with(&format!("data.{}…: invalid type", "k".repeat(NAME_MAX))),
            "{why}"
        );
        assert!(
            why.ends_with("expected a string at line 1 column 315"),
            "{why}"
        );
    }

    #[test]
    fn the_error_is_found_among_the_sources() {
        #[derive(Debug)]
        struct Wrapped(serde_path_to_error::Error<serde_json::Error>);
        impl fmt::Display for Wrapped {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Wrapped(read_error(r#"{"data": {}, "extra": 1}"#));
        assert_eq!(
            explain_error(&e).unwrap(),
            "extra: unknown field `extra`, expected `data` or `lease_duration` at line 1 column 20"
        );
        assert_eq!(explain_error(&std::io::Error::other("x")), None);
    }

    #[test]
    fn truncation_never_splits_a_character() {
        for max in 0..12 {
            let mut text = "aé€😀bc".to_owned();
            truncate_at_char_boundary(&mut text, max);
            assert!(text.len() <= max);
            assert!("aé€😀bc".starts_with(&text));
        }
        let mut short = "abc".to_owned();
        truncate_at_char_boundary(&mut short, 10);
        assert_eq!(short, "abc");
        assert_eq!(prefix_at_char_boundary("aé", 2), "a");
        assert_eq!(prefix_at_char_boundary("aé", 3), "aé");
    }
}
