//! Quantized matrix products straight on GGUF blocks, for decode steps:
//! a decode step reads every weight once per token, so it is bound by
//! memory traffic, and 4.5-bit weights move 7× fewer bytes than
//! dequantised f32 ones. Activations are quantized to 8 bits per 32-value
//! block first (as llama.cpp does), so each block's dot is an integer one.
//!
//! - [`QuantizedActs`] (`acts.rs`): activation rows as Q8 blocks.
//! - [`QMatrix`]: a Q4_1 or Q8_0 weight matrix, repacked at load into
//!   quants, scales and mins held apart (so eight blocks' scales are one
//!   load), and [`QMatrix::matmul`]: `out[r][o] = w[o] · x[r]`, weight rows
//!   split over the rayon pool.
//! - Kernels: one activation row against a weight row (eight blocks per
//!   vector), or a tile of [`TILE`] rows, one per lane, so a batch of
//!   decode rows costs far less than that many single rows once the
//!   weights are in cache (`avx2.rs`); on CPUs with AVX-512 VNNI, detected
//!   at run time, whole groups of [`WIDE`] rows take a 512-bit tile
//!   (`avx512.rs`). All compute exactly the arithmetic written out in
//!   `scalar.rs`, the fallback without AVX2: a row's result is
//!   bit-identical whatever else is in the call and whichever kernel ran,
//!   so batching never changes greedy output.
//!
//! This crate is the workspace's only `unsafe`: SIMD loads from slices
//! whose lengths are checked first, in modules compiled only when the
//! target has AVX2 (the workspace's x86-64-v3 baseline); the AVX-512
//! kernel runs only after its features were detected.

#![cfg_attr(not(target_feature = "avx2"), forbid(unsafe_code))]

mod acts;
#[cfg(target_feature = "avx2")]
#[allow(unsafe_code)]
mod avx2;
#[cfg(target_feature = "avx2")]
#[allow(unsafe_code)]
mod avx512;
mod scalar;

use half::f16;
use rayon::prelude::*;

pub use acts::QuantizedActs;
use acts::{RowActs, TileActs};
use scalar::WRow;

/// Values per block (both formats).
pub const BLOCK: usize = 32;

/// Activation rows per tile (one per 32-bit lane of a 256-bit vector).
pub const TILE: usize = 8;

/// Activation rows per tile of the AVX-512 kernel (a 512-bit vector).
pub const WIDE: usize = 16;

/// A last partial tile of at least this many rows is padded to a full
/// tile; fewer rows take the single-row kernel one by one (a tile costs
/// about as much as this many single rows; see `examples/kernel_speed`).
const PAD_FROM: usize = 4;

/// Weight rows per parallel task.
const SLAB: usize = 64;

/// GGUF block formats this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// f16 scale, f16 min, 16 bytes of 4-bit values: `w = d·q + m`.
    Q4_1,
    /// f16 scale, 32 signed bytes: `w = d·q`.
    Q8_0,
}

impl Format {
    /// Bytes per block in a GGUF file.
    pub fn block_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 20,
            Format::Q8_0 => 34,
        }
    }

    /// Quant bytes per block once repacked.
    fn quant_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 16,
            Format::Q8_0 => BLOCK,
        }
    }
}

/// A `rows × cols` weight matrix of Q4_1 or Q8_0 blocks.
pub struct QMatrix {
    format: Format,
    rows: usize,
    cols: usize,
    /// Per row, per block: the quant bytes (nibbles or signed bytes).
    qs: Vec<u8>,
    /// Per row, per block: the scale.
    d: Vec<f16>,
    /// Per row, per block: the min (Q4_1; empty for Q8_0).
    m: Vec<f16>,
}

fn f16_at(b: &[u8], i: usize) -> f16 {
    f16::from_le_bytes([b[i], b[i + 1]])
}

