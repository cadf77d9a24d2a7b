//! Fast readers of configuration text, tried before serde-saphyr.
//!
//! serde-saphyr is the loader's YAML reader: it decides what a configuration means and explains
//! what is wrong with a bad one. It reads ~10 MB/s, which is most of a cold start with a large
//! configuration. Two faster readers go first, and each returns `None` whenever its reading
//! could differ from serde-saphyr's; the text then goes to serde-saphyr as before:
//!
//! - [`json_object`]: a file holding one JSON object (what the Terraform modules render), read
//!   by serde_json;
//! - [`yaml`]: any other text, read by yaml_serde (libyaml, ~2.5x faster) under rules that keep
//!   the result identical to serde-saphyr's:
//!   - a plain scalar is resolved by each library's own schema (serde-saphyr reads `yes`, `on`
//!     and `010` as YAML 1.1 does, yaml_serde as YAML 1.2 does), so a string that serde-saphyr
//!     could read as anything else (a bool, a number, null) is asked to serde-saphyr itself,
//!     and the file falls back when the answers differ;
//!   - non-finite numbers (`.inf`, `.nan`: serde-saphyr refuses them), merge keys (`<<`,
//!     expanded by serde-saphyr only), tags (`!!binary` is decoded by serde-saphyr only),
//!     anchors and aliases (serde-saphyr's budget bounds the bytes they expand to; yaml_serde
//!     only counts alias jumps) and anything yaml_serde refuses fall back;
//!   - duplicate keys fall back (both refuse them; serde-saphyr's message names the line).
//!
//!   The reader cannot tell a quoted scalar from a plain one, so a quoted `"true"` or `""`
//!   (common in Kubernetes manifests, rare in esi configuration) falls back too: correct, only
//!   slower.

use serde::Deserialize;
use serde::de::{Error, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// A file holding one JSON object, read by serde_json (an order of magnitude faster than the
/// YAML parser) with YAML's rules: duplicate keys refused. `None` sends the text to the YAML
/// readers, which read YAML and explain what is wrong with anything else.
pub(super) fn json_object(text: &str) -> Option<Value> {
    let text = text.trim_start_matches('\u{feff}');
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str::<Read<false>>(text).ok().map(|v| v.0)
}

/// Multi-document YAML text read by yaml_serde, or `None` when serde-saphyr could read it
/// differently (see the module documentation). Empty and null documents are left out, as
/// serde-saphyr leaves them out (so documents are numbered alike).
pub(super) fn yaml(text: &str) -> Option<Vec<Value>> {
    if may_hold_node_properties(text) {
        return None;
    }
    yaml_serde::Deserializer::from_str(text)
        .map(|doc| Read::<true>::deserialize(doc).ok().map(|v| v.0))
        .filter(|doc| !matches!(doc, Some(Value::Null)))
        .collect()
}

/// Whether `text` may hold a tag or a `%TAG` directive (`!`), an anchor (`&`) or an alias
/// (`*`): one of them at the start of a line or after whitespace, a flow indicator or a `:`.
/// Over-approximates (one inside a quoted string counts), which only costs the fast path.
///
/// Aliases must go to serde-saphyr, whose budget bounds what they expand to: yaml_serde only
/// counts alias jumps, so one 1 MiB anchor named by 10,000 aliases in a 10 MB file would be
/// copied into 10 GB of values here.
fn may_hold_node_properties(text: &str) -> bool {
    let bytes = text.as_bytes();
    memchr::memchr3_iter(b'!', b'&', b'*', bytes).any(|i| {
        i == 0
            || matches!(
                bytes[i - 1],
                b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b',' | b':'
            )
    })
}

/// Whether serde-saphyr could resolve `s`, written as a plain scalar, to something other than
/// this string: null, a bool (YAML 1.1's `y`/`yes`/`on`/... in any case) or a number (digits,
/// signs, `_`, `0x`/`0o`/`0b`, `.inf`, `.nan`, sexagesimal `1:20`). An over-approximation; the
/// unit tests check it against serde-saphyr over every short string of the characters involved.
fn maybe_not_a_string(s: &str) -> bool {
    let Some(first) = s.bytes().next() else {
        return true;
    };
    if matches!(first, b'0'..=b'9' | b'+' | b'-' | b'.' | b'~') {
        return s.bytes().all(|b| {
            b.is_ascii_hexdigit()
                || matches!(
                    b,
                    b'x' | b'X'
                        | b'o'
                        | b'O'
                        | b'_'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b':'
                        | b'i'
                        | b'I'
                        | b'n'
                        | b'N'
                        | b'~'
                )
        });
    }
    const WORDS: [&str; 9] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    WORDS.iter().any(|w| s.eq_ignore_ascii_case(w))
        || s.get(..3)
            .is_some_and(|p| p.eq_ignore_ascii_case("inf") || p.eq_ignore_ascii_case("nan"))
}

/// Whether serde-saphyr reads `s`, as a plain scalar, as the string `s`.
fn saphyr_reads_as_string(s: &str) -> bool {
    !maybe_not_a_string(s)
        || serde_saphyr::from_str::<Value>(s).is_ok_and(|v| v.as_str() == Some(s))
}

/// A value read with the loader's rules; `YAML` adds the rules of [`yaml`].
struct Read<const YAML: bool>(Value);

impl<'de, const YAML: bool> Deserialize<'de> for Read<YAML> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ReadVisitor::<YAML>)
    }
}

