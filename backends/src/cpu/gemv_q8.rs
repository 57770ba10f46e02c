//! `x Wᵀ` for a few rows of `x` with `W` (N, K) held in 8 bits (the decode products of a model
//! quantized with [`crate::quantize_q8`]), on every core, in integer dot products.
//!
//! Batch-1 decoding reads every weight once per token, so its speed is the memory bandwidth
//! over the bytes read: int8 weights with one f32 scale per block of `bk` consecutive elements
//! along K read `1 + 4 / bk` bytes per weight instead of 4. Widening each int8 weight to f32
//! for an f32 multiply-add runs at about 16 G weights/s on two cores, under the bandwidth, so
//! the products are integer ones, as llama.cpp's `q8_0` dot product: each row of `x` is
//! quantized per block of `bk` (`x ≈ dx_b xq`, `dx_b = max |x_b| / 127`), and
//! `y[n] = Σ_b s[n, b] dx_b Σ_{i in b} xq[i] q[n, i]`, the inner sums exact in i32 (AVX2's
//! `maddubs` / `madd` where the CPU has them) and each block's sum scaled once in f32. The
//! embedding lookup ([`gather_rows`]) and the dequantization of a whole matrix for a many-row
//! product ([`dequantize`]) read the same layout.

use super::lanes::has_avx2;
use rayon::prelude::*;

/// Weights under this many elements are multiplied on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;

/// An 8-bit (N, K) weight matrix: `q` row-major, `scales` (N, K / bk) row-major; element
/// (n, k) is `scales[n, k / bk] q[n, k]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Q8View<'a> {
    /// The int8 values, starting at element (0, 0).
    pub q: &'a [i8],
    /// One scale per block.
    pub scales: &'a [f32],
    /// The reduction length (a row's).
    pub k: usize,
    /// The number of rows (outputs).
    pub n: usize,
    /// Elements per block along K (divides K).
    pub bk: usize,
}

impl Q8View<'_> {
    /// Whether the sizes agree with each other (checked before any kernel reads the view).
    pub fn consistent(&self) -> bool {
        self.bk > 0
            && self.k.is_multiple_of(self.bk)
            && self.q.len() >= self.k * self.n
            && self.scales.len() >= self.k / self.bk * self.n
    }
}

/// Rows of `x` quantized per block of `bk`: `xq` (m, K) and `dx` (m, K / bk), with
/// `x ≈ dx[r, k / bk] xq[r, k]`, `dx = max |x| / 127` over the block (0 for a block of zeros),
/// `xq = round(x / dx)` in [-127, 127].
pub(crate) fn quantize_rows(x: &[f32], bk: usize) -> (Vec<i8>, Vec<f32>) {
    let mut xq = vec![0i8; x.len()];
    let mut dx = Vec::with_capacity(x.len() / bk);
    for (xb, qb) in x.chunks_exact(bk).zip(xq.chunks_exact_mut(bk)) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        dx.push(d);
        if d > 0.0 {
            let inv = 1.0 / d;
            for (q, &v) in qb.iter_mut().zip(xb) {
                *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
            }
        }
    }
    (xq, dx)
}

