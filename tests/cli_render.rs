//! `herald render` with the real binary: a small revision and a store in a temporary
//! folder, contacts put in with `herald contacts import`, a fixed `--now`.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

const NOW: &str = "2026-11-26T12:00:00Z";

const REVISION: &str = r#"
apiVersion: herald/v1
kind: Channel
metadata: {name: sms}
spec: {type: outbox, medium: sms, outbox: {path: out/sms.jsonl}}
---
apiVersion: herald/v1
kind: Channel
metadata: {name: mail}
spec: {type: outbox, medium: email, outbox: {path: out/mail.jsonl}}
---
apiVersion: herald/v1
kind: Template
metadata: {name: promo}
spec:
  variables:
    discount: {type: number, required: true}
    ends_on: {type: date, default: "2027-11-30"}
  sms:
    text: "Hi {{ contact.name | default('there') }}: {{ discount | number }}% off until {{ ends_on | date }}"
  email:
    subject: "{{ discount | number }}% off, {{ contact.name | default('friend') }}"
    html: "<p>Hi {{ contact.name }} &amp; welcome</p>"
    text: |
      Hi {{ contact.name }},
      {{ discount | number }}% off.
  locales:
    pt-BR:
      sms:
        text: "Oi {{ contact.name | default('cliente') }}: {{ discount | number }}% até {{ ends_on | date }}"
---
apiVersion: herald/v1
kind: Template
metadata: {name: plan-reminder}
spec:
  sms: {text: "Your {{ contact.attributes.plan }} plan renews soon"}
---
apiVersion: herald/v1
kind: Campaign
metadata: {name: promo}
spec:
  audience: {segment: all-contacts}
  channels: {strategy: fallback, use: [sms, mail]}
  template: promo
  vars: {discount: 12.5}
  schedule: {now: true}
---
apiVersion: herald/v1
kind: Campaign
metadata: {name: plans}
spec:
  audience: {segment: all-contacts}
  channels: {strategy: specific, use: [sms]}
  template: plan-reminder
  consent: not_required
  schedule: {now: true}
"#;

const CONTACTS: &str = "\
id,name,phone,email,telegram,locale,timezone,country,created_at,tags,opted_in,opted_out,plan
c-1,Ann Lee,+15550000001,ann@example.com,,en-US,America/New_York,US,2025-01-02T03:04:05Z,vip,sms;email,,gold
c-2,Beatriz Santos,+5511987654321,,,pt-BR,America/Sao_Paulo,BR,2025-02-03T00:00:00Z,,sms,,
c-3,Carl <Admin>,,carl@example.com,,de,Europe/Berlin,DE,2025-03-04T00:00:00Z,,email,,silver
c-4,Dora,+15550000004,,,en,,US,2025-04-05T00:00:00Z,,,,
";

struct Fixture {
    _dir: TempDir,
    files: PathBuf,
    db: PathBuf,
}

fn fixture() -> Fixture {
    let dir = TempDir::new().unwrap();
    let files = dir.path().join("campaigns");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("all.yaml"), REVISION).unwrap();
    let csv = dir.path().join("contacts.csv");
    std::fs::write(&csv, CONTACTS).unwrap();
    let db = dir.path().join("herald.db");
    let (code, out, err) = herald(&[
        "contacts",
        "import",
        csv.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "import failed: {out}{err}");
    Fixture {
        _dir: dir,
        files,
        db,
    }
}

