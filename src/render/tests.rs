use std::collections::BTreeMap;

use serde_json::json;

use super::*;

fn spec(yaml: &str) -> TemplateSpec {
    serde_saphyr::from_str(yaml).expect("a valid template spec")
}

fn renderer(yaml: &str, vars: serde_json::Value) -> Renderer {
    let vars: BTreeMap<String, serde_json::Value> = serde_json::from_value(vars).unwrap();
    Renderer::new("offer", &spec(yaml), &vars).expect("compiles")
}

fn contact() -> ContactView {
    ContactView {
        id: "c-1".into(),
        name: Some("Lucía Quispe".into()),
        phone: Some("+51987654321".into()),
        email: Some("lucia@example.com".into()),
        telegram: None,
        locale: Some("es-PE".into()),
        timezone: Some("America/Lima".into()),
        country: Some("PE".into()),
        created_at: "2024-03-12T15:20:00Z".into(),
        tags: vec!["vip".into()],
        attributes: json!({"city": "Lima", "orders": 14})
            .as_object()
            .unwrap()
            .clone(),
    }
}

fn run() -> RunContext {
    RunContext {
        campaign: "black-friday".into(),
        run_id: 7,
        channel: "sms-main".into(),
        now: "2026-11-27T14:00:00.250Z".parse().unwrap(),
        unsubscribe_url: Some("https://herald.example/u/abc".into()),
        timezone: None,
    }
}

fn sms(r: &Renderer, c: &ContactView) -> Result<String, RenderError> {
    match r.render(Medium::Sms, c, &run())? {
        Content::Sms(m) => Ok(m.text),
        other => panic!("not sms: {other:?}"),
    }
}

fn sms_text(template: &str) -> Result<String, RenderError> {
    let yaml = format!(
        "sms: {{text: {}}}",
        serde_json::to_string(template).unwrap()
    );
    sms(&renderer(&yaml, json!({"discount": 30})), &contact())
}

fn with_locale(locale: Option<&str>) -> ContactView {
    ContactView {
        locale: locale.map(String::from),
        ..contact()
    }
}

#[test]
fn the_scope_holds_the_contact_the_run_and_the_vars() {
    let text = sms_text(
        "{{ contact.name }} {{ contact.attributes.city }} {{ discount }}% {{ campaign.name }} \
         {{ run.id }} {{ channel.name }} {{ channel.medium }} {{ now }} {{ unsubscribe_url }} \
         {{ contact.tags | join(',') }} {{ contact.created_at }}",
    )
    .unwrap();
    assert_eq!(
        text,
        "Lucía Quispe Lima 30% black-friday 7 sms-main sms 2026-11-27T14:00:00Z \
         https://herald.example/u/abc vip 2024-03-12T15:20:00Z"
    );
}

#[test]
fn contact_has_exactly_the_fields_validation_accepts() {
    let value = serde_json::to_value(contact()).unwrap();
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    let mut allowed = CONTACT_FIELDS.to_vec();
    allowed.sort();
    assert_eq!(keys, allowed);
    let listed = sms_text("{{ contact | list | join(' ') }}").unwrap();
    assert_eq!(listed, CONTACT_FIELDS.join(" "));
}

#[test]
fn the_scope_lists_the_run_names_validation_accepts_and_the_vars() {
    for name in RUN_SCOPE.iter().chain(&["discount"]) {
        let out = sms_text(&format!("{{% if {name} is defined %}}yes{{% endif %}}")).unwrap();
        assert_eq!(out, "yes", "{name} should be in scope");
    }
    assert_eq!(
        sms_text("{% if coupon is defined %}yes{% endif %}").unwrap(),
        ""
    );
}

