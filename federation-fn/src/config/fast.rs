//! Fast readers of configuration text, tried before serde-saphyr.
//!
//! serde-saphyr is the loader's YAML reader: it decides what a configuration means and explains
//! what is wrong with a bad one. It reads ~10 MB/s, which is most of a cold start with a large
//! configuration. Two faster readers go first, and each returns `None` whenever its reading
//! could differ from serde-saphyr's; the text then goes to serde-saphyr as before:
//!
//! - [`json_document`]: a file holding one JSON object (what the Terraform modules render), read
//!   by serde_json; a `kind: List`'s items are left as text, each read when the loader takes it
//!   ([`json_list_item`]), so that a large configuration is never held whole as values;
//! - [`yaml`]: any other text, read by yaml_serde (libyaml, ~2.5x faster), one document at a
//!   time ([`yaml_documents`]), under rules that keep the result identical to serde-saphyr's:
//!   - a plain scalar is resolved by each library's own schema (serde-saphyr reads `yes`, `on`
//!     and `010` as YAML 1.1 does, yaml_serde as YAML 1.2 does), so a string that serde-saphyr
//!     could read as anything else (a bool, a number, null) is asked to serde-saphyr itself,
//!     and the file falls back when the answers differ;
//!   - non-finite numbers (`.inf`, `.nan`: serde-saphyr refuses them), merge keys (`<<`,
//!     expanded by serde-saphyr only), tags (`!!binary` is decoded by serde-saphyr only),
//!     anchors and aliases (serde-saphyr's budget bounds the bytes they expand to; yaml_serde
//!     only counts alias jumps) and anything yaml_serde refuses fall back;
//!   - duplicate keys fall back (both refuse them; serde-saphyr's message names the line);
//!   - a `?` or `:` starting a token with more after it (`[?x]`) falls back: libyaml takes it
//!     for a key or value indicator in a flow collection, YAML 1.2 for a scalar;
//!   - nesting deeper than serde-saphyr's budget allows (64 collections) falls back, to be
//!     refused there; flow collections that may nest that deep fall back before libyaml reads
//!     them, as libyaml's time grows with the square of their depth (40,000 `{a:` took 25 s).
//!
//!   The reader cannot tell a quoted scalar from a plain one, so a quoted `"true"` or `""`
//!   (common in Kubernetes manifests, rare in esi configuration) falls back too: correct, only
//!   slower.

use serde::de::{DeserializeSeed, Error, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// A file holding one JSON object, read by serde_json (an order of magnitude faster than the
/// YAML parser) with YAML's rules: duplicate keys refused. `None` sends the text to the YAML
/// readers, which read YAML and explain what is wrong with anything else. Fractional numbers
/// read as serde-saphyr reads them, the nearest `f64` (serde_json's `float_roundtrip`).
///
/// A `kind: List` comes back as its items' text, checked to be JSON but not yet read: each is
/// read by [`json_list_item`], which may still decline one (a duplicate key, nesting too deep).
/// An `items` field outside a List, or one that is not a sequence, declines the file.
pub(super) fn json_document(text: &str) -> Option<Json<'_>> {
    let text = text.trim_start_matches('\u{feff}');
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let json = serde::Deserializer::deserialize_map(&mut de, Top).ok()?;
    de.end().ok()?;
    Some(json)
}

/// What [`json_document`] read.
#[derive(Debug)]
pub(super) enum Json<'a> {
    /// One object that is not a List.
    Object(Value),
    /// A List's items, in order, each still JSON text.
    List(Vec<&'a RawValue>),
}

/// A List's item, as [`json_document`] would have read it in place (two collections deep), or
/// `None` where that read declines.
pub(super) fn json_list_item(item: &RawValue) -> Option<Value> {
    let read = Read::<false>::root()
        .enter::<serde_json::Error>()
        .and_then(|r| r.enter())
        .ok()?;
    let mut de = serde_json::Deserializer::from_str(item.get());
    let value = read.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

/// The top-level object of a JSON file: [`Read`]'s rules, with `items` kept as text.
struct Top;

impl<'de> Visitor<'de> for Top {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let inner = Read::<false>::root().enter::<A::Error>()?;
        let mut out = serde_json::Map::new();
        let mut items = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "items" {
                if items.replace(map.next_value_seed(Items)?).is_some() {
                    return Err(A::Error::custom("duplicate key"));
                }
                continue;
            }
            let v = map.next_value_seed(inner)?;
            if out.insert(key, v).is_some() {
                return Err(A::Error::custom("duplicate key"));
            }
        }
        match items {
            None => Ok(Json::Object(Value::Object(out))),
            Some(items) if out.get("kind").and_then(Value::as_str) == Some("List") => {
                Ok(Json::List(items))
            }
            Some(_) => Err(A::Error::custom("items outside a List")),
        }
    }
}

/// A sequence's elements as JSON text.
struct Items;

impl<'de> DeserializeSeed<'de> for Items {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Items {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }
}

