//! The JSON Schema of herald's files, generated from the Rust types.
//!
//! It is the contract editors see (through the yaml-language-server modeline) and is
//! committed as schemas/herald.schema.json; a test fails when the committed copy is stale.
//! Draft-07, because yaml-language-server is built on it.

use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use super::campaign::CampaignSpec;
use super::channel::ChannelSpec;
use super::envelope::{API_VERSION, Kind, Metadata};
use super::segment::SegmentSpec;
use super::template::TemplateSpec;
use super::webhook::WebhookSpec;

/// The schema as pretty JSON, ending in a newline.
pub fn json_schema() -> String {
    let mut generator = SchemaSettings::draft07().into_generator();
    let metadata = generator.subschema_for::<Metadata>();
    let specs = [
        (Kind::Channel, generator.subschema_for::<ChannelSpec>()),
        (Kind::Segment, generator.subschema_for::<SegmentSpec>()),
        (Kind::Template, generator.subschema_for::<TemplateSpec>()),
        (Kind::Campaign, generator.subschema_for::<CampaignSpec>()),
        (Kind::Webhook, generator.subschema_for::<WebhookSpec>()),
    ];
    // One closed object per kind, told apart by `kind`. Built by hand rather than from a
    // tagged enum: schemars composes those with allOf, which cannot forbid unknown keys.
    let documents: Vec<Value> = specs
        .into_iter()
        .map(|(kind, spec)| {
            json!({
                "title": kind.as_str(),
                "type": "object",
                "properties": {
                    "apiVersion": {"const": API_VERSION},
                    "kind": {"const": kind.as_str()},
                    "metadata": metadata,
                    "spec": spec,
                },
                "required": ["apiVersion", "kind", "metadata", "spec"],
                "additionalProperties": false,
            })
        })
        .collect();
    let definitions: serde_json::Map<String, Value> = generator
        .definitions()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let schema = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "herald files (apiVersion herald/v1)",
        "description": "A Channel, Segment, Template, Campaign or Webhook document.",
        "oneOf": documents,
        "definitions": definitions,
    });
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is JSON");
    text.push('\n');
    text
}
