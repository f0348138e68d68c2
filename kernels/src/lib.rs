//! Quantized matrix products straight on GGUF blocks, for every row of a
//! step (decode and prompt): a decode step reads every weight once per
//! token, so it is bound by memory traffic, and 4.5-bit weights move 7×
//! fewer bytes than dequantised f32 ones; many rows are bound by compute,
//! where 8-bit integer dots outrun f32. Activations are quantized to 8
//! bits per 32-value block first (as llama.cpp does), so each block's dot
//! is an integer one.
//!
//! - [`QuantizedActs`] (`acts.rs`): activation rows as Q8 blocks.
//! - [`QMatrix`]: a Q4_1 or Q8_0 weight matrix, repacked at load so that
//!   a vector holds [`GROUP`] weight rows (one per 32-bit lane): per
//!   group and block, four quant bytes of each row side by side, then the
//!   rows' scales and mins (see [`QMatrix::new`]). Same bytes as GGUF.
//! - [`QMatrix::matmul`]: `out[r][o] = w[o] · x[r]`. A kernel takes one
//!   group of weight rows and up to [`ROWS`] activation rows: each block's
//!   weight vectors are loaded (and Q4_1 nibbles split) once, then every
//!   activation row broadcasts four of its bytes against them, so a batch
//!   of decode rows costs little more than one row once the weights are
//!   in cache. With AVX-512 VNNI (detected at run time) a vector is all 16
//!   rows and `vpdpbusd` does multiply, pair sums and accumulation
//!   (`avx512.rs`); with AVX2 a vector is 8 of the rows (`avx2.rs`). Both
//!   compute exactly the arithmetic written out in `scalar.rs`, the
//!   fallback without AVX2: a row's result is bit-identical whatever else
//!   is in the call and whichever kernel ran, so batching never changes
//!   greedy output.
//! - [`attn`]: attention's score and value products on f16 KV cache
//!   blocks, for all query heads of a KV group at once.
//!
//! This crate is the workspace's only `unsafe`: SIMD loads from slices
//! whose lengths are checked first, in modules compiled only when the
//! target has AVX2 (the workspace's x86-64-v3 baseline), the AVX-512
//! kernel run only after its features were detected, `columns.rs`,
//! where parallel tasks write disjoint, bounds-checked column ranges of
//! one output, and `attn::prefetch`, a cache hint at in-bounds addresses.

mod acts;
pub mod attn;
#[cfg(target_feature = "avx2")]
#[allow(unsafe_code)]
mod avx2;
#[cfg(target_feature = "avx2")]
#[allow(unsafe_code)]
mod avx512;
#[allow(unsafe_code)]
mod columns;
mod scalar;

use half::f16;
use rayon::prelude::*;

pub use acts::QuantizedActs;

/// Values per block (both formats).
pub const BLOCK: usize = 32;

/// Weight rows per group: one per 32-bit lane of a 512-bit vector.
pub const GROUP: usize = 16;

/// Activation rows one kernel call takes (a larger batch is cut into
/// calls of this many; each call re-reads the group's weights from L1).
/// Sixteen rows keep the AVX-512 kernel's 8 weight vectors and 16 float
/// accumulators within its 32 registers; the AVX2 kernel takes them four
/// at a time.
pub const ROWS: usize = 16;

/// Parallel tasks per pool thread in one matmul. The tasks are equal runs
/// of groups (within one group), so each thread gets the same work: a
/// fixed 64-row slab split SmolLM2's 576-row matrices 5:4 over two
/// threads. More than one per thread lets a thread that the OS delayed
/// hand work over to the other.
const TASKS_PER_THREAD: usize = 4;

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

    /// 64-byte slices of quants per group and block: Q4_1 packs two
    /// groups of four values per byte (low nibbles: values 4j..4j+4,
    /// high: 16+4j..), Q8_0 has a byte per value.
    fn slices(self) -> usize {
        match self {
            Format::Q4_1 => 4,
            Format::Q8_0 => 8,
        }
    }

    /// Bytes of one group's block: quants, then 16 f16 scales, then (Q4_1)
    /// 16 f16 mins.
    fn record_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 4 * 64 + 2 * 32,
            Format::Q8_0 => 8 * 64 + 32,
        }
    }
}

