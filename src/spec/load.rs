//! Reading a directory of YAML files into documents that remember their positions.
//!
//! Every `*.yaml`/`*.yml` below the directory counts, in path order; hidden files and
//! folders (editor swap files, `..data` of a Kubernetes ConfigMap mount) do not. A file may
//! hold several documents separated by `---`; each is parsed on its own so that a mistake
//! in one does not hide the others, and each reports at most its first structural error
//! (serde stops there) while validation later reports every semantic one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::{DeserializeOwned, IgnoredAny};

use super::campaign::CampaignSpec;
use super::channel::ChannelSpec;
use super::diagnostic::{Code, Diagnostic};
use super::envelope::{API_VERSION, Document, Kind, Metadata};
use super::located::{Located, Origin, Pos, with_origin};
use super::segment::SegmentSpec;
use super::suggest::did_you_mean;
use super::template::TemplateSpec;
use super::webhook::WebhookSpec;

/// A file as read, kept so that diagnostics can quote it.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The path as the user would type it: the directory argument joined with the file.
    pub path: Arc<str>,
    pub text: String,
}

/// One parsed document of a known kind.
#[derive(Clone, Debug)]
pub enum Object {
    Channel(Box<Document<ChannelSpec>>),
    Segment(Box<Document<SegmentSpec>>),
    Template(Box<Document<TemplateSpec>>),
    Campaign(Box<Document<CampaignSpec>>),
    Webhook(Box<Document<WebhookSpec>>),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Channel(_) => Kind::Channel,
            Object::Segment(_) => Kind::Segment,
            Object::Template(_) => Kind::Template,
            Object::Campaign(_) => Kind::Campaign,
            Object::Webhook(_) => Kind::Webhook,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            Object::Channel(d) => &d.metadata,
            Object::Segment(d) => &d.metadata,
            Object::Template(d) => &d.metadata,
            Object::Campaign(d) => &d.metadata,
            Object::Webhook(d) => &d.metadata,
        }
    }

    pub fn name(&self) -> &Located<String> {
        &self.metadata().name
    }

    /// The spec as JSON, for content hashing and diffs. Secrets stay references.
    pub fn spec_json(&self) -> serde_json::Value {
        let value = match self {
            Object::Channel(d) => serde_json::to_value(&d.spec),
            Object::Segment(d) => serde_json::to_value(&d.spec),
            Object::Template(d) => serde_json::to_value(&d.spec),
            Object::Campaign(d) => serde_json::to_value(&d.spec),
            Object::Webhook(d) => serde_json::to_value(&d.spec),
        };
        value.expect("spec types serialize to JSON")
    }
}

/// Everything read from a directory: the files, the documents that parsed, and what did not.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub files: Vec<SourceFile>,
    pub objects: Vec<Object>,
    /// Documents whose envelope parsed but whose spec did not: their names still count,
    /// so that a mistake in a template does not also make every campaign using it
    /// "refer to a missing template".
    pub unparsed: Vec<(Kind, Metadata)>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn source(&self, path: &str) -> Option<&SourceFile> {
        self.files.iter().find(|f| &*f.path == path)
    }
}

/// Why a directory could not be read at all (as opposed to containing mistakes).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: not a directory")]
    NotADirectory { path: PathBuf },
    #[error("{path}: {source}")]
    Walk {
        path: PathBuf,
        #[source]
        source: walkdir::Error,
    },
}

/// Is this file one of ours? Hidden entries and non-YAML files are not.
fn is_spec_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Lists the spec files below `dir`, sorted, following symbolic links (ConfigMap mounts
/// link each file into a hidden, atomically swapped folder).
pub fn spec_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = entry.map_err(|source| LoadError::Walk {
            path: dir.to_path_buf(),
            source,
        })?;
        if entry.file_type().is_file() && is_spec_file(entry.path()) {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}

/// Reads and parses every spec file below `dir`. Unreadable files become diagnostics.
pub fn load_dir(dir: &Path) -> Result<Loaded, LoadError> {
    let mut sources = Vec::new();
    let mut diagnostics = Vec::new();
    for path in spec_files(dir)? {
        let shown: Arc<str> = Arc::from(path.display().to_string());
        match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => sources.push(SourceFile { path: shown, text }),
                Err(e) => diagnostics.push(file_error(
                    &shown,
                    Code::YamlSyntax,
                    format!(
                        "not UTF-8 text (invalid byte at offset {})",
                        e.utf8_error().valid_up_to()
                    ),
                )),
            },
            Err(e) => diagnostics.push(file_error(&shown, Code::Io, format!("cannot read: {e}"))),
        }
    }
    let mut loaded = load_sources(sources);
    diagnostics.append(&mut loaded.diagnostics);
    loaded.diagnostics = diagnostics;
    Ok(loaded)
}

