//! Desired (files) against stored: the plan, a pure diff, and applying a revision atomically.
//!
//! [`prepare`] reads the directory and the revision in force, counts the audiences of the
//! campaigns the change touches, and computes the [`Plan`] ([`plan`] is pure; only this file
//! talks to the store). [`apply`] applies a valid plan in one transaction, or records the
//! revision as rejected with its errors and leaves the one in force as it was. Running
//! either twice is harmless: a directory equal to the revision in force is "no changes".

pub mod plan;
pub mod report;

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::audience::campaign_query;
use crate::spec::values::SecretSource;
use crate::spec::{self, Checked, Code, Diagnostic, Kind, Loaded, Object, SourceFile};
use crate::store::Store;
use crate::store::revisions::{Applied, NewSpec, RevisionInForce, RevisionWrite};

pub use plan::{
    Action, AudienceChange, Audiences, CampaignImpact, CampaignStatus, Change, FieldChange, Fires,
    Plan, PlanInput, SendTime, StoredObject,
};

/// What the plan was compared with.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Against {
    /// No store file: compared with nothing, audiences not counted.
    NoStore { path: String },
    /// A store nothing was applied to yet.
    EmptyStore { path: String },
    /// The revision in force.
    Revision {
        path: String,
        id: i64,
        hash: String,
        applied_at: String,
    },
}

impl Against {
    pub fn revision(&self) -> Option<i64> {
        match self {
            Against::Revision { id, .. } => Some(*id),
            _ => None,
        }
    }

    pub fn sentence(&self) -> String {
        match self {
            Against::NoStore { path } => format!(
                "against an empty store: {path} does not exist (nothing applied yet; audiences not counted)"
            ),
            Against::EmptyStore { path } => {
                format!("against an empty store: nothing applied to {path} yet")
            }
            Against::Revision {
                path,
                id,
                applied_at,
                ..
            } => format!("against revision {id} of {path}, applied {applied_at}"),
        }
    }
}

/// A directory read, validated and (when valid) planned.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The directory as given.
    pub source: String,
    pub checked: Checked,
    pub against: Against,
    /// `None` when the directory is invalid: there is nothing to plan.
    pub plan: Option<Plan>,
    /// The hash of what was read (the plan's hash when there is a plan).
    pub hash: String,
    in_force: Option<RevisionInForce>,
}

impl Prepared {
    /// Valid: the files validate and the plan found no error.
    pub fn is_valid(&self) -> bool {
        self.checked.is_valid() && self.plan.as_ref().is_some_and(Plan::is_valid)
    }

    /// Every finding: validation's, or (when there is a plan) the plan's, which include
    /// validation's warnings.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match &self.plan {
            Some(plan) => &plan.diagnostics,
            None => &self.checked.diagnostics,
        }
    }

    /// The directory equals the revision in force.
    pub fn unchanged(&self) -> bool {
        match (&self.plan, &self.in_force) {
            (Some(plan), Some(in_force)) => plan.hash == in_force.hash,
            (Some(plan), None) => !plan.has_changes(),
            (None, _) => false,
        }
    }
}

/// Reads `dir`, validates it, and plans it against the revision in force of `store` (none:
/// an empty store, described by `store_path`). Reads only.
pub async fn prepare(
    dir: &Path,
    store: Option<&Store>,
    store_path: &Path,
    now: jiff::Timestamp,
) -> anyhow::Result<Prepared> {
    prepare_with(dir, store, store_path, now, false).await
}

