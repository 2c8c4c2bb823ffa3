//! Free text typed or sent by people: the characters it may not hold. Control characters
//! break lines and logs; bidirectional controls (U+202E RIGHT-TO-LEFT OVERRIDE and the other
//! embeddings, overrides, isolates and marks) make text read differently from what it is,
//! as in `report<U+202E>fdp.exe`, which shows as `reportexe.pdf`.

/// Whether `c` changes the direction in which text is shown.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Whether a one-line value (a name, a title) holds a control or direction character.
pub fn unsafe_on_one_line(s: &str) -> bool {
    s.chars().any(|c| c.is_control() || is_bidi_control(c))
}

/// Whether a note (line breaks and tabs allowed) holds another control character or a
/// direction character.
pub fn unsafe_in_note(s: &str) -> bool {
    s.chars()
        .any(|c| is_bidi_control(c) || (c.is_control() && !matches!(c, '\n' | '\r' | '\t')))
}

/// What to tell someone whose text holds one.
pub const UNSAFE_TEXT: &str = "cannot contain control characters or characters that change the direction of text (such as U+202E, which can disguise what it says): type it plainly";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_and_control_characters_are_found() {
        assert!(unsafe_on_one_line("Jo \u{202E}sggolB"));
        assert!(unsafe_on_one_line("a\u{2067}b"));
        assert!(unsafe_on_one_line("a\nb"));
        assert!(!unsafe_on_one_line("Zoë O'Brien-Łukasz (שלום)"));
        assert!(unsafe_in_note("line one\u{200F}"));
        assert!(!unsafe_in_note("line one\nline two\ttabbed"));
        assert!(unsafe_in_note("bell\u{7}"));
    }
}
