//! A small multi-page text PDF (PDF 1.4, the standard Helvetica fonts, A4 landscape) for the
//! disposal report. Like the certificate's one-page PDF in `safehand-crypto`, it is written by
//! hand: a report of text lines needs no PDF library.

const WIDTH: f32 = 842.0;
const HEIGHT: f32 = 595.0;
const MARGIN: f32 = 36.0;
const SIZE: f32 = 8.5;
const LINE: f32 = 11.0;
/// Characters per line; Helvetica at 8.5 pt averages about 4.3 pt per character.
const WRAP: usize = 175;

/// A document being written, page by page.
pub(crate) struct Document {
    title: String,
    pages: Vec<String>,
    ops: String,
    y: f32,
}

impl Document {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_string(),
            pages: Vec::new(),
            ops: String::new(),
            y: HEIGHT - MARGIN,
        }
    }

    fn room(&mut self, needed: f32) {
        if self.y - needed < MARGIN + LINE {
            self.pages.push(std::mem::take(&mut self.ops));
            self.y = HEIGHT - MARGIN;
        }
    }

    fn text(&mut self, font: &str, size: f32, text: &str) {
        self.room(size + 3.0);
        self.y -= size + 3.0;
        self.ops.push_str(&format!(
            "BT /{font} {size} Tf 1 0 0 1 {MARGIN:.1} {:.1} Tm ({}) Tj ET\n",
            self.y,
            pdf_string(text)
        ));
    }

    pub fn title(&mut self, text: &str) {
        self.text("F2", 15.0, text);
        self.y -= 4.0;
    }

    pub fn heading(&mut self, text: &str) {
        self.room(LINE * 4.0);
        for chunk in wrap(text, WRAP - 10) {
            self.text("F2", 10.0, &chunk);
        }
    }

    pub fn line(&mut self, text: &str) {
        for chunk in wrap(text, WRAP) {
            self.text("F1", SIZE, &chunk);
        }
    }

    pub fn field(&mut self, label: &str, value: &str) {
        let mut first = true;
        for chunk in wrap(&format!("{label}: {value}"), WRAP) {
            let chunk = if first {
                chunk
            } else {
                format!("      {chunk}")
            };
            self.text("F1", SIZE, &chunk);
            first = false;
        }
    }

    pub fn gap(&mut self) {
        self.y -= LINE / 2.0;
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.pages.push(std::mem::take(&mut self.ops));
        let n = self.pages.len();
        let total = n;
        // Objects: 1 catalog, 2 pages, 3 F1, 4 F2, 5 info, then per page: page, content.
        let mut objects = vec![
            "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
            format!(
                "<< /Type /Pages /Kids [{}] /Count {n} >>",
                (0..n).map(|i| format!("{} 0 R", 6 + 2 * i)).collect::<Vec<_>>().join(" ")
            ),
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_string(),
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>".to_string(),
            format!("<< /Title ({}) /Producer (Safehand) >>", pdf_string(&self.title)),
        ];
        for (i, ops) in self.pages.iter().enumerate() {
            let footer = format!(
                "BT /F1 7.5 Tf 1 0 0 1 {MARGIN:.1} {:.1} Tm ({}) Tj ET\n",
                MARGIN / 2.0,
                pdf_string(&format!("{} - page {} of {total}", self.title, i + 1))
            );
            let content = format!("{ops}{footer}");
            objects.push(format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {WIDTH} {HEIGHT}] /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {} 0 R >>",
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
}

fn wrap(text: &str, width: usize) -> Vec<String> {
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

/// A PDF literal string in WinAnsi (Latin-1 subset); other characters become `?`.
fn pdf_string(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_documents_get_more_pages_with_numbered_footers() {
        let mut doc = Document::new("Report");
        for i in 0..200 {
            doc.line(&format!("line {i} (with brackets)"));
        }
        let pdf = String::from_utf8_lossy(&doc.finish()).into_owned();
        assert!(pdf.contains("/Count 5"), "200 lines need 5 landscape pages");
        assert!(pdf.contains("(Report - page 5 of 5)"));
        assert!(pdf.contains("(line 199 \\(with brackets\\))"));
        assert!(pdf.trim_end().ends_with("%%EOF"));
    }
}
