//! References between objects: every name used exists, and segments do not include
//! themselves through any chain of references.

use std::collections::{BTreeMap, BTreeSet};

use super::Index;
use crate::spec::diagnostic::{Code, Diagnostic};
use crate::spec::envelope::Kind;
use crate::spec::located::Located;
use crate::spec::segment::{BUILT_IN_SEGMENTS, Condition};
use crate::spec::suggest::did_you_mean;

pub(super) fn check<'a>(index: &Index<'a>, out: &mut Vec<Diagnostic>) {
    let segment_names: Vec<&str> = index
        .segments
        .keys()
        .copied()
        .chain(BUILT_IN_SEGMENTS)
        .chain(index.unparsed_names(Kind::Segment))
        .collect();
    // The referrer is left out of the hints: "did you mean <yourself>" helps no one.
    let missing = |kind: &str, name: &Located<String>, known: &[&str], user: &str, own: &str| {
        let known: Vec<&str> = known.iter().copied().filter(|k| *k != own).collect();
        let hint = did_you_mean(&name.value, known.iter()).map(|s| format!("did you mean `{s}`?"));
        Diagnostic::error(
            Code::MissingReference,
            &name.at,
            format!(
                "{user} refers to {kind} `{}`, which does not exist",
                name.value
            ),
        )
        .maybe_help(hint.or_else(|| {
            (!known.is_empty()).then(|| format!("known {kind}s: {}", known.join(", ")))
        }))
    };

    let names = |kind: Kind, parsed: Vec<&'a str>| -> Vec<&'a str> {
        parsed
            .into_iter()
            .chain(index.unparsed_names(kind))
            .collect()
    };
    let channel_names = names(Kind::Channel, index.channels.keys().copied().collect());
    let template_names = names(Kind::Template, index.templates.keys().copied().collect());
    let campaign_names = names(Kind::Campaign, index.campaigns.keys().copied().collect());
    for (name, campaign) in &index.campaigns {
        let user = format!("campaign `{name}`");
        let spec = &campaign.spec;
        for segment in std::iter::once(&spec.audience.segment).chain(&spec.audience.exclude) {
            if !segment_names.contains(&segment.value.as_str()) {
                out.push(missing("segment", segment, &segment_names, &user, ""));
            }
        }
        if !template_names.contains(&spec.template.value.as_str()) {
            out.push(missing(
                "template",
                &spec.template,
                &template_names,
                &user,
                "",
            ));
        }
        for channel in spec.channels.channels.iter() {
            if !channel_names.contains(&channel.value.as_str()) {
                out.push(missing("channel", channel, &channel_names, &user, ""));
            }
        }
        for rule in &spec.on_reply {
            if let Some(start) = &rule.start
                && !campaign_names.contains(&start.value.as_str())
            {
                out.push(missing("campaign", start, &campaign_names, &user, name));
            }
        }
    }

    let mut graph: BTreeMap<&str, Vec<&Located<String>>> = BTreeMap::new();
    for (name, segment) in &index.segments {
        let mut refs = Vec::new();
        segment_refs(&segment.spec.condition.value, &mut refs);
        for r in &refs {
            if !segment_names.contains(&r.value.as_str()) {
                out.push(missing(
                    "segment",
                    r,
                    &segment_names,
                    &format!("segment `{name}`"),
                    name,
                ));
            }
        }
        graph.insert(name, refs);
    }
    check_cycles(&graph, out);
}

/// Collects the `segment:` references of a condition tree.
pub(crate) fn segment_refs<'a>(condition: &'a Condition, refs: &mut Vec<&'a Located<String>>) {
    if let Some(name) = &condition.segment {
        refs.push(name);
    }
    for group in [&condition.all, &condition.any].into_iter().flatten() {
        for child in group.value.iter() {
            segment_refs(&child.value, refs);
        }
    }
    if let Some(not) = &condition.not {
        segment_refs(&not.value, refs);
    }
}

/// Reports each reference cycle once, at the reference that closes it.
fn check_cycles(graph: &BTreeMap<&str, Vec<&Located<String>>>, out: &mut Vec<Diagnostic>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a Located<String>>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
        reported: &mut BTreeSet<Vec<&'a str>>,
        out: &mut Vec<Diagnostic>,
    ) {
        marks.insert(node, Mark::Visiting);
        path.push(node);
        for edge in graph.get(node).into_iter().flatten() {
            let next = edge.value.as_str();
            match marks.get(next) {
                Some(Mark::Visiting) => {
                    let start = path.iter().position(|n| *n == next).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[start..].to_vec();
                    let mut key = cycle.clone();
                    key.sort();
                    if reported.insert(key) {
                        cycle.push(next);
                        out.push(
                            Diagnostic::error(
                                Code::SegmentCycle,
                                &edge.at,
                                format!(
                                    "segments refer to each other in a cycle: {}",
                                    cycle.join(" → ")
                                ),
                            )
                            .help("a segment cannot include itself, directly or through others"),
                        );
                    }
                }
                Some(Mark::Done) => {}
                None if graph.contains_key(next) => visit(next, graph, marks, path, reported, out),
                None => {}
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut reported = BTreeSet::new();
    for node in graph.keys() {
        if !marks.contains_key(node) {
            visit(node, graph, &mut marks, &mut Vec::new(), &mut reported, out);
        }
    }
}
