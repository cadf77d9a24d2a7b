//! A choice of exactly one key, ESO-style (`provider: {vault: {...}}`, `auth: {token: {...}}`):
//! the externally tagged enums of the configuration.
//!
//! serde reads such an enum from a map with a single key and, for any other map, says only
//! "invalid value: map, expected map with a single key". [`one_of`] reads the same shape the
//! same way and, for any other map, names the keys the choice takes and the keys it found
//! (never a value: a value can hold a secret written where it does not belong). The message is
//! a serde error like any other, so it reaches the spec-error path at the field's path
//! ([`crate::spec::deserialize_tracked`]).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    self, DeserializeSeed, EnumAccess, IgnoredAny, IntoDeserializer, MapAccess, VariantAccess,
    Visitor,
};
use serde::{Deserialize, Deserializer};

/// How many of the keys found a message names (the rest are counted), and how many
/// characters of each: a hostile key can be long.
const KEYS_SHOWN: usize = 8;
const KEY_CHARS: usize = 64;

/// Reads the externally tagged enum `T` from a map holding exactly one of its variants' keys,
/// for `#[serde(deserialize_with = "crate::choice::one_of")]`. A map with none or several
/// is refused naming the keys `T` takes and those found:
/// `takes exactly one of vault, aws; found 2: aws, vault`.
pub fn one_of<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(OneOf {
        keys: keys_of::<T>(),
        chosen: PhantomData,
    })
}

struct OneOf<T> {
    /// The variants' keys, as `T` names them.
    keys: &'static [&'static str],
    chosen: PhantomData<T>,
}

impl<T> OneOf<T> {
    fn refusal<E: de::Error>(&self, found: &[String], count: usize) -> E {
        let mut message = match self.keys {
            [] => "takes exactly one key, and this build knows none; found ".to_owned(),
            keys => format!("takes exactly one of {}; found ", keys.join(", ")),
        };
        if count == 0 {
            message.push_str("none");
            return E::custom(message);
        }
        message.push_str(&format!("{count}: "));
        for (i, key) in found.iter().enumerate() {
            if i > 0 {
                message.push_str(", ");
            }
            match key.char_indices().nth(KEY_CHARS) {
                Some((cut, _)) => {
                    message.push_str(&key[..cut]);
                    message.push('…');
                }
                None => message.push_str(key),
            }
        }
        if count > found.len() {
            message.push_str(", …");
        }
        E::custom(message)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOf<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a map holding exactly one of {}", self.keys.join(", "))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        // Read from a `serde_json::Value` (as configuration is), the count is known before
        // any value is read: two keys are reported before a fault inside the first.
        let counted = map.size_hint().is_some_and(|n| n != 1);
        let mut found = Vec::new();
        let mut count = 0;
        let mut chosen = None;
        while let Some(key) = map.next_key::<String>()? {
            if count == 0 && !counted {
                chosen = Some(T::deserialize(Chosen {
                    key: &key,
                    map: &mut map,
                })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
            if found.len() < KEYS_SHOWN {
                found.push(key);
            }
            count += 1;
        }
        match chosen {
            Some(chosen) if count == 1 => Ok(chosen),
            _ => Err(self.refusal(&found, count)),
        }
    }
}

/// The first entry of the map as an enum: its key the variant, its value the variant's.
struct Chosen<'k, 'm, A> {
    key: &'k str,
    map: &'m mut A,
}

impl<'de, A: MapAccess<'de>> Deserializer<'de> for Chosen<'_, '_, A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de, A: MapAccess<'de>> EnumAccess<'de> for Chosen<'_, '_, A> {
    type Error = A::Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), A::Error> {
        let variant = seed.deserialize(self.key.into_deserializer())?;
        Ok((variant, self))
    }
}

