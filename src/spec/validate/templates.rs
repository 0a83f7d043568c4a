//! Templates: minijinja syntax located in the file, variables that exist (declared by the
//! template, provided by the campaign, or part of the contact and run data), required
//! variables provided, and content for every medium a campaign sends on.

use std::collections::{BTreeMap, BTreeSet};

use super::text_position::{find_variable, position_in_value};
use super::{Index, check_url};
use crate::spec::campaign::CampaignSpec;
use crate::spec::channel::ChannelType;
use crate::spec::diagnostic::{Code, Diagnostic};
use crate::spec::envelope::Document;
use crate::spec::load::Loaded;
use crate::spec::located::{Located, Pos};
use crate::spec::suggest::did_you_mean;
use crate::spec::template::{
    LocaleContent, MediaType, TemplateSpec, VariableType, WhatsappContent,
};

/// The fields of `contact` in a template (`attributes` holds the free-form ones).
pub const CONTACT_FIELDS: [&str; 11] = [
    "id",
    "name",
    "phone",
    "email",
    "telegram",
    "locale",
    "timezone",
    "country",
    "created_at",
    "tags",
    "attributes",
];

/// The names every message is rendered with, besides the campaign's `vars`.
pub const RUN_SCOPE: [&str; 6] = [
    "contact",
    "campaign",
    "run",
    "channel",
    "unsubscribe_url",
    "now",
];

/// minijinja's global functions: they look like variables to `undeclared_variables`.
const BUILT_IN_FUNCTIONS: [&str; 7] = [
    "range",
    "dict",
    "namespace",
    "debug",
    "cycler",
    "joiner",
    "lipsum",
];

/// A variable a template uses that is not in the run scope nor declared by the template:
/// fine only if every campaign that uses the template provides it.
struct OpenVariable {
    name: String,
    at: Pos,
}

pub(super) fn check(index: &Index, loaded: &Loaded, out: &mut Vec<Diagnostic>) {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);

    let mut users: BTreeMap<&str, Vec<&Document<CampaignSpec>>> = BTreeMap::new();
    for campaign in index.campaigns.values() {
        users
            .entry(campaign.spec.template.value.as_str())
            .or_default()
            .push(campaign);
    }

    let mut used_roots: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (name, template) in &index.templates {
        let spec = &template.spec;
        for (var_name, variable) in &spec.variables {
            if let Some(default) = &variable.default
                && !fits(variable.var_type.value, default)
            {
                out.push(Diagnostic::error(
                    Code::InvalidType,
                    &variable.var_type.at,
                    format!(
                        "the default of `{var_name}` is not a {}",
                        type_name(variable.var_type.value)
                    ),
                ));
            }
        }
        let mut contents = vec![spec.default_content()];
        contents.extend(spec.locales.values().cloned());
        if contents.iter().all(is_empty) {
            out.push(
                Diagnostic::error(
                    Code::MissingMediumContent,
                    &template.metadata.name.at,
                    format!("template `{name}` has no content for any medium"),
                )
                .help("add sms, whatsapp, telegram or email content"),
            );
        }
        for content in &contents {
            check_content_shape(content, out);
        }
        let mut open = Vec::new();
        let mut used = BTreeSet::new();
        for content in &contents {
            for (_, source) in content.template_strings() {
                check_string(&env, loaded, spec, source, &mut open, &mut used, out);
            }
        }
        used_roots.insert(name, used);
        let campaigns = users.get(name).map(Vec::as_slice).unwrap_or_default();
        report_open_variables(name, &open, campaigns, out);
    }

    for campaign in index.campaigns.values() {
        let template_name = campaign.spec.template.value.as_str();
        let Some(template) = index.templates.get(template_name) else {
            continue;
        };
        check_campaign_against_template(index, campaign, template, out);
        // A var the template neither declares nor uses is most likely a typo, which
        // would otherwise silently leave the template's default in place.
        if let Some(used) = used_roots.get(template_name) {
            for (var, value) in &campaign.spec.vars {
                if !template.spec.variables.contains_key(var) && !used.contains(var) {
                    let known = template.spec.variables.keys().chain(used.iter());
                    let hint = did_you_mean(var, known).map(|s| format!("did you mean `{s}`?"));
                    out.push(
                        Diagnostic::error(
                            Code::UnknownVariable,
                            &value.at,
                            format!("template `{template_name}` neither declares nor uses the variable `{var}`"),
                        )
                        .maybe_help(hint),
                    );
                }
            }
        }
    }
}

fn is_empty(content: &LocaleContent) -> bool {
    content.sms.is_none()
        && content.whatsapp.is_none()
        && content.telegram.is_none()
        && content.email.is_none()
}