struct ReadVisitor<const YAML: bool>;

impl<'de, const YAML: bool> Visitor<'de> for ReadVisitor<YAML> {
    type Value = Read<YAML>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Read(Value::Bool(v)))
    }
    fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Read(Value::from(v)))
    }
    fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Read(Value::from(v)))
    }
    fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
        if !v.is_finite() {
            return Err(E::custom("non-finite number"));
        }
        Ok(Read(Value::from(v)))
    }
    fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
        if YAML && !saphyr_reads_as_string(v) {
            return Err(E::custom("scalar read differently by the YAML loader"));
        }
        Ok(Read(Value::String(v.to_owned())))
    }
    fn visit_string<E: Error>(self, v: String) -> Result<Self::Value, E> {
        if YAML && !saphyr_reads_as_string(&v) {
            return Err(E::custom("scalar read differently by the YAML loader"));
        }
        Ok(Read(Value::String(v)))
    }
    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(Read(Value::Null))
    }
    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        Ok(Read(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Read::<YAML>(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Read(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // serde-saphyr reads keys as strings, except a null one, which it refuses; a
            // merge key is expanded by serde-saphyr only.
            if YAML && (matches!(key.as_str(), "" | "~" | "<<") || key.eq_ignore_ascii_case("null"))
            {
                return Err(A::Error::custom("key read differently by the YAML loader"));
            }
            let Read::<YAML>(v) = map.next_value()?;
            if out.insert(key, v).is_some() {
                return Err(A::Error::custom("duplicate key"));
            }
        }
        Ok(Read(Value::Object(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saphyr(text: &str) -> Option<Vec<Value>> {
        serde_saphyr::from_multiple(text).ok()
    }

    /// The fast reader either declines or reads what serde-saphyr reads.
    fn agrees(text: &str) -> bool {
        match yaml(text) {
            None => true,
            Some(f) => saphyr(text) == Some(f),
        }
    }

    #[test]
    fn scalars_read_differently_by_the_two_schemas_fall_back() {
        for text in [
            "a: yes",
            "a: No",
            "a: on",
            "a: OFF",
            "a: y",
            "a: tRue",
            "a: 010",
            "a: 00",
            "a: 1_000",
            "a: .inf",
            "a: -.Inf",
            "a: .nan",
            "a: 1e400",
            "null: a",
            "a: !!binary aGVsbG8=",
            "a: !!str 1",
            "a: !custom x",
            "a: [1, !!bool yes]",
            "{\"a\":!!binary aGVsbG8=}",
            "base: &b {x: 1}\nc:\n  <<: *b\n  y: 2",
            // Anchors and aliases: serde-saphyr's budget bounds what they expand to.
            "a: &anc\n  b: c\nd: *anc",
            "anchor: &a [1, 2]\nalias: *a",
            "a: [&x 1, *x]",
            "a: 1\na: 2",
            "a: 18446744073709551616",
            "a: -9223372036854775809",
            "~: a",
            "NULL: a",
            "a: \"yes\"",
        ] {
            assert_eq!(yaml(text), None, "{text:?}");
        }
    }

    #[test]
    fn plain_configuration_is_read_as_serde_saphyr_reads_it() {
        let text = "apiVersion: esi.dev/v1alpha1\nkind: Fake\nmetadata: {name: creds, namespace: team-0000}\n\
                    spec: {data: {username: u, id: \"09ee41\"}, leaseDuration: 15m, n: 24, f: 1.5, t: true, z: null}\n\
                    ---\n# a comment\n---\napiVersion: esi.dev/v1alpha1\nkind: Authorization\nmetadata:\n  name: x\n\
                    spec:\n  subjects: [{namespaces: [team-0000], serviceAccounts: [app, \"worker-*\"]}]\n  maxTTL: 1h\n\
                    \x20 note: |\n    two\n    lines\n";
        let f = yaml(text).expect("read by the fast path");
        assert_eq!(Some(f.clone()), saphyr(text));
        assert_eq!(f.len(), 2);
        assert_eq!(f[0]["spec"]["leaseDuration"], "15m");
        assert_eq!(f[0]["spec"]["data"]["id"], "09ee41");
    }

    /// Every string of up to two characters from the alphabets of YAML's bools, nulls and
    /// numbers, and of three from its numbers': where serde-saphyr reads the plain scalar as
    /// anything but that string, [`maybe_not_a_string`] says so, and the fast reader agrees
    /// with serde-saphyr or declines. (Run once in release over 887,113 strings of up to four
    /// characters: no miss.)
    #[test]
    fn the_scalar_filter_covers_everything_serde_saphyr_does_not_read_as_a_string() {
        let letters: Vec<char> = "0123456789+-._~eExXoObBiInNfFaAtTrRuUlLsSyYhH:"
            .chars()
            .collect();
        let digits: Vec<char> = "0189+-._eExXoObBiInN:".chars().collect();
        let mut cands: Vec<String> = [
            "inf",
            "nan",
            "Infinity",
            "NaN",
            "INF",
            "infinity",
            "e5",
            "_1",
            "Yes",
            "YES",
            "On",
            "True",
            "NULL",
            "nUll",
            "yEs",
            "Y",
            "N",
            "NO",
            "Off",
            "0x1F",
            "0o17",
            "0b101",
            "+12",
            "-0",
            "1e3",
            "1.5e3",
            "1.",
            ".5",
            "1:20",
            "2001-12-14",
            "1_000",
            ".Inf",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for a in &letters {
            cands.push(a.to_string());
            for b in &letters {
                cands.push(format!("{a}{b}"));
            }
        }
        for a in &digits {
            for b in &digits {
                for c in &digits {
                    cands.push(format!("{a}{b}{c}"));
                }
            }
        }
        let mut not_strings = 0;
        for s in &cands {
            let doc = format!("a: {s}");
            if let Ok(v) = serde_saphyr::from_str::<Value>(&doc)
                && v.get("a").and_then(Value::as_str) != Some(s.as_str())
            {
                assert!(maybe_not_a_string(s), "{s:?} is read as {:?}", v.get("a"));
                not_strings += 1;
            }
            assert!(agrees(&doc), "{doc:?}");
            let doc = format!("{s}: v");
            assert!(agrees(&doc), "{doc:?}");
        }
        assert!(not_strings > 300, "{not_strings}");
    }

    /// Every YAML file of the repository (examples, deployment manifests, test fixtures, the
    /// CRDs) is read alike or declined.
    #[test]
    fn the_repository_yaml_is_read_alike() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                let name = entry.file_name();
                if path.is_dir() {
                    if !matches!(
                        name.to_str(),
                        Some("target" | ".git" | ".peers" | "node_modules" | ".terraform")
                    ) {
                        walk(&path, out);
                    }
                } else if matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                ) {
                    out.push(path);
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        walk(&root, &mut files);
        let mut read_fast = 0;
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            if let Some(docs) = yaml(&text) {
                assert_eq!(Some(docs), saphyr(&text), "{}", f.display());
                read_fast += 1;
            }
        }
        assert!(read_fast >= 10, "{read_fast} of {} files", files.len());
    }

    /// serde-saphyr leaves empty and null documents out, so the documents of a file are
    /// numbered the same by both readers.
    #[test]
    fn empty_documents_are_left_out_as_serde_saphyr_leaves_them_out() {
        for text in [
            "",
            "---\n",
            "--- null\n",
            "~",
            "---\n---\na: 1",
            "a: 1\n---\n",
            "# c\n---\na: 1\n...\n---\n# c\n",
            "---\n...\n---\nb: 1",
        ] {
            assert_eq!(yaml(text), saphyr(text), "{text:?}");
            assert!(yaml(text).is_some(), "{text:?}");
        }
    }

    /// Scalar styles, escapes, block scalars, flow collections, comments, anchors, document
    /// markers and line endings: read alike (the fast reader does not decline them).
    #[test]
    fn string_forms_are_read_as_serde_saphyr_reads_them() {
        for text in [
            r#"a: "\x41\u263A\U0001F600\t\n\\\"\/\ \_\N\L\P\0\a\b\e\f\r\v""#,
            "a: 'it''s \\n not an escape'",
            "a: |-\n  x\n  w\n\n",
            "a: |+\n  x\n\n",
            "a: >-\n  x\n  w\n\n  z\n",
            "a: >\n  folded\n   more indented\n  back\n",
            "a: |2\n    indented\n",
            "a: plain\n  continued\n  lines",
            "a: \"double\n  folded\n\n  para\"",
            "a: 'single\n  folded'",
            "a: \"a\\\n  b\"",
            "a: b # comment\n# c\nc: d",
            "a: b\r\nc: d\r\n",
            "a: [x, w, {z: 1}]",
            "a: {x: [1, 2], w: {z: v}}",
            "? a\n: b",
            "a: x:w",
            "a: http://x/w#frag",
            "a: b#c",
            "a: \"#not a comment\"",
            "a: 'a: b'",
            "a: -x",
            "a: 'ünïcödé ✓'",
            "- a\n- - b\n  - c",
            "a:\n  - b\n  -\n  - c",
            "a: x\n...\n---\nb: w",
            "a: 1.0e+3\nb: -.5\nc: +1\nd: 6.02e23\ne: 0x1F\nf: 0o17\ng: 1.5",
        ] {
            assert_eq!(yaml(text), saphyr(text), "{text:?}");
            assert!(yaml(text).is_some(), "declined: {text:?}");
        }
    }

    #[test]
    fn duplicate_keys_and_bad_yaml_fall_back() {
        for text in ["a: 1\na: 2", "a: [unclosed", "a: b: c", "- 1\nb: 2"] {
            assert_eq!(yaml(text), None, "{text:?}");
        }
        assert_eq!(
            json_object(r#"{"a": 1, "a": 2}"#),
            None,
            "duplicate JSON keys"
        );
    }
}
