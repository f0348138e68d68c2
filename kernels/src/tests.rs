//! The kernels against the plain arithmetic, the GGUF layout and
//! extreme values, on every kernel this CPU runs.

use super::*;

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn f16b(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

/// Random Q4_1 and Q8_0 matrices: the kernel equals the dequantised
/// weights times the dequantised activations (exact integer part, f32
/// accumulation order aside).
#[test]
fn matmul_matches_dequantised_reference() {
    let (rows, cols, n) = (130, 96, 3);
    let mut seed = 7u64;
    for format in [Format::Q4_1, Format::Q8_0] {
        let mut data = Vec::new();
        for _ in 0..rows * cols / BLOCK {
            data.extend(f16b((rng(&mut seed) % 100) as f32 / 1000.0 + 0.001));
            match format {
                Format::Q4_1 => {
                    data.extend(f16b(-((rng(&mut seed) % 100) as f32) / 500.0));
                    data.extend((0..16).map(|_| rng(&mut seed) as u8));
                }
                Format::Q8_0 => data.extend((0..32).map(|_| rng(&mut seed) as u8)),
            }
        }
        let m = QMatrix::new(format, rows, cols, data);
        let Some(m) = m else { panic!("shape") };
        let x: Vec<f32> = (0..n * cols)
            .map(|_| (rng(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let acts = QuantizedActs::quantize(&x, n, cols);
        let Some(acts) = acts else { panic!("acts") };
        let mut out = vec![0f32; n * rows];
        assert!(m.matmul(&acts, &mut out));
        for r in 0..n {
            // dequantised activations, as the kernel sees them
            let nb = cols / BLOCK;
            let xa: Vec<f32> = (0..cols)
                .map(|i| acts.scale[r * nb + i / BLOCK] * f32::from(acts.q[r * cols + i]))
                .collect();
            for o in 0..rows {
                let w = m.dequantize_row(o).unwrap_or_default();
                let want: f32 = w.iter().zip(&xa).map(|(a, b)| a * b).sum();
                let got = out[r * rows + o];
                assert!(
                    (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
                    "{format:?} row {r} out {o}: {got} vs {want}"
                );
            }
        }
        // and close to the unquantised product
        let w0 = m.dequantize_row(0).unwrap_or_default();
        let exact: f32 = w0.iter().zip(&x[..cols]).map(|(a, b)| a * b).sum();
        assert!(
            (out[0] - exact).abs() < 0.05 * (1.0 + exact.abs()),
            "{} vs {exact}",
            out[0]
        );
    }
}

fn random_blocks(format: Format, rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
    let mut data = Vec::new();
    for _ in 0..rows * cols / BLOCK {
        data.extend(f16b((rng(seed) % 100) as f32 / 1000.0 + 0.001));
        match format {
            Format::Q4_1 => {
                data.extend(f16b(-((rng(seed) % 100) as f32) / 500.0));
                data.extend((0..16).map(|_| rng(seed) as u8));
            }
            Format::Q8_0 => data.extend((0..32).map(|_| rng(seed) as u8)),
        }
    }
    data
}

fn random_matrix(format: Format, rows: usize, cols: usize, seed: &mut u64) -> QMatrix {
    match QMatrix::new(format, rows, cols, random_blocks(format, rows, cols, seed)) {
        Some(m) => m,
        None => panic!("shape"),
    }
}

/// The repacked matrix holds every GGUF value: each row read back
/// equals the blocks decoded straight from the file's layout (rows
/// past a whole group included).
#[test]
fn repacking_keeps_every_value() {
    let mut seed = 5u64;
    for format in [Format::Q4_1, Format::Q8_0] {
        let (rows, cols) = (37, 96);
        let data = random_blocks(format, rows, cols, &mut seed);
        let Some(m) = QMatrix::new(format, rows, cols, data.clone()) else {
            panic!("shape")
        };
        let bb = format.block_bytes();
        for o in 0..rows {
            let mut want = Vec::new();
            for blk in data[o * (cols / BLOCK) * bb..][..(cols / BLOCK) * bb].chunks_exact(bb) {
                let d = f16_at(blk, 0).to_f32();
                match format {
                    Format::Q4_1 => {
                        let mn = f16_at(blk, 2).to_f32();
                        want.extend(blk[4..].iter().map(|q| d * f32::from(q & 15) + mn));
                        want.extend(blk[4..].iter().map(|q| d * f32::from(q >> 4) + mn));
                    }
                    Format::Q8_0 => want.extend(blk[2..].iter().map(|&q| d * f32::from(q as i8))),
                }
            }
            assert_eq!(m.dequantize_row(o), Some(want), "{format:?} row {o}");
        }
        assert_eq!(m.dequantize_row(rows), None);
    }
}

/// Every path (single row, whole tiles, padded tiles, leftover rows)
/// gives each row exactly the reference arithmetic's bits, so a row's
/// result never depends on its batch. Widths cover whole 8-block
/// chunks, a tail, and no whole chunk.
#[test]
fn every_batch_size_gives_the_reference_bits() {
    let mut seed = 11u64;
    for format in [Format::Q4_1, Format::Q8_0] {
        for cols in [96, 256, 608] {
            let m = random_matrix(format, 70, cols, &mut seed);
            let x: Vec<f32> = (0..21 * cols)
                .map(|_| (rng(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            for (n, kernel) in [1, 2, 3, 4, 5, 8, 9, 13, 16, 21]
                .into_iter()
                .flat_map(|n| kernels().into_iter().map(move |k| (n, k)))
            {
                let acts = QuantizedActs::quantize(&x[..n * cols], n, cols);
                let Some(acts) = acts else { panic!("acts") };
                let mut out = vec![0f32; n * 70];
                assert!(m.matmul_on(kernel, &acts, &mut out));
                // the unzeroed output writes every element: same bits
                let fresh = m
                    .matmul_new(&acts)
                    .map(|v| v.iter().map(|x| x.to_bits()).collect());
                assert_eq!(
                    fresh,
                    Some(out.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
                );
                for r in 0..n {
                    for o in 0..70 {
                        let want = scalar::dot(&m, o, &acts, r);
                        assert_eq!(
                            out[r * 70 + o].to_bits(),
                            want.to_bits(),
                            "{kernel:?} {format:?} cols {cols} n {n} row {r} out {o}"
                        );
                    }
                }
            }
        }
    }
}

/// The largest integer dots (nibble 15 or byte -128 against ±127 in
/// every position) do not overflow the kernels' 16-bit steps.
#[test]
fn extreme_values_do_not_overflow() {
    for (format, quant, sign) in [(Format::Q4_1, 0xffu8, 1.0f32), (Format::Q8_0, 0x80, -1.0)] {
        let cols = 608;
        let mut data = Vec::new();
        for _ in 0..cols / BLOCK {
            data.extend(f16b(1.0));
            if format == Format::Q4_1 {
                data.extend(f16b(0.0));
            }
            data.extend(std::iter::repeat_n(
                quant,
                format.block_bytes() - if format == Format::Q4_1 { 4 } else { 2 },
            ));
        }
        let Some(m) = QMatrix::new(format, 1, cols, data) else {
            panic!("shape")
        };
        for n in [1, 8, 16] {
            let x = vec![sign; n * cols];
            let Some(acts) = QuantizedActs::quantize(&x, n, cols) else {
                panic!("acts")
            };
            for kernel in kernels() {
                let mut out = vec![0f32; n];
                assert!(m.matmul_on(kernel, &acts, &mut out));
                // 15·127 or 128·127 per value, times d_a = 1/127
                let per = if format == Format::Q4_1 { 15.0 } else { 128.0 };
                for y in out {
                    let ok = (y - per * cols as f32).abs() < 1.0;
                    assert!(ok, "{kernel:?} {format:?} n {n}: {y}");
                }
            }
        }
    }
}

#[test]
fn bad_shapes_are_refused() {
    assert!(QMatrix::new(Format::Q4_1, 2, 33, vec![0; 40]).is_none());
    assert!(QMatrix::new(Format::Q4_1, 2, 32, vec![0; 39]).is_none());
    assert!(QuantizedActs::quantize(&[0.0; 31], 1, 31).is_none());
    let m = QMatrix::new(Format::Q8_0, 1, 32, vec![0; 34]);
    let a = QuantizedActs::quantize(&[0.0; 64], 1, 64);
    if let (Some(m), Some(a)) = (m, a) {
        assert!(!m.matmul(&a, &mut [0.0]));
        assert!(m.matmul_new(&a).is_none());
    }
}
