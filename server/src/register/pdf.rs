//! A small multi-page text PDF (PDF 1.4, the standard Helvetica fonts, A4 landscape) for the
//! disposal report, written with the certificate's PDF helpers (`safehand_crypto::pdf`): a
//! report of text lines needs no PDF library.

use safehand_crypto::pdf::{assemble, show_text, wrap};

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
        show_text(&mut self.ops, font, size, MARGIN, self.y, text);
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
        let total = self.pages.len();
        for (i, ops) in self.pages.iter_mut().enumerate() {
            let footer = format!("{} - page {} of {total}", self.title, i + 1);
            show_text(ops, "F1", 7.5, MARGIN, MARGIN / 2.0, &footer);
        }
        assemble(&self.pages, WIDTH, HEIGHT, &self.title)
    }
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
