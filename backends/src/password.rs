//! `Password`: a random password under the key `password`, with External Secrets Operator's
//! fields and semantics (`length`, `digits`, `symbols`, `symbolCharacters`, `noUpper`,
//! `allowRepeat`). Nothing to revoke.

use std::collections::BTreeMap;

use kube::CustomResource;
use rand::Rng;
use rand::seq::SliceRandom;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{BackendError, Context, Credential, Generate, SpecError};

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
/// ESO's default symbol set.
pub const DEFAULT_SYMBOLS: &str = "~!@#$%^&*()_+`-={}|[]\\:\"<>?,./";
/// The longest password the generator makes.
pub const MAX_LENGTH: u32 = 4096;

/// `spec` of a `Password` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "Password",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordSpec {
    /// Total length of the password (default 24, at most 4096).
    #[serde(default = "default_length")]
    pub length: u32,
    /// How many digits it contains (default: a quarter of `length`).
    #[serde(default)]
    pub digits: Option<u32>,
    /// How many symbols it contains (default: a quarter of `length`).
    #[serde(default)]
    pub symbols: Option<u32>,
    /// The characters symbols are drawn from (default ESO's set).
    #[serde(default)]
    pub symbol_characters: Option<String>,
    /// Use lowercase letters only.
    #[serde(default)]
    pub no_upper: bool,
    /// Allow a character to appear more than once (default false, like ESO).
    #[serde(default)]
    pub allow_repeat: bool,
}

fn default_length() -> u32 {
    24
}

impl Default for PasswordSpec {
    fn default() -> Self {
        PasswordSpec {
            length: default_length(),
            digits: None,
            symbols: None,
            symbol_characters: None,
            no_upper: false,
            allow_repeat: false,
        }
    }
}

impl PasswordSpec {
    fn digits(&self) -> u32 {
        self.digits.unwrap_or(self.length / 4)
    }

    fn symbols(&self) -> u32 {
        self.symbols.unwrap_or(self.length / 4)
    }

    fn symbol_set(&self) -> &str {
        self.symbol_characters.as_deref().unwrap_or(DEFAULT_SYMBOLS)
    }

