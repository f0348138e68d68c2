//! Links OpenBLAS (serial build, statically).
//!
//! The serial build is chosen on purpose: the embedder and the llm-runner
//! split their work across cores themselves, so a threaded BLAS would only
//! oversubscribe. Debian/Ubuntu ship it in `libopenblas-serial-dev`
//! (`scripts/system-deps.sh` installs it); elsewhere point
//! `RAGMESH_OPENBLAS_LIB_DIR` at a directory holding `libopenblas.a`.

fn main() {
    println!("cargo:rerun-if-env-changed=RAGMESH_OPENBLAS_LIB_DIR");
    let dir = std::env::var("RAGMESH_OPENBLAS_LIB_DIR")
        .unwrap_or_else(|_| "/usr/lib/x86_64-linux-gnu/openblas-serial".into());
    let lib = std::path::Path::new(&dir).join("libopenblas.a");
    if !lib.exists() {
        // One readable line, then a failed build.
        println!(
            "cargo:warning={} not found: install the serial OpenBLAS (scripts/system-deps.sh, i.e. apt-get install libopenblas-serial-dev) or set RAGMESH_OPENBLAS_LIB_DIR",
            lib.display()
        );
        std::process::exit(1);
    }
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-lib=static=openblas");
    // sgemm's objects need only libm and pthreads, both in glibc.
}
