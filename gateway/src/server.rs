//! The gateway host: loads the stages (in-process: the all-in-one; or
//! clients of their replicas: the mesh), builds
//! the router, runs the demo ingest, serves until SIGINT/SIGTERM.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use ragmesh_embedder::{Embedder, EmbedderConfig};
use ragmesh_llm_runner::Generator;
use ragmesh_retriever::Retriever;
use tokio::net::TcpListener;

use crate::config::{Args, FileConfig};
use crate::error::ApiError;
use crate::mesh::embedder::RemoteEmbedder;
use crate::mesh::retriever::RemoteBackend;
use crate::mesh::runner::RemoteRunner;
use crate::openai::vector_stores as vs;
use crate::openai::{chat, completions, files, models, responses};
use crate::rag::chunk::ChunkSettings;
use crate::rag::collections;
use crate::rag::profile::Profile;
use crate::rag::prompt::PromptTemplate;
use crate::routing::{Backend, MeshSettings, Models};
use crate::stages::{Embed, LlmStage, LocalEmbedder, LocalRunner};
use crate::state::{AppState, Inner, unix_now};

pub fn router(st: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat::chat))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/embeddings", post(models::embeddings))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::get))
        .route(
            "/v1/collections",
            post(collections::create).get(collections::list),
        )
        .route(
            "/v1/collections/{name}",
            get(collections::describe).delete(collections::delete),
        )
        .route(
            "/v1/collections/{name}/documents",
            post(collections::ingest),
        )
        .route(
            "/v1/collections/{name}/documents/{*id}",
            delete(collections::delete_document),
        )
        .route("/v1/collections/{name}/search", post(collections::search))
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::get).delete(responses::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(responses::input_items),
        )
        .route("/v1/files", post(files::upload).get(files::list))
        .route("/v1/files/{id}", get(files::get).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route("/v1/vector_stores", post(vs::create).get(vs::list))
        .route(
            "/v1/vector_stores/{id}",
            get(vs::get).post(vs::modify).delete(vs::delete),
        )
        .route("/v1/vector_stores/{id}/search", post(vs::search))
        .route(
            "/v1/vector_stores/{id}/files",
            post(vs::attach).get(vs::list_files),
        )
        .route(
            "/v1/vector_stores/{id}/files/{file_id}",
            get(vs::get_file)
                .post(vs::update_file)
                .delete(vs::delete_file),
        )
        .route(
            "/v1/vector_stores/{id}/files/{file_id}/content",
            get(vs::file_content),
        )
        .route(
            "/v1/vector_stores/{id}/file_batches",
            post(vs::create_batch),
        )
        .route(
            "/v1/vector_stores/{id}/file_batches/{batch_id}",
            get(vs::get_batch),
        )
        .route(
            "/v1/vector_stores/{id}/file_batches/{batch_id}/cancel",
            post(vs::cancel_batch),
        )
        .route(
            "/v1/vector_stores/{id}/file_batches/{batch_id}/files",
            get(vs::batch_files),
        )
        // auth and per-key limits guard the API, not /health or /metrics
        .route_layer(axum::middleware::from_fn_with_state(
            st.clone(),
            crate::auth::middleware,
        ));
    v1.merge(ragmesh_telemetry::ops_router(&st.lifecycle))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn(crate::request_id::middleware))
        .with_state(st)
}

async fn no_route(State(st): State<AppState>, req: Request) -> Response {
    if let Err(refused) = crate::auth::guard_unmatched(&st, &req) {
        return refused.into_response();
    }
    crate::error::not_found("no such route", None, "not_found").into_response()
}

async fn wrong_method(State(st): State<AppState>, req: Request) -> Response {
    if let Err(refused) = crate::auth::guard_unmatched(&st, &req) {
        return refused.into_response();
    }
    ApiError::MethodNotAllowed.into_response()
}

