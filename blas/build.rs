//! Links OpenBLAS (the thread-safe pthread build, statically; see lib.rs
//! for why not the serial one). Debian/Ubuntu ship it in
//! `libopenblas-pthread-dev` (`scripts/system-deps.sh` installs it);
//! elsewhere point `RAGMESH_OPENBLAS_LIB_DIR` at a directory holding a
//! thread-safe `libopenblas.a`.

fn main() {
    println!("cargo:rerun-if-env-changed=RAGMESH_OPENBLAS_LIB_DIR");
    let dir = std::env::var("RAGMESH_OPENBLAS_LIB_DIR")
        .unwrap_or_else(|_| "/usr/lib/x86_64-linux-gnu/openblas-pthread".into());
    let lib = std::path::Path::new(&dir).join("libopenblas.a");
    if !lib.exists() {
        // One readable line, then a failed build.
        println!(
            "cargo:warning={} not found: install OpenBLAS (scripts/system-deps.sh, i.e. apt-get install libopenblas-pthread-dev) or set RAGMESH_OPENBLAS_LIB_DIR",
            lib.display()
        );
        std::process::exit(1);
    }
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-lib=static=openblas");
    // the threaded objects need pthreads and libm, both in glibc
    println!("cargo:rustc-link-lib=pthread");
}
