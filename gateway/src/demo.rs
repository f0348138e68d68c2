//! The all-in-one demo: ingest the project's own docs into a collection at
//! start-up and serve it through a profile of the same name.

use std::path::{Path, PathBuf};

use ragmesh_retriever::{Distance, RetrieverError};
use serde_json::{Map, Value};

use crate::ingest::Document;
use crate::rag::profile::ProfileConfig;
use crate::state::{AppState, DEFAULT_TENANT};

/// The question `make run` prints with its curl line (the first-run test
/// asks it too, `tests/tests/gateway_e2e.rs`).
pub const QUESTION: &str = "What does make test do?";

/// The demo profile (unless the config file defines one of that name):
/// greedy, so the same question gets the same cited answer.
pub fn profile(collection: &str) -> ProfileConfig {
    ProfileConfig {
        name: collection.to_owned(),
        model: None,
        collection: collection.to_owned(),
        template: None,
        top_k: 3,
        score_threshold: None,
        hybrid: true,
        temperature: None,
        frequency_penalty: None,
        presence_penalty: None,
        repetition_penalty: None,
        stop_on_repeat: None,
        reserve_tokens: None,
        filter: None,
    }
}

/// `*.md` and `*.txt` files: the paths themselves, and a folder's direct
/// children, sorted.
fn files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| anyhow::anyhow!("cannot list {}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && matches!(f.extension().and_then(|e| e.to_str()), Some("md" | "txt"))
                })
                .collect();
            entries.sort();
            out.extend(entries);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            anyhow::bail!("demo ingest: {} does not exist", p.display());
        }
    }
    Ok(out)
}

fn doc_id(path: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    path.strip_prefix(&cwd)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The demo collection belongs to the tenant `default` (open mode's
/// tenant; with keys, a key of tenant `default` reaches it).
/// Creates the collection if needed and (re-)ingests every file: ids are
/// the paths, so a restart replaces rather than duplicates.
pub async fn ingest(
    st: &AppState,
    collection: &str,
    paths: &[PathBuf],
) -> anyhow::Result<(usize, usize)> {
    match st
        .retriever
        .create_collection(
            DEFAULT_TENANT,
            collection,
            st.embed.dims(),
            Distance::Cosine,
        )
        .await
    {
        Ok(_) | Err(RetrieverError::AlreadyExists(_)) => {}
        Err(e) => anyhow::bail!("demo collection {collection}: {e}"),
    }
    let mut docs = Vec::new();
    for f in files(paths)? {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
        if text.trim().is_empty() {
            continue;
        }
        let id = doc_id(&f);
        let mut metadata = Map::new();
        metadata.insert("source".into(), Value::String(id.clone()));
        docs.push(Document {
            markdown: id.ends_with(".md"),
            id,
            text,
            metadata,
        });
    }
    let n = docs.len();
    let out = crate::ingest::ingest(st, DEFAULT_TENANT, collection, docs, st.chunking)
        .await
        .map_err(|e| anyhow::anyhow!("demo ingest: {}", e.message()))?;
    Ok((n, out.chunks))
}
