//! Dense layers for the encoder: `y = x·Wᵀ + b` (optionally followed by
//! GELU), as a candle custom op whose GEMM is OpenBLAS's `sgemm`.
//!
//! Why: measured here on [1632×384]·[384×1536] (a 32-sentence batch), the
//! `gemm` crate behind candle's CPU matmul reached ~50 GFLOP/s on 2 threads,
//! OpenBLAS ~62–68 GFLOP/s on *one* thread (MKL in PyTorch: ~110 on two).
//! OpenBLAS is linked statically (crate `ragmesh-blas`), and the
//! queue runs one slice of each batch per core. (The pthread build is used:
//! the serial one is not safe to call from two threads, see ragmesh-blas.)
//! Without the `openblas` feature the layer falls back to candle's matmul.

#[cfg(feature = "openblas")]
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use candle_core::{Module, Tensor};
use candle_nn::Linear;

/// A linear layer: candle's, or the BLAS one when the feature is on.
pub struct Dense {
    candle: Linear,
    #[cfg(feature = "openblas")]
    blas: BlasLinear,
}

impl Dense {
    pub fn new(weight: Tensor, bias: Option<Tensor>, gelu: bool) -> candle_core::Result<Self> {
        #[cfg(feature = "openblas")]
        let blas = BlasLinear::new(&weight, bias.as_ref(), gelu)?;
        #[cfg(not(feature = "openblas"))]
        let _ = gelu;
        Ok(Self {
            candle: Linear::new(weight, bias),
            #[cfg(feature = "openblas")]
            blas,
        })
    }

    /// `x`: `[rows, in]` → `[rows, out]` (GELU applied if built with it).
    /// `blocks` > 1 splits the rows over that many cores: for a batch too
    /// small to give every core its own slice (e.g. one query).
    pub fn forward(&self, x: &Tensor, blocks: usize) -> candle_core::Result<Tensor> {
        #[cfg(feature = "openblas")]
        {
            if x.device().is_cpu() {
                let call = BlasCall {
                    layer: &self.blas,
                    blocks,
                };
                return x.contiguous()?.apply_op1_no_bwd(&call);
            }
        }
        let _ = blocks; // candle's matmul parallelises on its own
        self.candle.forward(x)
    }

    /// Whether `forward` already applied GELU (the BLAS path fuses it).
    pub fn fuses_gelu(&self) -> bool {
        #[cfg(feature = "openblas")]
        {
            self.blas.gelu
        }
        #[cfg(not(feature = "openblas"))]
        {
            false
        }
    }
}

#[cfg(feature = "openblas")]
struct BlasLinear {
    /// `[out, in]`, row-major, as stored; sgemm reads it transposed.
    weight: ndarray::Array2<f32>,
    bias: Option<ndarray::Array1<f32>>,
    gelu: bool,
}

#[cfg(feature = "openblas")]
impl BlasLinear {
    fn new(weight: &Tensor, bias: Option<&Tensor>, gelu: bool) -> candle_core::Result<Self> {
        let (out, inp) = weight.dims2()?;
        let w = weight.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let weight = ndarray::Array2::from_shape_vec((out, inp), w)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let bias = match bias {
            Some(b) => Some(ndarray::Array1::from_vec(b.to_vec1::<f32>()?)),
            None => None,
        };
        Ok(Self { weight, bias, gelu })
    }
}