fn herald(args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("herald")
        .unwrap()
        .args(args)
        .env("HERALD_NOW", NOW)
        .env_remove("HERALD_DB")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn render(f: &Fixture, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["render"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--dir", path(&f.files), "--db", path(&f.db)]);
    herald(&all)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn one_contact_gets_exactly_the_message_of_its_channel_with_its_address() {
    let f = fixture();
    let (code, out, err) = render(&f, &["promo", "--contact", "c-1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "c-1 (Ann Lee), locale en-US, time zone America/New_York\n  \
         sms (sms) to +15550000001, content: default\n    \
         text: Hi Ann Lee: 12.5% off until November 30, 2027\n"
    );
}

#[test]
fn a_contact_without_a_phone_falls_back_to_email_with_html_escaped() {
    let f = fixture();
    let (code, out, err) = render(&f, &["promo", "--contact", "c-3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "c-3 (Carl <Admin>), locale de, time zone Europe/Berlin\n  \
         mail (email) to carl@example.com, content: default\n    \
         subject: 12,5% off, Carl <Admin>\n    \
         html: <p>Hi Carl &lt;Admin&gt; &amp; welcome</p>\n    \
         text:\n      Hi Carl <Admin>,\n      12,5% off.\n"
    );
}

#[test]
fn a_pt_br_contact_gets_the_pt_br_override_with_portuguese_dates_and_numbers() {
    let f = fixture();
    let (code, out, err) = render(&f, &["promo", "--contact", "c-2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("sms (sms) to +5511987654321, content: pt-BR\n"),
        "{out}"
    );
    assert!(
        out.contains("text: Oi Beatriz Santos: 12,5% até 30 de novembro de 2027\n"),
        "{out}"
    );
}

#[test]
fn a_sample_renders_the_first_recipients_in_order() {
    let f = fixture();
    let (code, out, err) = render(&f, &["promo", "--sample", "2"]);
    assert_eq!(code, 0, "{err}");
    let headers: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.is_empty())
        .collect();
    assert_eq!(
        headers,
        [
            "c-1 (Ann Lee), locale en-US, time zone America/New_York",
            "c-2 (Beatriz Santos), locale pt-BR, time zone America/Sao_Paulo"
        ]
    );
    assert!(
        out.contains("\n\nc-2 "),
        "contacts are separated by a blank line: {out}"
    );
}

#[test]
fn a_sample_in_json_carries_the_rendered_content_per_channel() {
    let f = fixture();
    let (code, out, err) = render(&f, &["promo", "--sample", "5", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["contact"].as_str().unwrap())
        .collect();
    // c-4 never opted in: the campaign leaves them out.
    assert_eq!(ids, ["c-1", "c-2", "c-3"]);
    let carl = &json[2]["messages"][0];
    assert_eq!(carl["channel"], "mail");
    assert_eq!(carl["to"], "carl@example.com");
    assert_eq!(carl["content_locale"], serde_json::Value::Null);
    assert_eq!(carl["content"]["medium"], "email");
    assert_eq!(carl["content"]["subject"], "12,5% off, Carl <Admin>");
    assert_eq!(json[1]["messages"][0]["content_locale"], "pt-BR");
}

#[test]
fn a_contact_the_campaign_leaves_out_is_rendered_with_a_note_saying_why() {
    let f = fixture();
    let (code, out, err) = render(&f, &["promo", "--contact", "c-4"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "  note: the campaign would leave this contact out: without consent (no_consent); \
             shown as it would render on `sms`\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("text: Hi Dora: 12.5% off until November 30, 2027\n"),
        "{out}"
    );
}

#[test]
fn an_undefined_attribute_is_that_contacts_error_and_the_others_still_render() {
    let f = fixture();
    let (code, out, err) = render(&f, &["plans", "--sample", "10"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("text: Your gold plan renews soon\n"), "{out}");
    let dora = out.split("c-4 (Dora)").nth(1).expect("c-4 is rendered");
    assert!(
        dora.contains(
            "    error: template `plan-reminder`, sms.text: undefined value: \
             `contact.attributes.plan` is undefined (line 1)\n"
        ),
        "{dora}"
    );
    assert!(
        err.contains("error: 2 of 3 messages could not be rendered"),
        "{err}"
    );
}

#[test]
fn an_unknown_contact_exits_1_with_a_clear_message() {
    let f = fixture();
    let (code, out, err) = render(&f, &["promo", "--contact", "c-99"]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(err, "error: no contact has the id `c-99`\n");
}

#[test]
fn an_unknown_campaign_exits_1_with_a_suggestion() {
    let f = fixture();
    let (code, _, err) = render(&f, &["prom", "--contact", "c-1"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "error: no campaign is named `prom`; did you mean `promo`?\n"
    );
}

#[test]
fn an_invalid_directory_prints_its_diagnostics_and_exits_1() {
    let f = fixture();
    std::fs::write(
        f.files.join("bad.yaml"),
        "apiVersion: herald/v1\nkind: Template\nmetadata: {name: bad}\nspec: {sms: {text: \"{{ \"}}\n",
    )
    .unwrap();
    let (code, out, err) = render(&f, &["promo", "--contact", "c-1"]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert!(err.contains("bad.yaml:4:"), "{err}");
}

#[test]
fn contact_and_sample_together_are_a_usage_error() {
    let f = fixture();
    let (code, _, _) = render(&f, &["promo", "--contact", "c-1", "--sample", "2"]);
    assert_eq!(code, 2);
}
