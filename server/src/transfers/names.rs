//! File names from senders' computers, made safe to store in a tar payload, show on a page
//! and send in a `Content-Disposition` header (RFC 6266 with RFC 8187 `filename*`).
//!
//! A name keeps its letters (any script) but never separates folders, never holds control
//! characters or characters that change the direction of text (U+202E would show
//! `report<U+202E>fdp.exe` as `reportexe.pdf`), never holds the characters Windows refuses
//! in names (`<>:"|?*`), is never a Windows device name (`CON`, `NUL`, `COM1`, ... with or
//! without an extension: such a file cannot be saved on the recipient's Windows computer), is
//! never `.` or `..`, and is at most [`MAX_NAME_BYTES`] bytes of UTF-8.
//! Pages escape it like any other text (askama), so HTML in a name is shown, not run.

use std::collections::HashSet;

/// Longest stored name in bytes (well inside what every file system accepts).
pub const MAX_NAME_BYTES: usize = 200;

/// A safe version of `raw`: separators and control characters become `_`, surrounding spaces
/// and trailing dots go, over-long names are shortened keeping their extension.
pub fn safe(raw: &str) -> String {
    let replaced: String = raw
        .chars()
        .map(|c| {
            if c == '/'
                || c == '\\'
                || c.is_control()
                || c == '\u{2028}'
                || c == '\u{2029}'
                || crate::text::is_bidi_control(c)
                || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*')
            {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = replaced.trim().trim_end_matches(['.', ' ']).trim_start();
    let mut name = if trimmed.is_empty() || trimmed.chars().all(|c| c == '.') {
        "file".to_string()
    } else {
        trimmed.to_string()
    };
    if name.len() > MAX_NAME_BYTES {
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 && name.len() - i <= 16 => (&name[..i], &name[i..]),
            _ => (name.as_str(), ""),
        };
        let mut cut = MAX_NAME_BYTES - ext.len();
        while !stem.is_char_boundary(cut) {
            cut -= 1;
        }
        name = format!("{}{ext}", &stem[..cut]);
    }
    if is_windows_device_name(&name) {
        name.insert(0, '_');
    }
    name
}

/// `CON`, `prn.txt`, `COM1.tar.gz`, ...: names Windows keeps for devices, whatever follows
/// the first dot and in any case.
fn is_windows_device_name(name: &str) -> bool {
    let stem = name
        .split('.')
        .next()
        .unwrap_or("")
        .trim_end()
        .to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit()
            && stem.as_bytes()[3] != b'0')
}

/// `name`, or `name (2).ext`, `name (3).ext`, ... so that no two files of a transfer share a
/// name (compared without case, as Windows and macOS do).
pub fn unique(name: &str, taken: &mut HashSet<String>) -> String {
    let mut candidate = name.to_string();
    let mut n = 2;
    while !taken.insert(candidate.to_lowercase()) {
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 => (&name[..i], &name[i..]),
            _ => (name, ""),
        };
        candidate = safe(&format!("{stem} ({n}){ext}"));
        n += 1;
    }
    candidate
}

/// A `Content-Disposition: attachment` value for `name`: an ASCII `filename` for old clients
/// and the exact UTF-8 name in `filename*` (RFC 6266, RFC 8187).
pub fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%' | ';') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#' | b'$' | b'&' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        if keep {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_made_safe() {
        assert_eq!(safe("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(safe(".."), "file");
        assert_eq!(safe("  "), "file");
        assert_eq!(safe("a\nb\r\0c.txt"), "a_b__c.txt");
        assert_eq!(safe("C:\\Users\\x.doc"), "C__Users_x.doc");
        assert_eq!(safe("report.pdf..."), "report.pdf");
        assert_eq!(
            safe("<script>alert(1)</script>.html"),
            "_script_alert(1)__script_.html"
        );
        // Direction overrides cannot disguise an extension.
        assert_eq!(safe("report\u{202E}fdp.exe"), "report_fdp.exe");
        assert_eq!(safe("a\u{2066}b\u{200F}c.pdf"), "a_b_c.pdf");
        // Windows device names and reserved characters.
        for (raw, stored) in [
            ("CON", "_CON"),
            ("con.txt", "_con.txt"),
            ("NUL.tar.gz", "_NUL.tar.gz"),
            ("COM1.doc", "_COM1.doc"),
            ("lpt9", "_lpt9"),
            ("COM0.doc", "COM0.doc"),
            ("CONTRACT.pdf", "CONTRACT.pdf"),
            ("what?.docx", "what_.docx"),
            ("a|b*c\"d.txt", "a_b_c_d.txt"),
        ] {
            assert_eq!(safe(raw), stored, "{raw}");
        }
        let long = format!("{}.xlsx", "é".repeat(300));
        let s = safe(&long);
        assert!(s.len() <= MAX_NAME_BYTES && s.ends_with(".xlsx"), "{s}");
    }

    #[test]
    fn duplicates_get_numbers() {
        let mut taken = HashSet::new();
        assert_eq!(unique("a.txt", &mut taken), "a.txt");
        assert_eq!(unique("A.TXT", &mut taken), "A (2).TXT");
        assert_eq!(unique("a.txt", &mut taken), "a (3).txt");
    }

    #[test]
    fn content_disposition_is_quoted_and_encoded() {
        let v = content_disposition("Pupil \"notes\"; é.pdf");
        assert_eq!(
            v,
            "attachment; filename=\"Pupil _notes__ _.pdf\"; filename*=UTF-8''Pupil%20%22notes%22%3B%20%C3%A9.pdf"
        );
        assert!(v.is_ascii());
    }
}
