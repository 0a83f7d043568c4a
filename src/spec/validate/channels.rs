//! Channels: the provider block that matches the type, the medium, credentials that are
//! references and never literals, URLs, limits. Webhook subscriptions are checked here
//! too: they share the secret and URL rules.

use super::{Index, check_duration, check_url, delivery};
use crate::spec::channel::{ChannelSpec, ChannelType, SmtpTls};
use crate::spec::diagnostic::{Code, Diagnostic};
use crate::spec::envelope::Document;
use crate::spec::located::{Located, Pos};
use crate::spec::values::Secret;

pub(super) fn check(index: &Index, out: &mut Vec<Diagnostic>) {
    for channel in index.channels.values() {
        check_channel(channel, out);
    }
    for webhook in index.webhooks.values() {
        let spec = &webhook.spec;
        check_url(&spec.url, "the webhook `url`", out);
        check_secret(&spec.secret, "secret", out);
        if spec.events.is_empty() {
            out.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    &webhook.metadata.name.at,
                    format!(
                        "webhook `{}` subscribes to no events",
                        webhook.metadata.name.value
                    ),
                )
                .help("list events such as delivery.sent, delivery.failed, message.replied"),
            );
        }
        if let Some(batching) = &spec.batching {
            if batching.max_events.value == 0 {
                out.push(Diagnostic::error(
                    Code::InvalidValue,
                    &batching.max_events.at,
                    "max_events must be at least 1",
                ));
            }
            check_duration(&batching.max_wait, "max_wait", out);
        }
    }
}

/// Which block each type needs, and the blocks present.
fn blocks(spec: &ChannelSpec) -> Vec<(ChannelType, Option<&Pos>)> {
    vec![
        (
            ChannelType::SmsTwilio,
            spec.sms_twilio.as_ref().map(|b| &b.at),
        ),
        (
            ChannelType::WhatsappTwilio,
            spec.whatsapp_twilio.as_ref().map(|b| &b.at),
        ),
        (
            ChannelType::WhatsappCloud,
            spec.whatsapp_cloud.as_ref().map(|b| &b.at),
        ),
        (ChannelType::Telegram, spec.telegram.as_ref().map(|b| &b.at)),
        (
            ChannelType::EmailSmtp,
            spec.email_smtp.as_ref().map(|b| &b.at),
        ),
        (ChannelType::Webhook, spec.webhook.as_ref().map(|b| &b.at)),
        (ChannelType::Outbox, spec.outbox.as_ref().map(|b| &b.at)),
    ]
}

fn check_channel(channel: &Document<ChannelSpec>, out: &mut Vec<Diagnostic>) {
    let spec = &channel.spec;
    let ty = spec.channel_type.value;
    let name = &channel.metadata.name.value;
    for (block_type, at) in blocks(spec) {
        match (block_type == ty, at) {
            (true, None) => out.push(
                Diagnostic::error(
                    Code::InvalidChannel,
                    &spec.channel_type.at,
                    format!(
                        "channel `{name}` of type {} has no `{}:` settings block",
                        ty.as_str(),
                        ty.as_str()
                    ),
                )
                .help(format!(
                    "add `{}:` with the provider's settings",
                    ty.as_str()
                )),
            ),
            (false, Some(at)) => out.push(Diagnostic::error(
                Code::InvalidChannel,
                at,
                format!(
                    "`{}:` settings on a channel of type {}; only `{}:` applies",
                    block_type.as_str(),
                    ty.as_str(),
                    ty.as_str()
                ),
            )),
            _ => {}
        }
    }
    match (ty.implied_medium(), &spec.medium) {
        (None, None) => out.push(
            Diagnostic::error(
                Code::MissingField,
                &spec.channel_type.at,
                format!("a {} channel must name its `medium`", ty.as_str()),
            )
            .help("add medium: sms, whatsapp, telegram or email"),
        ),
        (Some(implied), Some(given)) if implied != given.value => out.push(Diagnostic::error(
            Code::InvalidChannel,
            &given.at,
            format!(
                "a {} channel delivers {implied}, not {}",
                ty.as_str(),
                given.value
            ),
        )),
        _ => {}
    }
    if let Some(rate) = &spec.rate {
        delivery::check_rate(rate, out);
    }
    if let Some(n) = &spec.max_in_flight
        && n.value == 0
    {
        out.push(Diagnostic::error(
            Code::InvalidValue,
            &n.at,
            "max_in_flight must be at least 1",
        ));
    }
    if let Some(window) = &spec.send_window {
        delivery::check_send_window(window, out);
    }
    check_provider_settings(spec, out);
}

