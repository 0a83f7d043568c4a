//! Resolving credential references (`${env:NAME}`, `${file:PATH}`) into values that never
//! print themselves.
//!
//! The spec keeps only the reference ([`crate::spec::values::Secret`]); this module reads
//! the environment or the file when a revision's channels and webhooks are built. A
//! [`SecretString`] shows `***` in `Debug` and `Display`, so a value cannot reach a log or
//! an error message by accident; code that needs it calls [`SecretString::expose`].
//! Errors name the variable or the path, never a value.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::spec::values::{Secret, SecretSource, parse_secret_reference};

/// A resolved credential. `Debug` and `Display` print `***`; [`SecretString::expose`] is
/// the only way to the value, so every use of it is visible in the code.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The value itself: for signing keys and request headers, never for messages.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a reference could not be resolved. Messages name the variable or the file, never
/// the text that was written (it may be a credential pasted by mistake) nor the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Not `${env:NAME}` or `${file:PATH}`; the reason does not repeat the text.
    #[error("{0}")]
    NotAReference(String),
    #[error("the environment variable {name} is not set")]
    EnvNotSet { name: String },
    #[error("the environment variable {name} is not valid UTF-8")]
    EnvNotUnicode { name: String },
    #[error("the file {} cannot be read: {source}", path.display())]
    FileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the file {} is not valid UTF-8", path.display())]
    FileNotUnicode { path: PathBuf },
    #[error("{origin} is empty")]
    Empty { origin: String },
}

/// Resolves references for one applied directory: `${file:PATH}` is relative to
/// `base_dir` (the campaign directory), absolute paths are taken as they are.
#[derive(Clone, Debug)]
pub struct SecretResolver {
    pub base_dir: PathBuf,
}

impl SecretResolver {
    pub fn new(base_dir: impl Into<PathBuf>) -> Self {
        SecretResolver {
            base_dir: base_dir.into(),
        }
    }

    /// Resolves a spec secret.
    pub fn resolve(&self, secret: &Secret) -> Result<SecretString, SecretError> {
        self.resolve_reference(&secret.0.value)
    }

    /// Resolves `${env:NAME}` or `${file:PATH}`. A file's trailing line break (`\n` or
    /// `\r\n`, any number of them) is dropped, as `echo secret > file` adds one; other
    /// whitespace is kept. An empty value is an error: no provider accepts an empty key.
    pub fn resolve_reference(&self, reference: &str) -> Result<SecretString, SecretError> {
        let source = parse_secret_reference(reference).map_err(SecretError::NotAReference)?;
        self.resolve_source(&source)
    }

    pub fn resolve_source(&self, source: &SecretSource) -> Result<SecretString, SecretError> {
        let (value, origin) = match source {
            SecretSource::Env(name) => {
                let value = std::env::var(name).map_err(|e| match e {
                    std::env::VarError::NotPresent => SecretError::EnvNotSet { name: name.clone() },
                    std::env::VarError::NotUnicode(_) => {
                        SecretError::EnvNotUnicode { name: name.clone() }
                    }
                })?;
                (value, format!("the environment variable {name}"))
            }
            SecretSource::File(path) => {
                let full = self.path_of(path);
                let bytes = std::fs::read(&full).map_err(|source| SecretError::FileUnreadable {
                    path: full.clone(),
                    source,
                })?;
                let mut value = String::from_utf8(bytes)
                    .map_err(|_| SecretError::FileNotUnicode { path: full.clone() })?;
                let kept = value.trim_end_matches(['\n', '\r']).len();
                value.truncate(kept);
                (value, format!("the file {}", full.display()))
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty { origin });
        }
        Ok(SecretString(value))
    }

    fn path_of(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_string_never_prints_its_value() {
        let secret = SecretString::new("hunter2");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(***)");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn a_file_reference_is_read_relative_to_the_base_directory_without_its_line_break() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::fs::write(dir.path().join("keys/token"), "s3cr3t\r\n\n").unwrap();
        let resolver = SecretResolver::new(dir.path());
        let value = resolver.resolve_reference("${file:keys/token}").unwrap();
        assert_eq!(value.expose(), "s3cr3t");
    }

    #[test]
    fn a_file_value_keeps_its_inner_and_leading_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), " a b\n").unwrap();
        let value = SecretResolver::new(dir.path())
            .resolve_reference("${file:token}")
            .unwrap();
        assert_eq!(value.expose(), " a b");
    }

    #[test]
    fn an_absolute_file_path_ignores_the_base_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "abs").unwrap();
        let reference = format!("${{file:{}}}", file.display());
        let value = SecretResolver::new("/nonexistent")
            .resolve_reference(&reference)
            .unwrap();
        assert_eq!(value.expose(), "abs");
    }

    #[test]
    fn an_env_reference_reads_the_variable_and_a_missing_one_is_named() {
        // PATH is set in every environment the tests run in; the unset name is unique.
        let resolver = SecretResolver::new(".");
        let path = resolver.resolve_reference("${env:PATH}").unwrap();
        assert_eq!(path.expose(), std::env::var("PATH").unwrap());
        let err = resolver
            .resolve_reference("${env:HERALD_TEST_SURELY_UNSET_4711}")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the environment variable HERALD_TEST_SURELY_UNSET_4711 is not set"
        );
    }

    #[test]
    fn a_missing_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = SecretResolver::new(dir.path())
            .resolve_reference("${file:nope.txt}")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("nope.txt"), "{text}");
        assert!(matches!(err, SecretError::FileUnreadable { .. }));
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let err = SecretResolver::new(dir.path())
            .resolve_reference("${file:empty}")
            .unwrap_err();
        assert!(matches!(err, SecretError::Empty { .. }), "{err}");
    }

    #[test]
    fn a_literal_is_refused_without_being_repeated() {
        let err = SecretResolver::new(".")
            .resolve_reference("sk_live_abcdef")
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SecretError::NotAReference(_)));
        assert!(!text.contains("sk_live_abcdef"), "{text}");
    }
}