fn file_error(path: &Arc<str>, code: Code, message: String) -> Diagnostic {
    let at = Pos {
        file: path.clone(),
        line: 1,
        column: 1,
        offset: 0,
        len: 1,
    };
    Diagnostic::error(code, &at, message)
}

/// Parses files already in memory (tests, and the daemon's snapshot of a directory).
///
/// Documents are independent, so they are parsed on all cores; the result is in file
/// and document order whatever the threads' timing.
pub fn load_sources(files: Vec<SourceFile>) -> Loaded {
    let jobs: Vec<(Origin, &str)> = files
        .iter()
        .flat_map(|file| {
            split_documents(&file.text).into_iter().map(|chunk| {
                let origin = Origin {
                    file: file.path.clone(),
                    first_line: chunk.first_line,
                    first_byte: chunk.first_byte,
                };
                (origin, chunk.text)
            })
        })
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(jobs.len().div_ceil(64).max(1));
    let per_thread = jobs.len().div_ceil(threads).max(1);
    let results: Vec<Result<Object, Box<Failure>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(per_thread)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(origin, text)| parse_document(origin, text))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("parsing a document does not panic"))
            .collect()
    });
    let mut objects = Vec::new();
    let mut unparsed = Vec::new();
    let mut diagnostics = Vec::new();
    for result in results {
        match result {
            Ok(object) => objects.push(object),
            Err(failure) => {
                diagnostics.extend(failure.errors);
                unparsed.extend(failure.header);
            }
        }
    }
    Loaded {
        files,
        objects,
        unparsed,
        diagnostics,
    }
}

struct Chunk<'a> {
    text: &'a str,
    first_line: u32,
    first_byte: usize,
}

/// Splits a YAML stream at its `---` document markers. A marker must start a line, so
/// this split is exact for everything but directives (`%YAML`), which herald files do not use.
fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let is_marker =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_marker && offset > start_byte {
            chunks.push(Chunk {
                text: &text[start_byte..offset],
                first_line: start_line,
                first_byte: start_byte,
            });
            start_byte = offset;
            start_line = index as u32 + 1;
        }
        offset += line.len();
    }
    chunks.push(Chunk {
        text: &text[start_byte..],
        first_line: start_line,
        first_byte: start_byte,
    });
    chunks.retain(|c| !is_empty_document(c.text));
    chunks
}

fn is_empty_document(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        let rest = line
            .strip_prefix("---")
            .or_else(|| line.strip_prefix("..."))
            .unwrap_or(line)
            .trim();
        rest.is_empty() || rest.starts_with('#')
    })
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        with_snippet: false,
    }
}

/// A document that did not parse: why, and its kind and metadata if the envelope parsed.
struct Failure {
    errors: Vec<Diagnostic>,
    header: Option<(Kind, Metadata)>,
}

/// Parses one document: first its envelope (to learn the kind), then the whole document
/// as that kind.
fn parse_document(origin: &Origin, text: &str) -> Result<Object, Box<Failure>> {
    let header: Document<IgnoredAny> = parse_as(origin, text).map_err(|d| {
        Box::new(Failure {
            errors: vec![d],
            header: None,
        })
    })?;
    let mut errors = Vec::new();
    if header.api_version.value != API_VERSION {
        errors.push(
            Diagnostic::error(
                Code::UnknownApiVersion,
                &header.api_version.at,
                format!("unknown apiVersion `{}`", header.api_version.value),
            )
            .help(format!("this herald reads apiVersion: {API_VERSION}")),
        );
    }
    let Some(kind) = Kind::parse(&header.kind.value) else {
        let names = Kind::ALL.map(Kind::as_str);
        let hint = did_you_mean(&header.kind.value, names)
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        errors.push(
            Diagnostic::error(
                Code::UnknownKind,
                &header.kind.at,
                format!("unknown kind `{}`", header.kind.value),
            )
            .help(format!("{hint}kinds are {}", names.join(", "))),
        );
        return Err(Box::new(Failure {
            errors,
            header: None,
        }));
    };
    let object = match kind {
        Kind::Channel => parse_as(origin, text).map(|d| Object::Channel(Box::new(d))),
        Kind::Segment => parse_as(origin, text).map(|d| Object::Segment(Box::new(d))),
        Kind::Template => parse_as(origin, text).map(|d| Object::Template(Box::new(d))),
        Kind::Campaign => parse_as(origin, text).map(|d| Object::Campaign(Box::new(d))),
        Kind::Webhook => parse_as(origin, text).map(|d| Object::Webhook(Box::new(d))),
    };
    if let Err(e) = &object {
        errors.push(e.clone());
    }
    match object {
        Ok(object) if errors.is_empty() => Ok(object),
        _ => Err(Box::new(Failure {
            errors,
            header: Some((kind, header.metadata)),
        })),
    }
}

