//! Positions inside a string value: a template error at line 3 of a block scalar is at
//! line (scalar line + 3) of the file, indented like the block.

use crate::spec::load::Loaded;
use crate::spec::located::{Located, Pos};

/// The file position of byte `byte_in_value` of the (parsed) string `value`.
///
/// Exact for plain, quoted and literal (`|`) block scalars without escapes; for folded
/// (`>`) scalars and escaped quotes it can be off by a few columns, never by a file.
pub(crate) fn position_in_value(
    loaded: &Loaded,
    value: &Located<String>,
    byte_in_value: usize,
    len: usize,
) -> Pos {
    let mut pos = value.at.clone();
    let Some(file) = loaded.source(&value.at.file) else {
        return pos;
    };
    let text = &file.text;
    let byte_in_value = byte_in_value.min(value.value.len());
    let prefix = value.value.get(..byte_in_value).unwrap_or("");
    let line_in_value = prefix.matches('\n').count() as u32;
    let col_in_line = prefix.rsplit('\n').next().unwrap_or("").chars().count() as u32;
    let first = text.get(pos.offset..).and_then(|t| t.chars().next());
    let (line, column) = match first {
        Some('|') | Some('>') => {
            let line = pos.line + 1 + line_in_value;
            (line, indent_of(text, line) + col_in_line + 1)
        }
        quote => {
            let quoted = u32::from(matches!(quote, Some('"') | Some('\'')));
            if line_in_value == 0 {
                (pos.line, pos.column + quoted + col_in_line)
            } else {
                let line = pos.line + line_in_value;
                (line, indent_of(text, line) + col_in_line + 1)
            }
        }
    };
    if let Some(start) = line_start(text, line) {
        pos.line = line;
        pos.column = column;
        pos.offset = (start + column as usize - 1).min(text.len().saturating_sub(1));
        pos.len = len.max(1);
    }
    pos
}

fn line_start(text: &str, line: u32) -> Option<usize> {
    if line == 1 {
        return Some(0);
    }
    text.match_indices('\n')
        .nth(line as usize - 2)
        .map(|(i, _)| i + 1)
        .filter(|i| *i < text.len())
}

fn indent_of(text: &str, line: u32) -> u32 {
    line_start(text, line)
        .map(|s| text[s..].chars().take_while(|c| *c == ' ').count() as u32)
        .unwrap_or(0)
}