fn check_provider_settings(spec: &ChannelSpec, out: &mut Vec<Diagnostic>) {
    let url = |u: &Option<Located<String>>, what: &str, out: &mut Vec<Diagnostic>| {
        if let Some(u) = u {
            check_url(u, what, out);
        }
    };
    for twilio in [&spec.sms_twilio, &spec.whatsapp_twilio]
        .into_iter()
        .flatten()
    {
        check_secret(&twilio.auth_token, "auth_token", out);
        url(&twilio.base_url, "base_url", out);
        url(&twilio.public_url, "public_url", out);
        if twilio.from.is_none() && twilio.messaging_service_sid.is_none() {
            out.push(Diagnostic::error(
                Code::MissingField,
                &twilio.at,
                "Twilio needs a sender: `from` or `messaging_service_sid`",
            ));
        }
    }
    if let Some(wa) = &spec.whatsapp_cloud {
        check_secret(&wa.access_token, "access_token", out);
        for (secret, what) in [
            (&wa.app_secret, "app_secret"),
            (&wa.verify_token, "verify_token"),
        ] {
            if let Some(secret) = secret {
                check_secret(secret, what, out);
            }
        }
        url(&wa.base_url, "base_url", out);
    }
    if let Some(tg) = &spec.telegram {
        check_secret(&tg.bot_token, "bot_token", out);
        if let Some(s) = &tg.webhook_secret {
            check_secret(s, "webhook_secret", out);
        }
        url(&tg.base_url, "base_url", out);
    }
    if let Some(smtp) = &spec.email_smtp {
        if let Some(p) = &smtp.password {
            check_secret(p, "password", out);
        }
        if let Some(s) = &smtp.unsubscribe_secret {
            check_secret(s, "unsubscribe_secret", out);
        }
        url(&smtp.public_url, "public_url", out);
        if !smtp.from.value.contains('@') {
            out.push(Diagnostic::error(
                Code::InvalidValue,
                &smtp.from.at,
                "`from` must contain an e-mail address, e.g. \"Acme <news@acme.example>\"",
            ));
        }
        if let Some(n) = &smtp.pool_size
            && n.value == 0
        {
            out.push(Diagnostic::error(
                Code::InvalidValue,
                &n.at,
                "pool_size must be at least 1",
            ));
        }
        if let Some(ca) = &smtp.ca_file {
            if ca.value.trim().is_empty() {
                out.push(Diagnostic::error(
                    Code::InvalidValue,
                    &ca.at,
                    "the email_smtp `ca_file` path is empty",
                ));
            }
            // Without TLS no certificate is ever checked: a `ca_file` there means the
            // author believes the connection is verified when it is plain text.
            if smtp.tls.as_ref().is_some_and(|t| t.value == SmtpTls::None) {
                out.push(
                    Diagnostic::error(
                        Code::InvalidValue,
                        &ca.at,
                        "the email_smtp `ca_file` needs TLS, but `tls` is `none`",
                    )
                    .help("use `tls: starttls` or `tls: implicit`, or remove `ca_file`"),
                );
            }
        }
    }
    if let Some(hook) = &spec.webhook {
        check_url(&hook.url, "the webhook channel `url`", out);
        if let Some(s) = &hook.secret {
            check_secret(s, "secret", out);
        }
        for (header, value) in &hook.headers {
            if is_credential_header(header) {
                check_secret(&Secret(value.clone()), &format!("headers.{header}"), out);
            }
        }
        if let Some(t) = &hook.timeout {
            check_duration(t, "timeout", out);
        }
    }
    if let Some(outbox) = &spec.outbox
        && outbox.path.value.trim().is_empty()
    {
        out.push(Diagnostic::error(
            Code::InvalidValue,
            &outbox.path.at,
            "the outbox `path` is empty",
        ));
    }
}

/// A credential must be `${env:NAME}` or `${file:PATH}`. The message never quotes the value.
pub(super) fn check_secret(secret: &Secret, field: &str, out: &mut Vec<Diagnostic>) {
    if let Err(why) = secret.source() {
        out.push(
            Diagnostic::error(
                Code::LiteralSecret,
                &secret.0.at,
                format!("`{field}`: {why}"),
            )
            .help(format!(
                "e.g. {field}: \"${{env:{}}}\"",
                field.to_uppercase()
            )),
        );
    }
}

/// Headers that carry credentials: their values must be secret references too, and plans
/// mask them.
pub fn is_credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "authorization"
        || name == "proxy-authorization"
        || name.contains("token")
        || name.contains("secret")
        || name.contains("api-key")
        || name.contains("apikey")
        || name.contains("password")
}

#[cfg(test)]
mod email_smtp_ca_file {
    use crate::spec::{Diagnostic, SourceFile, load_sources, validate};

    /// The errors validation reports for one email_smtp channel with `extra` settings.
    fn errors(extra: &str) -> Vec<Diagnostic> {
        let text = format!(
            "apiVersion: herald/v1\nkind: Channel\nmetadata: {{name: mail}}\nspec:\n  \
             type: email_smtp\n  email_smtp:\n    host: smtp.example.com\n    \
             from: \"news@acme.example\"\n{extra}"
        );
        let loaded = load_sources(vec![SourceFile {
            path: "channel.yaml".into(),
            text,
        }]);
        validate(loaded, jiff::Timestamp::UNIX_EPOCH)
            .diagnostics
            .into_iter()
            .filter(Diagnostic::is_error)
            .collect()
    }

    #[test]
    fn a_ca_file_is_valid_with_tls() {
        for tls in ["starttls", "implicit"] {
            let found = errors(&format!("    tls: {tls}\n    ca_file: certs/ca.pem\n"));
            assert!(found.is_empty(), "{tls}: {found:?}");
        }
        assert!(errors("    ca_file: /etc/herald/ca.pem\n").is_empty());
    }

    #[test]
    fn a_ca_file_without_tls_is_an_error_naming_the_field() {
        let found = errors("    tls: none\n    ca_file: certs/ca.pem\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("ca_file"), "{}", found[0].message);
        assert!(found[0].message.contains("none"), "{}", found[0].message);
        assert_eq!(found[0].at.as_ref().map(|p| p.line), Some(10));
    }

    #[test]
    fn an_empty_ca_file_is_an_error() {
        let found = errors("    ca_file: \"  \"\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("ca_file"), "{}", found[0].message);
        assert!(found[0].message.contains("empty"), "{}", found[0].message);
    }
}
