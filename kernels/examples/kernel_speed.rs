//! Throughput of the quantized matmul at decode and prefill row counts,
//! on SmolLM2-135M's shapes (all layers' weights: 30 × 3.5M values).
//! `cargo run --release -p ragmesh-kernels --example kernel_speed [ROWS...]`

use std::time::Instant;

use ragmesh_kernels::{Format, QMatrix, QuantizedActs};

fn main() {
    // RAGMESH_KERNEL_ROWS: a smaller matrix (e.g. 512, cache-resident)
    let rows = std::env::var("RAGMESH_KERNEL_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30 * 3_538_944 / 576);
    let cols = std::env::var("RAGMESH_KERNEL_COLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(576);
    let mut seed = 1u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // RAGMESH_KERNEL_FORMAT=q8_0: the output matrix's format
    let format = match std::env::var("RAGMESH_KERNEL_FORMAT").as_deref() {
        Ok("q8_0") => Format::Q8_0,
        _ => Format::Q4_1,
    };
    let mut data = Vec::with_capacity(rows * cols / 32 * format.block_bytes());
    for _ in 0..rows * cols / 32 {
        data.extend(half::f16::from_f32(0.01).to_le_bytes());
        if format == Format::Q4_1 {
            data.extend(half::f16::from_f32(-0.05).to_le_bytes());
        }
        data.extend(
            (0..format.block_bytes() - data.len() % format.block_bytes()).map(|_| rnd() as u8),
        );
    }
    let Some(m) = QMatrix::new(format, rows, cols, data) else {
        return;
    };
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = match counts.is_empty() {
        true => vec![1, 2, 4, 8, 16, 64, 512],
        false => counts,
    };
    for n in counts {
        let x: Vec<f32> = (0..n * cols)
            .map(|_| (rnd() % 2000) as f32 / 1000.0 - 1.0)
            .collect();
        let Some(acts) = QuantizedActs::quantize(&x, n, cols) else {
            return;
        };
        let mut out = vec![0f32; n * rows];
        let iters = ((2048 / n).clamp(2, 40) * 184_320 / rows).max(2);
        let t = Instant::now();
        for _ in 0..iters {
            m.matmul(&acts, &mut out);
        }
        let s = t.elapsed().as_secs_f64() / iters as f64;
        let gbs = (rows * cols / 32 * format.block_bytes()) as f64 / s / 1e9;
        println!(
            "rows {n:>4}: {:8.2} ms per call, {:7.1} row-tokens/s, weights streamed at {gbs:.2} GB/s",
            s * 1e3,
            n as f64 / s
        );
    }
}
