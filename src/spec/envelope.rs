//! The Kubernetes-style envelope every document shares: apiVersion, kind, metadata, spec.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::located::Located;

/// The only apiVersion this herald understands.
pub const API_VERSION: &str = "herald/v1";

/// The five kinds of document. The order is the order `plan` lists them in.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Kind {
    Channel,
    Segment,
    Template,
    Campaign,
    Webhook,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Channel,
        Kind::Segment,
        Kind::Template,
        Kind::Campaign,
        Kind::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Channel => "Channel",
            Kind::Segment => "Segment",
            Kind::Template => "Template",
            Kind::Campaign => "Campaign",
            Kind::Webhook => "Webhook",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `metadata:` of any document.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// `[a-z0-9-]`, 1 to 63 characters, unique per kind.
    #[schemars(regex(pattern = r"^[a-z0-9-]{1,63}$"))]
    pub name: Located<String>,
    /// Free-form labels, for people and for filtering.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A sentence saying what this object is for; shown in plans and on the status page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A whole document: the envelope around a kind's spec.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document<S> {
    #[schemars(with = "String")]
    pub api_version: Located<String>,
    #[schemars(with = "String")]
    pub kind: Located<String>,
    pub metadata: Metadata,
    pub spec: S,
}
