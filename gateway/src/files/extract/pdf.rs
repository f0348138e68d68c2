//! A PDF's text layer, by `pdf-extract` (over `lopdf`). Pages without a
//! text layer (scans) yield nothing; the caller reports an empty result.

use super::{ExtractError, invalid};

pub fn text(bytes: &[u8]) -> Result<String, ExtractError> {
    pdf_extract::extract_text_from_mem(bytes)
        .map_err(|e| invalid(format!("the PDF could not be read: {e}")))
}
