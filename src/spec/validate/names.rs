//! Names: their form, and uniqueness within a kind.

use std::collections::BTreeMap;

use crate::spec::diagnostic::{Code, Diagnostic};
use crate::spec::envelope::Kind;
use crate::spec::load::Loaded;
use crate::spec::located::Pos;
use crate::spec::values::check_name;

pub(super) fn check(loaded: &Loaded, out: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<(Kind, &str), &Pos> = BTreeMap::new();
    let named = loaded
        .objects
        .iter()
        .map(|o| (o.kind(), o.name()))
        .chain(loaded.unparsed.iter().map(|(k, m)| (*k, &m.name)));
    let mut named: Vec<_> = named.collect();
    named.sort_by(|a, b| a.1.at.cmp(&b.1.at));
    for (kind, name) in named {
        if let Err(why) = check_name(&name.value) {
            out.push(
                Diagnostic::error(
                    Code::InvalidName,
                    &name.at,
                    format!("{} name `{}` {why}", kind, name.value),
                )
                .help("names are 1 to 63 characters of a-z, 0-9 and '-'"),
            );
        }
        match seen.get(&(kind, name.value.as_str())) {
            Some(first) => out.push(
                Diagnostic::error(
                    Code::DuplicateName,
                    &name.at,
                    format!(
                        "{} `{}` is defined twice; first at {first}",
                        kind, name.value
                    ),
                )
                .related(first, "first defined here"),
            ),
            None => {
                seen.insert((kind, name.value.as_str()), &name.at);
            }
        }
    }
}