    /// Checks that a password with these settings can exist.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.length == 0 || self.length > MAX_LENGTH {
            return Err(SpecError::field(
                "length",
                format!("must be between 1 and {MAX_LENGTH}, got {}", self.length),
            ));
        }
        let (digits, symbols) = (self.digits(), self.symbols());
        if digits.saturating_add(symbols) > self.length {
            return Err(SpecError::field(
                "digits",
                format!(
                    "digits ({digits}) + symbols ({symbols}) exceed length ({})",
                    self.length
                ),
            ));
        }
        let set = self.symbol_set();
        if symbols > 0 && set.is_empty() {
            return Err(SpecError::field(
                "symbolCharacters",
                "is empty but symbols > 0",
            ));
        }
        if !set.is_ascii()
            || set.chars().any(|c| {
                c.is_ascii_alphanumeric() || c.is_ascii_whitespace() || c.is_ascii_control()
            })
        {
            return Err(SpecError::field(
                "symbolCharacters",
                "must hold printable ASCII symbols only (no letters, digits or spaces)",
            ));
        }
        if !self.allow_repeat {
            let letters = if self.no_upper { 26 } else { 52 };
            let unique_symbols = {
                let mut v: Vec<char> = set.chars().collect();
                v.sort_unstable();
                v.dedup();
                v.len() as u32
            };
            let need_letters = self.length - digits - symbols;
            let checks = [
                ("digits", digits, 10),
                ("symbols", symbols, unique_symbols),
                ("length", need_letters, letters),
            ];
            for (field, need, have) in checks {
                if need > have {
                    return Err(SpecError::field(
                        field,
                        format!(
                            "needs {need} distinct characters but only {have} exist; set allowRepeat: true"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The built `Password` generator.
#[derive(Debug, Clone)]
pub struct PasswordGenerator {
    spec: PasswordSpec,
    letters: Vec<u8>,
    symbols: Vec<u8>,
}

impl PasswordGenerator {
    /// Builds the generator; fails when the settings are impossible.
    pub fn new(spec: PasswordSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        let mut letters = LOWER.as_bytes().to_vec();
        if !spec.no_upper {
            letters.extend_from_slice(UPPER.as_bytes());
        }
        let mut symbols = spec.symbol_set().as_bytes().to_vec();
        symbols.sort_unstable();
        symbols.dedup();
        Ok(PasswordGenerator {
            spec,
            letters,
            symbols,
        })
    }

    /// Makes one password.
    pub fn make(&self, rng: &mut impl Rng) -> String {
        let (digits, symbols) = (self.spec.digits() as usize, self.spec.symbols() as usize);
        let letters = self.spec.length as usize - digits - symbols;
        let mut out: Vec<u8> = Vec::with_capacity(self.spec.length as usize);
        draw(
            rng,
            &self.letters,
            letters,
            self.spec.allow_repeat,
            &mut out,
        );
        draw(
            rng,
            DIGITS.as_bytes(),
            digits,
            self.spec.allow_repeat,
            &mut out,
        );
        draw(
            rng,
            &self.symbols,
            symbols,
            self.spec.allow_repeat,
            &mut out,
        );
        out.shuffle(rng);
        // Every byte comes from ASCII sets checked at build time.
        out.into_iter().map(char::from).collect()
    }
}

fn draw(rng: &mut impl Rng, set: &[u8], count: usize, allow_repeat: bool, out: &mut Vec<u8>) {
    if allow_repeat {
        out.extend((0..count).map(|_| set[rng.random_range(0..set.len())]));
    } else {
        // The sets are at most 52 letters, 10 digits or 32 distinct symbols (printable ASCII
        // that is neither a letter nor a digit): drawn from a copy on the stack.
        let mut stack = [0u8; 64];
        let mut heap = Vec::new();
        let pool = match stack.get_mut(..set.len()) {
            Some(pool) => pool,
            None => {
                heap.extend_from_slice(set);
                &mut heap[..]
            }
        };
        pool.copy_from_slice(set);
        let (chosen, _) = pool.partial_shuffle(rng, count);
        out.extend_from_slice(chosen);
    }
}

impl Generate for PasswordGenerator {
    async fn generate(&self, _ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let password = self.make(&mut rand::rng());
        Ok(Credential::static_data(BTreeMap::from([(
            "password".to_owned(),
            password,
        )])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    fn counts(p: &str) -> (usize, usize, usize, usize) {
        let lower = p.chars().filter(|c| c.is_ascii_lowercase()).count();
        let upper = p.chars().filter(|c| c.is_ascii_uppercase()).count();
        let digits = p.chars().filter(|c| c.is_ascii_digit()).count();
        (lower, upper, digits, p.len() - lower - upper - digits)
    }

    #[test]
    fn defaults_match_eso() {
        let g = PasswordGenerator::new(PasswordSpec::default()).unwrap();
        for _ in 0..200 {
            let p = g.make(&mut rand::rng());
            assert_eq!(p.len(), 24);
            let (_, _, digits, symbols) = counts(&p);
            assert_eq!((digits, symbols), (6, 6), "{p}");
            let mut chars: Vec<char> = p.chars().collect();
            chars.sort_unstable();
            chars.dedup();
            assert_eq!(chars.len(), 24, "repeat in {p}");
        }
    }

    #[test]
    fn honours_no_upper_and_custom_symbols() {
        let spec = PasswordSpec {
            length: 12,
            digits: Some(2),
            symbols: Some(3),
            symbol_characters: Some("-_".to_owned()),
            no_upper: true,
            allow_repeat: true,
        };
        let g = PasswordGenerator::new(spec).unwrap();
        for _ in 0..200 {
            let p = g.make(&mut rand::rng());
            let (lower, upper, digits, symbols) = counts(&p);
            assert_eq!((lower, upper, digits, symbols), (7, 0, 2, 3), "{p}");
            assert!(
                p.chars()
                    .filter(|c| !c.is_ascii_alphanumeric())
                    .all(|c| c == '-' || c == '_')
            );
        }
    }

    #[test]
    fn rejects_impossible_settings_naming_the_field() {
        let cases = [
            (serde_json::json!({"length": 0}), "spec.length"),
            (
                serde_json::json!({"length": 4, "digits": 3, "symbols": 3}),
                "spec.digits",
            ),
            (
                serde_json::json!({"length": 20, "digits": 11, "symbols": 0}),
                "spec.digits",
            ),
            (
                serde_json::json!({"symbolCharacters": "ab"}),
                "spec.symbolCharacters",
            ),
            (serde_json::json!({"lenght": 10}), "unknown field `lenght`"),
            (serde_json::json!({"length": "ten"}), "spec.length"),
        ];
        for (spec, expected) in cases {
            let err =
                GeneratorSpec::from_manifest(GeneratorKind::Password, spec.clone()).unwrap_err();
            assert!(err.to_string().contains(expected), "{spec}: {err}");
        }
    }

    #[test]
    fn absent_spec_means_defaults() {
        let spec =
            GeneratorSpec::from_manifest(GeneratorKind::Password, serde_json::Value::Null).unwrap();
        assert_eq!(spec, GeneratorSpec::Password(PasswordSpec::default()));
    }
}
