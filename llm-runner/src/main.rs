//! `ragmesh-llm-runner`: parse config, load the model, serve.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    ragmesh_llm_runner::server::main()
}
