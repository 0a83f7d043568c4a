//! `herald validate` and `herald schema` as CI runs them: the real binary, its output
//! formats and its exit codes.

use assert_cmd::Command;
use tempfile::TempDir;

const NOW: &str = "2026-06-01T00:00:00Z";

const SEGMENT: &str = "\
apiVersion: herald/v1
kind: Segment
metadata:
  name: vip
spec:
  match:
    field: tags
    op: gt
    value: 3
";

const CHANNEL: &str = "\
apiVersion: herald/v1
kind: Channel
metadata:
  name: sms
spec:
  type: sms_twilio
  sms_twilio:
    account_sid: AC123
    auth_token: hunter2-super-secret
    from: \"+15005550006\"
";

fn directory(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn herald(args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("herald")
        .unwrap()
        .args(args)
        .env("HERALD_NOW", NOW)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn json_output_is_a_stable_array_of_findings_with_positions() {
    let dir = directory(&[("segments/vip.yaml", SEGMENT), ("channels.yaml", CHANNEL)]);
    let root = dir.path().to_str().unwrap();
    let (code, stdout, _) = herald(&["validate", root, "--format", "json"]);
    assert_eq!(code, 1);
    let findings: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let findings = findings.as_array().unwrap();
    let summary: Vec<(String, String, String, u64, u64)> = findings
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
                f["file"]
                    .as_str()
                    .unwrap()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string(),
                f["line"].as_u64().unwrap(),
                f["column"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "literal-secret".into(),
                "error".into(),
                "/channels.yaml".into(),
                9,
                17
            ),
            (
                "operator-value-mismatch".into(),
                "error".into(),
                "/segments/vip.yaml".into(),
                8,
                9
            ),
        ]
    );
    for f in findings {
        let keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        for key in ["code", "severity", "message", "file", "line", "column"] {
            assert!(keys.contains(&key), "{key} missing from {f}");
        }
    }
    assert!(!stdout.contains("hunter2"), "a literal secret was printed");
}

#[test]
fn text_output_quotes_the_line_with_a_caret_and_masks_secrets() {
    let dir = directory(&[("segments/vip.yaml", SEGMENT), ("channels.yaml", CHANNEL)]);
    let (code, stdout, _) = herald(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stdout.contains("segments/vip.yaml:8:9"), "{stdout}");
    assert!(
        stdout.contains("    op: gt"),
        "the source line is quoted:\n{stdout}"
    );
    assert!(stdout.contains("──┬"), "a caret marks the place:\n{stdout}");
    assert!(stdout.contains("[operator-value-mismatch]"), "{stdout}");
    assert!(
        stdout.contains("auth_token: ********************"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("hunter2"),
        "a literal secret was printed:\n{stdout}"
    );
    assert!(
        stdout
            .trim_end()
            .ends_with("invalid: 2 errors, 0 warnings; 2 documents in 2 files"),
        "{stdout}"
    );
}

#[test]
fn github_output_is_one_workflow_annotation_per_finding() {
    let dir = directory(&[("segments/vip.yaml", SEGMENT)]);
    let root = dir.path().to_str().unwrap();
    let (code, stdout, _) = herald(&["validate", root, "--format", "github"]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let expected_prefix = format!(
        "::error file={}/segments/vip.yaml,line=8,col=9,title=herald operator-value-mismatch::[operator-value-mismatch] `gt` does not apply to `tags`",
        root.replace(':', "%3A").replace(',', "%2C")
    );
    assert!(
        lines[0].starts_with(&expected_prefix),
        "{}\n{expected_prefix}",
        lines[0]
    );
}

#[test]
fn warnings_alone_exit_zero_and_are_annotated_as_warnings() {
    let campaign = "\
apiVersion: herald/v1
kind: Campaign
metadata: {name: spring}
spec:
  audience: {segment: all-contacts}
  channels: {strategy: specific, use: [out]}
  template: hello
  schedule: {at: \"2026-03-01T09:00:00\", timezone: Europe/Madrid}
---
apiVersion: herald/v1
kind: Template
metadata: {name: hello}
spec:
  sms: {text: \"Hi {{ contact.name }}\"}
---
apiVersion: herald/v1
kind: Channel
metadata: {name: out}
spec:
  type: outbox
  medium: sms
  outbox: {path: out.jsonl}
";
    let dir = directory(&[("all.yaml", campaign)]);
    let root = dir.path().to_str().unwrap();
    let (code, stdout, _) = herald(&["validate", root, "--format", "github"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with("::warning file="), "{stdout}");
    assert!(stdout.contains("line=8,col=18"), "{stdout}");
    let (code, stdout, _) = herald(&["validate", root]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("valid with 1 warning: 3 documents in 1 file"),
        "{stdout}"
    );
}

#[test]
fn a_valid_directory_exits_zero_with_an_empty_json_array() {
    let segment = "apiVersion: herald/v1\nkind: Segment\nmetadata: {name: vip}\nspec:\n  match: {field: tags, op: contains, value: vip}\n";
    let dir = directory(&[("vip.yaml", segment)]);
    let (code, stdout, _) = herald(&["validate", dir.path().to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(stdout.trim(), "[]");
}

#[test]
fn an_empty_directory_is_refused_as_a_whole() {
    let dir = directory(&[("notes.txt", "not yaml")]);
    let (code, stdout, _) = herald(&["validate", dir.path().to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 1, "{stdout}");
    let findings: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(findings[0]["code"], "empty-revision");
    assert!(findings[0]["file"].is_null());
}

#[test]
fn a_missing_directory_or_a_bad_flag_exits_two() {
    let (code, _, stderr) = herald(&["validate", "/nonexistent/herald-dir"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/herald-dir"), "{stderr}");
    let (code, _, _) = herald(&["validate", ".", "--format", "xml"]);
    assert_eq!(code, 2);
}

#[test]
fn schema_prints_the_committed_schema() {
    let (code, stdout, _) = herald(&["schema"]);
    assert_eq!(code, 0);
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/herald.schema.json"
    ))
    .unwrap();
    assert_eq!(stdout, committed);
}

#[test]
fn a_credential_in_a_document_that_does_not_parse_is_not_printed_either() {
    let channel = CHANNEL.replace("    from:", "    form:");
    let dir = directory(&[("channels.yaml", &channel)]);
    let (code, stdout, _) = herald(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stdout.contains("[unknown-field]"), "{stdout}");
    assert!(
        !stdout.contains("hunter2"),
        "a literal secret was printed:\n{stdout}"
    );
}