/// Each medium's content must say something, in a form the provider accepts.
fn check_content_shape(content: &LocaleContent, out: &mut Vec<Diagnostic>) {
    if let Some(wa) = &content.whatsapp {
        check_whatsapp(wa, out);
    }
    if let Some(tg) = &content.telegram
        && tg.text.is_none()
        && tg.media.is_none()
    {
        let at = tg
            .buttons
            .as_ref()
            .and_then(|b| b.first())
            .map(|b| &b.text.at);
        if let Some(at) = at {
            out.push(Diagnostic::error(
                Code::MissingField,
                at,
                "Telegram buttons need a `text` or `media` above them",
            ));
        }
    }
    if let Some(email) = &content.email
        && email.html.is_none()
        && email.text.is_none()
    {
        out.push(Diagnostic::error(
            Code::MissingField,
            &email.subject.at,
            "e-mail content needs a body: `html`, `text` or both",
        ));
    }
    let media = [
        content.whatsapp.as_ref().and_then(|w| w.media.as_ref()),
        content.telegram.as_ref().and_then(|t| t.media.as_ref()),
    ];
    for media in media.into_iter().flatten() {
        check_url(&media.url, "the media `url`", out);
    }
    if let Some(url) = content.sms.as_ref().and_then(|s| s.media_url.as_ref()) {
        check_url(url, "the sms `media_url`", out);
    }
    let buttons = [
        content.whatsapp.as_ref().and_then(|w| w.buttons.as_ref()),
        content.telegram.as_ref().and_then(|t| t.buttons.as_ref()),
    ];
    for button in buttons.into_iter().flatten().flatten() {
        if let Some(url) = &button.url {
            check_url(url, "the button `url`", out);
        }
        if button.url.is_some() && button.reply.is_some() {
            out.push(Diagnostic::error(
                Code::InvalidValue,
                &button.text.at,
                "a button opens a `url` or sends a `reply`, not both",
            ));
        }
    }
}

/// WhatsApp accepts one message form at a time: an approved template (whose media header,
/// if it has one, is the `media`), an interactive list, reply buttons (at most 3) over a
/// text or media, or a plain text or media message.
fn check_whatsapp(wa: &WhatsappContent, out: &mut Vec<Diagnostic>) {
    let forms: Vec<(&str, &Pos)> = [
        wa.template.as_ref().map(|t| ("template", &t.name.at)),
        wa.list.as_ref().map(|l| ("list", &l.button.at)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let others = wa.text.is_some() || wa.media.is_some() || wa.buttons.is_some();
    // A template takes a `media` as its media header, but no text or buttons of its own.
    let others = match &wa.template {
        Some(_) => wa.text.is_some() || wa.buttons.is_some(),
        None => others,
    };
    if let (Some(_), Some(media)) = (&wa.template, &wa.media)
        && media.media_type.value == MediaType::Audio
    {
        out.push(Diagnostic::error(
            Code::InvalidValue,
            &media.media_type.at,
            "a WhatsApp template's media header is an image, a video or a document, not audio",
        ));
    }
    if let (Some(template), Some(_)) = (&wa.template, &wa.media)
        && let Some(first) = template.header.first()
    {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                &first.at,
                "a WhatsApp template's header is either media (`media`) or text parameters (`header`), not both",
            )
            .help("a template has one header: drop `header` for a media header, or `media` for a text one"),
        );
    }
    match (forms.as_slice(), others) {
        ([], false) => {
            let Some(at) = wa.buttons.as_ref().and_then(|b| b.first()).map(|b| &b.text.at) else {
                return;
            };
            out.push(Diagnostic::error(Code::MissingField, at, "WhatsApp buttons need a `text` or `media` above them"));
        }
        ([("template", at)], true) => out.push(
            Diagnostic::error(Code::InvalidValue, at, "a WhatsApp `template` message cannot also have text or buttons")
                .help("the approved template carries its own text and buttons; pass parameters in body/header/buttons, and a media header as `media`"),
        ),
        ([(_, _), (_, second)], _) => out.push(Diagnostic::error(
            Code::InvalidValue,
            second,
            "a WhatsApp message is either a `template` or a `list`, not both",
        )),
        ([("list", at)], _) if wa.media.is_some() || wa.buttons.is_some() => out.push(Diagnostic::error(
            Code::InvalidValue,
            at,
            "a WhatsApp `list` message cannot also have media or buttons",
        )),
        _ => {}
    }
    if let Some(buttons) = &wa.buttons
        && buttons.len() > 3
    {
        out.push(Diagnostic::error(
            Code::InvalidValue,
            &buttons[3].text.at,
            format!(
                "WhatsApp allows at most 3 reply buttons, this message has {}",
                buttons.len()
            ),
        ));
    }
    if let Some(list) = &wa.list {
        let rows: usize = list.sections.iter().map(|s| s.rows.len()).sum();
        if rows == 0 {
            out.push(Diagnostic::error(
                Code::MissingField,
                &list.button.at,
                "a WhatsApp list needs at least one section with rows",
            ));
        } else if rows > 10 {
            out.push(Diagnostic::error(
                Code::InvalidValue,
                &list.button.at,
                format!("WhatsApp lists hold at most 10 rows in all, this one has {rows}"),
            ));
        }
        if list.sections.len() > 1
            && let Some(untitled) = list.sections.iter().find(|s| s.title.is_none())
        {
            let at = untitled
                .rows
                .first()
                .map_or(&list.button.at, |r| &r.title.at);
            out.push(Diagnostic::error(
                Code::MissingField,
                at,
                "a WhatsApp list with more than one section needs a `title` on each section",
            ));
        }
    }
}

