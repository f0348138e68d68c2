//! `ragmesh-retriever`: parse config, open the store, serve.

fn main() {
    ragmesh_retriever::server::main()
}
