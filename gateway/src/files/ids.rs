//! Object ids: a prefix, 12 hex digits of the creation time in
//! milliseconds, then 20 random hex digits. Ids sort in creation order
//! (the order `list` pages by), and are unique across gateway replicas
//! without coordination.

pub fn new(prefix: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{prefix}{:012x}{}",
        millis & 0xffff_ffff_ffff,
        &random[..20]
    )
}

pub fn file() -> String {
    new("file-")
}

pub fn vector_store() -> String {
    new("vs_")
}

pub fn batch() -> String {
    new("vsfb_")
}

/// Whether `id` could be one of ours (checked before it reaches the
/// store, whose names allow fewer characters than a URL path).
pub fn plausible(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_sort_by_creation_and_differ() {
        let a = super::file();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::file();
        assert!(a < b, "{a} {b}");
        assert_ne!(super::file(), super::file());
        assert!(super::plausible(&a) && a.starts_with("file-") && a.len() == 37);
        assert!(!super::plausible("../x"));
    }
}
