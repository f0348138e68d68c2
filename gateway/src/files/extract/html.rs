//! HTML to Markdown (by `htmd`): headings become `#` lines the chunker
//! splits on; scripts, styles and other non-content elements are dropped.

use super::{ExtractError, invalid};

pub fn to_markdown(html: &str) -> Result<String, ExtractError> {
    let converter = htmd::HtmlToMarkdown::builder()
        .skip_tags(vec![
            "script", "style", "noscript", "template", "head", "svg", "canvas", "iframe", "img",
        ])
        .build();
    converter
        .convert(html)
        .map_err(|e| invalid(format!("the HTML could not be read: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn headings_kept_and_scripts_dropped() {
        let md = super::to_markdown(
            "<html><head><title>t</title><style>p{}</style></head><body><h1>Top</h1>\
             <p>A &amp; B</p><script>var secret=1;</script><h2>Sub</h2><ul><li>one</li></ul></body></html>",
        )
        .unwrap_or_default();
        assert!(md.contains("# Top"), "{md}");
        assert!(md.contains("## Sub"), "{md}");
        assert!(md.contains("A & B"), "{md}");
        assert!(md.contains("one"), "{md}");
        assert!(!md.contains("secret") && !md.contains("p{}"), "{md}");
    }
}
