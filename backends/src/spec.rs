//! The generator config enum, tagged by the manifest's `kind`.

use std::fmt;

use crate::{SpecError, fake, password, uuid};

/// Every generator kind this build knows, in manifest spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GeneratorKind {
    /// `Password`.
    Password,
    /// `UUID`.
    Uuid,
    /// `Fake`.
    Fake,
}

impl GeneratorKind {
    /// All kinds compiled into this build.
    pub const ALL: &'static [GeneratorKind] = &[
        GeneratorKind::Password,
        GeneratorKind::Uuid,
        GeneratorKind::Fake,
    ];

    /// The manifest `kind` (and the `{kind}` path segment of the API).
    pub const fn as_str(self) -> &'static str {
        match self {
            GeneratorKind::Password => "Password",
            GeneratorKind::Uuid => "UUID",
            GeneratorKind::Fake => "Fake",
        }
    }

    /// Parses a manifest kind; `None` for anything that is not a generator.
    pub fn parse(kind: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == kind)
    }

    /// Comma-separated list of the known kinds, for error messages.
    pub fn known() -> String {
        Self::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for GeneratorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `spec` of a generator resource, one variant per kind.
#[derive(Clone, Debug, PartialEq)]
pub enum GeneratorSpec {
    /// `kind: Password`.
    Password(password::PasswordSpec),
    /// `kind: UUID`.
    Uuid(uuid::UuidSpec),
    /// `kind: Fake`.
    Fake(fake::FakeSpec),
}

impl GeneratorSpec {
    /// Deserializes the `spec` of a manifest of the given generator kind, rejecting unknown
    /// fields and naming the field at fault.
    pub fn from_manifest(kind: GeneratorKind, spec: serde_json::Value) -> Result<Self, SpecError> {
        let spec = match kind {
            GeneratorKind::Password => GeneratorSpec::Password(parse(spec)?),
            GeneratorKind::Uuid => GeneratorSpec::Uuid(parse(spec)?),
            GeneratorKind::Fake => GeneratorSpec::Fake(parse(spec)?),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The kind of this spec.
    pub fn kind(&self) -> GeneratorKind {
        match self {
            GeneratorSpec::Password(_) => GeneratorKind::Password,
            GeneratorSpec::Uuid(_) => GeneratorKind::Uuid,
            GeneratorSpec::Fake(_) => GeneratorKind::Fake,
        }
    }

    /// The SecretStore (in the generator's namespace) this generator needs, if any.
    pub fn store_ref(&self) -> Option<&str> {
        match self {
            GeneratorSpec::Password(_) | GeneratorSpec::Uuid(_) | GeneratorSpec::Fake(_) => None,
        }
    }

    /// Checks the values serde cannot (ranges, consistency).
    pub fn validate(&self) -> Result<(), SpecError> {
        match self {
            GeneratorSpec::Password(s) => s.validate(),
            GeneratorSpec::Uuid(_) => Ok(()),
            GeneratorSpec::Fake(s) => crate::fake::FakeGenerator::new(s.clone()).map(|_| ()),
        }
    }
}

/// Deserializes `value` into `T`, reporting the path of the failing field.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, SpecError> {
    // An absent `spec` means "all defaults".
    let value = if value.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        value
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        SpecError::field(path, e.into_inner().to_string())
    })
}
