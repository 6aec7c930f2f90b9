//! Slave names, validated once at the boundary.

use std::fmt;

use thiserror::Error;

/// The longest name the schema stores (`VARCHAR(128)`).
pub const MAX_NAME_LEN: usize = 128;

/// A valid slave name: the unqualified host name, lower-cased, made only of
/// `[a-z0-9_-]`, 1 to 128 characters.
///
/// Machines ask with whatever their host name is (some Windows hosts report
/// upper case), so [`SlaveName::parse`] lower-cases; a fully qualified name
/// is refused rather than silently truncated, as the original did.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlaveName(String);

/// Why a string is not a slave name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The empty string.
    #[error("a slave name cannot be empty")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`].
    #[error("slave name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    /// Contains a dot: a fully qualified name.
    #[error("slave name {0:?} contains '.': give the unqualified hostname")]
    Qualified(String),
    /// Contains a character outside `[a-z0-9_-]` (after lower-casing).
    #[error("slave name {0:?} may contain only letters, digits, '_' and '-'")]
    BadCharacter(String),
}

impl SlaveName {
    /// Lower-cases `raw` and checks it.
    ///
    /// # Errors
    /// A [`NameError`] saying what is wrong with it.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        if raw.chars().count() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        let name = raw.to_ascii_lowercase();
        if name.contains('.') {
            return Err(NameError::Qualified(raw.to_owned()));
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        if !name.chars().all(allowed) {
            return Err(NameError::BadCharacter(raw.to_owned()));
        }
        Ok(Self(name))
    }

    /// The name as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SlaveName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SlaveName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_cases_windows_style_names() {
        assert_eq!(SlaveName::parse("W64-IX-SLAVE01").unwrap().as_str(), "w64-ix-slave01");
    }

    #[test]
    fn refuses_what_cannot_be_a_host_name() {
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("bld.mozilla.org", NameError::Qualified("bld.mozilla.org".into())),
            ("a b", NameError::BadCharacter("a b".into())),
            ("../etc", NameError::Qualified("../etc".into())),
            ("x'y", NameError::BadCharacter("x'y".into())),
            ("é", NameError::BadCharacter("é".into())),
        ];
        for (raw, want) in cases {
            assert_eq!(SlaveName::parse(raw).unwrap_err(), *want, "{raw:?}");
        }
        assert_eq!(SlaveName::parse(&"a".repeat(129)).unwrap_err(), NameError::TooLong);
        assert!(SlaveName::parse(&"a".repeat(128)).is_ok());
    }
}
