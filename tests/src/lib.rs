//! Harness for the end-to-end tests: start the real binaries on loopback
//! (port 0), read the addresses they bound, stop them on drop.

pub mod gateway;
pub mod otlp;
pub mod routing;
pub mod services;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The directory holding the workspace's binaries (built by `make test`
/// before the tests run): the test executable lives in `<dir>/deps/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// `RAGMESH_MODEL_DIR` or the default model cache.
pub fn model_dir() -> String {
    std::env::var("RAGMESH_MODEL_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| {
            format!(
                "{}/.cache/ragmesh/models",
                std::env::var("HOME").unwrap_or_default()
            )
        })
}

/// `v` is an OpenAI error body: `{"error": {"message", "type", "param",
/// "code"}}` with a non-empty message (`ctx` names the case on failure).
pub fn assert_openai_error(v: &serde_json::Value, ctx: &str) {
    let e = &v["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{ctx}: message in {v}"
    );
    assert!(e["type"].is_string(), "{ctx}: type in {v}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{ctx}: param/code in {v}"
    );
}

/// A process's resident memory in bytes (`VmRSS` in `/proc/<pid>/status`;
/// 0 if unreadable).
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The Python with the test tools (the OpenAI SDK) installed.
pub fn python() -> String {
    std::env::var("RAGMESH_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs `tests/python/<script>` with `args` under [`python`], asserts it
/// exited 0 (showing its output if not) and returns its stdout.
pub async fn python_script(script: &str, args: &[&str]) -> String {
    let path = format!("{}/python/{script}", env!("CARGO_MANIFEST_DIR"));
    python_file(&path, args, &[]).await
}

/// Runs the Python file at `path` with `args` and `env` under [`python`],
/// asserts it exited 0 (showing its output if not) and returns its stdout.
pub async fn python_file(path: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = tokio::process::Command::new(python())
        .arg(path)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{path} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A running service process; killed when dropped.
pub struct Service {
    pub child: Child,
    /// `name=addr` pairs from its "listening" line, e.g. http, grpc.
    pub addrs: Vec<(String, String)>,
}

impl Service {
    /// Starts `bin` with `args` and waits (up to `timeout`) for its
    /// `<bin> listening k=v ...` line on stdout.
    pub fn start(bin: &str, args: &[&str], timeout: Duration) -> anyhow::Result<Self> {
        Self::start_env(bin, args, &[], timeout)
    }

    /// As [`Service::start`], with extra environment variables.
    pub fn start_env(
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Self::spawn(bin, args, env, None, timeout)
    }

    /// As [`Service::start`], with its log (stderr) written to `log` under
    /// the binary's default log filter (`RUST_LOG` removed).
    pub fn start_logged(
        bin: &str,
        args: &[&str],
        log: &std::path::Path,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let file = std::fs::File::create(log)?;
        Self::spawn(bin, args, &[], Some(file), timeout)
    }

    /// Both: extra environment variables and the log in `log`.
    pub fn start_env_logged(
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
        log: &std::path::Path,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let file = std::fs::File::create(log)?;
        Self::spawn(bin, args, env, Some(file), timeout)
    }

    fn spawn(
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<std::fs::File>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let path = bin_dir().join(bin);
        anyhow::ensure!(
            path.exists(),
            "{} not built: run `cargo build --workspace --bins` (make test does)",
            path.display()
        );
        let mut cmd = Command::new(&path);
        let stderr = match log {
            Some(f) => {
                cmd.env_remove("RUST_LOG");
                Stdio::from(f)
            }
            None => Stdio::inherit(),
        };
        let mut child = cmd
            .args(args)
            .env("RAGMESH_MODEL_DIR", model_dir())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(" listening ") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(timeout) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                anyhow::bail!(
                    "{bin} did not report listening within {timeout:?} (exit: {status:?})"
                );
            }
        };
        let addrs = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(Self { child, addrs })
    }

    pub fn addr(&self, name: &str) -> String {
        self.addrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr("http"))
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.addr("grpc"))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `promtool` (on PATH, or where scripts/test-deps.sh unpacked it).
pub fn promtool() -> PathBuf {
    let unpacked = PathBuf::from(
        std::env::var("RAGMESH_PROMTOOL_DIR")
            .unwrap_or_else(|_| "/var/tmp/ragmesh-promtool".into()),
    )
    .join("usr/bin/promtool");
    if unpacked.exists() {
        return unpacked;
    }
    PathBuf::from("promtool")
}

/// `promtool check metrics` on a /metrics text: `Err` with promtool's
/// report on a parse error (exit 1) or any lint problem (exit 3), except
/// the one problem vLLM's own names have: the runner exports
/// `vllm:num_requests_waiting` etc. under exactly those names (with a
/// colon, which the lint reserves for recording rules) because endpoint
/// pickers read them so.
pub fn promtool_check(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool: {e} (scripts/test-deps.sh installs it)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("promtool stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("promtool: {e}"))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !(l.starts_with("vllm:") && l.ends_with("metric names should not contain ':'")))
        .collect();
    match out.status.code() {
        Some(0 | 3) if problems.is_empty() => Ok(()),
        code => Err(format!("exit {code:?}:\n{}", problems.join("\n"))),
    }
}
