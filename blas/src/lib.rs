//! Links OpenBLAS statically (see `build.rs`) for the crates that run their
//! GEMMs through `ndarray`'s BLAS backend (`cblas_sgemm`): the embedder's
//! dense layers and the llm-runner's linear layers. Depending on this crate
//! and naming it once (`use ragmesh_blas as _;`) is all they need.
//!
//! **Why the pthread build**: Debian's *serial* OpenBLAS (0.3.21) is built
//! without `USE_LOCKING`, so two threads inside `sgemm` at once can be
//! handed the same packing buffer. Measured in the llm-runner: greedy
//! output changed from run to run when two threads called it. The pthread
//! build is thread-safe; with it the output is reproducible (and identical
//! to the serial build under a global lock), and a single call can use both
//! cores, which the runner's one-GEMM-per-layer design needs.
