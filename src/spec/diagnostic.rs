//! What validation says: an error or warning with a stable code, a message and a place.

use std::fmt;

use serde::Serialize;

use super::located::Pos;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// The stable error codes. CI scripts and tests branch on these; never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// The file could not be read.
    Io,
    YamlSyntax,
    DuplicateKey,
    UnknownField,
    MissingField,
    InvalidType,
    InvalidValue,
    UnknownApiVersion,
    UnknownKind,
    InvalidName,
    DuplicateName,
    MissingReference,
    SegmentCycle,
    InvalidCondition,
    UnknownContactField,
    OperatorValueMismatch,
    InvalidDuration,
    InvalidCron,
    UnknownTimezone,
    InvalidSchedule,
    ScheduleInPast,
    InvalidRate,
    MaxDurationTooLong,
    InvalidSendWindow,
    TemplateSyntax,
    UndeclaredVariable,
    MissingVariable,
    UnknownVariable,
    MissingMediumContent,
    LiteralSecret,
    InvalidChannel,
    InvalidStrategy,
    InvalidUrl,
    InvalidRegex,
    EmptyRevision,
    /// `plan`/`apply`: the audience cannot be sent within max_duration (or 7 days) at the
    /// effective rate.
    SendTooLong,
    /// `apply`: a `${env:NAME}` that is not set or a `${file:PATH}` that cannot be read.
    UnresolvedSecret,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Io => "io",
            Code::YamlSyntax => "yaml-syntax",
            Code::DuplicateKey => "duplicate-key",
            Code::UnknownField => "unknown-field",
            Code::MissingField => "missing-field",
            Code::InvalidType => "invalid-type",
            Code::InvalidValue => "invalid-value",
            Code::UnknownApiVersion => "unknown-api-version",
            Code::UnknownKind => "unknown-kind",
            Code::InvalidName => "invalid-name",
            Code::DuplicateName => "duplicate-name",
            Code::MissingReference => "missing-reference",
            Code::SegmentCycle => "segment-cycle",
            Code::InvalidCondition => "invalid-condition",
            Code::UnknownContactField => "unknown-contact-field",
            Code::OperatorValueMismatch => "operator-value-mismatch",
            Code::InvalidDuration => "invalid-duration",
            Code::InvalidCron => "invalid-cron",
            Code::UnknownTimezone => "unknown-timezone",
            Code::InvalidSchedule => "invalid-schedule",
            Code::ScheduleInPast => "schedule-in-past",
            Code::InvalidRate => "invalid-rate",
            Code::MaxDurationTooLong => "max-duration-too-long",
            Code::InvalidSendWindow => "invalid-send-window",
            Code::TemplateSyntax => "template-syntax",
            Code::UndeclaredVariable => "undeclared-variable",
            Code::MissingVariable => "missing-variable",
            Code::UnknownVariable => "unknown-variable",
            Code::MissingMediumContent => "missing-medium-content",
            Code::LiteralSecret => "literal-secret",
            Code::InvalidChannel => "invalid-channel",
            Code::InvalidStrategy => "invalid-strategy",
            Code::InvalidUrl => "invalid-url",
            Code::InvalidRegex => "invalid-regex",
            Code::EmptyRevision => "empty-revision",
            Code::SendTooLong => "send-too-long",
            Code::UnresolvedSecret => "unresolved-secret",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One finding. `at` is absent only for findings about the directory as a whole.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub at: Option<Pos>,
    /// A hint: the closest existing name, the expected form.
    pub help: Option<String>,
    /// Other places that explain this one ("first defined here").
    pub related: Vec<(Pos, String)>,
}

impl Diagnostic {
    pub fn error(code: Code, at: &Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            at: Some(at.clone()),
            help: None,
            related: Vec::new(),
        }
    }

    pub fn warning(code: Code, at: &Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, at, message)
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    pub fn related(mut self, at: &Pos, label: impl Into<String>) -> Self {
        self.related.push((at.clone(), label.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if let Some(at) = &self.at {
            write!(f, "{at}: ")?;
        }
        write!(f, "{severity}[{}]: {}", self.code, self.message)?;
        if let Some(help) = &self.help {
            write!(f, " ({help})")?;
        }
        Ok(())
    }
}

/// Puts findings in reading order: by file, then line, then column; errors before warnings.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        let key = |d: &Diagnostic| d.at.as_ref().map(|p| (p.file.clone(), p.line, p.column));
        key(a)
            .cmp(&key(b))
            .then(a.severity.cmp(&b.severity))
            .then(a.code.cmp(&b.code))
    });
}
