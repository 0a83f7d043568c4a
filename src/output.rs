//! How findings are printed: text with source snippets (rustc-like, through miette),
//! a stable JSON array, or GitHub workflow annotations.

use std::fmt::Write as _;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource, Report,
};
use serde::Serialize;

use crate::spec::{Code, Diagnostic, Loaded, Severity, SourceFile};

/// The output formats of `validate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiagnosticFormat {
    Text,
    Json,
    Github,
}

/// Renders findings in `format`. `color` applies to text only.
pub fn render(
    format: DiagnosticFormat,
    diagnostics: &[Diagnostic],
    loaded: &Loaded,
    color: bool,
) -> String {
    match format {
        DiagnosticFormat::Text => text(diagnostics, loaded, color),
        DiagnosticFormat::Json => json(diagnostics),
        DiagnosticFormat::Github => github(diagnostics),
    }
}

/// One element of the JSON output. Field names and meanings are stable.
#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    code: &'static str,
    severity: Severity,
    message: &'a str,
    file: Option<&'a str>,
    line: Option<u32>,
    column: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    help: Option<&'a str>,
}

pub fn json(diagnostics: &[Diagnostic]) -> String {
    let items: Vec<JsonDiagnostic> = diagnostics
        .iter()
        .map(|d| JsonDiagnostic {
            code: d.code.as_str(),
            severity: d.severity,
            message: &d.message,
            file: d.at.as_ref().map(|p| &*p.file),
            line: d.at.as_ref().map(|p| p.line),
            column: d.at.as_ref().map(|p| p.column),
            help: d.help.as_deref(),
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&items).expect("diagnostics serialize");
    out.push('\n');
    out
}

/// GitHub Actions workflow commands: one annotation per finding.
pub fn github(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut message = format!("[{}] {}", d.code, d.message);
        if let Some(help) = &d.help {
            message.push_str(&format!(" ({help})"));
        }
        match &d.at {
            Some(at) => {
                let _ = writeln!(
                    out,
                    "::{level} file={},line={},col={},title={}::{}",
                    escape_property(&at.file),
                    at.line,
                    at.column,
                    escape_property(&format!("herald {}", d.code)),
                    escape_data(&message)
                );
            }
            None => {
                let _ = writeln!(out, "::{level}::{}", escape_data(&message));
            }
        }
    }
    out
}

/// Escaping per the workflow-command rules (actions/toolkit `command.ts`).
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Text: each finding with a snippet and a caret under the place, then a summary line.
pub fn text(diagnostics: &[Diagnostic], loaded: &Loaded, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_context_lines(1)
        .with_width(100);
    let masked = masked_sources(diagnostics, loaded);
    let mut out = String::new();
    for d in diagnostics {
        let report = miette_report(d, &masked);
        let mut rendered = String::new();
        if handler
            .render_report(&mut rendered, report.as_ref())
            .is_err()
        {
            rendered = format!("{d}\n");
        }
        out.push_str(&rendered);
        out.push('\n');
    }
    out
}

/// The files as snippets may show them: a credential written by mistake is reported
/// (literal-secret) but never printed, so its bytes are starred out, keeping offsets.
///
/// Credential fields whose document did not parse have no diagnostic of their own, so
/// every `key: value` line with a credential key and a value that is not a `${...}`
/// reference is starred out too.
fn masked_sources(diagnostics: &[Diagnostic], loaded: &Loaded) -> Vec<SourceFile> {
    let credential = regex::Regex::new(
        r#"(?i)\b(auth_token|access_token|app_secret|verify_token|bot_token|webhook_secret|password|secret|authorization|api[_-]?key|token)["']?\s*:\s*("[^"]*"|'[^']*'|[^\s,}\]#]+)"#,
    )
    .expect("the credential pattern compiles");
    let mut files = loaded.files.clone();
    for file in &mut files {
        let mut spans = Vec::new();
        for m in credential.captures_iter(&file.text) {
            let value = m.get(2).expect("group 2 always matches");
            let inner = value.as_str().trim_matches(['"', '\'']);
            if !inner.starts_with("${") {
                spans.push(value.range());
            }
        }
        if !spans.is_empty() {
            let mut bytes = std::mem::take(&mut file.text).into_bytes();
            for span in spans {
                for b in &mut bytes[span] {
                    if !b.is_ascii_whitespace() && *b != b'"' && *b != b'\'' {
                        *b = b'*';
                    }
                }
            }
            file.text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    for d in diagnostics.iter().filter(|d| d.code == Code::LiteralSecret) {
        let Some(at) = &d.at else { continue };
        if let Some(file) = files.iter_mut().find(|f| f.path == at.file) {
            let end = (at.offset + at.len).min(file.text.len());
            let mut bytes = std::mem::take(&mut file.text).into_bytes();
            for b in &mut bytes[at.offset.min(end)..end] {
                if !b.is_ascii_whitespace() {
                    *b = b'*';
                }
            }
            file.text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    files
}

fn miette_report(d: &Diagnostic, files: &[SourceFile]) -> Report {
    let mut diag = MietteDiagnostic::new(format!("{} [{}]", d.message, d.code)).with_severity(
        match d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        },
    );
    if let Some(help) = &d.help {
        diag = diag.with_help(help.clone());
    }
    let source =
        d.at.as_ref()
            .and_then(|at| files.iter().find(|f| f.path == at.file).map(|s| (at, s)));
    let Some((at, source)) = source else {
        return Report::new(diag);
    };
    let mut labels = vec![LabeledSpan::new_primary_with_span(
        Some("here".into()),
        (at.offset, at.len),
    )];
    for (pos, label) in &d.related {
        if pos.file == at.file {
            labels.push(LabeledSpan::new_with_span(
                Some(label.clone()),
                (pos.offset, pos.len),
            ));
        }
    }
    diag = diag.with_labels(labels);
    Report::new(diag).with_source_code(NamedSource::new(&source.path, source.text.clone()))
}

/// The last line of `validate`'s text output.
pub fn summary(errors: usize, warnings: usize, documents: usize, files: usize) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let counted = format!(
        "{} in {}",
        plural(documents, "document"),
        plural(files, "file")
    );
    if errors == 0 && warnings == 0 {
        format!("valid: {counted}")
    } else if errors == 0 {
        format!("valid with {}: {counted}", plural(warnings, "warning"))
    } else {
        format!(
            "invalid: {}, {}; {counted}",
            plural(errors, "error"),
            plural(warnings, "warning")
        )
    }
}