impl<'de, A: MapAccess<'de>> VariantAccess<'de> for Chosen<'_, '_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.map.next_value()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        struct Tuple<V>(usize, V);
        impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for Tuple<V> {
            type Value = V::Value;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
                d.deserialize_tuple(self.0, self.1)
            }
        }
        self.map.next_value_seed(Tuple(len, visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        struct Struct<V>(&'static [&'static str], V);
        impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for Struct<V> {
            type Value = V::Value;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
                d.deserialize_struct("", self.0, self.1)
            }
        }
        self.map.next_value_seed(Struct(fields, visitor))
    }
}

/// The variants' keys of the enum `T`, as its derived `Deserialize` passes them to
/// `deserialize_enum` (renamed, and only those of the features compiled in).
fn keys_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not an enum"))
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = variants;
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map struct
            identifier ignored_any
        }
    }
    let mut keys: &'static [&'static str] = &[];
    // Always an error: the probe reads nothing, it only learns the variants.
    let _ = T::deserialize(Probe(&mut keys));
    keys
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    enum Auth {
        Token(String),
        AppRole { role: String },
        Plain,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Spec {
        #[serde(deserialize_with = "one_of")]
        auth: Auth,
    }

    fn read(auth: serde_json::Value) -> Result<Auth, String> {
        let spec = json!({ "auth": auth });
        crate::spec::deserialize_tracked::<Spec>(&spec)
            .map(|s| s.auth)
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn one_key_reads_as_serde_reads_it() {
        assert_eq!(read(json!({"token": "t"})), Ok(Auth::Token("t".into())));
        assert_eq!(
            read(json!({"appRole": {"role": "r"}})),
            Ok(Auth::AppRole { role: "r".into() })
        );
        assert_eq!(read(json!({"plain": null})), Ok(Auth::Plain));
        // A fault inside the choice is placed as before.
        assert_eq!(
            read(json!({"appRole": {"role": 1}})),
            Err("auth.appRole.role: invalid type: integer `1`, expected a string".into())
        );
        assert_eq!(
            read(json!({"other": 1})),
            Err(
                "auth: unknown variant `other`, expected one of `token`, `appRole`, `plain`".into()
            )
        );
    }

    #[test]
    fn several_keys_or_none_are_named_without_their_values() {
        assert_eq!(
            read(json!({"token": "s3cret", "appRole": {"role": "s3cret"}})),
            Err("auth: takes exactly one of token, appRole, plain; found 2: appRole, token".into())
        );
        assert_eq!(
            read(json!({})),
            Err("auth: takes exactly one of token, appRole, plain; found none".into())
        );
        // Reported before a fault inside the first key.
        assert!(
            read(json!({"appRole": {"role": 1}, "token": "s3cret"}))
                .unwrap_err()
                .contains("found 2: appRole, token")
        );
        let e = read(json!("s3cret")).unwrap_err();
        assert!(
            e.ends_with("expected a map holding exactly one of token, appRole, plain"),
            "{e}"
        );
        // Many keys, long keys: a bounded message.
        let many: serde_json::Map<_, _> = (0..20)
            .map(|i| (format!("{i:02}{}", "k".repeat(100)), json!(i)))
            .collect();
        let e = read(serde_json::Value::Object(many)).unwrap_err();
        assert!(e.contains("found 20: 00kkk"), "{e}");
        assert!(e.ends_with("k…, …"), "{e}");
        assert!(e.len() < 8 * 70 + 100, "{} bytes", e.len());
    }

    /// A reader that cannot count ahead (a stream) is answered the same.
    #[test]
    fn a_stream_is_read_alike() {
        let read = |text: &str| {
            serde_json::from_str::<Spec>(text)
                .map(|s| s.auth)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            read(r#"{"auth": {"token": "t"}}"#),
            Ok(Auth::Token("t".into()))
        );
        let e = read(r#"{"auth": {"token": "s3cret", "plain": null}}"#).unwrap_err();
        assert!(
            e.starts_with("takes exactly one of token, appRole, plain; found 2: token, plain"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        let e = read(r#"{"auth": {}}"#).unwrap_err();
        assert!(e.contains("found none"), "{e}");
    }
}
