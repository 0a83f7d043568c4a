//! Benchmark: `validate` over a generated directory of 10,000 documents.
//!
//! Run with `cargo bench --bench validate` (or `bench/run`). Prints a table of medians over
//! several runs; the figures go into BENCHMARKS.md with the date and the machine.
//! The target from the issue: under 1 s for 10,000 documents on the 2-core machine.

use std::path::Path;
use std::time::{Duration, Instant};

const RUNS: usize = 7;

fn main() {
    let documents = std::env::var("HERALD_BENCH_DOCUMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let now: jiff::Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
    println!("validate benchmark: {documents} documents, median of {RUNS} runs\n");
    println!(
        "| layout                     | files  | documents | load (ms) | validate (ms) | total (ms) | documents/s |"
    );
    println!(
        "|----------------------------|-------:|----------:|----------:|--------------:|-----------:|------------:|"
    );
    for (layout, per_file) in [
        ("one document per file", 1),
        ("100 documents per file", 100),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path(), documents, per_file);
        let mut loads = Vec::new();
        let mut validations = Vec::new();
        let mut totals = Vec::new();
        for _ in 0..RUNS {
            let start = Instant::now();
            let loaded = herald::spec::load_dir(dir.path()).unwrap();
            let loaded_at = Instant::now();
            let checked = herald::spec::validate(loaded, now);
            let end = Instant::now();
            assert!(
                checked.is_valid(),
                "generated directory is invalid: {:?}",
                checked.diagnostics.first()
            );
            assert_eq!(checked.loaded.objects.len(), documents);
            loads.push(loaded_at - start);
            validations.push(end - loaded_at);
            totals.push(end - start);
        }
        let total = median(&mut totals);
        println!(
            "| {layout:<26} | {files:>6} | {documents:>9} | {:>9.1} | {:>13.1} | {:>10.1} | {:>11.0} |",
            ms(median(&mut loads)),
            ms(median(&mut validations)),
            ms(total),
            documents as f64 / total.as_secs_f64()
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Writes `documents` documents: a few channels, then segments, templates and campaigns
/// that reference them, shaped like real ones. Returns the number of files.
fn generate(dir: &Path, documents: usize, per_file: usize) -> usize {
    let channels = 10.min(documents);
    let rest = documents - channels;
    let segments = rest / 4;
    let templates = rest / 4;
    let campaigns = rest - segments - templates;
    let mut docs = Vec::with_capacity(documents);
    for i in 0..channels {
        docs.push(format!(
            "apiVersion: herald/v1\nkind: Channel\nmetadata: {{name: channel-{i}}}\nspec:\n  type: webhook\n  medium: sms\n  webhook: {{url: \"http://127.0.0.1:9000/send\", secret: \"${{env:SECRET_{i}}}\"}}\n  rate: {{per_second: 50}}\n"
        ));
    }
    for i in 0..segments {
        let other = if i > 0 {
            format!("\n      - segment: segment-{}", i - 1)
        } else {
            String::new()
        };
        docs.push(format!(
            "apiVersion: herald/v1\nkind: Segment\nmetadata:\n  name: segment-{i}\n  labels: {{team: growth}}\nspec:\n  match:\n    all:\n      - {{field: tags, op: contains, value: tag-{i}}}\n      - any:\n          - {{field: attributes.city, op: in, value: [Lima, Cusco]}}\n          - {{field: country, op: eq, value: PE}}\n      - {{field: last_inbound_at, op: within, value: 30d}}{other}\n"
        ));
    }
    for i in 0..templates {
        docs.push(format!(
            "apiVersion: herald/v1\nkind: Template\nmetadata: {{name: template-{i}}}\nspec:\n  variables: {{discount: {{type: number, required: true}}}}\n  sms:\n    text: \"Hola {{{{ contact.name | default('cliente') }}}}: {{{{ discount }}}}% OFF en {{{{ contact.attributes.city }}}}. STOP para salir\"\n  locales:\n    pt-BR:\n      sms: {{text: \"Olá {{{{ contact.name }}}}: {{{{ discount }}}}% OFF\"}}\n"
        ));
    }
    for i in 0..campaigns {
        let segment = i % segments.max(1);
        let template = i % templates.max(1);
        let channel = i % channels;
        docs.push(format!(
            "apiVersion: herald/v1\nkind: Campaign\nmetadata: {{name: campaign-{i}}}\nspec:\n  audience: {{segment: segment-{segment}, exclude: [inactive-30-days]}}\n  channels: {{strategy: specific, use: [channel-{channel}]}}\n  template: template-{template}\n  vars: {{discount: {}}}\n  schedule: {{cron: \"0 9 * * MON\", timezone: America/Lima}}\n  delivery:\n    rate: {{per_minute: 600}}\n    max_duration: 2d\n    send_window: {{days: [mon, tue, wed, thu, fri], start: \"09:00\", end: \"20:00\", timezone: contact}}\n    frequency_cap: {{max: 2, per: 7d}}\n",
            10 + i % 40
        ));
    }
    let mut files = 0;
    for (n, chunk) in docs.chunks(per_file).enumerate() {
        let sub = dir.join(format!("group-{:03}", n / 100));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("file-{n:05}.yaml")), chunk.join("---\n")).unwrap();
        files += 1;
    }
    files
}