/// `x Wᵀ` with `x` (m, K) row-major and `W` the 8-bit view; returns (m, N) row-major.
///
/// # Panics
/// When `x` is not (m, K) or the view is not [`Q8View::consistent`].
pub(crate) fn rows_matmul_q8(x: &[f32], m: usize, w: &Q8View) -> Vec<f32> {
    assert!(w.consistent(), "rows_matmul_q8: inconsistent view {w:?}");
    assert_eq!(x.len(), m * w.k, "rows_matmul_q8: x is not (m, K)");
    let (k, n) = (w.k, w.n);
    let (xq, dx) = quantize_rows(x, w.bk);
    let threads = rayon::current_num_threads();
    let parallel = threads > 1 && k * n >= PARALLEL_MIN;
    // A few blocks of consecutive rows of W per thread (each a contiguous slab), for balance.
    let width = if parallel {
        n.div_ceil(4 * threads).next_multiple_of(16).max(64)
    } else {
        n.max(1)
    };
    let run = |j0: usize| {
        let cols = width.min(n - j0);
        let mut out = vec![0.0f32; m * cols];
        block(&xq, &dx, m, w, j0, cols, &mut out);
        out
    };
    let starts: Vec<usize> = (0..n).step_by(width).collect();
    let parts: Vec<Vec<f32>> = if parallel {
        starts.par_iter().map(|&j0| run(j0)).collect()
    } else {
        starts.iter().map(|&j0| run(j0)).collect()
    };
    if m == 1 {
        return parts.concat();
    }
    let mut out = vec![0.0f32; m * n];
    for (&j0, part) in starts.iter().zip(&parts) {
        let cols = width.min(n - j0);
        for r in 0..m {
            out[r * n + j0..r * n + j0 + cols].copy_from_slice(&part[r * cols..(r + 1) * cols]);
        }
    }
    out
}

/// Rows `j0 .. j0 + cols` of `W` against every row of `xq` into `out` (m, cols).
fn block(xq: &[i8], dx: &[f32], m: usize, w: &Q8View, j0: usize, cols: usize, out: &mut [f32]) {
    let (k, bk) = (w.k, w.bk);
    let blocks = k / bk;
    let row = |j: usize| {
        (
            &w.q[(j0 + j) * k..][..k],
            &w.scales[(j0 + j) * blocks..][..blocks],
        )
    };
    for r in 0..m {
        let (xr, dr) = (&xq[r * k..(r + 1) * k], &dx[r * blocks..(r + 1) * blocks]);
        let o = &mut out[r * cols..(r + 1) * cols];
        for (j, o) in o.iter_mut().enumerate() {
            let (q, s) = row(j);
            *o = dot_q8(xr, dr, q, s, bk);
        }
    }
}

/// `Σ_b dx[b] s[b] Σ_{i in b} xq[i] q[i]`, AVX2's integer dot products where the CPU has them.
fn dot_q8(xq: &[i8], dx: &[f32], q: &[i8], s: &[f32], bk: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if (bk == 32 || bk.is_multiple_of(64)) && xq.len().is_multiple_of(64) && has_vnni512() {
        // SAFETY: the CPU has AVX-512 F/BW/DQ/VNNI (checked above); the sizes as required.
        return unsafe { vnni512::dot_q8(xq, dx, q, s, bk) };
    }
    #[cfg(target_arch = "x86_64")]
    if bk.is_multiple_of(32) && has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { avx2::dot_q8(xq, dx, q, s, bk) };
    }
    let mut acc = 0.0f32;
    for (((xb, qb), &d), &sb) in xq.chunks_exact(bk).zip(q.chunks_exact(bk)).zip(dx).zip(s) {
        let dot: i32 = xb
            .iter()
            .zip(qb)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
        acc += d * sb * dot as f32;
    }
    acc
}

/// Whether this CPU has AVX-512 F, BW, DQ and VNNI (checked once), and the kernel is not
/// turned off (`SSM_ZOO_NO_AVX512=1`, to compare the AVX2 kernel on the same machine).
#[cfg(target_arch = "x86_64")]
fn has_vnni512() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::env::var_os("SSM_ZOO_NO_AVX512").is_none()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vnni")
    })
}

#[cfg(target_arch = "x86_64")]
mod vnni512 {
    use std::arch::x86_64::*;

