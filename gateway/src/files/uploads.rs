//! The Files core: upload, list, retrieve, delete, content. The bytes are
//! durable (fsync'd by the store) before the file object is returned.

use ragmesh_retriever::objects::Expect;

use super::attach::Attached;
use super::store::{self, FILE, Objects, STORE_FILE};
use super::types::{Deleted, FileObject, ListPage, PURPOSES};
use super::{ids, not_found_file};
use crate::error::{ApiResult, bad_request};
use crate::state::{Inner, unix_now};

/// An upload, as parsed from the multipart form.
pub struct Upload {
    pub filename: String,
    pub purpose: String,
    pub bytes: Vec<u8>,
    /// `expires_after[seconds]` (anchor `created_at`).
    pub expires_after_s: Option<u64>,
}

/// Seconds a file may be kept before it expires (OpenAI's bounds).
pub const EXPIRES_MIN_S: u64 = 3600;
pub const EXPIRES_MAX_S: u64 = 30 * 24 * 3600;

pub async fn upload(st: &Inner, tenant: &str, up: Upload) -> ApiResult<FileObject> {
    if !PURPOSES.contains(&up.purpose.as_str()) {
        return Err(bad_request(
            format!(
                "purpose '{}' is not accepted here; use one of: {}",
                up.purpose,
                PURPOSES.join(", ")
            ),
            "purpose",
        ));
    }
    if up.filename.is_empty()
        || up.filename.len() > 255
        || up.filename.chars().any(char::is_control)
    {
        return Err(bad_request(
            "the file part needs a filename of 1-255 printable characters",
            "file",
        ));
    }
    if up.bytes.is_empty() {
        return Err(bad_request("the uploaded file is empty", "file"));
    }
    if let Some(s) = up.expires_after_s
        && !(EXPIRES_MIN_S..=EXPIRES_MAX_S).contains(&s)
    {
        return Err(bad_request(
            format!("expires_after[seconds] must be between {EXPIRES_MIN_S} and {EXPIRES_MAX_S}"),
            "expires_after",
        ));
    }
    let id = ids::file();
    let created_at = unix_now();
    let file = FileObject {
        id: id.clone(),
        object: "file".into(),
        bytes: up.bytes.len() as u64,
        created_at,
        expires_at: up.expires_after_s.map(|s| created_at + s),
        filename: up.filename,
        purpose: up.purpose,
        status: "processed".into(),
        status_details: None,
    };
    // bytes first: a record never points at bytes that are not there
    st.objects
        .put_blob(tenant, &id, up.bytes)
        .await
        .map_err(crate::error::from_retriever)?;
    store::put(&st.objects, tenant, FILE, &id, &file, Expect::Absent).await?;
    Ok(file)
}

/// Reads a file that has not expired.
pub async fn get(o: &Objects, tenant: &str, id: &str) -> ApiResult<FileObject> {
    if !ids::plausible(id) {
        return Err(not_found_file(id));
    }
    match store::get::<FileObject>(o, tenant, FILE, id).await? {
        Some(f) if !expired(&f.value) => Ok(f.value),
        _ => Err(not_found_file(id)),
    }
}

fn expired(f: &FileObject) -> bool {
    f.expires_at.is_some_and(|t| t <= unix_now())
}

/// `limit`, `after`, `before`, `order` of a list request (ids sort in
/// creation order, see [`ids`]).
#[derive(Debug, Clone)]
pub struct Paging {
    pub limit: usize,
    pub after: Option<String>,
    pub before: Option<String>,
    pub ascending: bool,
}

pub async fn list(
    o: &Objects,
    tenant: &str,
    purpose: Option<&str>,
    q: &Paging,
) -> ApiResult<ListPage<FileObject>> {
    let all = store::list::<FileObject>(o, tenant, FILE, "").await?;
    let files = all
        .into_iter()
        .map(|r| r.value)
        .filter(|f| !expired(f) && purpose.is_none_or(|p| f.purpose == p))
        .collect();
    Ok(page(files, |f| &f.id, q))
}

