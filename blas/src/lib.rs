//! Links the serial OpenBLAS statically (see `build.rs`) for the crates that
//! run their GEMMs through `ndarray`'s BLAS backend (`cblas_sgemm`): the
//! embedder's dense layers and the llm-runner's prefill/batch path.
//! Depending on this crate (and naming it once, `use ragmesh_blas as _;`)
//! is all they need.
//!
//! **Thread safety**: Debian's serial OpenBLAS (0.3.21) is built without
//! `USE_LOCKING`: two threads inside `sgemm` at once can be handed the same
//! packing buffer. Measured in the llm-runner: greedy output changed from
//! run to run with two threads and became reproducible with this lock.
//! Every caller takes [`lock`] around its `sgemm`.

use std::sync::{Mutex, MutexGuard};

static SGEMM: Mutex<()> = Mutex::new(());

/// Held for the duration of one BLAS call.
pub fn lock() -> MutexGuard<'static, ()> {
    SGEMM.lock().unwrap_or_else(|p| p.into_inner())
}