    /// [`super::dot_q8`] with AVX-512 VNNI: per 64 values, `|xq|` (u8) times `q` negated where
    /// `xq` is negative, four products summed into each i32 lane by one `vpdpbusd` (exact: at
    /// most 4 · 127² per lane and call); blocks of 32 take one register per two blocks (lanes
    /// 0-7 the first, 8-15 the second, scaled by a vector holding both blocks' scales), longer
    /// blocks sum their registers in i32 first.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW, DQ and VNNI; `bk` is 32 or a multiple of 64; `xq` holds a
    /// multiple of 64 values and `q` as many, `dx` and `s` one per block of them.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni")]
    pub(super) unsafe fn dot_q8(xq: &[i8], dx: &[f32], q: &[i8], s: &[f32], bk: usize) -> f32 {
        let zero = _mm512_setzero_si512();
        let mut acc = _mm512_setzero_ps();
        // (x, q) products of the 64 values at `at`, four to a lane, added to `sum` (a macro,
        // not a closure: a closure would not inherit this function's target features).
        macro_rules! products {
            ($sum:expr, $at:expr) => {{
                let at = $at;
                // SAFETY: at + 64 <= len (the caller's sizes); unaligned loads.
                let (xv, qv) = unsafe {
                    (
                        _mm512_loadu_si512(xq.as_ptr().add(at).cast()),
                        _mm512_loadu_si512(q.as_ptr().add(at).cast()),
                    )
                };
                let negative = _mm512_movepi8_mask(xv);
                let sq = _mm512_mask_sub_epi8(qv, negative, zero, qv);
                _mm512_dpbusd_epi32($sum, _mm512_abs_epi8(xv), sq)
            }};
        }
        if bk == 32 {
            // Lane i of the scales: block 2c + i / 8.
            let spread = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
            for c in 0..xq.len() / 64 {
                let sum = products!(zero, 64 * c);
                let pair = _mm_set_ps(0.0, 0.0, dx[2 * c + 1] * s[2 * c + 1], dx[2 * c] * s[2 * c]);
                let scale = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(pair));
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc);
            }
        } else {
            for b in 0..xq.len() / bk {
                let mut sum = zero;
                for c in (0..bk).step_by(64) {
                    sum = products!(sum, b * bk + c);
                }
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(dx[b] * s[b]), acc);
            }
        }
        _mm512_reduce_add_ps(acc)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::dot_q8`] for blocks of a multiple of 32: per 32 values, `|xq|` (u8) times `q`
    /// with `xq`'s sign (`maddubs`, pairs summed in i16: at most 2 · 127² < 2¹⁵, no
    /// saturation), the pairs summed in i32 (`madd` by ones), each block's sums widened to f32
    /// and added times the block's scales into eight running sums. (Four rows of W per pass
    /// over x measured 1.7x slower on the LM head's shape: one contiguous row at a time is
    /// what the prefetcher streams best.)
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `bk` is a multiple of 32; `xq` and `q` hold as many values,
    /// `dx` and `s` one per block of them.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_q8(xq: &[i8], dx: &[f32], q: &[i8], s: &[f32], bk: usize) -> f32 {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let blocks = xq.len() / bk;
        for b in 0..blocks {
            let mut sum = _mm256_setzero_si256();
            for c in (0..bk).step_by(32) {
                let at = b * bk + c;
                // SAFETY: at + 32 <= len (bk a multiple of 32, b < blocks); unaligned loads.
                let (xv, qv) = unsafe {
                    (
                        _mm256_loadu_si256(xq.as_ptr().add(at).cast()),
                        _mm256_loadu_si256(q.as_ptr().add(at).cast()),
                    )
                };
                let ax = _mm256_sign_epi8(xv, xv);
                let sq = _mm256_sign_epi8(qv, xv);
                let pairs = _mm256_maddubs_epi16(ax, sq);
                sum = _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, ones));
            }
            let scale = _mm256_set1_ps(dx[b] * s[b]);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc);
        }
        let hi = _mm256_extractf128_ps(acc, 1);
        let lo = _mm256_castps256_ps128(acc);
        let v = _mm_add_ps(hi, lo);
        let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
        let v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
        _mm_cvtss_f32(v)
    }
}

/// Rows `ids` of the view, dequantized: (ids.len(), K).
///
/// # Panics
/// When the view is inconsistent or an id is not below N (the caller checks).
pub(crate) fn gather_rows(w: &Q8View, ids: &[usize]) -> Vec<f32> {
    assert!(w.consistent(), "gather_rows: inconsistent view {w:?}");
    let (k, bk) = (w.k, w.bk);
    let mut out = vec![0.0f32; ids.len() * k];
    for (dst, &id) in out.chunks_exact_mut(k).zip(ids) {
        assert!(id < w.n, "gather_rows: row {id} of {}", w.n);
        let q = &w.q[id * k..][..k];
        let s = &w.scales[id * (k / bk)..][..k / bk];
        for ((d, q), &s) in dst.chunks_exact_mut(bk).zip(q.chunks_exact(bk)).zip(s) {
            for (d, &q) in d.iter_mut().zip(q) {
                *d = s * f32::from(q);
            }
        }
    }
    out
}

/// The whole (N, K) matrix in f32, on every core: a many-row product multiplies it by Flex's
/// GEMM.
pub(crate) fn dequantize(w: &Q8View) -> Vec<f32> {
    assert!(w.consistent(), "dequantize: inconsistent view {w:?}");
    let (k, n) = (w.k, w.n);
    let mut out = vec![0.0f32; k * n];
    let rows: Vec<usize> = (0..n).collect();
    out.par_chunks_mut(k * 256)
        .zip(rows.par_chunks(256))
        .for_each(|(dst, ids)| dst.copy_from_slice(&gather_rows(w, ids)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
            .collect()
    }

    /// Int8 values over the whole range and positive scales.
    fn view_data(k: usize, n: usize, bk: usize) -> (Vec<i8>, Vec<f32>) {
        let q = (0..k * n)
            .map(|i| ((i as u32).wrapping_mul(2_246_822_519) >> 24) as u8 as i8)
            .map(|v| v.max(-127))
            .collect();
        let s = values(k / bk * n, 7)
            .iter()
            .map(|v| 0.01 + v.abs())
            .collect();
        (q, s)
    }

    /// Element (n, k) of the view in f32 (the dequantized weight).
    fn weight(w: &Q8View, j: usize, kk: usize) -> f32 {
        w.scales[j * (w.k / w.bk) + kk / w.bk] * f32::from(w.q[j * w.k + kk])
    }

    /// The 8-bit product against the f64 product of the dequantized weight and the quantized
    /// rows of x: equal up to f32 summation order (1e-5 relative to the sum of magnitudes;
    /// the integer sums are exact), for blocks of 32, 64 and 128 (the AVX2 kernel) and 8 (the
    /// portable loop), serial and parallel sizes, m up to 8; against the unquantized x within
    /// the rounding of x (half a step of each block, 1/254 of its largest value); the gathered
    /// rows and the dequantized matrix exactly the dequantized weight.
    #[test]
    fn the_product_matches_the_dequantized_one() {
        let sizes = [
            (1, 32, 5, 32),
            (3, 64, 70, 32),
            (1, 768, 3072, 32),
            (2, 1536, 768, 128),
            (8, 256, 2500, 64),
            (1, 24, 50, 8),
            (4, 128, 300, 8),
        ];
        for &(m, k, n, bk) in &sizes {
            let x = values(m * k, 1);
            let (q, scales) = view_data(k, n, bk);
            let w = Q8View {
                q: &q,
                scales: &scales,
                k,
                n,
                bk,
            };
            let got = rows_matmul_q8(&x, m, &w);
            let (xq, dx) = quantize_rows(&x, bk);
            for r in 0..m {
                for j in 0..n {
                    let (mut s, mut mag, mut exact, mut round) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
                    for kk in 0..k {
                        let wv = weight(&w, j, kk) as f64;
                        let xv = dx[(r * k + kk) / bk] as f64 * xq[r * k + kk] as f64;
                        s += xv * wv;
                        mag += (xv * wv).abs();
                        exact += x[r * k + kk] as f64 * wv;
                        round += 0.5 * dx[(r * k + kk) / bk] as f64 * wv.abs();
                    }
                    let g = got[r * n + j] as f64;
                    assert!(
                        (g - s).abs() <= 1e-5 * mag + 1e-30,
                        "m {m} k {k} n {n} bk {bk} ({r}, {j}): {g} vs {s}"
                    );
                    assert!(
                        (g - exact).abs() <= round * 1.001 + 1e-5 * mag,
                        "m {m} k {k} n {n} bk {bk} ({r}, {j}): {g} vs unquantized x {exact}"
                    );
                }
            }
            let deq = dequantize(&w);
            for j in 0..n {
                for kk in 0..k {
                    assert_eq!(deq[j * k + kk], weight(&w, j, kk));
                }
            }
            let ids = [n - 1, 0, n / 2, 0];
            let rows = gather_rows(&w, &ids);
            for (i, &id) in ids.iter().enumerate() {
                for kk in 0..k {
                    assert_eq!(rows[i * k + kk], weight(&w, id, kk));
                }
            }
        }
    }

    /// Each build of the dot product this CPU runs (AVX-512 VNNI, AVX2, the portable loop)
    /// gives the same sums as the portable loop up to f32 summation order, on blocks of 32 and
    /// 128 (a kernel the CPU lacks is not run; the product test above runs the one picked).
    #[test]
    fn every_dot_product_build_agrees() {
        let mut rng = 12345u32;
        let mut next = || {
            rng = rng.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((rng >> 24) as u8 as i8).max(-127)
        };
        for bk in [32, 128] {
            let k = 768;
            let xq: Vec<i8> = (0..k).map(|_| next()).collect();
            let q: Vec<i8> = (0..k).map(|_| next()).collect();
            let dx = values(k / bk, 3)
                .iter()
                .map(|v| v.abs() + 0.1)
                .collect::<Vec<_>>();
            let s = values(k / bk, 4)
                .iter()
                .map(|v| v.abs() + 0.1)
                .collect::<Vec<_>>();
            let mut portable = 0.0f64;
            let mut mag = 0.0f64;
            for b in 0..k / bk {
                let dot: i64 = (b * bk..(b + 1) * bk)
                    .map(|i| i64::from(xq[i]) * i64::from(q[i]))
                    .sum();
                portable += dx[b] as f64 * s[b] as f64 * dot as f64;
                mag += dx[b] as f64 * s[b] as f64 * dot.unsigned_abs() as f64;
            }
            let mut builds = vec![("dispatch", dot_q8(&xq, &dx, &q, &s, bk))];
            #[cfg(target_arch = "x86_64")]
            {
                if has_avx2() {
                    // SAFETY: the CPU has AVX2 and FMA; bk is a multiple of 32.
                    builds.push(("avx2", unsafe { avx2::dot_q8(&xq, &dx, &q, &s, bk) }));
                }
                if has_vnni512() {
                    // SAFETY: the CPU has AVX-512 VNNI; bk is 32 or 128, K a multiple of 64.
                    builds.push(("vnni512", unsafe { vnni512::dot_q8(&xq, &dx, &q, &s, bk) }));
                }
            }
            for (name, got) in builds {
                assert!(
                    (got as f64 - portable).abs() <= 1e-5 * mag,
                    "{name} bk {bk}: {got} vs {portable}"
                );
            }
        }
    }

    /// Rows of zeros quantize to zero steps (no division by zero) and multiply to zero.
    #[test]
    fn zero_rows_stay_zero() {
        let (q, scales) = view_data(64, 3, 32);
        let w = Q8View {
            q: &q,
            scales: &scales,
            k: 64,
            n: 3,
            bk: 32,
        };
        assert_eq!(rows_matmul_q8(&[0.0; 64], 1, &w), vec![0.0; 3]);
    }
}
