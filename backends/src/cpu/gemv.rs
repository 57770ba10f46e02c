//! `x W` for a few rows of `x` (the projections and the LM head of a decode step) on the CPU.
//!
//! A decode step multiplies one row (or a handful) by each weight matrix: the time goes into
//! streaming the weight from memory, so the work must be spread over every core. Flex's matmul
//! hands such a product to a single-threaded GEMV below about 7M multiply-adds (every mixer
//! projection of a 130M model), which left one of two cores idle while decoding. Here the
//! weight's columns are split into blocks over the rayon pool, the weight is read in place (a
//! shared parameter is never copied), and either of its layouts is read along its contiguous
//! axis: rows of `W` (K, N) with `acc += x_k W[k, :]`, or rows of `Wᵀ` (N, K) as dot products.

use super::lanes::has_avx2;
use rayon::prelude::*;

/// Products of at most this many rows take this kernel; more rows are a matrix product, for
/// which Flex's blocked GEMM is the better kernel.
pub(crate) const MAX_ROWS: usize = 8;

/// Weights under this many elements are multiplied on the calling thread (a parallel region
/// costs more than the product).
const PARALLEL_MIN: usize = 1 << 15;

/// A weight element the kernel reads: f32 as it is, or bf16 widened to f32 in the register
/// (decoding a bf16 model streams half the bytes of f32).
pub(crate) trait Widen: Copy + Send + Sync + std::fmt::Debug {
    /// The value as f32 (exact: every bf16 value is an f32 value).
    fn widen(self) -> f32;
}

impl Widen for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Widen for burn::tensor::bf16 {
    /// bf16 is f32's upper half.
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
}

/// A weight matrix as a (K, N) view into `data`: element (k, n) at `off + k * sk + n * sn`,
/// with `sn == 1` (rows of `W` contiguous) or `sk == 1` (rows of `Wᵀ` contiguous).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WeightView<'a, T = f32> {
    pub data: &'a [T],
    pub off: usize,
    pub sk: usize,
    pub sn: usize,
    pub k: usize,
    pub n: usize,
}

/// Whether a (k, n) view with strides (sk, sn) has a unit stride along one axis (the layouts
/// this kernel reads).
pub(crate) fn unit_stride(sk: usize, sn: usize, k: usize, n: usize) -> bool {
    sn == 1 || sk == 1 || n == 1 || k == 1
}

impl<T> WeightView<'_, T> {
    /// Whether the view has a unit stride along one axis (the layouts this kernel reads).
    pub fn readable(&self) -> bool {
        unit_stride(self.sk, self.sn, self.k, self.n)
    }

    /// Rows of `W` are contiguous (read as rows; otherwise as columns).
    fn by_rows(&self) -> bool {
        self.sn == 1 || self.n == 1
    }
}

/// Column tiles of a row-layout weight are at most this wide: 16 KiB of accumulator per row of
/// `x` (it stays in L1) and 16 KiB contiguous runs of each weight row (long enough for the
/// hardware prefetcher).
const TILE: usize = 4096;

/// One task of the product: columns `j0 .. j0 + cols` of `x W`, summed over rows `k0 .. k1` of
/// `W`.
#[derive(Debug, Clone, Copy)]
struct Task {
    j0: usize,
    cols: usize,
    k0: usize,
    k1: usize,
}