/// [`prepare`], and with `allow_empty` a directory with no documents is valid (applying it
/// retires every object): `herald serve --allow-empty`.
pub async fn prepare_with(
    dir: &Path,
    store: Option<&Store>,
    store_path: &Path,
    now: jiff::Timestamp,
    allow_empty: bool,
) -> anyhow::Result<Prepared> {
    let loaded = spec::load_dir(dir)?;
    let hash = plan::loaded_hash(&loaded);
    let mut checked = spec::validate(loaded, now);
    if allow_empty {
        checked
            .diagnostics
            .retain(|d| d.code != spec::Code::EmptyRevision);
    }
    let path = store_path.display().to_string();
    let in_force = match store {
        Some(store) => store
            .revision_in_force()
            .await
            .context("while reading the revision in force")?,
        None => None,
    };
    let against = match (&in_force, store) {
        (_, None) => Against::NoStore { path },
        (None, Some(_)) => Against::EmptyStore { path },
        (Some(r), Some(_)) => Against::Revision {
            path,
            id: r.id,
            hash: r.hash.clone(),
            applied_at: r.applied_at.to_string(),
        },
    };
    let mut prepared = Prepared {
        source: dir.display().to_string(),
        checked,
        against,
        plan: None,
        hash,
        in_force,
    };
    if !prepared.checked.is_valid() {
        return Ok(prepared);
    }
    let stored: Vec<StoredObject> = prepared
        .in_force
        .iter()
        .flat_map(|r| &r.specs)
        .map(StoredObject::from)
        .collect();
    let desired = &prepared.checked.loaded;
    let audiences = match store {
        None => None,
        Some(store) => Some(count_audiences(store, desired, &stored, now).await?),
    };
    let plan = plan::plan(&PlanInput {
        desired,
        diagnostics: &prepared.checked.diagnostics,
        stored: &stored,
        audiences: audiences.as_ref(),
        now,
    });
    prepared.hash = plan.hash.clone();
    prepared.plan = Some(plan);
    Ok(prepared)
}

/// Counts the audiences of the campaigns the change touches, under the desired revision and
/// under the one in force.
async fn count_audiences(
    store: &Store,
    desired: &Loaded,
    stored: &[StoredObject],
    now: jiff::Timestamp,
) -> anyhow::Result<Audiences> {
    let changes = plan::diff(desired, stored);
    let touched = plan::touched_campaigns(desired, &changes);
    let current_loaded = rebuild(stored);
    let mut audiences = Audiences::default();
    for (name, (status, _)) in &touched {
        if *status == CampaignStatus::Removed {
            continue;
        }
        let query = campaign_query(desired, name, now)
            .with_context(|| format!("while building the audience of campaign {name}"))?;
        let breakdown = store
            .campaign_breakdown(&query)
            .await
            .with_context(|| format!("while counting the audience of campaign {name}"))?;
        audiences.desired.insert(name.clone(), breakdown);
        let in_force = stored
            .iter()
            .any(|s| s.kind == Kind::Campaign && &s.name == name);
        if in_force {
            // The stored revision was valid when applied; if it no longer builds (a rule
            // got stricter), there is simply no "before" to compare with.
            if let Ok(query) = campaign_query(&current_loaded, name, now) {
                let breakdown = store
                    .campaign_breakdown(&query)
                    .await
                    .with_context(|| format!("while counting the current audience of {name}"))?;
                audiences.current.insert(name.clone(), breakdown);
            }
        }
    }
    Ok(audiences)
}

/// The specs of a revision as a [`Loaded`] (see [`rebuild`]).
pub fn rebuild_specs(specs: &[crate::store::revisions::StoredSpec]) -> Loaded {
    let stored: Vec<StoredObject> = specs.iter().map(StoredObject::from).collect();
    rebuild(&stored)
}

/// The stored objects as a [`Loaded`], each parsed from its body as a document of its own
/// (JSON is YAML) in a source named `store:Kind/name`.
pub fn rebuild(stored: &[StoredObject]) -> Loaded {
    let files = stored
        .iter()
        .map(|s| {
            let document = serde_json::json!({
                "apiVersion": spec::envelope::API_VERSION,
                "kind": s.kind.as_str(),
                "metadata": s.body["metadata"],
                "spec": s.body["spec"],
            });
            SourceFile {
                path: format!("store:{}/{}", s.kind, s.name).into(),
                text: document.to_string(),
            }
        })
        .collect();
    spec::load_sources(files)
}