/// Multi-document YAML text read by yaml_serde, or `None` when serde-saphyr could read it
/// differently (see the module documentation). Empty and null documents are left out, as
/// serde-saphyr leaves them out (so documents are numbered alike).
pub(super) fn yaml(text: &str) -> Option<Vec<Value>> {
    yaml_documents(text)?.collect()
}

/// [`yaml`], one document at a time (libyaml reads one document's events at a time too):
/// `None` when the text may hold what serde-saphyr reads differently, else each document, up
/// to and including a `None` where the reader declines one (serde-saphyr could read it, or the
/// rest of the text, differently).
pub(super) fn yaml_documents(text: &str) -> Option<impl Iterator<Item = Option<Value>> + '_> {
    if may_hold_node_properties(text)
        || may_start_a_scalar_with_an_indicator(text)
        || may_nest_flow_deeper(text, max_depth())
    {
        return None;
    }
    let documents = yaml_serde::Deserializer::from_str(text)
        .map(|doc| Read::<true>::root().deserialize(doc).ok())
        .filter(|doc| !matches!(doc, Some(Value::Null)))
        // yaml_serde repeats a failure forever: the first one ends the documents.
        .scan(false, |declined, doc| {
            if *declined {
                return None;
            }
            *declined = doc.is_none();
            Some(doc)
        });
    Some(documents)
}

/// How many collections serde-saphyr reads nested in one another (the loader's budget).
fn max_depth() -> usize {
    super::yaml_budget().max_depth
}

