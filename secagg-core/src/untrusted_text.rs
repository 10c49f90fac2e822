//! Text that another party controls (an abort reason, a request it sent, an error message that
//! quotes its bytes), made safe to show in a terminal or a line-oriented log.
//!
//! A peer's text shown raw could move the cursor or recolour the terminal (ANSI escapes), reverse
//! the order of what follows (Unicode direction overrides), or end the current log line and start
//! a forged one (`\n2026-01-01T00:00:00Z info  …`). [`escape`] escapes all of these the way Rust
//! does (`\u{1b}`, `\n`, `\"`), [`escape_bounded`] also cuts what a log line may carry, and
//! [`single_line`] is the last line of defence of a log sink: whatever text reaches it, one event
//! stays one line.

use std::borrow::Cow;

/// Longest peer text, in characters, that one log line carries ([`escape_bounded`]'s usual
/// limit): a frame may hold 64 KiB, a log line should not.
pub const LOG_TEXT_LIMIT: usize = 512;

/// True for a character that must never reach a terminal or a log line raw: control characters
/// (ANSI escapes, newlines, carriage returns, NEL, …), the Unicode line and paragraph separators
/// (some viewers break lines there) and the direction overrides.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` from a peer made safe to print: [unsafe characters](is_unsafe), `"` and `\` are escaped
/// the way Rust escapes them (`\u{1b}`, `\n`, `\"`); everything else is kept.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe(c) || c == '"' || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`escape`] of at most `max_chars` characters of `text`; a longer text is cut there and says
/// how many bytes were left out.
pub fn escape_bounded(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => escape(text),
        Some((cut, _)) => format!(
            "{}… ({} more bytes)",
            escape(&text[..cut]),
            text.len() - cut
        ),
    }
}

/// `text` with every [unsafe character](is_unsafe) escaped, and nothing else: for a log sink,
/// whose messages are this program's sentences with peer text already [escaped](escape) inside
/// (left as they are: `\` and `"` are not escaped again).
pub fn single_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORGED: &str =
        "x\n2026-01-01T00:00:00Z info  forged line\u{1b}[31m\r\u{85}\u{2028}\u{202e}\"\\";

    #[test]
    fn escaping_leaves_no_unsafe_character_and_keeps_the_rest() {
        let e = escape(FORGED);
        assert!(!e.chars().any(is_unsafe), "{e}");
        assert_eq!(
            e,
            "x\\n2026-01-01T00:00:00Z info  forged line\\u{1b}[31m\\r\\u{85}\\u{2028}\\u{202e}\\\"\\\\"
        );
        assert_eq!(escape("é ünïcödé, 日本"), "é ünïcödé, 日本");
    }

    #[test]
    fn a_bounded_escape_cuts_at_a_character_and_says_how_much_is_left_out() {
        assert_eq!(escape_bounded("short\n", 10), "short\\n");
        let long = format!("é{}", "\u{1b}".repeat(100));
        let cut = escape_bounded(&long, 3);
        assert_eq!(cut, "é\\u{1b}\\u{1b}… (98 more bytes)");
    }

    #[test]
    fn a_single_line_escapes_only_what_breaks_a_line_or_a_terminal() {
        assert!(matches!(single_line("a \"quoted\" \\n"), Cow::Borrowed(_)));
        let line = single_line(FORGED);
        assert!(!line.chars().any(is_unsafe), "{line}");
        assert!(line.ends_with("\\u{202e}\"\\"), "{line}");
        assert!(!line.contains('\n'));
    }
}