/// A `rows × cols` weight matrix of Q4_1 or Q8_0 blocks.
pub struct QMatrix {
    format: Format,
    rows: usize,
    cols: usize,
    /// Per group of [`GROUP`] rows (the last one padded with zeros), per
    /// block: one record of [`Format::record_bytes`].
    data: Vec<u8>,
}

fn f16_at(b: &[u8], i: usize) -> f16 {
    f16::from_le_bytes([b[i], b[i + 1]])
}

/// What a group kernel call reads: one group's records (all blocks) and
/// the activation rows from the call's first (at least `n` rows, checked
/// by [`QMatrix::group_args`]).
#[derive(Clone, Copy)]
#[cfg_attr(not(target_feature = "avx2"), allow(dead_code))]
pub(crate) struct GroupArgs<'a> {
    pub w: &'a [u8],
    pub nb: usize,
    pub q: &'a [i8],
    pub scale: &'a [f32],
    pub sum: &'a [f32],
    pub qsum: &'a [i32],
}

impl GroupArgs<'_> {
    /// The same call from activation row `i` on.
    #[cfg_attr(not(target_feature = "avx2"), allow(dead_code))]
    fn skip_rows(self, i: usize) -> Self {
        Self {
            q: &self.q[i * self.nb * BLOCK..],
            scale: &self.scale[i * self.nb..],
            sum: &self.sum[i * self.nb..],
            qsum: &self.qsum[i * self.nb..],
            ..self
        }
    }
}

/// Which kernel runs the groups.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    #[cfg(target_feature = "avx2")]
    Vnni,
    #[cfg(target_feature = "avx2")]
    Avx2,
    #[cfg(not(target_feature = "avx2"))]
    Scalar,
}

/// Every kernel this CPU runs (the tests compare them all).
#[cfg(test)]
fn kernels() -> Vec<Kernel> {
    #[cfg(target_feature = "avx2")]
    {
        let mut all = vec![Kernel::Avx2];
        if avx512::available() {
            all.push(Kernel::Vnni);
        }
        all
    }
    #[cfg(not(target_feature = "avx2"))]
    vec![Kernel::Scalar]
}

fn kernel() -> Kernel {
    #[cfg(target_feature = "avx2")]
    {
        if avx512::available() {
            Kernel::Vnni
        } else {
            Kernel::Avx2
        }
    }
    #[cfg(not(target_feature = "avx2"))]
    Kernel::Scalar
}

