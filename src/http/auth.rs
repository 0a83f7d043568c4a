//! Bearer tokens and roles.
//!
//! Tokens come from `HERALD_TOKENS_FILE` (lines `role name sha256-hex-of-token`; `#`
//! comments and blank lines allowed) and/or `HERALD_ADMIN_TOKEN` (one admin token, in
//! clear). Only SHA-256 digests are kept in memory; a presented token is hashed and
//! compared with every configured digest in constant time, so neither a match's position
//! nor a near miss shows in the answer time.
//!
//! Handlers ask for a role by taking an extractor: [`Viewer`], [`Operator`] or [`Admin`]
//! (each admits its role and the ones above it). A browser may send the token as the
//! password of HTTP Basic authentication (any user name), so the status page opens in one.

use std::path::Path;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// What a token may do. Ordered: each role may do everything the ones below it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read only.
    Viewer,
    /// Run control, test sends, contacts.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// One configured token: its holder's name, role and the SHA-256 of the token.
#[derive(Clone)]
struct Entry {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// The configured tokens. Empty means every guarded route answers 401.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and roles only: digests stay out of logs.
        f.debug_list()
            .entries(self.entries.iter().map(|e| (&e.name, e.role)))
            .finish()
    }
}

/// Why the tokens could not be loaded; names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
}

impl Tokens {
    /// Reads `HERALD_TOKENS_FILE` and `HERALD_ADMIN_TOKEN` (either, both or none).
    pub fn from_env() -> Result<Tokens, TokensError> {
        let mut tokens = match std::env::var_os("HERALD_TOKENS_FILE") {
            Some(path) if !path.is_empty() => Tokens::from_file(Path::new(&path))?,
            _ => Tokens::default(),
        };
        if let Ok(token) = std::env::var("HERALD_ADMIN_TOKEN")
            && !token.is_empty()
        {
            tokens.add("admin", Role::Admin, &token);
        }
        Ok(tokens)
    }

    /// Parses a tokens file: `role name sha256-hex` per line.
    pub fn from_file(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Tokens::parse(&text, &path.display().to_string())
    }

    /// Parses the tokens file format; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Tokens, TokensError> {
        let mut tokens = Tokens::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |message: String| TokensError::Line {
                path: origin.to_string(),
                line: i + 1,
                message,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, name, hex] = fields[..] else {
                return Err(error(format!(
                    "expected `role name sha256-of-token`, found {} fields",
                    fields.len()
                )));
            };
            let role = Role::parse(role).ok_or_else(|| {
                error(format!(
                    "unknown role `{role}`: use admin, operator or viewer"
                ))
            })?;
            let digest = parse_digest(hex).ok_or_else(|| {
                error("the third field must be the token's SHA-256 as 64 hex digits".into())
            })?;
            tokens.entries.push(Entry {
                name: name.to_string(),
                role,
                digest,
            });
        }
        Ok(tokens)
    }

    /// Adds a token given in clear (kept only as its digest).
    pub fn add(&mut self, name: &str, role: Role, token: &str) {
        self.entries.push(Entry {
            name: name.to_string(),
            role,
            digest: Sha256::digest(token.as_bytes()).into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The holder of `token`, if it is configured. Every entry is compared, whatever
    /// matched, so the time taken does not depend on which one did.
    pub fn check(&self, token: &str) -> Option<Caller> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found: Option<&Entry> = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&presented)) && found.is_none() {
                found = Some(entry);
            }
        }
        found.map(|e| Caller {
            name: e.name.clone(),
            role: e.role,
        })
    }
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Who made a request: the token holder's name (for logs and audit) and role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// The token of a request: `Authorization: Bearer T`, or Basic with `T` as the password.
fn presented_token(parts: &Parts) -> Option<String> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text
            .split_once(':')
            .map(|(_, password)| password.to_string());
    }
    None
}

/// The caller, if their role is at least `needed`: 401 without a valid token, 403 with a
/// valid one of a lesser role.
fn authorize(parts: &Parts, state: &AppState, needed: Role) -> Result<Caller, ApiError> {
    let token = presented_token(parts).ok_or_else(ApiError::unauthorized)?;
    let caller = state
        .tokens
        .check(&token)
        .ok_or_else(ApiError::unauthorized)?;
    if caller.role < needed {
        return Err(ApiError::forbidden(needed.as_str()));
    }
    Ok(caller)
}

macro_rules! role_extractor {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Debug)]
        pub struct $name(pub Caller);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                authorize(parts, state, $role).map($name)
            }
        }
    };
}

role_extractor!(
    Viewer,
    Role::Viewer,
    "A caller with any role: reading is open to every token."
);
role_extractor!(
    Operator,
    Role::Operator,
    "A caller who may control runs, send tests and change contacts (operator or admin)."
);
role_extractor!(Admin, Role::Admin, "A caller with the admin role.");

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn a_tokens_file_gives_each_holder_a_role() {
        let text = format!(
            "# ops team\n\noperator ana {}\nviewer bob {}\n",
            sha("t-ana"),
            sha("t-bob")
        );
        let tokens = Tokens::parse(&text, "tokens.txt").unwrap();
        assert_eq!(tokens.check("t-ana").unwrap().role, Role::Operator);
        assert_eq!(tokens.check("t-bob").unwrap().name, "bob");
        assert!(tokens.check("t-eve").is_none());
        assert!(tokens.check("").is_none());
    }

    #[test]
    fn a_bad_line_is_named_by_file_and_line() {
        let text = format!("admin root {}\nboss carl {}\n", sha("a"), sha("b"));
        let e = Tokens::parse(&text, "tokens.txt").unwrap_err().to_string();
        assert!(e.starts_with("tokens.txt:2: unknown role `boss`"), "{e}");
        let e = Tokens::parse("viewer x abc\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t:1:") && e.contains("64 hex digits"), "{e}");
        let e = Tokens::parse("viewer only-two\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("found 2 fields"), "{e}");
    }

    #[test]
    fn debug_output_shows_no_digest() {
        let mut tokens = Tokens::default();
        tokens.add("admin", Role::Admin, "secret-token");
        let shown = format!("{tokens:?}");
        assert!(!shown.contains(&sha("secret-token")[..16]), "{shown}");
        assert!(shown.contains("admin"));
    }
}
