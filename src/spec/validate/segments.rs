//! Segment conditions: one form per node, known fields, operators that fit the field,
//! values that fit the operator.

use super::Index;
use crate::spec::diagnostic::{Code, Diagnostic};
use crate::spec::located::{Located, Pos};
use crate::spec::segment::{Condition, FieldType, Op, field_type};
use crate::spec::values::{parse_duration, parse_instant};

pub(super) fn check(index: &Index, out: &mut Vec<Diagnostic>) {
    for segment in index.segments.values() {
        check_condition(&segment.spec.condition, out);
    }
}

fn check_condition(node: &Located<Condition>, out: &mut Vec<Diagnostic>) {
    let c = &node.value;
    let mut forms = Vec::new();
    if c.all.is_some() {
        forms.push("all");
    }
    if c.any.is_some() {
        forms.push("any");
    }
    if c.not.is_some() {
        forms.push("not");
    }
    if c.segment.is_some() {
        forms.push("segment");
    }
    if c.field.is_some() || c.op.is_some() || c.value.is_some() {
        forms.push("field/op/value");
    }
    match forms.len() {
        0 => {
            out.push(
                Diagnostic::error(Code::InvalidCondition, &node.at, "empty condition")
                    .help("write one of: all: [...], any: [...], not: {...}, segment: NAME, or field/op/value"),
            );
            return;
        }
        1 => {}
        _ => {
            out.push(
                Diagnostic::error(
                    Code::InvalidCondition,
                    &node.at,
                    format!(
                        "a condition has one form, this one mixes {}",
                        forms.join(" and ")
                    ),
                )
                .help("put the parts in an `all:` or `any:` list"),
            );
            return;
        }
    }
    for (name, group) in [("all", &c.all), ("any", &c.any)] {
        if let Some(group) = group {
            if group.value.is_empty() {
                out.push(Diagnostic::error(
                    Code::InvalidCondition,
                    &group.at,
                    format!("`{name}` needs at least one condition"),
                ));
            }
            for child in group.value.iter() {
                check_condition(child, out);
            }
        }
    }
    if let Some(not) = &c.not {
        check_condition(&Located::new((*not.value).clone(), not.at.clone()), out);
    }
    if forms[0] == "field/op/value" {
        check_test(c, &node.at, out);
    }
}