/// How `apply` ended.
#[derive(Debug)]
pub enum ApplyOutcome {
    /// Applied as this revision.
    Applied(Applied),
    /// The directory equals the revision in force: nothing written.
    Unchanged,
    /// Invalid: recorded as this rejected revision; the revision in force stays.
    Rejected { revision: i64 },
}

/// Applies a prepared directory: all of it in one transaction, or, if it is invalid (its
/// files, its plan, or a secret that does not resolve), records it as rejected with its
/// errors and changes nothing else. `prepared` gains the secret errors, if any.
pub async fn apply(
    prepared: &mut Prepared,
    store: &Store,
    dir: &Path,
    now: jiff::Timestamp,
) -> anyhow::Result<ApplyOutcome> {
    if prepared.plan.is_some() && prepared.unchanged() {
        return Ok(ApplyOutcome::Unchanged);
    }
    if let Some(plan) = &mut prepared.plan {
        plan.diagnostics
            .extend(unresolved_secrets(&prepared.checked.loaded, dir));
        spec::diagnostic::sort(&mut plan.diagnostics);
    }
    let plan = match &prepared.plan {
        Some(plan) if plan.is_valid() => plan,
        _ => {
            let errors: Vec<Diagnostic> = prepared
                .diagnostics()
                .iter()
                .filter(|d| d.is_error())
                .cloned()
                .collect();
            let revision = store
                .record_rejected(&prepared.hash, &prepared.source, &errors_json(&errors), now)
                .await
                .context("while recording the rejected revision")?;
            return Ok(ApplyOutcome::Rejected { revision });
        }
    };
    let objects: std::collections::BTreeMap<(Kind, &str), &Object> = prepared
        .checked
        .loaded
        .objects
        .iter()
        .map(|o| ((o.kind(), o.name().value.as_str()), o))
        .collect();
    let new_spec = |change: &Change| {
        let object = objects[&(change.kind, change.name.as_str())];
        let body = plan::body(object);
        NewSpec {
            kind: change.kind,
            name: change.name.clone(),
            hash: plan::body_hash(&body),
            body,
            file: change.file.clone(),
            line: change.line,
        }
    };
    let mut write = RevisionWrite {
        hash: plan.hash.clone(),
        source: prepared.source.clone(),
        based_on: prepared.against.revision(),
        ..RevisionWrite::default()
    };
    for change in &plan.changes {
        match change.action {
            Action::Create => write.created.push(new_spec(change)),
            Action::Update { .. } => write.changed.push(new_spec(change)),
            Action::Delete => write.removed.push((change.kind, change.name.clone())),
        }
    }
    let applied = store
        .apply_revision(&write, now)
        .await
        .context("while applying the revision")?;
    Ok(ApplyOutcome::Applied(applied))
}

/// Every secret reference that does not resolve: an unset `${env:NAME}`, an unreadable
/// `${file:PATH}` (relative to `dir`). The findings name the variable or path, never a value.
///
/// Errors, except for a channel that no campaign uses: that is a warning, so a directory may
/// carry a provider's Channel file before its credentials are deployed (the example does).
/// The revision that first makes a campaign use it is refused until they resolve.
pub fn unresolved_secrets(loaded: &Loaded, dir: &Path) -> Vec<Diagnostic> {
    let used: std::collections::HashSet<String> = loaded
        .objects
        .iter()
        .filter_map(|o| match o {
            Object::Campaign(d) => Some(&d.spec.channels.channels.value),
            _ => None,
        })
        .flatten()
        .map(|name| format!("channel {}", name.value))
        .collect();
    let mut out = Vec::new();
    for (owner, field, reference) in secret_references(loaded) {
        let unused_channel = owner.starts_with("channel ") && !used.contains(&owner);
        let Ok(source) = spec::values::parse_secret_reference(&reference.value) else {
            continue; // a literal: validation already rejected it
        };
        let problem = match &source {
            SecretSource::Env(name) => std::env::var_os(name)
                .is_none()
                .then(|| format!("the environment variable {name} is not set")),
            SecretSource::File(path) => {
                let full = dir.join(path);
                std::fs::File::open(&full)
                    .err()
                    .map(|e| format!("the file {} cannot be read: {e}", full.display()))
            }
        };
        if let Some(problem) = problem {
            let message = format!("{owner} {field}: {problem}");
            out.push(
                if unused_channel {
                    Diagnostic::warning(
                        Code::UnresolvedSecret,
                        &reference.at,
                        format!("{message} (no campaign uses the channel yet)"),
                    )
                } else {
                    Diagnostic::error(Code::UnresolvedSecret, &reference.at, message)
                }
                .help(match source {
                    SecretSource::Env(_) => "set it in the environment herald runs in",
                    SecretSource::File(_) => "paths are relative to the directory applied",
                }),
            );
        }
    }
    out
}

