//! The JSON Schema of herald's files, generated from the Rust types.
//!
//! It is the contract editors see (through the yaml-language-server modeline) and is
//! committed as schemas/herald.schema.json; a test fails when the committed copy is stale.
//! Draft-07, because yaml-language-server is built on it.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;

use super::campaign::CampaignSpec;
use super::channel::ChannelSpec;
use super::envelope::Metadata;
use super::segment::SegmentSpec;
use super::template::TemplateSpec;
use super::webhook::WebhookSpec;

/// One document of each kind, told apart by `kind`. Used only to generate the schema;
/// loading parses the envelope first and then the kind's spec, to keep positions.
#[allow(dead_code)] // constructed by no one: it exists for its schema
#[derive(JsonSchema)]
#[serde(tag = "kind", deny_unknown_fields)]
enum AnyDocument {
    Channel(Envelope<ChannelSpec>),
    Segment(Envelope<SegmentSpec>),
    Template(Envelope<TemplateSpec>),
    Campaign(Envelope<CampaignSpec>),
    Webhook(Envelope<WebhookSpec>),
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
struct Envelope<S> {
    #[schemars(regex(pattern = r"^herald/v1$"))]
    api_version: String,
    metadata: Metadata,
    spec: S,
}

/// The schema as pretty JSON, ending in a newline.
pub fn json_schema() -> String {
    let mut settings = SchemaSettings::draft07();
    settings.meta_schema = Some("http://json-schema.org/draft-07/schema#".into());
    let generator = settings.into_generator();
    let mut schema = generator.into_root_schema_for::<AnyDocument>();
    schema.insert("title".into(), "herald files (apiVersion herald/v1)".into());
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is JSON");
    text.push('\n');
    text
}