/// Pages objects listed in id (= creation) order.
pub fn page<T>(mut items: Vec<T>, id: impl Fn(&T) -> &String, q: &Paging) -> ListPage<T> {
    let ascending = q.ascending;
    if !ascending {
        items.reverse();
    }
    // a cursor need not exist any more (deleted meanwhile): page from
    // where it would sort
    if let Some(cursor) = q.after.as_deref() {
        items.retain(|x| {
            let i = id(x).as_str();
            if ascending { i > cursor } else { i < cursor }
        });
    }
    if let Some(cursor) = q.before.as_deref() {
        items.retain(|x| {
            let i = id(x).as_str();
            if ascending { i < cursor } else { i > cursor }
        });
        // the page just before the cursor: its last `limit` items
        let skip = items.len().saturating_sub(q.limit);
        items.drain(..skip);
    }
    let limit = q.limit;
    let has_more = items.len() > limit;
    items.truncate(limit);
    ListPage {
        object: "list",
        first_id: items.first().map(|x| id(x).clone()),
        last_id: items.last().map(|x| id(x).clone()),
        data: items,
        has_more,
    }
}

pub async fn content(o: &Objects, tenant: &str, id: &str) -> ApiResult<(FileObject, Vec<u8>)> {
    let f = get(o, tenant, id).await?;
    let bytes = o
        .get_blob(tenant, id)
        .await
        .map_err(crate::error::from_retriever)?
        .ok_or_else(|| not_found_file(id))?;
    Ok((f, bytes))
}

/// Deletes the file, and removes it from every vector store of the
/// tenant (its chunks too), as OpenAI does.
pub async fn delete(st: &Inner, tenant: &str, id: &str) -> ApiResult<Deleted> {
    get(&st.objects, tenant, id).await?;
    let attached = store::list::<Attached>(&st.objects, tenant, STORE_FILE, "").await?;
    for a in attached.into_iter().filter(|a| a.value.file.id == id) {
        super::attach::detach(st, tenant, &a.value.file.vector_store_id, id).await?;
    }
    store::delete(&st.objects, tenant, FILE, id).await?;
    st.objects
        .delete_blob(tenant, id)
        .await
        .map_err(crate::error::from_retriever)?;
    Ok(Deleted {
        id: id.to_owned(),
        object: "file",
        deleted: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(p: &ListPage<String>) -> Vec<&str> {
        p.data.iter().map(String::as_str).collect()
    }

    fn paging(limit: usize, after: Option<&str>, before: Option<&str>, ascending: bool) -> Paging {
        Paging {
            limit,
            after: after.map(str::to_owned),
            before: before.map(str::to_owned),
            ascending,
        }
    }

    #[test]
    fn pages_follow_order_and_cursors() {
        let all: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let p = page(all.clone(), |s| s, &paging(2, None, None, false));
        assert_eq!(ids(&p), ["e", "d"]);
        assert!(p.has_more);
        assert_eq!(p.last_id.as_deref(), Some("d"));
        let p = page(all.clone(), |s| s, &paging(2, Some("d"), None, false));
        assert_eq!(ids(&p), ["c", "b"]);
        let p = page(all.clone(), |s| s, &paging(2, Some("b"), None, true));
        assert_eq!(ids(&p), ["c", "d"]);
        // before: the page just before the cursor
        let p = page(all.clone(), |s| s, &paging(2, None, Some("d"), true));
        assert_eq!(ids(&p), ["b", "c"]);
        // a cursor that no longer exists pages from where it would sort
        let p = page(all.clone(), |s| s, &paging(10, Some("bb"), None, true));
        assert_eq!(ids(&p), ["c", "d", "e"]);
        assert!(!p.has_more);
        let p = page(Vec::<String>::new(), |s| s, &paging(3, None, None, true));
        assert!(p.data.is_empty() && p.first_id.is_none() && !p.has_more);
    }
}
