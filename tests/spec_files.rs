//! The committed schema and the bundled example: what a new user and their editor see.

use std::path::{Path, PathBuf};

use herald::spec::{self, Severity};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn example_files() -> Vec<PathBuf> {
    spec::load::spec_files(&repo("campaigns.example")).expect("campaigns.example is a directory")
}

#[test]
fn the_committed_schema_is_the_one_the_types_generate() {
    let committed = std::fs::read_to_string(repo("schemas/herald.schema.json"))
        .expect("schemas/herald.schema.json exists");
    assert!(
        committed == spec::schema::json_schema(),
        "schemas/herald.schema.json is stale: run `cargo run -- schema > schemas/herald.schema.json`"
    );
}

#[test]
fn the_example_directory_is_valid_without_warnings() {
    let now: jiff::Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
    let checked = spec::validate(spec::load_dir(&repo("campaigns.example")).unwrap(), now);
    let findings: Vec<String> = checked
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        findings.is_empty(),
        "campaigns.example has findings:\n{}",
        findings.join("\n")
    );
    for kind in spec::Kind::ALL {
        assert!(
            checked.loaded.objects.iter().any(|o| o.kind() == kind),
            "campaigns.example has no {kind}"
        );
    }
}

/// The example's provider channels build once their credentials are there: their
/// settings (SIDs, numbers, addresses, ids) are what the provider modules accept. In the
/// example the credentials come from the environment; here each `${env:NAME}` reads a file
/// instead, so the test needs no environment. (In a runtime: the SMTP pool spawns.)
#[tokio::test]
async fn the_examples_provider_channels_build_with_their_credentials() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    let providers = repo("campaigns.example/channels/providers");
    for entry in std::fs::read_dir(&providers).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let mut text = std::fs::read_to_string(&path).unwrap();
        while let Some(start) = text.find("${env:") {
            let end = start + text[start..].find('}').unwrap();
            let name = text[start + 6..end].to_string();
            std::fs::write(dir.join("secrets").join(&name), format!("dummy_{name}")).unwrap();
            text.replace_range(start..=end, &format!("${{file:secrets/{name}}}"));
        }
        std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
    }
    let loaded = spec::load_dir(dir).unwrap();
    let resolver = herald::secrets::SecretResolver::new(dir);
    let mut built = Vec::new();
    for object in &loaded.objects {
        if let spec::Object::Channel(channel) = object {
            let name = &channel.metadata.name.value;
            let c = herald::channels::build(name, &channel.spec, &resolver)
                .unwrap_or_else(|e| panic!("channel {name} does not build: {e}"));
            built.push(format!("{name} ({})", c.medium()));
        }
    }
    built.sort();
    assert_eq!(
        built,
        [
            "email (email)",
            "telegram (telegram)",
            "twilio-sms (sms)",
            "twilio-whatsapp (whatsapp)",
            "whatsapp-cloud (whatsapp)"
        ]
    );
}

#[test]
fn the_example_directory_stays_valid_as_time_passes() {
    // A one-off campaign that already ran is history: a warning, never an error.
    let later: jiff::Timestamp = "2031-01-01T00:00:00Z".parse().unwrap();
    let checked = spec::validate(spec::load_dir(&repo("campaigns.example")).unwrap(), later);
    assert!(checked.is_valid());
    assert!(
        checked
            .diagnostics
            .iter()
            .all(|d| d.severity == Severity::Warning)
    );
}

#[test]
fn every_example_file_carries_the_schema_modeline() {
    let files = example_files();
    assert!(files.len() >= 5);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let modeline = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# yaml-language-server: $schema="))
            .unwrap_or_else(|| panic!("{} does not start with the modeline", file.display()));
        let target = file.parent().unwrap().join(modeline);
        assert!(
            target.canonicalize().ok() == repo("schemas/herald.schema.json").canonicalize().ok(),
            "{}: the modeline points at {}, not at schemas/herald.schema.json",
            file.display(),
            target.display()
        );
    }
}

#[test]
fn every_example_document_conforms_to_the_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&spec::schema::json_schema()).expect("the schema is JSON");
    let validator = jsonschema::draft7::new(&schema).expect("the schema compiles as draft-07");
    let mut documents = 0;
    for file in example_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let values: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        for value in values.into_iter().filter(|v| !v.is_null()) {
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{}: {}",
                file.display(),
                errors.join("; ")
            );
            documents += 1;
        }
    }
    assert!(documents >= 10, "only {documents} documents checked");
}

#[test]
fn the_schema_rejects_what_validation_rejects_structurally() {
    let schema: serde_json::Value = serde_json::from_str(&spec::schema::json_schema()).unwrap();
    let validator = jsonschema::draft7::new(&schema).unwrap();
    let good = serde_json::json!({
        "apiVersion": "herald/v1", "kind": "Segment", "metadata": {"name": "vip"},
        "spec": {"match": {"field": "tags", "op": "contains", "value": "vip"}}
    });
    assert!(validator.is_valid(&good));
    let mut typo = good.clone();
    typo["spec"]["match"]["opp"] = "eq".into();
    assert!(!validator.is_valid(&typo));
    let mut extra = good.clone();
    extra["specs"] = serde_json::json!({});
    assert!(!validator.is_valid(&extra));
    let mut kind = good;
    kind["kind"] = "Segmnt".into();
    assert!(!validator.is_valid(&kind));
}