/// Loads each stage (in-process, or clients of its replicas), the
/// models, profiles, aliases and keys.
pub async fn build(
    args: &Args,
    lifecycle: &ragmesh_telemetry::Lifecycle,
) -> anyhow::Result<AppState> {
    ragmesh_embedder::server::init_threads(args.threads);
    let mesh = MeshSettings {
        connect_timeout: Duration::from_millis(args.mesh_connect_timeout_ms),
        resolve_every: Duration::from_secs(args.mesh_resolve_interval_s.max(1)),
        probe_every: Duration::from_millis(args.mesh_probe_interval_ms.max(50)),
        wait: Duration::from_secs(args.mesh_wait_s),
    };
    let embed: Embed = if args.embedder_endpoints.is_empty() {
        let mut ecfg = EmbedderConfig::new(args.model_path(&args.embed_model));
        ecfg.max_concurrent_requests = args.embed_max_concurrent;
        let embedder = tokio::task::spawn_blocking(move || Embedder::load(&ecfg))
            .await
            .context("embedder loading task")?
            .context("embedding model")?;
        Arc::new(LocalEmbedder(embedder))
    } else {
        let pool = mesh.pool("embedder", &args.embedder_endpoints);
        Arc::new(RemoteEmbedder::connect(pool, mesh.wait).await?)
    };
    let mut models = Models::default();
    if !args.runner_endpoints.is_empty() {
        let mut pool = mesh.pool("llm-runner", &args.runner_endpoints);
        pool.routing = args.runner_routing;
        let r = RemoteRunner::connect(pool, mesh.wait).await?;
        models.add(r.model_id().to_owned(), Backend::Runner(Arc::new(r)))?;
    } else if args.llm_model != "none" {
        let gcfg = args
            .engine
            .generator_config(args.model_path(&args.llm_model));
        let generator = tokio::task::spawn_blocking(move || Generator::load(gcfg))
            .await
            .context("runner loading task")?
            .context("chat model")?;
        let id = generator.info().model_id.clone();
        models.add(id, Backend::Runner(Arc::new(LocalRunner(generator))))?;
    }
    let (retriever, objects): (Retriever, crate::files::store::Objects) =
        if args.retriever_endpoints.is_empty() {
            (
                ragmesh_retriever::server::open(&args.store).await?,
                ragmesh_retriever::server::open_objects(&args.store).await?,
            )
        } else {
            let pool = mesh.pool("retriever", &args.retriever_endpoints);
            let remote = RemoteBackend::connect(pool, mesh.wait).await?;
            let objects = Arc::new(crate::mesh::objects::RemoteObjects::new(remote.pool()));
            (Retriever::new(Arc::new(remote)), objects)
        };

    let chunking = ChunkSettings {
        tokens: args.chunk_tokens,
        overlap: args.chunk_overlap,
    };
    chunking.validate(embed.max_input_tokens())?;

    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    models.load(&file.model, &mesh, true).await?;
    let Assembled {
        builtin,
        profiles,
        aliases,
        keys,
    } = assemble(args, file, &models, embed.model_id())?;
    if keys.open() {
        tracing::warn!(
            "no API keys configured: OPEN mode, every caller is tenant 'default' (bind to loopback)"
        );
    } else {
        tracing::info!(keys = keys.len(), "API keys required");
    }
    crate::metrics::describe();
    Ok(Arc::new(Inner {
        embed,
        models,
        aliases,
        retriever,
        objects,
        max_file_bytes: file_limit(args),
        attach_slots: Arc::new(tokio::sync::Semaphore::new(
            args.attach_concurrency.clamp(1, 64),
        )),
        response_retention_s: args.response_retention_days.saturating_mul(86_400),
        profiles,
        builtin_template: builtin,
        chunking,
        max_body_bytes: args.max_body_bytes,
        body_timeout: Duration::from_secs(args.http_body_timeout_s.max(1)),
        body_budget: Arc::new(tokio::sync::Semaphore::new(
            args.max_inflight_body_bytes
                .div_ceil(1024)
                .max(args.max_body_bytes.div_ceil(1024))
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        )),
        in_flight: Arc::new(tokio::sync::Semaphore::new(
            args.max_concurrent_requests
                .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
        )),
        keys,
        origins: crate::origin::Policy {
            loopback_listener: args
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            allowed_origins: args.allowed_origins.clone(),
        },
        started: unix_now(),
        lifecycle: lifecycle.clone(),
    }))
}

/// `--max-file-bytes`, within what the in-flight body budget can hold (an
/// upload holds its whole form while it is read).
fn file_limit(args: &Args) -> usize {
    let room = args
        .max_inflight_body_bytes
        .saturating_sub(crate::openai::multipart::FORM_OVERHEAD);
    if args.max_file_bytes > room {
        tracing::warn!(
            max_file_bytes = args.max_file_bytes,
            used = room,
            "--max-file-bytes exceeds what --max-inflight-body-bytes holds; files are limited to the smaller"
        );
    }
    args.max_file_bytes.min(room)
}

/// What the config file and flags define on top of the stages: checked
/// the same way by start-up and by `--check-config`.
pub struct Assembled {
    pub builtin: Arc<PromptTemplate>,
    pub profiles: HashMap<String, Arc<Profile>>,
    pub aliases: HashMap<String, String>,
    pub keys: crate::auth::Keys,
}