#[cfg(feature = "openblas")]
impl BlasLinear {
    /// `y[rows, out] = x[rows, in]·Wᵀ + b` (then GELU) for one block of rows.
    fn block(&self, x: &[f32], y: &mut [f32]) -> candle_core::Result<()> {
        let (out, inp) = self.weight.dim();
        let rows = x.len() / inp.max(1);
        let err = |e: ndarray::ShapeError| candle_core::Error::Msg(e.to_string());
        let x = ndarray::ArrayView2::from_shape((rows, inp), x).map_err(err)?;
        // Start from the bias rows so sgemm's beta = 1 adds it for free.
        match self.bias.as_ref().and_then(|b| b.as_slice()) {
            Some(b) => y
                .chunks_exact_mut(out)
                .for_each(|row| row.copy_from_slice(b)),
            None => y.fill(0.0),
        }
        let mut y_view = ndarray::ArrayViewMut2::from_shape((rows, out), &mut *y).map_err(err)?;
        ndarray::linalg::general_mat_mul(1.0, &x, &self.weight.t(), 1.0, &mut y_view);
        if self.gelu {
            y.iter_mut().for_each(|v| *v = gelu_erf(*v));
        }
        Ok(())
    }
}

/// One application of a `BlasLinear`, with its rows split into `blocks`
/// run in parallel on rayon's pool (1: on the calling thread).
#[cfg(feature = "openblas")]
struct BlasCall<'a> {
    layer: &'a BlasLinear,
    blocks: usize,
}

#[cfg(feature = "openblas")]
impl CustomOp1 for BlasCall<'_> {
    fn name(&self) -> &'static str {
        "blas-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("blas-linear needs a contiguous input".into())
        })?;
        let (out, inp) = self.layer.weight.dim();
        let x = &storage.as_slice::<f32>()?[start..end];
        let rows = x.len() / inp.max(1);
        let mut y = vec![0f32; rows * out];
        // Below ~16 rows per block the GEMM is too thin to pay for the split.
        let blocks = self.blocks.min(rows / 16).max(1);
        if blocks == 1 {
            self.layer.block(x, &mut y)?;
        } else {
            let per = rows.div_ceil(blocks);
            y.par_chunks_mut(per * out)
                .zip(x.par_chunks(per * inp))
                .try_for_each(|(yb, xb)| self.layer.block(xb, yb))?;
        }
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }
}

/// GELU with the exact erf form BERT uses: x·Φ(x) = ½x(1 + erf(x/√2)).
#[cfg(feature = "openblas")]
fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf as a rational function of x² on [-4, 4] (erf is ±1 to f32
/// precision beyond): max error ~1e-7, and no `exp`, so the loop over a
/// row vectorises. Coefficients: the minimax fit used by Eigen and XLA.
#[cfg(feature = "openblas")]
fn erf(x: f32) -> f32 {
    const A: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ];
    const B: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_474e-2,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = A.iter().skip(1).fold(A[0], |acc, &a| acc * x2 + a) * x;
    let q = B.iter().skip(1).fold(B[0], |acc, &b| acc * x2 + b);
    p / q
}

#[cfg(all(test, feature = "openblas"))]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
            (3.5, 0.999_999_3),
            (9.0, 1.0),
        ] {
            assert!(
                (erf(x) - want).abs() < 5e-7,
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn blas_linear_equals_candle_linear() -> candle_core::Result<()> {
        let dev = candle_core::Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (48, 32), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 48, &dev)?;
        let x = Tensor::randn(0f32, 1.0, (7, 32), &dev)?;
        let want = Linear::new(w.clone(), Some(b.clone())).forward(&x)?;
        let got = Dense::new(w.clone(), Some(b.clone()), false)?.forward(&x, 1)?;
        let x64 = Tensor::randn(0f32, 1.0, (64, 32), &dev)?;
        let want64 = Linear::new(w.clone(), Some(b.clone())).forward(&x64)?;
        let split = Dense::new(w.clone(), Some(b.clone()), false)?.forward(&x64, 3)?;
        let diff64 = (want64 - split)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff64 < 1e-4, "row-split linear differs by {diff64}");
        let diff = (want.clone() - got)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "linear differs by {diff}");
        let want_gelu = want.gelu_erf()?;
        let got_gelu = Dense::new(w, Some(b), true)?.forward(&x, 1)?;
        let diff = (want_gelu - got_gelu)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-4, "fused gelu differs by {diff}");
        Ok(())
    }
}