fn parse_as<T: DeserializeOwned>(origin: &Origin, text: &str) -> Result<T, Diagnostic> {
    with_origin(origin, || {
        serde_saphyr::from_str_with_options(text, options())
    })
    .map_err(|e| yaml_error(origin, text, e))
}

/// Turns the YAML library's error into a diagnostic with a stable code and a hint.
fn yaml_error(origin: &Origin, text: &str, error: serde_saphyr::Error) -> Diagnostic {
    use serde_saphyr::Error as E;
    let at = error
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| origin.pos(&l))
        .unwrap_or_else(|| origin.pos(&serde_saphyr::Location::UNKNOWN))
        .clamp_to(text, origin);
    match &error {
        E::SerdeUnknownField {
            field, expected, ..
        } => {
            let hint = did_you_mean(field, expected.iter());
            Diagnostic::error(Code::UnknownField, &at, format!("unknown field `{field}`")).help(
                match hint {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("expected one of: {}", expected.join(", ")),
                },
            )
        }
        E::SerdeMissingField { field, .. } => Diagnostic::error(
            Code::MissingField,
            &at,
            format!("missing field `{}`", display_field(field)),
        ),
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => {
            let hint = did_you_mean(variant, expected.iter())
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            Diagnostic::error(
                Code::InvalidValue,
                &at,
                format!("`{variant}` is not allowed here"),
            )
            .help(format!("{hint}expected one of: {}", expected.join(", ")))
        }
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => Diagnostic::error(
            Code::InvalidType,
            &at,
            format!("expected {expected}, found {unexpected}"),
        ),
        E::NullIntoString { .. } => Diagnostic::error(
            Code::InvalidType,
            &at,
            "this value is empty; write a string (quote it as \"\" if it really is empty)",
        ),
        E::DuplicateMappingKey { key, .. } => Diagnostic::error(
            Code::DuplicateKey,
            &at,
            match key {
                Some(k) => format!("the key `{k}` appears twice in this mapping"),
                None => "a key appears twice in this mapping".to_string(),
            },
        ),
        E::SerdeInvalidValue { .. } => {
            Diagnostic::error(Code::InvalidValue, &at, plain_message(&error))
        }
        _ => Diagnostic::error(Code::YamlSyntax, &at, plain_message(&error)),
    }
}

/// serde names `apiVersion` after the Rust field; show what the user writes.
fn display_field(field: &str) -> &str {
    match field {
        "api_version" => "apiVersion",
        other => other,
    }
}

/// The library's message without its own " at line X, column Y" suffix: we print positions.
fn plain_message(error: &serde_saphyr::Error) -> String {
    let text = error.to_string();
    let text = text.lines().next().unwrap_or("").to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

impl Pos {
    /// Errors at the very end of a document (missing fields) point past its text; keep
    /// them on its last line so snippets stay inside the file.
    fn clamp_to(mut self, text: &str, origin: &Origin) -> Pos {
        if self.line == 0 {
            self.line = origin.first_line;
            self.column = 1;
            self.offset = origin.first_byte;
        }
        let end = origin.first_byte + text.trim_end().len();
        if self.offset > end {
            self.offset = end.saturating_sub(1).max(origin.first_byte);
        }
        self.len = self.len.max(1);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_markers_and_keep_their_first_line() {
        let text = "# comment\n---\na: 1\n---\nb: 2\n...\n---\n# only a comment\n";
        let chunks = split_documents(text);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].first_line, 2);
        assert_eq!(chunks[1].first_line, 4);
        assert!(chunks[1].text.starts_with("---\nb: 2"));
    }

    #[test]
    fn a_marker_needs_to_start_the_line() {
        let text = "a: |\n  ---\n  text\n";
        assert_eq!(split_documents(text).len(), 1);
    }

    #[test]
    fn hidden_and_backup_files_are_not_spec_files() {
        assert!(is_spec_file(Path::new("a/b.yaml")));
        assert!(is_spec_file(Path::new("a/b.yml")));
        assert!(!is_spec_file(Path::new("a/.b.yaml")));
        assert!(!is_spec_file(Path::new("a/b.yaml~")));
        assert!(!is_spec_file(Path::new("a/b.yaml.swp")));
        assert!(!is_spec_file(Path::new("a/#b.yaml#")));
    }
}
