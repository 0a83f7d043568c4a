//! The corpus of invalid directories under tests/fixtures/invalid: each case is a directory
//! of YAML files that must be rejected, with the expected findings written next to the
//! mistakes as comments.
//!
//! - `# expect: CODE [CODE...]` at the end of a line: an error with each code on that line.
//! - `# expect-warning: CODE [CODE...]`: the same for warnings.
//! - `# expect-at: LINE CODE [CODE...]` on a line of its own: an error on line LINE of this
//!   file, for the places a trailing comment cannot go (inside a `|` block it is content).
//! - `# expect-warning-at: LINE CODE [CODE...]`: the same for warnings.
//!
//! Every expectation must be met (code, severity, file and line), and every error the
//! validator reports must be expected, so a case cannot silently grow extra errors.
//! Warnings nobody expected are allowed.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use herald::output::{self, DiagnosticFormat};
use herald::spec::{self, Code, Diagnostic, Severity};

/// Validation runs as of this instant, so that "in the past" never depends on the day.
const NOW: &str = "2026-06-01T00:00:00Z";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid")
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("tests/fixtures/invalid exists")
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    cases
}

fn case_name(case: &Path) -> String {
    case.file_name().unwrap().to_string_lossy().into_owned()
}

/// The YAML files of a case, below its directory, with the path as `load_dir` shows it.
fn yaml_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            yaml_files(&path, files);
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            files.push(path);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Expected {
    file: String,
    line: u32,
    severity: Severity,
    code: String,
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}: {severity}[{}]", self.file, self.line, self.code)
    }
}

/// A literal credential written in a fixture: no output may print it.
struct Secret {
    value: String,
    line: u32,
}

/// The expectations written in one file, and the literal secrets it contains.
fn expectations(
    path: &str,
    text: &str,
    problems: &mut Vec<String>,
) -> (Vec<Expected>, Vec<Secret>) {
    let mut expected = Vec::new();
    let mut secrets = Vec::new();
    let line_count = text.lines().count() as u32;
    for (index, line) in text.lines().enumerate() {
        let number = index as u32 + 1;
        let Some(hash) = line.find("# expect") else {
            continue;
        };
        let comment = &line[hash + 2..];
        let (directive, rest) = comment.split_once(':').unwrap_or((comment, ""));
        let mut words = rest.split_whitespace();
        let (severity, at) = match directive {
            "expect" => (Severity::Error, number),
            "expect-warning" => (Severity::Warning, number),
            "expect-at" | "expect-warning-at" => {
                if !line[..hash].trim().is_empty() {
                    problems.push(format!(
                        "{path}:{number}: `# {directive}:` must be a comment line of its own"
                    ));
                }
                let target = words.next().and_then(|w| w.parse::<u32>().ok());
                let Some(target) = target.filter(|t| (1..=line_count).contains(t)) else {
                    problems.push(format!(
                        "{path}:{number}: `# {directive}:` needs a line number of this file first"
                    ));
                    continue;
                };
                let severity = if directive == "expect-at" {
                    Severity::Error
                } else {
                    Severity::Warning
                };
                (severity, target)
            }
            other => {
                problems.push(format!("{path}:{number}: unknown directive `# {other}:`"));
                continue;
            }
        };
        let codes: Vec<&str> = words.collect();
        if codes.is_empty() {
            problems.push(format!("{path}:{number}: `# {directive}:` names no code"));
        }
        for code in codes {
            expected.push(Expected {
                file: path.to_string(),
                line: at,
                severity,
                code: code.to_string(),
            });
            if code == Code::LiteralSecret.as_str() && directive == "expect" {
                match written_value(&line[..hash]) {
                    Some(value) if value.len() >= 8 => secrets.push(Secret { value, line: at }),
                    _ => problems.push(format!(
                        "{path}:{number}: write a literal secret of at least 8 characters as `key: value` on the line that expects literal-secret"
                    )),
                }
            }
        }
    }
    (expected, secrets)
}

/// The scalar of a `key: value` line, unquoted.
fn written_value(line: &str) -> Option<String> {
    let (_, value) = line.split_once(':')?;
    let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
    (!value.is_empty()).then(|| value.to_string())
}

