//! Text-only PDF 1.4 writing, shared by the certificate of erasure ([`crate::certificate`])
//! and the server's disposal report: the standard Helvetica fonts (`/F1` regular, `/F2` bold,
//! WinAnsi encoding), no font files, no images, text that `pdftotext` and screen readers can
//! extract. A document of text lines needs no PDF library.
//!
//! ```
//! use safehand_crypto::pdf;
//!
//! let mut page = String::new();
//! for (i, line) in pdf::wrap("Disposal report (draft)", 80).iter().enumerate() {
//!     pdf::show_text(&mut page, "F1", 10.0, 40.0, 800.0 - 12.0 * i as f32, line);
//! }
//! let bytes = pdf::assemble(&[page], 595.0, 842.0, "Report");
//! assert!(bytes.starts_with(b"%PDF-1.4"));
//! assert!(String::from_utf8_lossy(&bytes).contains("(Disposal report \\(draft\\)) Tj"));
//! ```

/// Splits `text` into lines of at most `width` characters at spaces; a word longer than a
/// line is cut into line-sized pieces. Always returns at least one (possibly empty) line.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split(' ') {
        let mut word = word.to_string();
        while word.chars().count() > width {
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            if !current.is_empty() {
                lines.push(std::mem::take(&mut current));
            }
            lines.push(head);
        }
        if !current.is_empty() && current.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(&word);
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(current);
    }
    lines
}

/// The inside of a PDF literal string (without the parentheses) in WinAnsi: brackets and
/// backslashes escaped, Latin-1 letters as octal escapes, any other character as `?`.
pub fn pdf_string(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '(' | ')' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            c if (0xA0..=0xFF).contains(&(c as u32)) => {
                out.push_str(&format!("\\{:03o}", c as u32))
            }
            _ => out.push('?'),
        }
    }
    out
}

/// Appends to a page's content stream the operators that show `text` in `font` (`F1` or
/// `F2`) at `size` points, its baseline starting at (`x`, `y`) points from the bottom left.
pub fn show_text(ops: &mut String, font: &str, size: f32, x: f32, y: f32, text: &str) {
    ops.push_str(&format!(
        "BT /{font} {size} Tf 1 0 0 1 {x:.1} {y:.1} Tm ({}) Tj ET\n",
        pdf_string(text)
    ));
}

/// A complete PDF file: one page of `width` x `height` points per content stream in
/// `pages`, with `/F1` (Helvetica) and `/F2` (Helvetica-Bold) available and `title` in the
/// document information.
pub fn assemble(pages: &[String], width: f32, height: f32, title: &str) -> Vec<u8> {
    let n = pages.len();
    // Objects: 1 catalog, 2 page tree, 3 F1, 4 F2, 5 info, then per page: page, content.
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {n} >>",
            (0..n)
                .map(|i| format!("{} 0 R", 6 + 2 * i))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_string(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>"
            .to_string(),
        format!("<< /Title ({}) /Producer (Safehand) >>", pdf_string(title)),
    ];
    for (i, content) in pages.iter().enumerate() {
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width} {height}] \
             /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {} 0 R >>",
            7 + 2 * i
        ));
        objects.push(format!(
            "<< /Length {} >>\nstream\n{content}endstream",
            content.len()
        ));
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n");
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R /Info 5 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_words_and_splits_long_ones() {
        assert_eq!(wrap("aaa bbb ccc", 7), vec!["aaa bbb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), vec![""]);
    }

    #[test]
    fn strings_are_escaped_for_winansi() {
        assert_eq!(pdf_string("a(b)\\é€"), "a\\(b\\)\\\\\\351?");
    }

    #[test]
    fn cross_reference_offsets_point_at_the_objects() {
        let pdf = assemble(&["a".into(), "b".into()], 842.0, 595.0, "T");
        let at = |offset: usize| String::from_utf8_lossy(&pdf[offset..]).into_owned();
        let tail = at(pdf.len() - 40);
        let xref: usize = tail
            .rsplit("startxref\n")
            .next()
            .and_then(|t| t.lines().next())
            .unwrap()
            .parse()
            .unwrap();
        let table = at(xref);
        assert!(table.starts_with("xref\n0 10\n"), "{table}");
        assert!(table.contains("/Size 10 /Root 1 0 R /Info 5 0 R"));
        for (i, line) in table.lines().skip(3).take(9).enumerate() {
            let offset: usize = line[..10].parse().unwrap();
            assert!(
                at(offset).starts_with(&format!("{} 0 obj\n", i + 1)),
                "{line}"
            );
        }
        assert!(at(0).contains("/Kids [6 0 R 8 0 R] /Count 2"));
    }
}
