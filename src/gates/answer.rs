//! What a gate's answer may contribute to status and events: a short, printable excerpt.
//!
//! A webhook or a Prometheus (or whatever answers at their address) chooses these bytes,
//! and status and events are read by people and tools: control characters could rewrite a
//! terminal, and an unbounded text would bloat every status write.

/// Longest excerpt of an answer, in characters, the ellipsis included.
pub const MAX_EXCERPT: usize = 256;

/// `text` on one line: control and invisible formatting characters removed (line breaks
/// and tabs become spaces), runs of spaces collapsed, cut to [`MAX_EXCERPT`] characters.
pub fn excerpt(text: &str) -> String {
    let mut out = String::new();
    let mut chars = 0;
    let mut pending_space = false;
    for c in text.chars() {
        let c = match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() || invisible(c) => continue,
            c => c,
        };
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        let needed = usize::from(pending_space) + 1;
        if chars + needed > MAX_EXCERPT - 1 {
            out.push('…');
            return out;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
        chars += needed;
    }
    out
}

/// Zero-width and bidirectional formatting characters, which can make a message read
/// differently from what it holds.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_one_printable_line() {
        assert_eq!(
            excerpt("  bad \x1b[31mthing\x1b[0m\r\nhappened\0 \u{202e}here\t "),
            "bad [31mthing[0m happened here"
        );
        assert_eq!(excerpt(""), "");
        assert_eq!(excerpt("\n\n\x07"), "");
    }

    #[test]
    fn excerpts_are_bounded() {
        let long = "é".repeat(10_000);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), MAX_EXCERPT);
        assert!(cut.ends_with('…'));
        let exact = "x".repeat(MAX_EXCERPT - 1);
        assert_eq!(excerpt(&exact), exact, "short enough: kept whole");
        let words = "ab ".repeat(1_000);
        assert!(excerpt(&words).chars().count() <= MAX_EXCERPT);
    }
}