/// (owner, field, reference) for every credential of the revision's channels and webhooks,
/// and every webhook-channel header written as a reference.
fn secret_references(loaded: &Loaded) -> Vec<(String, String, spec::Located<String>)> {
    let mut out = Vec::new();
    for object in &loaded.objects {
        match object {
            Object::Webhook(d) => out.push((
                format!("webhook {}", d.metadata.name.value),
                "secret".to_string(),
                d.spec.secret.0.clone(),
            )),
            Object::Channel(d) => {
                let owner = format!("channel {}", d.metadata.name.value);
                let s = &d.spec;
                let mut found: Vec<(String, &spec::values::Secret)> = Vec::new();
                for (block, t) in [
                    ("sms_twilio", &s.sms_twilio),
                    ("whatsapp_twilio", &s.whatsapp_twilio),
                ] {
                    if let Some(t) = t {
                        found.push((format!("{block}.auth_token"), &t.value.auth_token));
                    }
                }
                if let Some(w) = &s.whatsapp_cloud {
                    found.push(("whatsapp_cloud.access_token".into(), &w.value.access_token));
                    found.extend(
                        w.value
                            .app_secret
                            .iter()
                            .map(|x| ("whatsapp_cloud.app_secret".into(), x)),
                    );
                    found.extend(
                        w.value
                            .verify_token
                            .iter()
                            .map(|x| ("whatsapp_cloud.verify_token".into(), x)),
                    );
                }
                if let Some(t) = &s.telegram {
                    found.push(("telegram.bot_token".into(), &t.value.bot_token));
                    found.extend(
                        t.value
                            .webhook_secret
                            .iter()
                            .map(|x| ("telegram.webhook_secret".into(), x)),
                    );
                }
                if let Some(e) = &s.email_smtp {
                    found.extend(
                        e.value
                            .password
                            .iter()
                            .map(|x| ("email_smtp.password".into(), x)),
                    );
                    found.extend(
                        e.value
                            .unsubscribe_secret
                            .iter()
                            .map(|x| ("email_smtp.unsubscribe_secret".into(), x)),
                    );
                }
                if let Some(w) = &s.webhook {
                    found.extend(w.value.secret.iter().map(|x| ("webhook.secret".into(), x)));
                    for (header, value) in &w.value.headers {
                        if value.value.starts_with("${") {
                            out.push((
                                owner.clone(),
                                format!("webhook.headers.{header}"),
                                value.clone(),
                            ));
                        }
                    }
                }
                out.extend(
                    found
                        .into_iter()
                        .map(|(field, secret)| (owner.clone(), field, secret.0.clone())),
                );
            }
            _ => {}
        }
    }
    out
}

/// The errors as `validate --format json` prints them, on one line.
fn errors_json(errors: &[Diagnostic]) -> String {
    let value: serde_json::Value =
        serde_json::from_str(&crate::output::json(errors)).expect("output::json is JSON");
    value.to_string()
}