/// `x W`: `x` (m, K) row-major, `W` the view; returns (m, N) row-major.
///
/// The work is split so that every thread streams contiguous memory: a row-layout weight
/// (`W` (K, N), rows contiguous) into column tiles of at most [`TILE`] columns, and when there
/// are fewer tiles than twice the threads, each tile's rows into ranges whose partial products
/// are summed at the end (a (K, N) weight split by columns alone would make each thread read
/// short strided runs); a column-layout weight (`Wᵀ` contiguous) into blocks of consecutive
/// columns, each a contiguous slab of `Wᵀ`.
///
/// # Panics
/// When the view is not [`WeightView::readable`] or reaches past `data`.
pub(crate) fn rows_matmul<T: Widen>(x: &[f32], m: usize, w: &WeightView<T>) -> Vec<f32> {
    assert!(w.readable(), "rows_matmul: the weight has no unit stride");
    assert_eq!(x.len(), m * w.k, "rows_matmul: x is not (m, K)");
    let (n, k) = (w.n, w.k);
    let threads = rayon::current_num_threads();
    let parallel = threads > 1 && k * n >= PARALLEL_MIN;
    let tasks: Vec<Task> = if w.by_rows() {
        let width = n.clamp(1, TILE);
        let tiles = n.div_ceil(width);
        let k_parts = if parallel {
            (2 * threads).div_ceil(tiles).min(k.div_ceil(16)).max(1)
        } else {
            1
        };
        let k_len = k.div_ceil(k_parts);
        (0..n)
            .step_by(width)
            .flat_map(|j0| {
                (0..k).step_by(k_len.max(1)).map(move |k0| Task {
                    j0,
                    cols: width.min(n - j0),
                    k0,
                    k1: (k0 + k_len).min(k),
                })
            })
            .collect()
    } else {
        // A few blocks per thread for balance, each a multiple of 16 columns.
        let width = if parallel {
            n.div_ceil(4 * threads).next_multiple_of(16).max(64)
        } else {
            n.max(1)
        };
        (0..n)
            .step_by(width)
            .map(|j0| Task {
                j0,
                cols: width.min(n - j0),
                k0: 0,
                k1: k,
            })
            .collect()
    };
    let run = |t: &Task| {
        let mut acc = vec![0.0f32; m * t.cols];
        block(x, m, w, t, &mut acc);
        acc
    };
    let parts: Vec<Vec<f32>> = if parallel {
        tasks.par_iter().map(run).collect()
    } else {
        tasks.iter().map(run).collect()
    };
    if m == 1 && tasks.iter().all(|t| t.k0 == 0 && t.k1 == k) {
        return parts.concat();
    }
    let mut out = vec![0.0f32; m * n];
    for (t, part) in tasks.iter().zip(&parts) {
        for r in 0..m {
            let dst = &mut out[r * n + t.j0..r * n + t.j0 + t.cols];
            for (o, p) in dst.iter_mut().zip(&part[r * t.cols..(r + 1) * t.cols]) {
                *o += p;
            }
        }
    }
    out
}

/// One task into `acc` (m, cols), with the AVX2 + FMA build of the body where the CPU has it.
fn block<T: Widen>(x: &[f32], m: usize, w: &WeightView<T>, t: &Task, acc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        #[target_feature(enable = "avx2,fma")]
        fn avx2<T: Widen>(x: &[f32], m: usize, w: &WeightView<T>, t: &Task, acc: &mut [f32]) {
            block_body(x, m, w, t, acc)
        }
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { avx2(x, m, w, t, acc) };
    }
    block_body(x, m, w, t, acc)
}

#[inline(always)]
fn block_body<T: Widen>(x: &[f32], m: usize, w: &WeightView<T>, t: &Task, acc: &mut [f32]) {
    let (k, j0, cols) = (w.k, t.j0, t.cols);
    if w.by_rows() {
        // acc[r, :] += x[r, k] W[k, j0..j0 + cols], four rows of W per pass over acc.
        let row = |kk: usize| &w.data[w.off + kk * w.sk + j0..][..cols];
        let mut kk = t.k0;
        while kk + 4 <= t.k1 {
            let (w0, w1, w2, w3) = (row(kk), row(kk + 1), row(kk + 2), row(kk + 3));
            for r in 0..m {
                let xr = &x[r * k + kk..r * k + kk + 4];
                let (x0, x1, x2, x3) = (xr[0], xr[1], xr[2], xr[3]);
                let a = &mut acc[r * cols..(r + 1) * cols];
                for ((((a, p0), p1), p2), p3) in a.iter_mut().zip(w0).zip(w1).zip(w2).zip(w3) {
                    *a += x0 * p0.widen() + x1 * p1.widen() + x2 * p2.widen() + x3 * p3.widen();
                }
            }
            kk += 4;
        }
        for kk in kk..t.k1 {
            let w0 = row(kk);
            for r in 0..m {
                let x0 = x[r * k + kk];
                for (a, p0) in acc[r * cols..(r + 1) * cols].iter_mut().zip(w0) {
                    *a += x0 * p0.widen();
                }
            }
        }
    } else {
        // Column j of W is row j of Wᵀ, contiguous: one dot product per row of x.
        for j in 0..cols {
            let col = &w.data[w.off + (j0 + j) * w.sn..][..k];
            for r in 0..m {
                acc[r * cols + j] = dot32(&x[r * k..(r + 1) * k], col);
            }
        }
    }
}

