//! Positions inside a string value: a template error on the third line of a block scalar
//! is on the third line of the block in the file, whatever the scalar style.
//!
//! YAML quoting, escapes (`\n`, `''`) and folding make offsets in the parsed string differ
//! from offsets in the file, so instead of translating them the place is found again in
//! the file: the text from the error to the end of its line (a "needle", shortened until
//! it contains no escape) is searched for after the scalar's start, taking the same
//! occurrence as in the value.

use crate::spec::load::Loaded;
use crate::spec::located::{Located, Pos};

/// The file position of byte `byte_in_value` of the parsed string `value`, `len` bytes long.
/// Falls back to the start of the scalar when the place cannot be found.
pub(crate) fn position_in_value(
    loaded: &Loaded,
    value: &Located<String>,
    byte_in_value: usize,
    len: usize,
) -> Pos {
    let Some(file) = loaded.source(&value.at.file) else {
        return value.at.clone();
    };
    let text = &file.text;
    let parsed = &value.value;
    let mut at = byte_in_value.min(parsed.len());
    while !parsed.is_char_boundary(at) {
        at -= 1;
    }
    let line_end = parsed[at..].find('\n').map_or(parsed.len(), |i| at + i);
    let rest = &parsed[at..line_end];
    let start = value.at.offset.min(text.len());
    let window_end = (start + parsed.len() * 2 + 256).min(text.len());
    let window = floor_slice(text, start, window_end);

    for limit in [40, 12, 4, 1] {
        let needle = truncate_chars(rest, limit);
        if needle.trim().is_empty() {
            continue;
        }
        // The same occurrence as in the value: skip as many as come before the place.
        let earlier = parsed[..at].matches(needle).count();
        if let Some((found, _)) = window.match_indices(needle).nth(earlier) {
            return pos_at(value, text, start + found, len);
        }
    }
    value.at.clone()
}

fn pos_at(value: &Located<String>, text: &str, offset: usize, len: usize) -> Pos {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    Pos {
        file: value.at.file.clone(),
        line: text[..offset].matches('\n').count() as u32 + 1,
        column: text[line_start..offset].chars().count() as u32 + 1,
        offset,
        len: len.max(1),
    }
}

fn truncate_chars(s: &str, chars: usize) -> &str {
    match s.char_indices().nth(chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn floor_slice(text: &str, start: usize, mut end: usize) -> &str {
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[start..end]
}

/// The byte offset of the first use of variable `root` inside a `{{ }}` or `{% %}` tag of
/// `source` (not inside literal text, not as the attribute of another name).
pub(crate) fn find_variable(source: &str, root: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    source.match_indices(root).map(|(i, _)| i).find(|&i| {
        let before = source[..i].chars().next_back();
        let after = source[i + root.len()..].chars().next();
        let whole_word =
            !before.is_some_and(|c| is_ident(c) || c == '.') && !after.is_some_and(is_ident);
        let opened = source[..i].rfind("{{").max(source[..i].rfind("{%"));
        let closed = source[..i].rfind("}}").max(source[..i].rfind("%}"));
        whole_word && opened.is_some() && opened > closed
    })
}

#[cfg(test)]
mod tests {
    use super::find_variable;

    #[test]
    fn a_variable_is_found_in_a_tag_not_in_prose_nor_as_an_attribute() {
        let source = "your coupon:\n{{ contact.coupon }} {{ coupon }}";
        assert_eq!(find_variable(source, "coupon"), source.rfind("coupon"));
        assert_eq!(find_variable("{% if vip %}x{% endif %}", "vip"), Some(6));
        assert_eq!(find_variable("no tags vip", "vip"), None);
    }
}