pub fn assemble(
    args: &Args,
    file: FileConfig,
    models: &Models,
    embed_model: &str,
) -> anyhow::Result<Assembled> {
    let builtin = Arc::new(PromptTemplate::builtin());
    anyhow::ensure!(
        models.iter().next().is_some(),
        "no chat model: --llm-model none needs --runner-endpoints or [[model]] tables"
    );
    let mut configs = file.profile;
    if !args.demo_ingest.is_empty() && !configs.iter().any(|p| p.name == args.demo_collection) {
        configs.push(crate::demo::profile(&args.demo_collection));
    }
    let mut profiles = HashMap::new();
    for c in &configs {
        let p = Profile::load(c, models, &builtin)?;
        anyhow::ensure!(
            models.get(&p.name).is_none() && p.name != embed_model,
            "profile {}: the name is taken by a served model",
            p.name
        );
        anyhow::ensure!(
            profiles.insert(p.name.clone(), Arc::new(p)).is_none(),
            "profile {} is defined twice",
            c.name
        );
    }
    let aliases = crate::routing::aliases(&file.aliases, |n| {
        models.get(n).is_some() || profiles.contains_key(n)
    })?;
    let keys = crate::auth::Keys::load(&file.key, args.api_keys.as_deref())?;
    Ok(Assembled {
        builtin,
        profiles,
        aliases,
        keys,
    })
}

fn install_metrics() {
    let mut buckets: Vec<(&str, &[f64])> = Vec::new();
    buckets.extend_from_slice(ragmesh_llm_runner::metrics::BUCKETS);
    buckets.extend_from_slice(ragmesh_embedder::metrics::BUCKETS);
    buckets.push((
        crate::metrics::TTFT,
        ragmesh_llm_runner::metrics::LATENCY_BUCKETS,
    ));
    buckets.push((
        crate::metrics::E2E,
        ragmesh_llm_runner::metrics::LATENCY_BUCKETS,
    ));
    if ragmesh_telemetry::prometheus(&buckets).is_none() {
        tracing::warn!("another metrics recorder is installed; /metrics will be empty");
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.check_config {
        let line = crate::check::check(&args).await?;
        println!("{line}");
        return Ok(());
    }
    let lifecycle = args.drain.lifecycle();
    lifecycle.drain_on_signals();
    install_metrics();
    let Some(st) = lifecycle.unless_drained(build(&args, &lifecycle)).await else {
        return Ok(());
    };
    let st = st?;
    // files a stopped gateway left attaching (see files::attach)
    tokio::spawn(crate::files::attach::resume(st.clone()));
    if !args.demo_ingest.is_empty() {
        let t = std::time::Instant::now();
        let ingest = crate::demo::ingest(&st, &args.demo_collection, &args.demo_ingest);
        let Some(ingested) = lifecycle.unless_drained(ingest).await else {
            return Ok(());
        };
        let (docs, chunks) = ingested?;
        tracing::info!(
            docs,
            chunks,
            seconds = t.elapsed().as_secs_f64(),
            collection = %args.demo_collection,
            "demo collection ingested"
        );
    }
    let ip: std::net::IpAddr = args
        .host
        .parse()
        .with_context(|| format!("--host '{}' is not an IP address", args.host))?;
    let listener = TcpListener::bind(SocketAddr::new(ip, args.port))
        .await
        .with_context(|| format!("cannot bind HTTP port {}", args.port))?;
    let addr = listener.local_addr()?;
    let names: Vec<&str> = st.models.iter().map(|(n, _)| n.as_str()).collect();
    tracing::info!(%addr, models = ?names, profiles = st.profiles.len(), "gateway serving");
    // Parseable by scripts and tests (they start us on port 0).
    println!("ragmesh-gateway listening http={addr}");
    if !args.demo_ingest.is_empty() {
        println!(
            "try: curl -s {addr}/v1/chat/completions -H 'content-type: application/json' \
             -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}],\"max_tokens\":96}}'",
            args.demo_collection,
            crate::demo::QUESTION,
        );
    }
    let limits = crate::listen::Limits {
        header_timeout: Duration::from_secs(args.http_header_timeout_s.max(1)),
        max_connections: args.max_connections,
    };
    let lc = lifecycle.clone();
    let serving = crate::listen::serve(
        listener,
        router(st),
        limits,
        async move { lc.draining().await },
    );
    lifecycle.set_ready();
    // SSE streams end themselves at the deadline: give their last event
    // and `[DONE]` a moment to go out
    let linger = Duration::from_secs(2);
    match lifecycle.serve_until_drained(serving, linger).await {
        Some(r) => r.context("HTTP server"),
        None => Ok(()),
    }
}