/// Dot product with 32 independent partial sums (four AVX2 registers: enough to hide the
/// latency of the adds).
#[inline(always)]
fn dot32<T: Widen>(a: &[f32], b: &[T]) -> f32 {
    let mut acc = [0.0f32; 32];
    let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (pa, pb) in ca.zip(cb) {
        for i in 0..32 {
            acc[i] += pa[i] * pb[i].widen();
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (p, q) in ra.iter().zip(rb) {
        s += p * q.widen();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain triple loop, in f64.
    fn naive(x: &[f32], m: usize, w: &WeightView) -> Vec<f32> {
        let mut out = vec![0.0f32; m * w.n];
        for r in 0..m {
            for j in 0..w.n {
                let mut s = 0.0f64;
                for kk in 0..w.k {
                    s += x[r * w.k + kk] as f64 * w.data[w.off + kk * w.sk + j * w.sn] as f64;
                }
                out[r * w.n + j] = s as f32;
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
            .collect()
    }

    /// Both layouts, serial and parallel sizes, K not a multiple of 4 or 32, N not a multiple
    /// of the block width, an offset into the storage: within 1e-5 of the f64 product.
    #[test]
    fn both_layouts_match_the_triple_loop() {
        let sizes = [
            (1, 7, 5),
            (3, 37, 70),
            (1, 300, 1000),
            (5, 129, 517),
            (8, 64, 1),
            // Several column tiles, each split over row ranges; one tile split over rows.
            (2, 70, 9000),
            (1, 768, 3072),
        ];
        for &(m, k, n) in &sizes {
            let x = values(m * k, 1);
            let data = values(3 + k * n, 2);
            for by_rows in [true, false] {
                let (sk, sn) = if by_rows { (n, 1) } else { (1, k) };
                let w = WeightView {
                    data: &data,
                    off: 3,
                    sk,
                    sn,
                    k,
                    n,
                };
                let got = rows_matmul(&x, m, &w);
                let want = naive(&x, m, &w);
                for (g, e) in got.iter().zip(&want) {
                    assert!(
                        (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
                        "m {m} k {k} n {n} by_rows {by_rows}: {g} vs {e}"
                    );
                }
            }
        }
    }

    /// Every bf16 bit pattern widens to the f32 value `half` gives it (NaN to a NaN).
    #[test]
    fn widen_is_exact_for_every_bf16_value() {
        use burn::tensor::bf16;
        for bits in 0..=u16::MAX {
            let (got, want) = (
                bf16::from_bits(bits).widen(),
                bf16::from_bits(bits).to_f32(),
            );
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}: {got} vs {want}"
            );
        }
    }

    /// The product from bf16 weights, both layouts, against the f64 product of the widened
    /// weights: within 1e-5 (the kernel widens exactly, so only the order differs).
    #[test]
    fn bf16_weights_match_the_widened_product() {
        use burn::tensor::bf16;
        for &(m, k, n) in &[(1, 300, 1000), (3, 129, 517), (2, 70, 9000)] {
            let x = values(m * k, 1);
            let raw = values(k * n, 2);
            let as_bf16: Vec<bf16> = raw.iter().map(|&v| bf16::from_f32(v)).collect();
            for by_rows in [true, false] {
                let (sk, sn) = if by_rows { (n, 1) } else { (1, k) };
                let wide_b: Vec<f32> = as_bf16.iter().map(|v| v.to_f32()).collect();
                macro_rules! view {
                    ($data:expr) => {
                        WeightView {
                            data: &$data[..],
                            off: 0,
                            sk,
                            sn,
                            k,
                            n,
                        }
                    };
                }
                let got_b = rows_matmul(&x, m, &view!(as_bf16));
                let want = naive(&x, m, &view!(wide_b));
                for (g, e) in got_b.iter().zip(&want) {
                    assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "{g} vs {e}");
                }
            }
        }
    }
}