#[test]
fn an_undefined_variable_is_an_error_naming_the_template_field_and_variable() {
    let err = sms_text("Hi {{ coupon }}").unwrap_err();
    let RenderError::Undefined {
        template,
        path,
        message,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(template, "offer");
    assert_eq!(path, "sms.text");
    assert!(message.contains("`coupon` is undefined"), "{message}");
    assert!(
        err.to_string()
            .starts_with("template `offer`, sms.text: undefined value"),
        "{err}"
    );
}

#[test]
fn an_undefined_attribute_is_an_error_and_default_or_is_defined_handle_it() {
    let err = sms_text("{{ contact.attributes.vip_since }}").unwrap_err();
    assert!(
        matches!(&err, RenderError::Undefined { message, .. } if message.contains("contact.attributes.vip_since")),
        "{err:?}"
    );
    assert_eq!(
        sms_text("{{ contact.attributes.vip_since | default('never') }}").unwrap(),
        "never"
    );
    assert_eq!(
        sms_text("{% if contact.attributes.vip_since is defined %}x{% else %}y{% endif %}")
            .unwrap(),
        "y"
    );
}

#[test]
fn a_missing_contact_field_is_none_testable_and_defaultable_but_not_printable() {
    let c = ContactView {
        name: None,
        ..contact()
    };
    let r = |t: &str| {
        let yaml = format!("sms: {{text: {}}}", serde_json::to_string(t).unwrap());
        sms(&renderer(&yaml, json!({})), &c)
    };
    assert_eq!(
        r("{% if contact.name %}x{% else %}y{% endif %}").unwrap(),
        "y"
    );
    assert_eq!(
        r("{{ contact.name | default('cliente') }}").unwrap(),
        "cliente"
    );
    assert_eq!(
        r("{{ contact.name | default('cliente', true) }}").unwrap(),
        "cliente"
    );
    let err = r("Hi {{ contact.name }}").unwrap_err();
    assert!(
        matches!(&err, RenderError::Undefined { message, .. } if message.contains("none")),
        "{err:?}"
    );
}

#[test]
fn an_endless_loop_runs_out_of_fuel_instead_of_hanging() {
    let started = std::time::Instant::now();
    let err = sms_text(
        "{% for a in range(100000) %}{% for b in range(100000) %}{{ b }}{% endfor %}{% endfor %}",
    )
    .unwrap_err();
    assert!(
        matches!(err, RenderError::OutOfFuel { fuel: FUEL, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("fuel"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn output_longer_than_the_cap_is_an_error() {
    let err = sms_text("{{ 'x' * 70000 }}").unwrap_err();
    assert!(
        matches!(
            err,
            RenderError::TooLarge {
                len: 70000,
                limit: MAX_OUTPUT,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(sms_text("{{ 'x' * 60000 }}").unwrap().len(), 60000);
}

#[test]
fn only_email_html_is_html_escaped() {
    let c = ContactView {
        name: Some("<b>Ana & Co</b>".into()),
        ..contact()
    };
    let yaml = r#"
sms: {text: "{{ contact.name }}"}
telegram: {text: "{{ contact.name }}"}
email: {subject: "{{ contact.name }}", html: "<p>{{ contact.name }}</p>{{ '<i>ok</i>' | safe }}", text: "{{ contact.name }}"}
locales:
  es: {email: {subject: "{{ contact.name }}", html: "<p>{{ contact.name }}</p>"}}
"#;
    let r = renderer(yaml, json!({}));
    assert_eq!(sms(&r, &c).unwrap(), "<b>Ana & Co</b>");
    let Content::Telegram(tg) = r.render(Medium::Telegram, &c, &run()).unwrap() else {
        panic!()
    };
    assert_eq!(tg.text.as_deref(), Some("<b>Ana & Co</b>"));
    let english = ContactView {
        locale: None,
        ..c.clone()
    };
    let Content::Email(email) = r.render(Medium::Email, &english, &run()).unwrap() else {
        panic!()
    };
    assert_eq!(email.subject, "<b>Ana & Co</b>");
    assert_eq!(
        email.html.as_deref(),
        Some("<p>&lt;b&gt;Ana &amp; Co&lt;&#x2f;b&gt;</p><i>ok</i>")
    );
    assert_eq!(email.text.as_deref(), Some("<b>Ana & Co</b>"));
    let Content::Email(es) = r.render(Medium::Email, &c, &run()).unwrap() else {
        panic!()
    };
    assert_eq!(
        es.html.as_deref(),
        Some("<p>&lt;b&gt;Ana &amp; Co&lt;&#x2f;b&gt;</p>")
    );
}

const LOCALIZED: &str = r#"
sms: {text: "default"}
email: {subject: "default", text: "default"}
locales:
  pt-BR: {sms: {text: "pt-BR"}}
  pt: {sms: {text: "pt"}, email: {subject: "pt", text: "pt"}}
  es: {sms: {text: "es"}}
"#;

#[test]
fn the_locale_override_is_the_exact_tag_then_the_language_then_the_default() {
    let r = renderer(LOCALIZED, json!({}));
    let get = |locale: Option<&str>| sms(&r, &with_locale(locale)).unwrap();
    assert_eq!(get(Some("pt-BR")), "pt-BR");
    assert_eq!(get(Some("pt_br")), "pt-BR");
    assert_eq!(get(Some("pt-PT")), "pt");
    assert_eq!(get(Some("es-PE")), "es");
    assert_eq!(get(Some("fr-FR")), "default");
    assert_eq!(get(None), "default");
    assert_eq!(r.chosen_locale(Medium::Sms, Some("pt-BR")), Some("pt-BR"));
    assert_eq!(r.chosen_locale(Medium::Sms, Some("de")), None);
}

#[test]
fn an_override_without_the_medium_falls_back_for_that_medium_only() {
    let r = renderer(LOCALIZED, json!({}));
    let c = with_locale(Some("pt-BR"));
    let Content::Email(email) = r.render(Medium::Email, &c, &run()).unwrap() else {
        panic!()
    };
    assert_eq!(email.subject, "pt");
    let es = with_locale(Some("es"));
    let Content::Email(email) = r.render(Medium::Email, &es, &run()).unwrap() else {
        panic!()
    };
    assert_eq!(email.subject, "default");
    assert_eq!(r.chosen_locale(Medium::Email, Some("pt-BR")), Some("pt"));
    let err = r.render(Medium::Telegram, &c, &run()).unwrap_err();
    assert_eq!(
        err,
        RenderError::NoContent {
            template: "offer".into(),
            medium: Medium::Telegram
        }
    );
}

#[test]
fn an_error_in_an_override_names_its_locale_in_the_path() {
    let yaml = r#"
sms: {text: "ok"}
locales: {pt-BR: {sms: {text: "{{ nope }}"}}}
"#;
    let err = sms(&renderer(yaml, json!({})), &with_locale(Some("pt-BR"))).unwrap_err();
    assert!(
        matches!(&err, RenderError::Undefined { path, .. } if path == "locales.pt-BR.sms.text"),
        "{err:?}"
    );
}

#[test]
fn variable_defaults_apply_unless_the_campaign_sets_the_variable() {
    let yaml = r#"
variables:
  tracking: {type: string, default: "utm=sms"}
  discount: {type: number, required: true}
sms: {text: "{{ discount }} {{ tracking }}"}
"#;
    assert_eq!(
        sms(&renderer(yaml, json!({"discount": 10})), &contact()).unwrap(),
        "10 utm=sms"
    );
    assert_eq!(
        sms(
            &renderer(yaml, json!({"discount": 10, "tracking": "x"})),
            &contact()
        )
        .unwrap(),
        "10 x"
    );
}

#[test]
fn a_syntax_error_fails_the_renderer_with_the_field_path() {
    let err = Renderer::new(
        "offer",
        &spec("sms: {text: \"{{ x \"}\nlocales: {}"),
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, RenderError::Syntax { path, template, .. } if path == "sms.text" && template == "offer"),
        "{err:?}"
    );
}

#[test]
fn every_whatsapp_content_kind_is_rendered() {
    let yaml = r#"
whatsapp:
  text: "Hola {{ contact.name }}"
  media: {type: image, url: "https://x.example/{{ discount }}.jpg", caption: "{{ discount }}% OFF", filename: "f{{ discount }}.pdf"}
  buttons:
    - {text: "Ver {{ discount }}", reply: "SEE_{{ discount }}"}
    - {text: "Web", url: "https://x.example/?c={{ campaign.name }}"}
    - {text: "Sí"}
  list:
    button: "Elegir {{ discount }}"
    sections:
      - title: "Sec {{ discount }}"
        rows:
          - {id: r1, title: "Row {{ discount }}", description: "Desc {{ contact.attributes.city }}"}
          - {id: r2, title: "Plain"}
  template:
    name: bf
    language: es
    header: ["{{ discount }}% OFF"]
    body: ["{{ contact.name }}", "{{ discount }}"]
    buttons: ["c={{ campaign.name }}"]
    content_sid: HX123
"#;
    let r = renderer(yaml, json!({"discount": 30}));
    let Content::Whatsapp(wa) = r.render(Medium::Whatsapp, &contact(), &run()).unwrap() else {
        panic!()
    };
    assert_eq!(wa.text.as_deref(), Some("Hola Lucía Quispe"));
    let media = wa.media.unwrap();
    assert_eq!(media.url, "https://x.example/30.jpg");
    assert_eq!(media.caption.as_deref(), Some("30% OFF"));
    assert_eq!(media.filename.as_deref(), Some("f30.pdf"));
    assert_eq!(
        wa.buttons,
        vec![
            ButtonMessage {
                text: "Ver 30".into(),
                url: None,
                reply: Some("SEE_30".into())
            },
            ButtonMessage {
                text: "Web".into(),
                url: Some("https://x.example/?c=black-friday".into()),
                reply: None
            },
            ButtonMessage {
                text: "Sí".into(),
                url: None,
                reply: Some("Sí".into())
            },
        ]
    );
    let list = wa.list.unwrap();
    assert_eq!(list.button, "Elegir 30");
    assert_eq!(list.sections[0].title.as_deref(), Some("Sec 30"));
    assert_eq!(list.sections[0].rows[0].id, "r1");
    assert_eq!(list.sections[0].rows[0].title, "Row 30");
    assert_eq!(
        list.sections[0].rows[0].description.as_deref(),
        Some("Desc Lima")
    );
    assert_eq!(list.sections[0].rows[1].description, None);
    let t = wa.template.unwrap();
    assert_eq!((t.name.as_str(), t.language.as_str()), ("bf", "es"));
    assert_eq!(t.header, vec!["30% OFF"]);
    assert_eq!(t.body, vec!["Lucía Quispe", "30"]);
    assert_eq!(t.buttons, vec!["c=black-friday"]);
    assert_eq!(t.content_sid.as_deref(), Some("HX123"));
}

#[test]
fn a_failing_template_parameter_is_named_by_its_index() {
    let yaml = r#"
whatsapp: {template: {name: bf, language: es, body: ["{{ contact.name }}", "{{ missing }}"]}}
"#;
    let err = renderer(yaml, json!({}))
        .render(Medium::Whatsapp, &contact(), &run())
        .unwrap_err();
    assert!(
        matches!(&err, RenderError::Undefined { path, .. } if path == "whatsapp.template.body[1]"),
        "{err:?}"
    );
}

#[test]
fn telegram_and_email_content_are_rendered() {
    let yaml = r#"
telegram:
  text: "{{ contact.name }}"
  media: {type: document, url: "https://x.example/a.pdf", caption: "{{ discount }}"}
  buttons: [{text: "Go", url: "https://x.example/{{ run.id }}"}, {text: "Later", reply: LATER}]
email:
  subject: "S {{ discount }}"
  html: "<a href=\"{{ unsubscribe_url }}\">u</a>"
  text: "T {{ discount }}"
"#;
    let r = renderer(yaml, json!({"discount": 5}));
    let Content::Telegram(tg) = r.render(Medium::Telegram, &contact(), &run()).unwrap() else {
        panic!()
    };
    assert_eq!(tg.text.as_deref(), Some("Lucía Quispe"));
    assert_eq!(tg.media.unwrap().caption.as_deref(), Some("5"));
    assert_eq!(tg.buttons[0].url.as_deref(), Some("https://x.example/7"));
    assert_eq!(tg.buttons[1].reply.as_deref(), Some("LATER"));
    let Content::Email(email) = r.render(Medium::Email, &contact(), &run()).unwrap() else {
        panic!()
    };
    assert_eq!(email.subject, "S 5");
    assert_eq!(
        email.html.as_deref(),
        Some("<a href=\"https://herald.example/u/abc\">u</a>"),
        "herald's own link is not escaped into &#x2f;"
    );
    assert_eq!(email.text.as_deref(), Some("T 5"));
    assert_eq!(
        email.unsubscribe_url.as_deref(),
        Some("https://herald.example/u/abc")
    );
}

#[test]
fn a_contacts_own_unsubscribe_link_replaces_the_runs_and_odd_links_stay_escaped() {
    let r = renderer(
        "email: {subject: s, html: \"<a href='{{ unsubscribe_url }}'>u</a>\"}",
        json!({}),
    );
    let scope = RunScope::new(&run(), Medium::Email);
    let render = |url| match r
        .render_in(Arc::new(contact()), &scope, Some(String::from(url)))
        .unwrap()
    {
        Content::Email(e) => (e.html.unwrap(), e.unsubscribe_url.unwrap()),
        _ => panic!(),
    };
    let (html, url) = render("https://h.example/v1/unsubscribe/Yy0x.abc");
    assert_eq!(
        html,
        "<a href='https://h.example/v1/unsubscribe/Yy0x.abc'>u</a>"
    );
    assert_eq!(url, "https://h.example/v1/unsubscribe/Yy0x.abc");
    // A quote in an operator's public URL cannot break out of the attribute.
    let (html, _) = render("https://h.example/x'onmouseover='y");
    assert!(!html.contains("x'onmouseover"), "{html}");
}

#[test]
fn without_an_unsubscribe_url_using_it_is_an_error() {
    let r = renderer("sms: {text: \"{{ unsubscribe_url }}\"}", json!({}));
    let no_url = RunContext {
        unsubscribe_url: None,
        ..run()
    };
    let err = r.render(Medium::Sms, &contact(), &no_url).unwrap_err();
    assert!(matches!(err, RenderError::Undefined { .. }), "{err:?}");
}

#[test]
fn block_tags_on_their_own_lines_leave_no_blank_lines() {
    let text = sms_text("a\n{% for i in [1, 2] %}\n{{ i }}\n{% endfor %}\nb").unwrap();
    assert_eq!(text, "a\n1\n2\nb");
}

// Filters, per locale.

fn in_locale(template: &str, locale: &str, tz: Option<&str>) -> String {
    let c = ContactView {
        locale: Some(locale.into()),
        timezone: tz.map(String::from),
        ..contact()
    };
    let yaml = format!(
        "sms: {{text: {}}}",
        serde_json::to_string(template).unwrap()
    );
    sms(
        &renderer(&yaml, json!({"ends_on": "2027-11-30", "n": 1234.5})),
        &c,
    )
    .unwrap()
}

#[test]
fn date_writes_month_names_in_the_contacts_language() {
    let t = "{{ ends_on | date }}";
    assert_eq!(in_locale(t, "en-US", None), "November 30, 2027");
    assert_eq!(in_locale(t, "es-PE", None), "30 de noviembre de 2027");
    assert_eq!(in_locale(t, "pt-BR", None), "30 de novembro de 2027");
    assert_eq!(in_locale(t, "fr", None), "30 novembre 2027");
    assert_eq!(in_locale(t, "de-AT", None), "30. November 2027");
    assert_eq!(in_locale(t, "it", None), "November 30, 2027");
}

#[test]
fn date_styles_and_patterns_per_locale() {
    assert_eq!(
        in_locale("{{ ends_on | date('short') }}", "en", None),
        "11/30/2027"
    );
    assert_eq!(
        in_locale("{{ ends_on | date('short') }}", "es", None),
        "30/11/2027"
    );
    assert_eq!(
        in_locale("{{ ends_on | date('short') }}", "de", None),
        "30.11.2027"
    );
    assert_eq!(
        in_locale("{{ ends_on | date('medium') }}", "fr", None),
        "30 nov. 2027"
    );
    assert_eq!(
        in_locale("{{ ends_on | date(format='full') }}", "es", None),
        "martes, 30 de noviembre de 2027"
    );
    assert_eq!(
        in_locale("{{ ends_on | date('full') }}", "pt", None),
        "terça-feira, 30 de novembro de 2027"
    );
    assert_eq!(
        in_locale("{{ ends_on | date('full') }}", "de", None),
        "Dienstag, 30. November 2027"
    );
    assert_eq!(
        in_locale("{{ ends_on | date('%a %-d %b %y') }}", "fr", None),
        "mar. 30 nov. 27"
    );
    assert_eq!(
        in_locale("{{ ends_on | date('iso') }}", "de", None),
        "2027-11-30"
    );
}

#[test]
fn instants_are_shown_in_the_contacts_time_zone() {
    // 02:30 UTC on the 1st is still the 30th in Lima (UTC-5).
    let t = "{{ '2027-12-01T02:30:00Z' | datetime }}";
    assert_eq!(
        in_locale(t, "es", Some("America/Lima")),
        "30 de noviembre de 2027, 21:30"
    );
    assert_eq!(
        in_locale(t, "en", Some("UTC")),
        "December 1, 2027 at 2:30 AM"
    );
    assert_eq!(
        in_locale(t, "pt-BR", Some("America/Sao_Paulo")),
        "30 de novembro de 2027 às 23:30"
    );
    assert_eq!(
        in_locale(t, "fr", Some("Europe/Paris")),
        "1 décembre 2027 à 03:30"
    );
    assert_eq!(
        in_locale(t, "de", Some("Europe/Berlin")),
        "1. Dezember 2027 um 03:30"
    );
    assert_eq!(
        in_locale(
            "{{ contact.created_at | date('%d/%m %H:%M %Z') }}",
            "es",
            Some("America/Lima")
        ),
        "12/03 10:20 -05"
    );
    // Unix milliseconds, and a tz= override.
    assert_eq!(
        in_locale(
            "{{ 0 | time(tz='Asia/Tokyo') }}",
            "en",
            Some("America/Lima")
        ),
        "9:00 AM"
    );
}

#[test]
fn a_contact_without_a_zone_gets_the_schedules_zone_then_utc() {
    let c = ContactView {
        timezone: None,
        locale: Some("es".into()),
        ..contact()
    };
    let r = renderer("sms: {text: \"{{ now | time }}\"}", json!({}));
    assert_eq!(sms(&r, &c).unwrap(), "14:00");
    let lima = RunContext {
        timezone: Some(jiff::tz::TimeZone::get("America/Lima").unwrap()),
        ..run()
    };
    let Content::Sms(m) = r.render(Medium::Sms, &c, &lima).unwrap() else {
        panic!()
    };
    assert_eq!(m.text, "9:00");
}

#[test]
fn a_plain_date_is_not_shifted_by_the_zone() {
    assert_eq!(
        in_locale(
            "{{ ends_on | date('iso') }}",
            "en",
            Some("Pacific/Kiritimati")
        ),
        "2027-11-30"
    );
}

#[test]
fn a_bad_date_or_pattern_is_an_error_for_the_message() {
    let r = renderer("sms: {text: \"{{ 'soon' | date }}\"}", json!({}));
    let err = sms(&r, &contact()).unwrap_err();
    assert!(
        matches!(&err, RenderError::Failed { message, .. } if message.contains("not a date")),
        "{err:?}"
    );
    let r = renderer("sms: {text: \"{{ now | date('%Q') }}\"}", json!({}));
    assert!(sms(&r, &contact()).is_err());
}

#[test]
fn number_uses_the_locales_separators() {
    let t = "{{ n | number }}";
    assert_eq!(in_locale(t, "en", None), "1,234.5");
    assert_eq!(in_locale(t, "es", None), "1.234,5");
    assert_eq!(in_locale(t, "pt-BR", None), "1.234,5");
    assert_eq!(in_locale(t, "de", None), "1.234,5");
    assert_eq!(in_locale(t, "fr", None), "1\u{202F}234,5");
    assert_eq!(in_locale("{{ n | number(2) }}", "en", None), "1,234.50");
    assert_eq!(in_locale("{{ 1234567 | number }}", "es", None), "1.234.567");
    assert_eq!(
        in_locale("{{ -0.4 | number(decimals=0) }}", "en", None),
        "0"
    );
    assert_eq!(in_locale("{{ 2.5 | number(0) }}", "en", None), "3");
    assert_eq!(in_locale("{{ -0.5 | number(0) }}", "en", None), "-1");
    assert_eq!(in_locale("{{ -1234 | number }}", "de", None), "-1.234");
    assert_eq!(in_locale("{{ 999 | number }}", "en", None), "999");
    assert_eq!(
        in_locale("{{ n | number(locale='de') }}", "en", None),
        "1.234,5"
    );
}

#[test]
fn currency_puts_the_symbol_where_the_language_does() {
    assert_eq!(
        in_locale("{{ n | currency('USD') }}", "en", None),
        "$1,234.50"
    );
    assert_eq!(
        in_locale("{{ n | currency('EUR') }}", "es", None),
        "1.234,50\u{a0}€"
    );
    assert_eq!(
        in_locale("{{ n | currency('BRL') }}", "pt-BR", None),
        "R$\u{a0}1.234,50"
    );
    assert_eq!(
        in_locale("{{ n | currency('EUR') }}", "fr", None),
        "1\u{202F}234,50\u{a0}€"
    );
    assert_eq!(
        in_locale("{{ n | currency('EUR', decimals=0) }}", "de", None),
        "1.235\u{a0}€"
    );
}

#[test]
fn the_example_templates_render_for_every_locale_and_medium() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("campaigns.example");
    let loaded = crate::spec::load_dir(&dir).unwrap();
    let mut rendered = 0;
    for object in &loaded.objects {
        let crate::spec::Object::Template(doc) = object else {
            continue;
        };
        // Every variable a test value of its declared type.
        let vars: BTreeMap<String, serde_json::Value> = doc
            .spec
            .variables
            .iter()
            .map(|(k, v)| {
                let value = match v.var_type.value {
                    crate::spec::template::VariableType::String => json!("X"),
                    crate::spec::template::VariableType::Number => json!(3),
                    crate::spec::template::VariableType::Boolean => json!(true),
                    crate::spec::template::VariableType::Date => json!("2027-11-30"),
                    crate::spec::template::VariableType::List => {
                        json!([{"url": "https://x.example", "title": {"en": "A", "es": "A", "pt": "A"}}])
                    }
                };
                (k.clone(), value)
            })
            .collect();
        let r = Renderer::new(&doc.metadata.name.value, &doc.spec, &vars).unwrap();
        for locale in [None, Some("es-PE"), Some("pt-BR"), Some("fr")] {
            for medium in Medium::ALL {
                if !doc.spec.has_medium(medium) {
                    continue;
                }
                let c = with_locale(locale);
                r.render(medium, &c, &run())
                    .unwrap_or_else(|e| panic!("{e}"));
                rendered += 1;
            }
        }
    }
    assert!(rendered > 20, "{rendered}");
}

/// Not a benchmark harness, a guard: rendering a typical SMS and a three-part e-mail must
/// stay in the microseconds (200,000 messages per run). `cargo test --release -- --nocapture
/// render_cost` prints the figures.
#[test]
fn render_cost_stays_in_microseconds_per_message() {
    let yaml = r#"
variables: {discount: {type: number}}
sms: {text: "Hola {{ contact.name | default('cliente', true) | split | first }}: {{ discount }}% OFF en {{ contact.attributes.city | default('tu ciudad') }}. BAJA para salir"}
email:
  subject: "{{ contact.name | default('Hola', true) | split | first }}, {{ discount }}% OFF"
  html: "<h1>{{ discount }}% OFF</h1><p>{{ contact.name }}, hasta el {{ '2027-11-30' | date }}</p><a href=\"{{ unsubscribe_url }}\">Baja</a>"
  text: "{{ discount }}% OFF hasta el {{ '2027-11-30' | date }}. Baja: {{ unsubscribe_url }}"
"#;
    let r = renderer(yaml, json!({"discount": 30}));
    let c = contact();
    let ctx = run();
    let n = 2_000;
    for (medium, label) in [(Medium::Sms, "sms"), (Medium::Email, "email")] {
        let started = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(r.render(medium, &c, &ctx).unwrap());
        }
        let per = started.elapsed() / n;
        println!("render_cost: {label}: {per:?} per message");
        // Generous for an unoptimized build on a busy 2-core machine.
        assert!(
            per < std::time::Duration::from_millis(2),
            "{label}: {per:?}"
        );
    }
}

#[test]
fn a_renderer_can_be_shared_between_worker_threads() {
    fn shared<T: Send + Sync>(_: &T) {}
    let r = renderer("sms: {text: \"{{ discount }}\"}", json!({"discount": 1}));
    shared(&r);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| sms(&r, &contact()).unwrap()))
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), "1");
        }
    });
}