fn check_test(c: &Condition, at: &Pos, out: &mut Vec<Diagnostic>) {
    let Some(field) = &c.field else {
        out.push(Diagnostic::error(
            Code::MissingField,
            at,
            "this condition has no `field`",
        ));
        return;
    };
    let Some(op) = &c.op else {
        out.push(
            Diagnostic::error(
                Code::MissingField,
                &field.at,
                format!("the condition on `{}` has no `op`", field.value),
            )
            .help("e.g. op: eq, op: contains, op: within"),
        );
        return;
    };
    let ty = match field_type(&field.value) {
        Ok(ty) => ty,
        Err(why) => {
            out.push(Diagnostic::error(Code::UnknownContactField, &field.at, why));
            return;
        }
    };
    let op_name = op.value.as_str();
    let mismatch =
        |message: String| Diagnostic::error(Code::OperatorValueMismatch, &op.at, message);

    if !op_applies(op.value, ty) {
        out.push(
            mismatch(format!(
                "`{op_name}` does not apply to `{}` ({})",
                field.value,
                describe(ty)
            ))
            .help(format!(
                "operators for {}: {}",
                describe(ty),
                ops_for(ty).join(", ")
            )),
        );
        return;
    }

    let value = c.value.as_ref();
    let value_at = value.map(|v| &v.at).unwrap_or(&op.at);
    let wrong_value =
        |message: String| Diagnostic::error(Code::OperatorValueMismatch, value_at, message);
    use serde_json::Value as V;
    match op.value {
        Op::Exists | Op::NotExists => {
            if value.is_some() {
                out.push(wrong_value(format!("`{op_name}` takes no value")));
            }
        }
        Op::Within | Op::OlderThan => match value.map(|v| &v.value) {
            Some(V::String(s)) => {
                if let Err(e) = parse_duration(s) {
                    out.push(Diagnostic::error(Code::InvalidDuration, value_at, e));
                }
            }
            _ => out.push(
                wrong_value(format!("`{op_name}` needs a duration"))
                    .help("write e.g. value: 30d, 12h or 2w"),
            ),
        },
        Op::Before | Op::After => match value.map(|v| &v.value) {
            Some(V::String(s)) if parse_instant(s).is_ok() => {}
            _ => out.push(
                wrong_value(format!("`{op_name}` needs a date"))
                    .help("write e.g. value: 2026-01-31 or 2026-01-31T09:00:00Z"),
            ),
        },
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => match (ty, value.map(|v| &v.value)) {
            (FieldType::Attribute, Some(V::Number(_))) => {}
            (_, Some(V::String(s))) if parse_instant(s).is_ok() => {}
            _ => out.push(wrong_value(format!(
                "`{op_name}` compares numbers or dates; `{}` needs {}",
                field.value,
                if ty == FieldType::Time {
                    "a date such as 2026-01-31"
                } else {
                    "a number or a date"
                }
            ))),
        },
        Op::In | Op::NotIn => match value.map(|v| &v.value) {
            Some(V::Array(items)) if !items.is_empty() && items.iter().all(is_scalar) => {}
            _ => out.push(
                wrong_value(format!("`{op_name}` needs a non-empty list of values"))
                    .help("write e.g. value: [Lima, Cusco]"),
            ),
        },
        Op::Eq | Op::Ne => match (ty, value.map(|v| &v.value)) {
            (FieldType::Consent, Some(V::Bool(_))) => {}
            (FieldType::Consent, _) => out.push(wrong_value(format!(
                "`{}` is true or false; `{op_name}` needs value: true or value: false",
                field.value
            ))),
            (_, Some(v)) if is_scalar(v) => {}
            _ => out.push(wrong_value(format!("`{op_name}` needs a single value"))),
        },
        Op::Contains | Op::NotContains | Op::StartsWith | Op::EndsWith => {
            match value.map(|v| &v.value) {
                Some(V::String(s)) if !s.is_empty() => {}
                _ => out.push(wrong_value(format!("`{op_name}` needs a text value"))),
            }
        }
    }
}

fn is_scalar(v: &serde_json::Value) -> bool {
    matches!(
        v,
        serde_json::Value::String(_) | serde_json::Value::Number(_) | serde_json::Value::Bool(_)
    )
}

/// Which operators make sense on which kind of field.
pub(crate) fn op_applies(op: Op, ty: FieldType) -> bool {
    ops_for(ty).contains(&op.as_str())
}

fn ops_for(ty: FieldType) -> &'static [&'static str] {
    match ty {
        FieldType::Text => &[
            "eq",
            "ne",
            "in",
            "not_in",
            "contains",
            "not_contains",
            "starts_with",
            "ends_with",
            "exists",
            "not_exists",
        ],
        FieldType::Time => &[
            "exists",
            "not_exists",
            "gt",
            "gte",
            "lt",
            "lte",
            "within",
            "older_than",
            "before",
            "after",
        ],
        FieldType::Tags => &[
            "contains",
            "not_contains",
            "in",
            "not_in",
            "exists",
            "not_exists",
        ],
        FieldType::Consent => &["eq", "ne"],
        FieldType::Attribute => &[
            "eq",
            "ne",
            "in",
            "not_in",
            "contains",
            "not_contains",
            "starts_with",
            "ends_with",
            "exists",
            "not_exists",
            "gt",
            "gte",
            "lt",
            "lte",
            "within",
            "older_than",
            "before",
            "after",
        ],
    }
}

fn describe(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Text => "a text field",
        FieldType::Time => "a time",
        FieldType::Tags => "a list of tags",
        FieldType::Consent => "a consent flag",
        FieldType::Attribute => "an attribute",
    }
}
