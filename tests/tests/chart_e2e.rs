//! The Helm chart (`charts/ragmesh`) against the real binaries:
//! - `python/chart_check.py` passes: the chart rendered with Helm's own engine
//!   for every value set in `fixtures/chart-values/`, `helm lint`, Kubernetes
//!   and CRD schema validation, the assertions on the rendered objects and the
//!   refusals of bad values;
//! - the gateway config each value set renders into its ConfigMap passes the
//!   gateway's own `--check-config` (with the env the chart gives the pod), and
//!   a broken one is refused with one line;
//! - every probe the chart renders answers 200 on the binary it probes;
//! - the ingest Job's and the `helm test` Pod's scripts work against a real
//!   gateway.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ragmesh_tests::{bin_dir, gateway, python_file, python_script, services};
use serde_json::Value;

/// Runs chart_check.py with `--out` in a temp dir (one folder per value set)
/// and asserts it passed.
async fn chart_check() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = dir.path().display().to_string();
    let stdout = python_script("chart_check.py", &["--out", &out]).await;
    (dir, stdout)
}

/// The value-set folders chart_check.py wrote.
fn value_sets(out: &Path) -> Vec<PathBuf> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap_or_else(|e| panic!("{}: {e}", out.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("gateway.toml").exists())
        .collect();
    sets.sort();
    assert!(sets.len() >= 5, "value sets rendered: {sets:?}");
    sets
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_renders_validates_and_refuses_bad_values() {
    let (_dir, stdout) = chart_check().await;
    assert!(stdout.contains("checks passed"), "{stdout}");
    for set in [
        "defaults",
        "gpu-pools-keda",
        "external-qdrant",
        "all-off",
        "all-on",
    ] {
        assert!(
            stdout.contains(&format!("value set {set}:")),
            "{set} not rendered:\n{stdout}"
        );
    }
}

/// `ragmesh-gateway --check-config --config <file>` with the given env.
fn check_config(config: &Path, env: &[(String, String)]) -> std::process::Output {
    let bin = bin_dir().join("ragmesh-gateway");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace --bins` (make test does)",
        bin.display()
    );
    std::process::Command::new(&bin)
        .arg("--check-config")
        .arg("--config")
        .arg(config)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_gateway_config_passes_check_config() {
    let (dir, _) = chart_check().await;
    for set in value_sets(dir.path()) {
        // the pod's env (Secret values the chart does not render stood in):
        // the config is checked as the pod would load it
        let env: Vec<(String, String)> =
            serde_json::from_value(read_json(&set.join("gateway-env.json")))
                .unwrap_or_else(|e| panic!("{}: gateway-env.json: {e}", set.display()));
        let out = check_config(&set.join("gateway.toml"), &env);
        let (stdout, stderr) = (lines(&out.stdout), lines(&out.stderr));
        assert!(
            out.status.success(),
            "{}: --check-config failed ({:?}):\n{}\n{}",
            set.display(),
            out.status,
            stdout.join("\n"),
            stderr.join("\n")
        );
        assert_eq!(
            stdout.len(),
            1,
            "{}: one line expected: {stdout:?}",
            set.display()
        );
    }

    // a typo in a rendered config: refused, non-zero, one line naming it
    let defaults = dir.path().join("defaults");
    let mut text = std::fs::read_to_string(defaults.join("gateway.toml"))
        .unwrap_or_else(|e| panic!("gateway.toml: {e}"));
    text.push_str("\n[[profile]]\nname = \"docs\"\ncolection = \"docs\"\n");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, text).unwrap_or_else(|e| panic!("broken.toml: {e}"));
    let env: Vec<(String, String)> =
        serde_json::from_value(read_json(&defaults.join("gateway-env.json")))
            .unwrap_or_else(|e| panic!("gateway-env.json: {e}"));
    let out = check_config(&broken, &env);
    let stderr = lines(&out.stderr);
    assert!(!out.status.success(), "a broken config passed: {stderr:?}");
    assert_eq!(stderr.len(), 1, "one line expected: {stderr:?}");
    assert!(stderr[0].contains("colection"), "{stderr:?}");
}

/// Polls `GET <base>/ready` until 200 (models loaded), up to the start-up limit.
async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + services::STARTUP;
    loop {
        let status = http
            .get(format!("{base}/ready"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{base}/ready still {status} after {:?}",
            services::STARTUP
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_probe_answers_on_its_binary() {
    let (dir, _) = chart_check().await;
    // (component, path) of every probe of every value set
    let mut probes: Vec<(String, String)> = Vec::new();
    for set in value_sets(dir.path()) {
        let list = read_json(&set.join("probes.json"));
        for p in list.as_array().map(Vec::as_slice).unwrap_or_default() {
            let c = p["component"].as_str().unwrap_or_default().to_owned();
            let path = p["path"].as_str().unwrap_or_default().to_owned();
            if !probes.contains(&(c.clone(), path.clone())) {
                probes.push((c, path));
            }
        }
    }
    probes.sort();
    for c in ["gateway", "embedder", "retriever", "llm-runner"] {
        assert!(
            probes.iter().any(|(pc, _)| pc == c),
            "no probe rendered for {c}: {probes:?}"
        );
    }

    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let gw = gateway::start(&[]);
    let embedder = services::embedder(&[]);
    let retriever = services::retriever(data.path());
    let runner = services::runner("0", &[]);
    let http = reqwest::Client::new();
    for (component, path) in &probes {
        let base = match component.as_str() {
            "gateway" => gw.svc.http_url(),
            "embedder" => embedder.http_url(),
            "retriever" => retriever.http_url(),
            "llm-runner" => runner.http_url(),
            other => panic!("a probe on an unknown component {other}"),
        };
        wait_ready(&http, &base).await;
        let status = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or_else(|e| panic!("{component} {path}: {e}"));
        assert_eq!(status, 200, "{component}: GET {path} on its HTTP port");
    }
}

/// Runs `charts/ragmesh/files/<script>` under the test Python with `env`;
/// returns its stdout after asserting it exited 0.
async fn chart_script(script: &str, env: &[(&str, &str)]) -> String {
    let path = format!(
        "{}/../charts/ragmesh/files/{script}",
        env!("CARGO_MANIFEST_DIR")
    );
    python_file(&path, &[], env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_job_and_helm_test_scripts_work_against_the_gateway() {
    let gw = gateway::start(&[]);
    let docs = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let files = [
        (
            "zorblax.md",
            "# Zorblax\n\nThe Zorblax reactor runs at exactly 742 kelvin.",
        ),
        (
            "notes/ferries.txt",
            "Tessaly ferries cross the Varn strait every forty minutes.",
        ),
        ("skipped.json", "{\"not\": \"a document\"}"),
    ];
    for (name, text) in files {
        let p = docs.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
    let url = gw.svc.http_url();
    let source = docs.path().display().to_string();
    let env = [
        ("GATEWAY_URL", url.as_str()),
        ("COLLECTION", "chart-docs"),
        ("SOURCE_DIR", source.as_str()),
        ("EXTENSIONS", ".md,.txt"),
        ("TIMEOUT_S", "120"),
    ];
    let out = chart_script("ingest.py", &env).await;
    assert!(out.contains("done: 2 documents"), "{out}");
    // a second run replaces the documents by id (the collection exists: 409 is fine)
    let again = chart_script("ingest.py", &env).await;
    assert!(again.contains("done: 2 documents"), "{again}");
    let described = gw.ok("GET", "/v1/collections/chart-docs", None).await;
    let hits = gw
        .ok(
            "POST",
            "/v1/collections/chart-docs/search",
            Some(serde_json::json!({"query": "reactor temperature", "top_k": 1})),
        )
        .await;
    assert!(
        hits.to_string().contains("zorblax.md"),
        "{hits} ({described})"
    );

    let out = chart_script(
        "smoke_test.py",
        &[("GATEWAY_URL", url.as_str()), ("MAX_TOKENS", "4")],
    )
    .await;
    assert!(out.contains("test: chat with"), "{out}");
}
