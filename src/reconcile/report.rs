//! How a plan is shown: text for terminals (like terraform's), Markdown to post as a
//! pull-request comment, and JSON for scripts. The three say the same things; credentials
//! are `***` in all of them (the plan never holds their values or references).
//!
//! # The JSON shape (stable; `format` changes if it ever must)
//!
//! ```text
//! {
//!   "format": "herald-plan/v1",
//!   "source": "campaigns",                 // the directory, as given
//!   "against": {"kind": "revision", "path", "id", "hash", "applied_at"}
//!            | {"kind": "empty_store", "path"} | {"kind": "no_store", "path"},
//!   "valid": true,                         // false: see diagnostics; changes/campaigns null
//!   "changed": true,                       // the directory differs from the revision in force
//!   "hash": "<sha256 of the desired revision>",
//!   "summary": {"create", "update", "delete", "campaigns_touched", "errors", "warnings"},
//!   "changes": [{"kind", "name", "action": "create"|"update"|"delete", "file", "line",
//!                "fields": [{"path", "old", "new", "masked"}]   // update only; null = absent
//!              }],
//!   "campaigns": [{"name", "status": "created"|"changed"|"affected"|"removed", "reasons",
//!                  "audience": {"now": Breakdown, "current": Breakdown|null} | null,
//!                  "fires": {"kind": "disabled"|"on_apply"} | {"kind": "once"|"passed", "at"}
//!                         | {"kind": "recurring", "at": [..]} | null,
//!                  "send_time": {"kind": "unknown"|"no_rate_limit"}
//!                             | {"kind": "estimate", "seconds", "limited_by", "max_seconds"} | null}],
//!   "diagnostics": [ as `herald validate --format json` ]
//! }
//! ```
//! A Breakdown is `{"recipients", "messages", "by_channel": {name: n}, "excluded": {reason: n}}`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::plan::{
    Action, AudienceChange, CampaignImpact, CampaignStatus, Change, FieldChange, Fires, Plan,
    SendTime, format_estimate, thousands,
};
use super::{Against, Prepared};
use crate::output;
use crate::spec::Severity;

/// The output formats of `plan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    Text,
    Markdown,
    Json,
}

/// Renders a prepared plan (or, for an invalid directory, its findings) in `format`.
pub fn render(format: PlanFormat, prepared: &Prepared, color: bool) -> String {
    match format {
        PlanFormat::Text => text(prepared, color),
        PlanFormat::Markdown => markdown(prepared),
        PlanFormat::Json => json_report(prepared),
    }
}

fn summary_line(plan: &Plan) -> String {
    if !plan.has_changes() {
        return "No changes: the directory matches the revision in force.".into();
    }
    let touched = plan.campaigns.len();
    format!(
        "{} to create, {} to change, {} to remove; {} campaign{} touched.",
        plan.count('+'),
        plan.count('~'),
        plan.count('-'),
        touched,
        if touched == 1 { "" } else { "s" }
    )
}

fn value(v: &Option<Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(v) => v.to_string(),
    }
}

fn field_line(f: &FieldChange) -> String {
    if f.masked && f.old.is_some() && f.new.is_some() {
        format!("{}: *** → *** (changed)", f.path)
    } else {
        format!("{}: {} → {}", f.path, value(&f.old), value(&f.new))
    }
}

fn campaign_symbol(status: CampaignStatus) -> char {
    match status {
        CampaignStatus::Created => '+',
        CampaignStatus::Changed => '~',
        CampaignStatus::Affected => '↻',
        CampaignStatus::Removed => '-',
    }
}

fn audience_line(a: &AudienceChange) -> String {
    let mut out = a.summary();
    let channels: Vec<String> = a
        .now
        .by_channel
        .iter()
        .map(|(c, n)| format!("{c} {}", thousands(*n)))
        .collect();
    let _ = write!(
        out,
        ", {} message{}",
        thousands(a.now.messages),
        if a.now.messages == 1 { "" } else { "s" }
    );
    if !channels.is_empty() {
        let _ = write!(out, " ({})", channels.join(", "));
    }
    out
}

fn excluded_line(a: &AudienceChange) -> Option<String> {
    let total = a.now.excluded_total();
    if total == 0 {
        return None;
    }
    let mut reasons: Vec<_> = a.now.excluded.iter().filter(|(_, n)| **n > 0).collect();
    reasons.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
    let mut parts: Vec<String> = reasons
        .iter()
        .map(|(r, n)| format!("{} {}", thousands(**n), r.phrase()))
        .collect();
    Some(if parts.len() == 1 {
        parts.remove(0)
    } else {
        format!("{} ({})", thousands(total), parts.join(", "))
    })
}

fn send_time_line(s: &SendTime) -> String {
    match s {
        SendTime::Estimate {
            seconds,
            limited_by,
            max_seconds,
        } if *seconds > 0 => format!(
            "about {} at {limited_by}; max_duration {}",
            format_estimate(*seconds),
            format_estimate(*max_seconds)
        ),
        other => other.summary(),
    }
}

