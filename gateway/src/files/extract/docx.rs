//! A DOCX document (Office Open XML) as Markdown: the body's paragraphs in
//! order, `Heading1`…`Heading6` and `Title` styles as `#` headings, table
//! rows as `a | b | c` lines. Read from `word/document.xml` with a bound
//! on its decompressed size, so a ZIP bomb stops at the bound.

use std::io::{Cursor, Read};

use quick_xml::events::Event;

use super::{ExtractError, MAX_TEXT_BYTES, invalid};

const DOCUMENT: &str = "word/document.xml";

pub fn is_docx(bytes: &[u8]) -> bool {
    zip::ZipArchive::new(Cursor::new(bytes)).is_ok_and(|z| z.index_for_name(DOCUMENT).is_some())
}

fn heading_level(style: &str) -> Option<usize> {
    let s = style.to_ascii_lowercase();
    if s == "title" {
        return Some(1);
    }
    let n = s.strip_prefix("heading")?.trim_start_matches([' ', '_']);
    n.parse::<usize>().ok().filter(|n| (1..=6).contains(n))
}

pub fn to_markdown(bytes: &[u8]) -> Result<String, ExtractError> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| invalid(format!("the DOCX archive could not be read: {e}")))?;
    let mut xml = Vec::new();
    zip.by_name(DOCUMENT)
        .map_err(|e| invalid(format!("the DOCX has no readable {DOCUMENT}: {e}")))?
        .take(MAX_TEXT_BYTES as u64 + 1)
        .read_to_end(&mut xml)
        .map_err(|e| {
            invalid(format!(
                "the DOCX's {DOCUMENT} could not be decompressed: {e}"
            ))
        })?;
    if xml.len() > MAX_TEXT_BYTES {
        return Err(invalid(format!(
            "the DOCX's text expands past {MAX_TEXT_BYTES} bytes"
        )));
    }
    walk(&xml)
}

/// The body, paragraph by paragraph.
fn walk(xml: &[u8]) -> Result<String, ExtractError> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut out = String::new();
    let mut para = String::new();
    let mut level: Option<usize> = None;
    let mut in_text = false;
    // table depth and whether the current cell already has text
    let mut tables = 0usize;
    let mut row: Vec<String> = Vec::new();
    let mut buf = Vec::new();
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| invalid(format!("the DOCX's XML is malformed: {e}")))?;
        match ev {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == b"pStyle" => {
                for a in e.attributes().flatten() {
                    if a.key.local_name().as_ref() == b"val" {
                        level = heading_level(&String::from_utf8_lossy(&a.value));
                    }
                }
            }
            Event::Start(e) => match e.local_name().as_ref() {
                b"t" => in_text = true,
                b"tbl" => tables += 1,
                b"tr" => row.clear(),
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                b"tab" => para.push('\t'),
                b"br" | b"cr" => para.push('\n'),
                _ => {}
            },
            Event::Text(t) if in_text => {
                let s = t
                    .decode()
                    .map_err(|e| invalid(format!("the DOCX's text is not UTF-8: {e}")))?;
                para.push_str(&quick_xml::escape::unescape(&s).unwrap_or(s.clone()));
            }
            Event::GeneralRef(r) if in_text => {
                // entities inside w:t (&amp; …) arrive as references
                let name = String::from_utf8_lossy(&r);
                para.push_str(match name.as_ref() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                });
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"t" => in_text = false,
                b"p" => {
                    let text = std::mem::take(&mut para);
                    let text = text.trim();
                    if tables > 0 {
                        if !text.is_empty() {
                            row.push(text.to_owned());
                        }
                    } else if !text.is_empty() {
                        if let Some(n) = level {
                            out.push_str(&"#".repeat(n));
                            out.push(' ');
                        }
                        out.push_str(text);
                        out.push_str("\n\n");
                    }
                    level = None;
                }
                b"tr" => {
                    if !row.is_empty() {
                        out.push_str(&row.join(" | "));
                        out.push('\n');
                    }
                    row.clear();
                }
                b"tbl" => {
                    tables = tables.saturating_sub(1);
                    out.push('\n');
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
        if out.len() > MAX_TEXT_BYTES {
            return Err(invalid(format!(
                "the DOCX's text passes {MAX_TEXT_BYTES} bytes"
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_headings_and_tables() {
        let xml = br#"<?xml version="1.0"?><w:document xmlns:w="x"><w:body>
            <w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Fusion &amp; Co</w:t></w:r></w:p>
            <w:p><w:r><w:t xml:space="preserve">Plain </w:t></w:r><w:r><w:t>text.</w:t></w:r></w:p>
            <w:tbl><w:tr><w:tc><w:p><w:r><w:t>a</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>b</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
            <w:p><w:pPr><w:pStyle w:val="Heading2"/></w:pPr><w:r><w:t>Sub</w:t></w:r></w:p>
            </w:body></w:document>"#;
        let md = walk(xml).unwrap_or_default();
        assert_eq!(
            md, "# Fusion & Co\n\nPlain text.\n\na | b\n\n## Sub\n\n",
            "{md:?}"
        );
    }

    #[test]
    fn heading_styles() {
        assert_eq!(heading_level("Heading2"), Some(2));
        assert_eq!(heading_level("heading 3"), Some(3));
        assert_eq!(heading_level("Title"), Some(1));
        assert_eq!(heading_level("Normal"), None);
        assert_eq!(heading_level("Heading9"), None);
    }
}