fn check_string(
    env: &minijinja::Environment,
    loaded: &Loaded,
    spec: &TemplateSpec,
    source: &Located<String>,
    open: &mut Vec<OpenVariable>,
    used_roots: &mut BTreeSet<String>,
    out: &mut Vec<Diagnostic>,
) {
    let template = match env.template_from_str(&source.value) {
        Ok(t) => t,
        Err(e) => {
            let (start, len) = match e.range() {
                Some(r) => (r.start, r.len()),
                None => (line_offset(&source.value, e.line().unwrap_or(1)), 1),
            };
            let at = position_in_value(loaded, source, start, len);
            let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
            out.push(Diagnostic::error(
                Code::TemplateSyntax,
                &at,
                format!("{}{detail}", e.kind()),
            ));
            return;
        }
    };
    let mut used: Vec<String> = template.undeclared_variables(true).into_iter().collect();
    used.sort();
    for var in used {
        let root = var.split('.').next().unwrap_or(&var);
        used_roots.insert(root.to_string());
        if BUILT_IN_FUNCTIONS.contains(&root) || spec.variables.contains_key(root) {
            continue;
        }
        let at = || {
            let name = if root == "contact" {
                var.as_str()
            } else {
                root
            };
            let start = find_variable(&source.value, name).unwrap_or(0);
            let len = name.len();
            position_in_value(loaded, source, start, len)
        };
        if root == "contact" {
            if let Some(field) = var.split('.').nth(1)
                && !CONTACT_FIELDS.contains(&field)
            {
                let hint = did_you_mean(field, CONTACT_FIELDS)
                    .map(|s| format!("did you mean `contact.{s}`? "));
                out.push(
                    Diagnostic::error(
                        Code::UndeclaredVariable,
                        &at(),
                        format!("`contact.{field}` is not a contact field"),
                    )
                    .help(format!(
                        "{}contacts have {}; custom data is under contact.attributes.<key>",
                        hint.unwrap_or_default(),
                        CONTACT_FIELDS.join(", ")
                    )),
                );
            }
            continue;
        }
        if RUN_SCOPE.contains(&root) {
            continue;
        }
        if !open.iter().any(|o| o.name == root) {
            open.push(OpenVariable {
                name: root.to_string(),
                at: at(),
            });
        }
    }
}

fn line_offset(text: &str, line: usize) -> usize {
    if line <= 1 {
        return 0;
    }
    text.match_indices('\n')
        .nth(line - 2)
        .map(|(i, _)| i + 1)
        .unwrap_or(0)
}