/// The facts of one campaign as (label, value) lines, shared by text and Markdown.
fn campaign_facts(c: &CampaignImpact, counted: bool) -> Vec<(&'static str, String)> {
    let mut facts = vec![("why", c.reasons.join("; "))];
    if c.status == CampaignStatus::Removed {
        facts.push((
            "on apply",
            "its scheduled, running and paused runs are cancelled; history stays".into(),
        ));
        return facts;
    }
    match &c.audience {
        Some(a) => {
            facts.push(("audience", audience_line(a)));
            if let Some(excluded) = excluded_line(a) {
                facts.push(("excluded", excluded));
            }
        }
        None if !counted => facts.push(("audience", "not counted (no store)".into())),
        None => {}
    }
    if let Some(f) = &c.fires {
        facts.push(("next fire", f.all()));
    }
    if let Some(s) = &c.send_time {
        facts.push(("send time", send_time_line(s)));
    }
    facts
}

fn counted(prepared: &Prepared) -> bool {
    !matches!(prepared.against, Against::NoStore { .. })
}

// ---------------------------------------------------------------------------------------
// Text

fn text(prepared: &Prepared, color: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "herald plan: {} {}\n",
        prepared.source,
        prepared.against.sentence()
    );
    let Some(plan) = &prepared.plan else {
        out.push_str(&output::text(
            &prepared.checked.diagnostics,
            &prepared.checked.loaded,
            color,
        ));
        out.push_str(&output::summary(
            prepared.checked.error_count(),
            prepared.checked.warning_count(),
            prepared.checked.loaded.objects.len(),
            prepared.checked.loaded.files.len(),
        ));
        out.push_str("\nNothing planned: the directory is invalid.\n");
        return out;
    };
    for change in &plan.changes {
        let _ = writeln!(
            out,
            "{} {} {}  ({}:{})",
            change.action.symbol(),
            change.kind,
            change.name,
            change.file,
            change.line
        );
        if let Action::Update { fields } = &change.action {
            for f in fields {
                let _ = writeln!(out, "    {}", field_line(f));
            }
        }
    }
    if !plan.campaigns.is_empty() {
        out.push_str("\nCampaigns touched:\n");
        for c in &plan.campaigns {
            let _ = writeln!(out, "  {} {}", campaign_symbol(c.status), c.name);
            for (label, fact) in campaign_facts(c, counted(prepared)) {
                let _ = writeln!(out, "      {:<10} {fact}", format!("{label}:"));
            }
        }
    }
    if plan.has_changes() {
        out.push('\n');
    }
    if !plan.diagnostics.is_empty() {
        out.push_str(&output::text(
            &plan.diagnostics,
            &prepared.checked.loaded,
            color,
        ));
    }
    let _ = writeln!(out, "{}", summary_line(plan));
    let errors = plan.diagnostics.iter().filter(|d| d.is_error()).count();
    if errors > 0 {
        let _ = writeln!(
            out,
            "Invalid: {errors} error{}; applying this directory would be rejected.",
            if errors == 1 { "" } else { "s" }
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// Markdown

fn markdown(prepared: &Prepared) -> String {
    let mut out = String::from("### herald plan\n\n");
    let _ = writeln!(
        out,
        "`{}` {}.\n",
        prepared.source,
        prepared.against.sentence()
    );
    let Some(plan) = &prepared.plan else {
        let errors = prepared.checked.error_count();
        let _ = writeln!(
            out,
            "**Invalid: {errors} error{}.** Nothing planned; applying would be rejected.\n",
            if errors == 1 { "" } else { "s" }
        );
        diagnostics_markdown(&mut out, &prepared.checked.diagnostics);
        return out;
    };
    let _ = writeln!(out, "**{}**\n", summary_line(plan));
    if plan.has_changes() || !plan.campaigns.is_empty() {
        out.push_str("| | kind | name | audience | next fire | send time |\n");
        out.push_str("| --- | --- | --- | --- | --- | --- |\n");
        let impact = |name: &str| plan.campaigns.iter().find(|c| c.name == name);
        let cells = |c: Option<&CampaignImpact>| match c {
            None => ("".to_string(), "".to_string(), "".to_string()),
            Some(c) => (
                match (&c.audience, c.status) {
                    (Some(a), _) => a.summary(),
                    (None, CampaignStatus::Removed) => "runs cancelled".into(),
                    (None, _) if counted(prepared) => "".into(),
                    (None, _) => "not counted".into(),
                },
                c.fires.as_ref().map(Fires::summary).unwrap_or_default(),
                c.send_time
                    .as_ref()
                    .map(SendTime::summary)
                    .unwrap_or_default(),
            ),
        };
        for change in &plan.changes {
            let c = (change.kind == crate::spec::Kind::Campaign)
                .then(|| impact(&change.name))
                .flatten();
            let (audience, fire, time) = cells(c);
            let _ = writeln!(
                out,
                "| {} | {} | `{}` | {audience} | {fire} | {time} |",
                change.action.symbol(),
                change.kind,
                change.name
            );
        }
        let affected: Vec<&CampaignImpact> = plan
            .campaigns
            .iter()
            .filter(|c| c.status == CampaignStatus::Affected)
            .collect();
        for c in &affected {
            let (audience, fire, time) = cells(Some(c));
            let _ = writeln!(
                out,
                "| ↻ | Campaign | `{}` | {audience} | {fire} | {time} |",
                c.name
            );
        }
        if !affected.is_empty() {
            out.push_str("\n↻ not changed itself, but something it uses changed.\n");
        }
        out.push('\n');
    }
    if !plan.diagnostics.is_empty() {
        diagnostics_markdown(&mut out, &plan.diagnostics);
    }
    if plan.has_changes() {
        out.push_str("<details><summary>Details</summary>\n\n");
        for change in &plan.changes {
            details_markdown(&mut out, change, plan, counted(prepared));
        }
        for c in plan
            .campaigns
            .iter()
            .filter(|c| c.status == CampaignStatus::Affected)
        {
            let _ = writeln!(out, "#### ↻ Campaign `{}`\n", c.name);
            facts_markdown(&mut out, c, counted(prepared));
        }
        out.push_str("</details>\n");
    }
    out
}

fn details_markdown(out: &mut String, change: &Change, plan: &Plan, counted: bool) {
    let _ = writeln!(
        out,
        "#### {} {} `{}`\n\n`{}:{}`\n",
        change.action.symbol(),
        change.kind,
        change.name,
        change.file,
        change.line
    );
    if let Action::Update { fields } = &change.action {
        out.push_str("```diff\n");
        for f in fields {
            if f.masked && f.old.is_some() && f.new.is_some() {
                let _ = writeln!(out, "! {}", field_line(f));
                continue;
            }
            if f.old.is_some() {
                let _ = writeln!(
                    out,
                    "- {}: {}",
                    f.path,
                    value(&f.old).replace("```", "`\u{200b}``")
                );
            }
            if f.new.is_some() {
                let _ = writeln!(
                    out,
                    "+ {}: {}",
                    f.path,
                    value(&f.new).replace("```", "`\u{200b}``")
                );
            }
        }
        out.push_str("```\n\n");
    }
    if change.kind == crate::spec::Kind::Campaign
        && let Some(c) = plan.campaigns.iter().find(|c| c.name == change.name)
    {
        facts_markdown(out, c, counted);
    }
}

fn facts_markdown(out: &mut String, c: &CampaignImpact, counted: bool) {
    for (label, fact) in campaign_facts(c, counted) {
        let _ = writeln!(out, "- **{label}**: {fact}");
    }
    out.push('\n');
}

fn diagnostics_markdown(out: &mut String, diagnostics: &[crate::spec::Diagnostic]) {
    for d in diagnostics {
        let severity = match d.severity {
            Severity::Error => "**error**",
            Severity::Warning => "warning",
        };
        let at = d.at.as_ref().map(|p| format!(" `{p}`")).unwrap_or_default();
        let help = d
            .help
            .as_ref()
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        let _ = writeln!(out, "- {severity} `{}`{at}: {}{help}", d.code, d.message);
    }
    out.push('\n');
}

// ---------------------------------------------------------------------------------------
// JSON

fn json_report(prepared: &Prepared) -> String {
    let diagnostics: Value =
        serde_json::from_str(&output::json(prepared.diagnostics())).expect("output::json is JSON");
    let errors = prepared
        .diagnostics()
        .iter()
        .filter(|d| d.is_error())
        .count();
    let warnings = prepared.diagnostics().len() - errors;
    let report = match &prepared.plan {
        None => json!({
            "format": "herald-plan/v1",
            "source": prepared.source,
            "against": prepared.against,
            "valid": false,
            "changed": Value::Null,
            "hash": prepared.hash,
            "summary": {"errors": errors, "warnings": warnings},
            "changes": Value::Null,
            "campaigns": Value::Null,
            "diagnostics": diagnostics,
        }),
        Some(plan) => json!({
            "format": "herald-plan/v1",
            "source": prepared.source,
            "against": prepared.against,
            "valid": prepared.is_valid(),
            "changed": !prepared.unchanged(),
            "hash": plan.hash,
            "summary": {
                "create": plan.count('+'),
                "update": plan.count('~'),
                "delete": plan.count('-'),
                "campaigns_touched": plan.campaigns.len(),
                "errors": errors,
                "warnings": warnings,
            },
            "changes": plan.changes,
            "campaigns": plan.campaigns,
            "diagnostics": diagnostics,
        }),
    };
    let mut out = serde_json::to_string_pretty(&report).expect("the report serializes");
    out.push('\n');
    out
}