fn matches(diagnostic: &Diagnostic, expected: &Expected) -> bool {
    diagnostic.code.as_str() == expected.code
        && diagnostic.severity == expected.severity
        && diagnostic
            .at
            .as_ref()
            .is_some_and(|at| *at.file == *expected.file && at.line == expected.line)
}

/// Checks one case; returns what is wrong with it, if anything.
fn check_case(case: &Path, now: jiff::Timestamp) -> Option<String> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    yaml_files(case, &mut files);
    if files.is_empty() {
        return Some("  - the case has no .yaml file\n".to_string());
    }
    let mut expected = Vec::new();
    let mut secrets = Vec::new();
    for file in &files {
        let shown = file.display().to_string();
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        let (mut e, s) = expectations(&shown, &text, &mut problems);
        expected.append(&mut e);
        secrets.extend(s.into_iter().map(|s| (shown.clone(), s)));
    }
    if !expected.iter().any(|e| e.severity == Severity::Error) {
        problems.push("the case expects no error: add `# expect: CODE` comments".to_string());
    }

    let loaded = match spec::load_dir(case) {
        Ok(loaded) => loaded,
        Err(e) => return Some(format!("  - the directory could not be loaded: {e}\n")),
    };
    let checked = spec::validate(loaded, now);
    let diagnostics = &checked.diagnostics;

    if checked.is_valid() {
        problems.push("the case is valid, but every case must be rejected".to_string());
    }
    let expected: BTreeSet<Expected> = expected.into_iter().collect();
    for e in &expected {
        if !diagnostics.iter().any(|d| matches(d, e)) {
            problems.push(format!("expected but not reported: {e}"));
        }
    }
    for d in diagnostics.iter().filter(|d| d.is_error()) {
        if !expected.iter().any(|e| matches(d, e)) {
            problems.push(format!("reported but not expected: {d}"));
        }
    }

    // A credential pasted by mistake is reported, never printed, in any format.
    let render = |format| output::render(format, diagnostics, &checked.loaded, false);
    let display: String = diagnostics.iter().map(|d| format!("{d}\n")).collect();
    let renderings = [
        ("text", render(DiagnosticFormat::Text)),
        ("json", render(DiagnosticFormat::Json)),
        ("github", render(DiagnosticFormat::Github)),
        ("display", display),
    ];
    for (file, secret) in &secrets {
        for (format, rendered) in &renderings {
            if rendered.contains(&secret.value) {
                problems.push(format!(
                    "the {format} output prints the literal secret written at {file}:{}",
                    secret.line
                ));
            }
        }
    }

    if problems.is_empty() {
        return None;
    }
    let mut report = String::new();
    for p in &problems {
        let _ = writeln!(report, "  - {p}");
    }
    let _ = writeln!(report, "  diagnostics:");
    for d in diagnostics {
        let _ = writeln!(report, "    {d}");
    }
    Some(report)
}

#[test]
fn every_invalid_fixture_reports_its_expected_errors() {
    let now: jiff::Timestamp = NOW.parse().unwrap();
    let cases = cases();
    let mut failed = 0;
    let mut failures = String::new();
    for case in &cases {
        if let Some(report) = check_case(case, now) {
            failed += 1;
            let _ = writeln!(failures, "case `{}`:\n{report}", case_name(case));
        }
    }
    assert!(
        failed == 0,
        "{failed} of {} invalid fixtures failed:\n\n{failures}",
        cases.len()
    );
}

#[test]
fn the_invalid_corpus_has_at_least_forty_cases() {
    let count = cases().len();
    assert!(
        count >= 40,
        "tests/fixtures/invalid has {count} cases, fewer than 40"
    );
}

#[test]
fn every_case_is_named_as_a_kebab_case_sentence() {
    for case in cases() {
        let name = case_name(&case);
        let kebab = name.split('-').count() >= 2
            && name.split('-').all(|word| {
                !word.is_empty()
                    && word
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            });
        assert!(kebab, "case `{name}` is not a kebab-case sentence");
    }
}