fn report_open_variables(
    template: &str,
    open: &[OpenVariable],
    campaigns: &[&Document<CampaignSpec>],
    out: &mut Vec<Diagnostic>,
) {
    for var in open {
        let lacking: Vec<&str> = campaigns
            .iter()
            .filter(|c| !c.spec.vars.contains_key(&var.name))
            .map(|c| c.metadata.name.value.as_str())
            .collect();
        let message = if campaigns.is_empty() {
            format!("`{}` is not declared by template `{template}`", var.name)
        } else if lacking.is_empty() {
            continue;
        } else {
            format!(
                "`{}` is neither declared by template `{template}` nor given in the vars of campaign{} {}",
                var.name,
                if lacking.len() > 1 { "s" } else { "" },
                lacking
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let mut known: Vec<&str> = RUN_SCOPE.to_vec();
        for c in campaigns {
            known.extend(c.spec.vars.keys().map(String::as_str));
        }
        let hint = did_you_mean(&var.name, known.iter())
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| {
                format!(
                    "declare it under the template's `variables:`; messages also see {}",
                    RUN_SCOPE.join(", ")
                )
            });
        out.push(Diagnostic::error(Code::UndeclaredVariable, &var.at, message).help(hint));
    }
}

/// What `whatsapp_twilio` cannot send, found before anything is: Twilio sends approved
/// WhatsApp templates only by their Content SID, carries a Content template's media in
/// the template itself, and has buttons and lists only as Content templates. Said once
/// per template content and channel, at the template's line.
fn check_for_whatsapp_twilio(
    channel: &str,
    template: &Document<TemplateSpec>,
    out: &mut Vec<Diagnostic>,
) {
    let name = &template.metadata.name.value;
    let locales = template
        .spec
        .locales
        .values()
        .filter_map(|c| c.whatsapp.as_ref());
    for wa in template.spec.whatsapp.iter().chain(locales) {
        let problem = match &wa.template {
            Some(t) if t.content_sid.is_none() => Some((
                &t.name.at,
                "has no `content_sid`: whatsapp_twilio sends approved templates by their Twilio Content SID",
            )),
            Some(t) if wa.media.is_some() => Some((
                &t.name.at,
                "has a `media` header: a Twilio Content template carries its media itself (pass the URL's variable part in `header`)",
            )),
            None if wa.buttons.is_some() || wa.list.is_some() => Some((
                wa.buttons
                    .as_ref()
                    .and_then(|b| b.first())
                    .map(|b| &b.text.at)
                    .or(wa.list.as_ref().map(|l| &l.button.at))
                    .expect("buttons or a list"),
                "has buttons or a list outside a `template`: Twilio sends those only as Content templates",
            )),
            _ => None,
        };
        if let Some((at, why)) = problem {
            out.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    at,
                    format!("template `{name}` goes through whatsapp_twilio channel `{channel}` and {why}"),
                )
                .help("give the template's `whatsapp.template` a `content_sid: HX…` from Twilio's Content Template Builder, or send it through a whatsapp_cloud channel"),
            );
        }
    }
}

fn check_campaign_against_template(
    index: &Index,
    campaign: &Document<CampaignSpec>,
    template: &Document<TemplateSpec>,
    out: &mut Vec<Diagnostic>,
) {
    let spec = &campaign.spec;
    let campaign_name = &campaign.metadata.name.value;
    let template_name = &template.metadata.name.value;
    let mut missing_media = BTreeSet::new();
    for channel_ref in spec.channels.channels.value.iter() {
        let Some(channel) = index.channels.get(channel_ref.value.as_str()) else {
            continue;
        };
        let Some(medium) = channel.spec.medium() else {
            continue;
        };
        if !template.spec.has_medium(medium)
            && missing_media.insert((medium, channel_ref.value.clone()))
        {
            out.push(
                Diagnostic::error(
                    Code::MissingMediumContent,
                    &channel_ref.at,
                    format!(
                        "campaign `{campaign_name}` sends through `{}` ({medium}), but template `{template_name}` has no {medium} content",
                        channel_ref.value
                    ),
                )
                .help(format!("add `{medium}:` content to the template, or drop the channel")),
            );
        }
        if channel.spec.channel_type.value == ChannelType::WhatsappTwilio {
            check_for_whatsapp_twilio(&channel_ref.value, template, out);
        }
    }
    for (name, variable) in &template.spec.variables {
        match spec.vars.get(name) {
            None if variable.required && variable.default.is_none() => out.push(
                Diagnostic::error(
                    Code::MissingVariable,
                    &spec.template.at,
                    format!("template `{template_name}` requires the variable `{name}`, which campaign `{campaign_name}` does not set"),
                )
                .help(format!("add it under the campaign's vars: {{{name}: ...}}")),
            ),
            Some(value) if !fits(variable.var_type.value, &value.value) => out.push(Diagnostic::error(
                Code::InvalidType,
                &value.at,
                format!("`{name}` is declared as a {} by template `{template_name}`", type_name(variable.var_type.value)),
            )),
            _ => {}
        }
    }
}

fn fits(ty: VariableType, value: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match ty {
        VariableType::String => value.is_string(),
        VariableType::Number => value.is_number(),
        VariableType::Boolean => value.is_boolean(),
        VariableType::Date => {
            matches!(value, V::String(s) if crate::spec::values::parse_instant(s).is_ok())
        }
        VariableType::List => value.is_array(),
    }
}

fn type_name(ty: VariableType) -> &'static str {
    match ty {
        VariableType::String => "string",
        VariableType::Number => "number",
        VariableType::Boolean => "boolean",
        VariableType::Date => "date",
        VariableType::List => "list",
    }
}