impl QMatrix {
    /// `data`: GGUF blocks, row-major. `None` unless it holds exactly
    /// `rows × cols` values of `format` and `cols` is a multiple of 32.
    ///
    /// Repacking: quant slice `j` of a group's block holds, for lane `i`,
    /// row `i`'s bytes `4j..4j+4` (Q4_1: the GGUF nibble bytes as they are;
    /// Q8_0: the signed bytes plus 128, i.e. with the top bit flipped, as
    /// `vpdpbusd` multiplies unsigned by signed).
    pub fn new(format: Format, rows: usize, cols: usize, data: Vec<u8>) -> Option<Self> {
        let ok = cols > 0
            && cols.is_multiple_of(BLOCK)
            && data.len() == rows * (cols / BLOCK) * format.block_bytes();
        if !ok {
            return None;
        }
        let (nb, bb, rec) = (cols / BLOCK, format.block_bytes(), format.record_bytes());
        let groups = rows.div_ceil(GROUP);
        let qbytes = format.slices() * 64;
        let mut out = vec![0u8; groups * nb * rec];
        if format == Format::Q8_0 {
            // padding rows: signed zeros
            out.fill(0x80);
        }
        for (o, row) in data.chunks_exact(nb * bb).enumerate() {
            let (g, lane) = (o / GROUP, o % GROUP);
            for (b, blk) in row.chunks_exact(bb).enumerate() {
                let r = &mut out[(g * nb + b) * rec..][..rec];
                r[qbytes + 2 * lane..][..2].copy_from_slice(&blk[..2]);
                let qs = match format {
                    Format::Q4_1 => {
                        r[qbytes + 32 + 2 * lane..][..2].copy_from_slice(&blk[2..4]);
                        &blk[4..]
                    }
                    Format::Q8_0 => &blk[2..],
                };
                for (j, four) in qs.chunks_exact(4).enumerate() {
                    let dst = &mut r[j * 64 + lane * 4..][..4];
                    for (d, s) in dst.iter_mut().zip(four) {
                        *d = match format {
                            Format::Q4_1 => *s,
                            Format::Q8_0 => s ^ 0x80,
                        };
                    }
                }
            }
        }
        if format == Format::Q8_0 {
            // the padding's scales are zero, not 0x8080
            for g in rows / GROUP..groups {
                for b in 0..nb {
                    let r = &mut out[(g * nb + b) * rec..][..rec];
                    for lane in rows - g * GROUP..GROUP {
                        r[qbytes + 2 * lane..][..2].fill(0);
                    }
                }
            }
        }
        Some(Self {
            format,
            rows,
            cols,
            data: out,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Group `g`'s record of block `b`.
    fn record(&self, g: usize, b: usize) -> &[u8] {
        let (nb, rec) = (self.cols / BLOCK, self.format.record_bytes());
        &self.data[(g * nb + b) * rec..][..rec]
    }

    /// Group `g`'s records, all blocks.
    #[cfg_attr(not(target_feature = "avx2"), allow(dead_code))]
    fn group_data(&self, g: usize) -> &[u8] {
        let n = self.cols / BLOCK * self.format.record_bytes();
        &self.data[g * n..(g + 1) * n]
    }

    /// Row `o`'s scale and min (0 for Q8_0) of block `b`.
    fn scale_min(&self, o: usize, b: usize) -> (f32, f32) {
        let rec = self.record(o / GROUP, b);
        let at = self.format.slices() * 64 + 2 * (o % GROUP);
        let min = match self.format {
            Format::Q4_1 => f16_at(rec, at + 32).to_f32(),
            Format::Q8_0 => 0.0,
        };
        (f16_at(rec, at).to_f32(), min)
    }

    /// `out` (`acts.rows() × self.rows()`, row-major) = `acts · selfᵀ`.
    /// Panics never: a shape mismatch leaves `out` untouched and returns
    /// false.
    pub fn matmul(&self, acts: &QuantizedActs, out: &mut [f32]) -> bool {
        self.matmul_on(kernel(), acts, out)
    }

    /// [`Self::matmul`] into a new vector, without zeroing it first (the
    /// products write every element; for the output matrix a 16-row
    /// step's logits are 3 MB); `None` on a shape mismatch.
    pub fn matmul_new(&self, acts: &QuantizedActs) -> Option<Vec<f32>> {
        if acts.cols != self.cols {
            return None;
        }
        let len = acts.rows * self.rows;
        let mut out = Vec::with_capacity(len);
        let cols = columns::Columns::new_uninit(&mut out.spare_capacity_mut()[..len], self.rows);
        self.fill(kernel(), acts, &cols);
        // SAFETY: `fill` wrote every element of the first `len` (each
        // group of weight rows is one task's, and it writes its lanes of
        // every activation row), and they are initialised f32 values.
        #[allow(unsafe_code)]
        unsafe {
            out.set_len(len)
        };
        Some(out)
    }

    fn matmul_on(&self, kernel: Kernel, acts: &QuantizedActs, out: &mut [f32]) -> bool {
        let n = acts.rows;
        if acts.cols != self.cols || out.len() != n * self.rows {
            return false;
        }
        self.fill(kernel, acts, &columns::Columns::new(out, self.rows));
        true
    }

    /// Every element of `cols` (`acts.rows × self.rows`; shapes checked by
    /// the callers): each group's results, for every activation row.
    fn fill(&self, kernel: Kernel, acts: &QuantizedActs, cols: &columns::Columns<'_>) {
        let n = acts.rows;
        if n == 0 {
            return;
        }
        // task t: groups [t·G/T, (t+1)·G/T); every group's results go
        // straight to their columns of every output row
        let groups = self.rows.div_ceil(GROUP);
        let tasks = groups.min(rayon::current_num_threads().max(1) * TASKS_PER_THREAD);
        (0..tasks).into_par_iter().for_each(|t| {
            let mut tmp = [0f32; GROUP * ROWS];
            for g in t * groups / tasks..(t + 1) * groups / tasks {
                let lanes = (self.rows - g * GROUP).min(GROUP);
                let mut first = 0;
                while first < n {
                    let k = (n - first).min(ROWS);
                    let dst = &mut tmp[..k * GROUP];
                    self.group_dot(kernel, g, acts, first, k, dst);
                    for i in 0..k {
                        cols.write(first + i, g * GROUP, &dst[i * GROUP..][..lanes]);
                    }
                    first += k;
                }
            }
        });
    }

    /// Group `g` against activation rows `first..first + n` (`n ≤ ROWS`)
    /// into `dst` (`n × GROUP`).
    fn group_dot(
        &self,
        kernel: Kernel,
        g: usize,
        acts: &QuantizedActs,
        first: usize,
        n: usize,
        dst: &mut [f32],
    ) {
        let done = match (kernel, self.group_args(g, acts, first, n, dst.len())) {
            #[cfg(target_feature = "avx2")]
            (Kernel::Vnni, Some(args)) => avx512::group(self.format, args, n, dst),
            #[cfg(target_feature = "avx2")]
            (Kernel::Avx2, Some(args)) => avx2::group(self.format, args, n, dst),
            _ => false,
        };
        if !done {
            scalar::group(self, g, acts, first, n, dst);
        }
    }

    /// What a SIMD kernel reads for group `g` · activation rows
    /// `first..first + n` into `dst_len` floats, or `None` when a shape
    /// does not fit (every slice is checked here, once for both kernels).
    #[cfg_attr(not(target_feature = "avx2"), allow(dead_code))]
    fn group_args<'a>(
        &'a self,
        g: usize,
        a: &'a QuantizedActs,
        first: usize,
        n: usize,
        dst_len: usize,
    ) -> Option<GroupArgs<'a>> {
        let nb = self.cols / BLOCK;
        let fits = (1..=ROWS).contains(&n)
            && a.cols == self.cols
            && first + n <= a.rows
            && a.q.len() >= (first + n) * a.cols
            && a.scale.len() >= (first + n) * nb
            && a.sum.len() >= (first + n) * nb
            && a.qsum.len() >= (first + n) * nb
            && g < self.rows.div_ceil(GROUP)
            && dst_len >= n * GROUP;
        fits.then(|| GroupArgs {
            w: self.group_data(g),
            nb,
            q: &a.q[first * a.cols..],
            scale: &a.scale[first * nb..],
            sum: &a.sum[first * nb..],
            qsum: &a.qsum[first * nb..],
        })
    }

    /// Row `r` dequantised (an embedding lookup).
    pub fn dequantize_row(&self, r: usize) -> Option<Vec<f32>> {
        if r >= self.rows {
            return None;
        }
        let nb = self.cols / BLOCK;
        let mut out = Vec::with_capacity(self.cols);
        for b in 0..nb {
            let (d, m) = self.scale_min(r, b);
            out.extend((0..BLOCK).map(|k| d * scalar::quant(self, r, b, k) as f32 + m));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests;
