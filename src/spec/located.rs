//! Values that remember where in which file they were written.
//!
//! Every diagnostic herald prints points at file:line:column, so the spec types wrap the
//! fields that validation may complain about in [`Located`]. Positions are absolute in the
//! file even though each YAML document is parsed on its own: the loader sets the document's
//! origin (file, first line, first byte) for the duration of its parse, and [`Located`]'s
//! `Deserialize` adds it. That keeps the offset bookkeeping in one place instead of in
//! every check.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

/// A place in a source file: 1-based line and column, plus the byte range of the value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pos {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
    /// Byte offset of the value in the file, and its length in bytes (at least 1 when known).
    pub offset: usize,
    pub len: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Where the document being parsed starts, so relative positions can be made absolute.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    pub file: Arc<str>,
    pub first_line: u32,
    pub first_byte: usize,
}

impl Origin {
    /// Turns a parser location (relative to the document's text) into an absolute [`Pos`].
    pub(crate) fn pos(&self, loc: &serde_saphyr::Location) -> Pos {
        let span = loc.span();
        Pos {
            file: self.file.clone(),
            line: self.first_line + loc.line().saturating_sub(1) as u32,
            column: loc.column() as u32,
            offset: self.first_byte + span.byte_offset().unwrap_or(0) as usize,
            len: span.byte_len().unwrap_or(1).max(1) as usize,
        }
    }
}

thread_local! {
    static ORIGIN: RefCell<Option<Origin>> = const { RefCell::new(None) };
}

/// Runs `parse` with `origin` as the base of every [`Located`] position it produces.
pub(crate) fn with_origin<R>(origin: &Origin, parse: impl FnOnce() -> R) -> R {
    let previous = ORIGIN.with(|o| o.replace(Some(origin.clone())));
    let result = parse();
    ORIGIN.with(|o| *o.borrow_mut() = previous);
    result
}

pub(crate) fn current_pos(loc: &serde_saphyr::Location) -> Pos {
    ORIGIN.with(|o| match &*o.borrow() {
        Some(origin) => origin.pos(loc),
        None => Pos {
            file: Arc::from(""),
            line: loc.line() as u32,
            column: loc.column() as u32,
            offset: loc.span().byte_offset().unwrap_or(0) as usize,
            len: loc.span().byte_len().unwrap_or(1).max(1) as usize,
        },
    })
}

/// A value and the place it was written.
#[derive(Clone, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub at: Pos,
}

impl<T> Located<T> {
    pub fn new(value: T, at: Pos) -> Self {
        Self { value, at }
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Located<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        Ok(Located {
            at: current_pos(&spanned.referenced),
            value: spanned.value,
        })
    }
}

impl<T: serde::Serialize> serde::Serialize for Located<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

/// The schema of a located value is the schema of the value: positions are not written.
impl<T: JsonSchema> JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}
