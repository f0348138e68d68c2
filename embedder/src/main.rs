//! `ragmesh-embedder`: parse config, build the core, serve the transports.

// mimalloc keeps freed activation buffers for reuse; glibc returns large
// ones to the OS and page-faults them back in on every layer.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    ragmesh_embedder::server::main()
}