impl QMatrix {
    /// `data`: GGUF blocks, row-major. `None` unless it holds exactly
    /// `rows × cols` values of `format` and `cols` is a multiple of 32.
    pub fn new(format: Format, rows: usize, cols: usize, data: Vec<u8>) -> Option<Self> {
        let ok = cols > 0
            && cols.is_multiple_of(BLOCK)
            && data.len() == rows * (cols / BLOCK) * format.block_bytes();
        if !ok {
            return None;
        }
        let blocks = rows * cols / BLOCK;
        let mut qs = Vec::with_capacity(blocks * format.quant_bytes());
        let mut d = Vec::with_capacity(blocks);
        let mut m = Vec::new();
        for blk in data.chunks_exact(format.block_bytes()) {
            d.push(f16_at(blk, 0));
            match format {
                Format::Q4_1 => {
                    m.push(f16_at(blk, 2));
                    qs.extend_from_slice(&blk[4..]);
                }
                Format::Q8_0 => qs.extend_from_slice(&blk[2..]),
            }
        }
        Some(Self {
            format,
            rows,
            cols,
            qs,
            d,
            m,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn wrow(&self, o: usize) -> WRow<'_> {
        let nb = self.cols / BLOCK;
        let qb = nb * self.format.quant_bytes();
        WRow {
            format: self.format,
            qs: &self.qs[o * qb..(o + 1) * qb],
            d: &self.d[o * nb..(o + 1) * nb],
            m: match self.format {
                Format::Q4_1 => &self.m[o * nb..(o + 1) * nb],
                Format::Q8_0 => &[],
            },
        }
    }

    /// `out` (`acts.rows() × self.rows()`, row-major) = `acts · selfᵀ`.
    /// Panics never: a shape mismatch leaves `out` untouched and returns
    /// false.
    pub fn matmul(&self, acts: &QuantizedActs, out: &mut [f32]) -> bool {
        let n = acts.rows;
        if acts.cols != self.cols || out.len() != n * self.rows {
            return false;
        }
        // whole wide (AVX-512) tiles where the CPU has them, then whole
        // 8-row tiles, a padded last tile if it is full enough, the rest
        // row by row
        let wide = n / WIDE * usize::from(wide_tiles());
        let first8 = wide * WIDE;
        let ntiles = (n - first8) / TILE + usize::from((n - first8) % TILE >= PAD_FROM);
        let tiled = (first8 + ntiles * TILE).min(n);
        let (wides, tiles) = (acts.tiles(WIDE, 0, wide), acts.tiles(TILE, first8, ntiles));
        let pairs: Vec<Vec<i8>> = (tiled..n)
            .map(|r| match self.format {
                Format::Q4_1 => acts.pairs(r),
                Format::Q8_0 => Vec::new(),
            })
            .collect();
        if n == 1 && tiled == 0 {
            // single-stream decode: slabs write straight into `out`
            let a = acts.row(0, &pairs[0]);
            out.par_chunks_mut(SLAB).enumerate().for_each(|(s, o)| {
                for (i, y) in o.iter_mut().enumerate() {
                    *y = row_dot(self.wrow(s * SLAB + i), a);
                }
            });
            return true;
        }
        // each slab writes its part as n runs of its weight rows' results
        // (activation row r: `part[r·len .. (r+1)·len]`), so the copy into
        // `out` below moves whole runs instead of gathering with stride n
        let mut by_w = vec![0f32; self.rows * n];
        by_w.par_chunks_mut(SLAB * n)
            .enumerate()
            .for_each(|(s, part)| {
                let len = part.len() / n;
                let mut unpacked = Unpacked::default();
                let mut dst = vec![0f32; n];
                for i in 0..len {
                    let w = self.wrow(s * SLAB + i);
                    if tiled > 0 {
                        unpacked.fill(w);
                    }
                    for t in 0..wide {
                        let rows = &mut dst[t * WIDE..(t + 1) * WIDE];
                        tile_dot(w, &unpacked, wides.tile(t), WIDE, acts, t * WIDE, rows);
                    }
                    for t in 0..ntiles {
                        let lo = first8 + t * TILE;
                        let rows = &mut dst[lo..(lo + TILE).min(tiled)];
                        tile_dot(w, &unpacked, tiles.tile(t), TILE, acts, lo, rows);
                    }
                    for (r, y) in (tiled..n).zip(&mut dst[tiled..]) {
                        *y = row_dot(w, acts.row(r, &pairs[r - tiled]));
                    }
                    for (r, y) in dst.iter().enumerate() {
                        part[r * len + i] = *y;
                    }
                }
            });
        let gather = |(r, row): (usize, &mut [f32])| {
            for (s, o) in row.chunks_mut(SLAB).enumerate() {
                let len = o.len();
                o.copy_from_slice(&by_w[s * SLAB * n + r * len..][..len]);
            }
        };
        // a parallel region costs a few microseconds: only for large outputs
        if by_w.len() >= 1 << 16 {
            out.par_chunks_mut(self.rows).enumerate().for_each(gather);
        } else {
            out.chunks_mut(self.rows).enumerate().for_each(gather);
        }
        true
    }

    /// Row `r` dequantised (an embedding lookup).
    pub fn dequantize_row(&self, r: usize) -> Option<Vec<f32>> {
        if r >= self.rows {
            return None;
        }
        let w = self.wrow(r);
        let mut out = Vec::with_capacity(self.cols);
        for (b, d) in w.d.iter().enumerate() {
            let d = d.to_f32();
            match self.format {
                Format::Q4_1 => {
                    let m = w.m[b].to_f32();
                    let qs = &w.qs[b * 16..(b + 1) * 16];
                    out.extend(qs.iter().map(|q| d * f32::from(q & 15) + m));
                    out.extend(qs.iter().map(|q| d * f32::from(q >> 4) + m));
                }
                Format::Q8_0 => out.extend(
                    w.qs[b * BLOCK..(b + 1) * BLOCK]
                        .iter()
                        .map(|&q| d * f32::from(q as i8)),
                ),
            }
        }
        Some(out)
    }
}

/// One tile's results into `dst` (its real rows, from `first`).
fn tile_dot(
    w: WRow<'_>,
    unpacked: &Unpacked,
    tile: TileActs<'_>,
    width: usize,
    acts: &QuantizedActs,
    first: usize,
    dst: &mut [f32],
) {
    #[cfg(target_feature = "avx2")]
    {
        let done = match width {
            TILE => avx2::tile(w, unpacked, tile).map(|r| dst.copy_from_slice(&r[..dst.len()])),
            WIDE => avx512::tile(w, unpacked, tile).map(|r| dst.copy_from_slice(&r[..dst.len()])),
            _ => None,
        };
        if done.is_some() {
            return;
        }
    }
    let _ = (tile, unpacked, width);
    for (i, y) in dst.iter_mut().enumerate() {
        *y = scalar::row_dot(w, acts.row(first + i, &[]));
    }
}

/// A weight row as the tile kernel reads it, made once per row and used
/// by every tile: Q4_1 nibbles one value per byte (so four values
/// broadcast with one load), and the scales and mins as f32 (a broadcast
/// load each, instead of a conversion per block and tile).
#[derive(Default)]
pub(crate) struct Unpacked {
    /// Q4_1 values, 32 per block (empty for Q8_0, whose bytes are read
    /// in place).
    pub vals: Vec<u8>,
    pub d: Vec<f32>,
    /// Q4_1 mins (empty for Q8_0).
    pub m: Vec<f32>,
}

impl Unpacked {
    fn fill(&mut self, w: WRow<'_>) {
        widen(w.d, &mut self.d);
        widen(w.m, &mut self.m);
        if w.format != Format::Q4_1 {
            self.vals.clear();
            return;
        }
        let vals = &mut self.vals;
        vals.resize(w.qs.len() * 2, 0);
        #[cfg(target_feature = "avx2")]
        if avx2::unpack(w.qs, vals) {
            return;
        }
        for (dst, src) in vals.chunks_exact_mut(BLOCK).zip(w.qs.chunks_exact(16)) {
            let (lo, hi) = dst.split_at_mut(16);
            for ((l, h), q) in lo.iter_mut().zip(hi.iter_mut()).zip(src) {
                *l = q & 15;
                *h = q >> 4;
            }
        }
    }
}

/// `src` as f32 into `dst`.
fn widen(src: &[f16], dst: &mut Vec<f32>) {
    dst.resize(src.len(), 0.0);
    #[cfg(target_feature = "avx2")]
    avx2::widen(src, dst);
    #[cfg(not(target_feature = "avx2"))]
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

/// Whether whole groups of [`WIDE`] rows take the AVX-512 VNNI kernel (a
/// CPU that has it). Only whole ones: a padded wide tile costs as much as
/// a full one, about twice an 8-row AVX2 tile.
fn wide_tiles() -> bool {
    #[cfg(target_feature = "avx2")]
    {
        avx512::available()
    }
    #[cfg(not(target_feature = "avx2"))]
    false
}

/// One weight row · one activation row, on the best kernel compiled in.
fn row_dot(w: WRow<'_>, a: RowActs<'_>) -> f32 {
    #[cfg(target_feature = "avx2")]
    {
        avx2::row(w, a)
    }
    #[cfg(not(target_feature = "avx2"))]
    {
        scalar::row_dot(w, a)
    }
}

#[cfg(test)]
mod tests {
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
                let a = acts.row(r, &[]);
                let xa: Vec<f32> = (0..cols)
                    .map(|i| a.scale[i / BLOCK] * f32::from(a.q[i]))
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

    fn random_matrix(format: Format, rows: usize, cols: usize, seed: &mut u64) -> QMatrix {
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
        match QMatrix::new(format, rows, cols, data) {
            Some(m) => m,
            None => panic!("shape"),
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
                for n in [1, 2, 3, 4, 5, 8, 9, 13, 16, 21] {
                    let acts = QuantizedActs::quantize(&x[..n * cols], n, cols);
                    let Some(acts) = acts else { panic!("acts") };
                    let mut out = vec![0f32; n * 70];
                    assert!(m.matmul(&acts, &mut out));
                    for r in 0..n {
                        for o in 0..70 {
                            let want = scalar::row_dot(m.wrow(o), acts.row(r, &[]));
                            assert_eq!(
                                out[r * 70 + o].to_bits(),
                                want.to_bits(),
                                "{format:?} cols {cols} n {n} row {r} out {o}"
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
                data.extend(std::iter::repeat_n(quant, format.quant_bytes()));
            }
            let Some(m) = QMatrix::new(format, 1, cols, data) else {
                panic!("shape")
            };
            for n in [1, 8, 16] {
                let x = vec![sign; n * cols];
                let Some(acts) = QuantizedActs::quantize(&x, n, cols) else {
                    panic!("acts")
                };
                let mut out = vec![0f32; n];
                assert!(m.matmul(&acts, &mut out));
                // 15·127 or 128·127 per value, times d_a = 1/127
                let per = if format == Format::Q4_1 { 15.0 } else { 128.0 };
                for y in out {
                    assert!((y - per * cols as f32).abs() < 1.0, "{format:?} n {n}: {y}");
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
        }
    }
}
