//! The record journal: one JSON line per write, appended and fsync'd
//! before the write is acknowledged, replayed into memory at start-up.
//!
//! A crash can leave a torn last line; replay drops it (it was never
//! acknowledged) and warns. Any other unreadable line stops the start-up:
//! the journal was damaged by something else, and guessing would lose
//! records. The journal is rewritten (compacted) at start-up and whenever
//! it holds four times more lines than live records, through a temporary
//! file that is fsync'd and renamed over the old one.
//!
//! The records themselves live in a [`Records`] map behind a read-write
//! lock that the journal updates only after a line is on disk, and only
//! for the moment of the insert: a reader never waits for an fsync.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// (tenant, kind, id)
pub type Key = (String, String, String);
/// Every live record: key → (version, value).
pub type Records = BTreeMap<Key, (u64, Value)>;

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Put {
        tenant: String,
        kind: String,
        id: String,
        version: u64,
        value: Value,
    },
    Delete {
        tenant: String,
        kind: String,
        id: String,
    },
}

pub struct Journal {
    path: PathBuf,
    file: File,
    /// Lines in the file (live or not), to decide when to compact.
    lines: usize,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // the map is written only after the journal line is on disk, so a
    // panic elsewhere leaves it as the journal says
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Journal {
    /// Opens (creating) `dir/records.jsonl`, replays and compacts it.
    pub fn open(dir: &Path) -> std::io::Result<(Self, Records)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("records.jsonl");
        let mut records = BTreeMap::new();
        if path.exists() {
            replay(&path, &mut records)?;
        }
        let file = rewrite(&path, &records)?;
        let lines = records.len();
        Ok((Self { path, file, lines }, records))
    }

    /// Appends the write (fsync'd), then applies it to `records`. The
    /// caller serialises writers (one `&mut Journal`).
    pub fn put(
        &mut self,
        records: &RwLock<Records>,
        key: Key,
        version: u64,
        value: Value,
    ) -> std::io::Result<()> {
        let (tenant, kind, id) = key.clone();
        let line = Line::Put {
            tenant,
            kind,
            id,
            version,
            value,
        };
        self.append(&line)?;
        if let Line::Put { value, .. } = line {
            write(records).insert(key, (version, value));
        }
        self.maybe_compact(records)
    }

    pub fn delete(&mut self, records: &RwLock<Records>, key: &Key) -> std::io::Result<bool> {
        if !read(records).contains_key(key) {
            return Ok(false);
        }
        let (tenant, kind, id) = key.clone();
        self.append(&Line::Delete { tenant, kind, id })?;
        write(records).remove(key);
        self.maybe_compact(records)?;
        Ok(true)
    }

    fn append(&mut self, line: &Line) -> std::io::Result<()> {
        let mut buf = serde_json::to_vec(line)?;
        buf.push(b'\n');
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.lines += 1;
        Ok(())
    }

    fn maybe_compact(&mut self, records: &RwLock<Records>) -> std::io::Result<()> {
        let live = read(records);
        if self.lines > 1000 && self.lines > 4 * live.len() {
            self.file = rewrite(&self.path, &live)?;
            self.lines = live.len();
        }
        Ok(())
    }
}

fn replay(path: &Path, records: &mut Records) -> std::io::Result<()> {
    let reader = BufReader::new(File::open(path)?);
    let mut lines = reader.split(b'\n').peekable();
    let mut n = 0usize;
    while let Some(line) = lines.next() {
        let line = line?;
        n += 1;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Line>(&line) {
            Ok(Line::Put {
                tenant,
                kind,
                id,
                version,
                value,
            }) => {
                records.insert((tenant, kind, id), (version, value));
            }
            Ok(Line::Delete { tenant, kind, id }) => {
                records.remove(&(tenant, kind, id));
            }
            Err(e) if lines.peek().is_none() => {
                tracing::warn!(line = n, error = %e, "dropping a torn last journal line (a write that was never acknowledged)");
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: line {n} is not a record ({e})", path.display()),
                ));
            }
        }
    }
    Ok(())
}

/// Writes the live records to a fresh journal and returns it open for
/// appending.
fn rewrite(path: &Path, records: &Records) -> std::io::Result<File> {
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut out = std::io::BufWriter::new(File::create(&tmp)?);
        for ((tenant, kind, id), (version, value)) in records {
            let line = Line::Put {
                tenant: tenant.clone(),
                kind: kind.clone(),
                id: id.clone(),
                version: *version,
                value: value.clone(),
            };
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path)?;
    OpenOptions::new().append(true).open(path)
}

/// Makes a rename or a new file in `path`'s directory durable.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(id: &str) -> Key {
        ("t".into(), "file".into(), id.into())
    }

    #[test]
    fn replays_puts_and_deletes() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let (mut j, r) = Journal::open(dir.path())?;
            let r = RwLock::new(r);
            j.put(&r, key("a"), 1, json!({"n": 1}))?;
            j.put(&r, key("b"), 1, json!({"n": 2}))?;
            j.put(&r, key("a"), 2, json!({"n": 3}))?;
            assert!(j.delete(&r, &key("b"))?);
            assert!(!j.delete(&r, &key("zz"))?);
        }
        let (_, records) = Journal::open(dir.path())?;
        assert_eq!(records.len(), 1);
        assert_eq!(records.get(&key("a")), Some(&(2, json!({"n": 3}))));
        Ok(())
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_earlier_ones_kept() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let (mut j, r) = Journal::open(dir.path())?;
            j.put(&RwLock::new(r), key("a"), 1, json!("kept"))?;
        }
        let path = dir.path().join("records.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path)?;
        f.write_all(br#"{"op":"put","tenant":"t","kind":"file","id":"b","vers"#)?;
        drop(f);
        let (_, records) = Journal::open(dir.path())?;
        assert_eq!(records.len(), 1);
        assert!(records.contains_key(&key("a")));
        // the torn line is gone from the rewritten file
        let text = std::fs::read_to_string(&path)?;
        assert_eq!(text.lines().count(), 1);
        Ok(())
    }

    #[test]
    fn a_damaged_middle_line_stops_start_up() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("records.jsonl");
        std::fs::write(
            &path,
            "garbage\n{\"op\":\"delete\",\"tenant\":\"t\",\"kind\":\"k\",\"id\":\"x\"}\n",
        )?;
        let err = Journal::open(dir.path()).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("line 1")));
        Ok(())
    }

    #[test]
    fn compaction_keeps_live_records() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let (mut j, r) = Journal::open(dir.path())?;
            let r = RwLock::new(r);
            for v in 1..=1010u64 {
                j.put(&r, key("a"), v, json!(v))?;
            }
            j.put(&r, key("b"), 1, json!("b"))?;
            assert!(j.lines < 1010);
        }
        let (_, records) = Journal::open(dir.path())?;
        assert_eq!(records.get(&key("a")), Some(&(1010, json!(1010))));
        assert_eq!(records.len(), 2);
        Ok(())
    }
}
