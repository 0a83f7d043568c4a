//! The desired state as files: the five kinds, loading them with positions, validating
//! them, and the JSON Schema editors use. Depends on nothing else of herald's.

pub mod campaign;
pub mod channel;
pub mod diagnostic;
pub mod envelope;
pub mod load;
pub mod located;
pub mod schema;
pub mod segment;
pub mod suggest;
pub mod template;
pub mod validate;
pub mod values;
pub mod webhook;

pub use diagnostic::{Code, Diagnostic, Severity};
pub use envelope::{Document, Kind, Metadata};
pub use load::{Loaded, Object, SourceFile, load_dir, load_sources};
pub use located::{Located, Pos};
pub use validate::{Checked, validate};