/// Whether flow collections in `text` may nest deeper than `max`, counting every bracket (in a
/// string or a comment too). A closing bracket written in a string hides a level from it: the
/// reader still declines such a file (see [`Read`]), after libyaml's slow read. This catches a
/// broken file quickly, not every crafted one.
fn may_nest_flow_deeper(text: &str, max: usize) -> bool {
    let mut depth = 0usize;
    for &b in text.as_bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
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

/// Whether `text` may hold a token starting with `?` or `:` and another character (`[?x]`,
/// `{?x: 1}`, `[:x]`): in a flow collection libyaml reads that `?` or `:` as a key or value
/// indicator, where YAML 1.2 (serde-saphyr) reads a plain scalar `?x`. Over-approximates, as
/// [`may_hold_node_properties`] does.
fn may_start_a_scalar_with_an_indicator(text: &str) -> bool {
    let bytes = text.as_bytes();
    memchr::memchr2_iter(b'?', b':', bytes).any(|i| {
        (i == 0
            || matches!(
                bytes[i - 1],
                b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b','
            ))
            && !matches!(bytes.get(i + 1), None | Some(b' ' | b'\t' | b'\n' | b'\r'))
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

/// A value read with the loader's rules, `depth` collections deep; `YAML` adds the rules of
/// [`yaml`]. Collections nested deeper than serde-saphyr's budget fail the read (the text then
/// goes to serde-saphyr, which refuses it).
#[derive(Clone, Copy)]
struct Read<const YAML: bool> {
    depth: usize,
    max_depth: usize,
}

impl<const YAML: bool> Read<YAML> {
    fn root() -> Self {
        Read {
            depth: 0,
            max_depth: max_depth(),
        }
    }

    /// The reader of the values of a collection read at this depth.
    fn enter<E: Error>(&self) -> Result<Self, E> {
        if self.depth >= self.max_depth {
            return Err(E::custom("nested deeper than the YAML loader reads"));
        }
        Ok(Read {
            depth: self.depth + 1,
            max_depth: self.max_depth,
        })
    }
}

impl<'de, const YAML: bool> DeserializeSeed<'de> for Read<YAML> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, const YAML: bool> Visitor<'de> for Read<YAML> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
        if !v.is_finite() {
            return Err(E::custom("non-finite number"));
        }
        Ok(Value::from(v))
    }
    fn visit_str<E: Error>(self, v: &str) -> Result<Value, E> {
        if YAML && !saphyr_reads_as_string(v) {
            return Err(E::custom("scalar read differently by the YAML loader"));
        }
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: Error>(self, v: String) -> Result<Value, E> {
        if YAML && !saphyr_reads_as_string(&v) {
            return Err(E::custom("scalar read differently by the YAML loader"));
        }
        Ok(Value::String(v))
    }
    fn visit_unit<E: Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter::<A::Error>()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(inner)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter::<A::Error>()?;
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // serde-saphyr reads keys as strings, except a null one, which it refuses; a
            // merge key is expanded by serde-saphyr only.
            if YAML && (matches!(key.as_str(), "" | "~" | "<<") || key.eq_ignore_ascii_case("null"))
            {
                return Err(A::Error::custom("key read differently by the YAML loader"));
            }
            let v = map.next_value_seed(inner)?;
            if out.insert(key, v).is_some() {
                return Err(A::Error::custom("duplicate key"));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saphyr(text: &str) -> Option<Vec<Value>> {
        serde_saphyr::from_multiple(text).ok()
    }

    /// A JSON file that is not a List, as [`json_document`] reads it.
    fn json_object(text: &str) -> Option<Value> {
        match json_document(text)? {
            Json::Object(v) => Some(v),
            Json::List(_) => panic!("{text:?} is a List"),
        }
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

    /// Found by the hostile-config property test: both readers followed up to 128 nested
    /// collections where serde-saphyr's budget stops at 64, so a file serde-saphyr refuses
    /// loaded.
    #[test]
    fn nesting_deeper_than_serde_saphyr_reads_falls_back() {
        let flow = |depth: usize| format!("a: {}1{}", "[".repeat(depth), "]".repeat(depth));
        let json = |depth: usize| format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        // The top-level mapping is the first of the 64.
        assert_eq!(yaml(&flow(63)), saphyr(&flow(63)));
        assert!(yaml(&flow(63)).is_some());
        assert_eq!(saphyr(&flow(64)), None);
        assert_eq!(yaml(&flow(64)), None);
        assert_eq!(
            Some(vec![json_object(&json(64)).unwrap()]),
            saphyr(&json(64))
        );
        assert_eq!(saphyr(&json(65)), None);
        assert_eq!(json_object(&json(65)), None);
        // A closing bracket in a string hides one level from the quick scan; the reader
        // still stops.
        let hidden = format!("a: {}1{}\nb: \"]]\"", "[".repeat(65), "]".repeat(65));
        assert_eq!((yaml(&hidden), saphyr(&hidden)), (None, None));
    }

    /// A JSON List's items are read one at a time, each as the whole file would have been read:
    /// the same values, the same nesting limit (the List and its `items` are the first two of
    /// the 64 collections); an `items` that is not a List's sequence declines the file.
    #[test]
    fn a_json_list_is_read_item_by_item_as_a_whole_file_is() {
        let nested = |depth: usize| format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let list = |items: &[String]| {
            format!(
                r#"{{"apiVersion": "v1", "items": [{}], "kind": "List"}}"#,
                items.join(", ")
            )
        };
        let items = [
            r#"{"kind": "UUID", "metadata": {"name": "a"}, "n": [1, -2, 3.5e-3, null, true]}"#
                .to_owned(),
            r#"{"kind": "Password", "s": "\u00e9\n", "e": {}}"#.to_owned(),
            nested(62),
        ];
        let text = list(&items);
        let Some(Json::List(raw)) = json_document(&text) else {
            panic!("not read as a List");
        };
        let read: Vec<Value> = raw
            .into_iter()
            .map(|i| json_list_item(i).unwrap())
            .collect();
        let slow = saphyr(&text).unwrap();
        assert_eq!(Some(&Value::Array(read)), slow[0].get("items"));

        // One collection deeper than serde-saphyr reads: that item declines, as the file did.
        let text = list(&[items[0].clone(), nested(63)]);
        assert_eq!(saphyr(&text), None);
        let Some(Json::List(raw)) = json_document(&text) else {
            panic!("not read as a List");
        };
        assert!(json_list_item(raw[0]).is_some());
        assert_eq!(json_list_item(raw[1]), None);

        for text in [
            // A manifest with an `items` field is no List.
            r#"{"kind": "UUID", "items": [{"a": 1}]}"#,
            r#"{"items": [{"a": 1}]}"#,
            // Items that are not a sequence, or given twice.
            r#"{"kind": "List", "items": {"kind": "UUID"}}"#,
            r#"{"kind": "List", "items": null}"#,
            r#"{"kind": "List", "items": [], "items": []}"#,
            // Not JSON inside an item.
            r#"{"kind": "List", "items": [{"a": 1,}]}"#,
        ] {
            assert!(json_document(text).is_none(), "{text}");
        }
        // A List without items, and an object with none, read as before.
        let Some(Json::Object(v)) = json_document(r#"{"kind": "List"}"#) else {
            panic!("not read");
        };
        assert_eq!(Some(vec![v]), saphyr(r#"{"kind": "List"}"#));
    }

    /// Found by the hostile-config property test: serde_json without `float_roundtrip` read
    /// 3.147084412274536e-68 as 3.1470844122745357e-68 (it rounds fast, not exactly).
    #[test]
    fn a_fractional_number_in_json_reads_as_serde_saphyr_reads_it() {
        let text = r#"{"a": 3.147084412274536e-68, "b": 1}"#;
        assert_eq!(Some(vec![json_object(text).unwrap()]), saphyr(text));
        assert_eq!(yaml(text), saphyr(text));
        assert_eq!(
            json_object(r#"{"a": -3, "b": 18446744073709551615}"#).unwrap()["b"],
            u64::MAX
        );
    }

    /// Found by the hostile-config property test: libyaml read `[?x]` as a mapping `{x: null}`
    /// and `{?x: 1}` as `{x: 1}`, YAML 1.2 as the scalar `?x`.
    #[test]
    fn a_scalar_starting_with_a_flow_indicator_falls_back() {
        for text in ["a: [?x]", "a: {?x: 1}", "a: [:x]", "? a\n: [?(]"] {
            assert_eq!(yaml(text), None, "{text:?}");
        }
        for text in ["a: http://x/?y=1", "? a\n: b", "a: [b, c]", "a: {b: c}"] {
            assert_eq!(yaml(text), saphyr(text), "{text:?}");
            assert!(yaml(text).is_some(), "{text:?}");
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
