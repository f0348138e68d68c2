//! From an uploaded file's bytes to text for chunking: plain text,
//! Markdown, HTML (to Markdown, so headings stay structure the chunker
//! splits on), PDF (its text layer) and DOCX (paragraphs, headings as
//! Markdown headings, tables as rows). The format is decided by the
//! content first (a PDF or ZIP signature, an HTML prologue) and the file
//! name's extension second; a file whose extension promises a format its
//! content does not have is `invalid_file`, one of a format not read here
//! `unsupported_file` — the codes OpenAI's `last_error` uses.
//!
//! Parsers of binary formats run on a blocking thread and a panic inside
//! one (hostile PDFs are good at that) is caught and reported as
//! `invalid_file`, never a crash.

mod docx;
mod html;
mod pdf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
    Docx,
}

/// Text ready for the chunker.
#[derive(Debug)]
pub struct Extracted {
    pub text: String,
    /// Whether `text` is Markdown (the chunker then splits on sections).
    pub markdown: bool,
    pub format: Format,
}

/// Why a file could not be read (`last_error` of its vector-store file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractError {
    /// `unsupported_file` or `invalid_file`.
    pub code: &'static str,
    pub message: String,
}

fn unsupported(message: impl Into<String>) -> ExtractError {
    ExtractError {
        code: "unsupported_file",
        message: message.into(),
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> ExtractError {
    ExtractError {
        code: "invalid_file",
        message: message.into(),
    }
}

/// Largest text kept from one file (bounds what a decompressing format
/// may expand to).
pub const MAX_TEXT_BYTES: usize = 64 << 20;

fn extension(filename: &str) -> String {
    filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

pub fn detect(filename: &str, bytes: &[u8]) -> Result<Format, ExtractError> {
    let ext = extension(filename);
    if bytes.starts_with(b"%PDF-") {
        return Ok(Format::Pdf);
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return if docx::is_docx(bytes) {
            Ok(Format::Docx)
        } else {
            Err(unsupported(format!(
                "'{filename}' is a ZIP archive but not a Word (.docx) document; supported: \
                 text, Markdown, HTML, PDF, DOCX"
            )))
        };
    }
    match ext.as_str() {
        "pdf" => {
            return Err(invalid(format!(
                "'{filename}' is named .pdf but is not a PDF"
            )));
        }
        "docx" => {
            return Err(invalid(format!(
                "'{filename}' is named .docx but is not a DOCX document"
            )));
        }
        _ => {}
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(unsupported(format!(
            "'{filename}' is neither UTF-8 text nor a PDF or DOCX document; supported: text, \
             Markdown, HTML, PDF, DOCX"
        )));
    };
    if text.contains('\0') {
        return Err(unsupported(format!("'{filename}' holds binary data")));
    }
    let head: String = text
        .trim_start()
        .chars()
        .take(64)
        .collect::<String>()
        .to_ascii_lowercase();
    Ok(match ext.as_str() {
        "html" | "htm" | "xhtml" => Format::Html,
        "md" | "markdown" | "mdx" => Format::Markdown,
        _ if head.starts_with("<!doctype html") || head.starts_with("<html") => Format::Html,
        _ => Format::Text,
    })
}

/// Detects the format and reads the text. CPU work: call it on a
/// blocking thread.
pub fn extract(filename: &str, bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let format = detect(filename, bytes)?;
    let caught = std::panic::catch_unwind(|| match format {
        // detect() checked UTF-8
        Format::Text | Format::Markdown => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Format::Html => html::to_markdown(&String::from_utf8_lossy(bytes)),
        Format::Pdf => pdf::text(bytes),
        Format::Docx => docx::to_markdown(bytes),
    });
    let text = match caught {
        Ok(r) => r.map_err(|e| ExtractError {
            code: e.code,
            message: format!("'{filename}': {}", e.message),
        })?,
        Err(_) => {
            return Err(invalid(format!(
                "'{filename}' could not be parsed (the {format:?} reader failed on it)"
            )));
        }
    };
    if text.trim().is_empty() {
        return Err(invalid(match format {
            Format::Pdf => format!("'{filename}' has no text layer (scanned pages are not read)"),
            _ => format!("'{filename}' holds no text"),
        }));
    }
    Ok(Extracted {
        markdown: !matches!(format, Format::Text | Format::Pdf),
        text,
        format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_content_then_extension() {
        assert_eq!(detect("a.txt", b"%PDF-1.7 ..."), Ok(Format::Pdf));
        assert_eq!(detect("notes", b"<!DOCTYPE html><p>x"), Ok(Format::Html));
        assert_eq!(detect("a.md", b"# x"), Ok(Format::Markdown));
        assert_eq!(detect("a.HTM", b"<p>x"), Ok(Format::Html));
        assert_eq!(detect("a.csv", b"a,b"), Ok(Format::Text));
        assert_eq!(
            detect("a.pdf", b"hello").map_err(|e| e.code),
            Err("invalid_file")
        );
        assert_eq!(
            detect("a.bin", &[0xff, 0xfe, 0x00]).map_err(|e| e.code),
            Err("unsupported_file")
        );
        assert_eq!(
            detect("a.zip", b"PK\x03\x04rest").map_err(|e| e.code),
            Err("unsupported_file")
        );
    }

    #[test]
    fn empty_and_broken_files_say_why() {
        assert_eq!(
            extract("a.txt", b"  \n").map_err(|e| e.code).err(),
            Some("invalid_file")
        );
        let e = extract("broken.pdf", b"%PDF-1.7\n%garbage that is no PDF at all").err();
        assert_eq!(e.map(|e| e.code), Some("invalid_file"));
    }
}
