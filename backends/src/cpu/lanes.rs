//! The scalar and SIMD-lane primitives the fused CPU kernels share: a vectorisable `exp`, the
//! softplus and SiLU, dot products, the time-major layout of B and C, and the state update of
//! `W` channels at once (one per lane).

use rayon::prelude::*;

/// `exp(x)` for f32 to about 1 ulp: Cody-Waite range reduction and a degree-6 polynomial, with
/// no branch so that loops over it vectorise. Inputs are clamped to the finite range of f32.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    // max/min rather than clamp: no NaN special case, so the loops stay branch-free.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.336_55).min(88.376_26);
    // Adding ROUND leaves round(x / ln 2) in the low mantissa bits: read it there as an
    // integer, with no float-to-int conversion (Rust's saturating `as` would not vectorise).
    let kr = x * LOG2E + ROUND;
    let ki = (kr.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let k = kr - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits(((ki + 127) as u32) << 23);
    e * scale
}

/// `ln(1 + y)` for `y` in [0, 1], as `2 atanh(y / (2 + y))` by its odd series (error below
/// 1e-8 relative); branch-free so that loops over it vectorise.
#[inline(always)]
pub(crate) fn ln1p_unit(y: f32) -> f32 {
    let s = y / (2.0 + y);
    let s2 = s * s;
    let mut p = 1.0 / 13.0;
    p = p * s2 + 1.0 / 11.0;
    p = p * s2 + 1.0 / 9.0;
    p = p * s2 + 1.0 / 7.0;
    p = p * s2 + 1.0 / 5.0;
    p = p * s2 + 1.0 / 3.0;
    2.0 * s * (p * s2 + 1.0)
}

/// Softplus with the vectorisable `exp_approx` and `ln1p_unit`.
#[inline(always)]
pub(crate) fn softplus_fast(x: f32) -> f32 {
    x.max(0.0) + ln1p_unit(exp_approx(-x.abs()))
}

/// `x * sigmoid(x)` with `exp_approx`.
#[inline(always)]
pub(crate) fn silu_fast(x: f32) -> f32 {
    x / (1.0 + exp_approx(-x))
}

#[inline(always)]
pub(crate) fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// Dot product with eight independent partial sums (vectorisable).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    // Zipped fixed-width chunks: no bounds checks, so the eight sums become one register.
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (pa, pb) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += pa[j] * pb[j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// (B, G, N, L) -> (B, G, L, N), so that each time step reads N contiguous values.
pub(crate) fn to_time_major(x: &[f32], outer: usize, n: usize, l: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(n * l)
        .zip(x.par_chunks(n * l))
        .take(outer)
        .for_each(|(o, i)| {
            for ni in 0..n {
                for t in 0..l {
                    o[t * n + ni] = i[ni * l + t];
                }
            }
        });
    out
}

/// Effective step at one time: `delta + bias`, through softplus when asked.
#[inline(always)]
pub(crate) fn step_size(raw: f32, softplus_on: bool) -> f32 {
    if softplus_on { softplus(raw) } else { raw }
}

/// One state update `h = exp(dt A) h + dt u B`, returning `C . h`.
#[inline(always)]
pub(crate) fn update(h: &mut [f32], a: &[f32], b: &[f32], c: &[f32], dt: f32, du: f32) -> f32 {
    for n in 0..h.len() {
        h[n] = exp_approx(dt * a[n]) * h[n] + du * b[n];
    }
    dot(h, c)
}

/// Whether this CPU has AVX2 and FMA (checked once).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Channels scanned together, one per SIMD lane.
pub(crate) const LANES: usize = 8;

/// `exp_approx` of each lane, as one array operation (unrolled, then vectorised).
#[inline(always)]
pub(crate) fn lanes_exp<const W: usize>(mut x: [f32; W]) -> [f32; W] {
    for v in x.iter_mut() {
        *v = exp_approx(*v);
    }
    x
}

/// [`advance`] that also returns `C . h` per lane (the forward's output).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(crate) fn advance_dot<const W: usize>(
    h: &mut [[f32; W]],
    a: &[[f32; W]],
    b: &[f32],
    cm: &[f32],
    dtv: [f32; W],
    du: [f32; W],
) -> [f32; W] {
    let mut acc = [0.0f32; W];
    for (((hk, ak), &bk), &ck) in h.iter_mut().zip(a).zip(b).zip(cm) {
        let e = lanes_exp::<W>(std::array::from_fn(|c| dtv[c] * ak[c]));
        for c in 0..W {
            hk[c] = e[c] * hk[c] + du[c] * bk;
            acc[c] += ck * hk[c];
        }
    }
    acc
}

/// One step of the state for `W` lanes in place: `h = exp(dt A) h + dt u B`. The buffers are
/// separate reference arguments so the compiler knows they do not overlap and vectorises.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(crate) fn advance<const W: usize>(
    h: &mut [[f32; W]],
    a: &[[f32; W]],
    b: &[f32],
    dtv: [f32; W],
    du: [f32; W],
) {
    for ((hk, ak), &bk) in h.iter_mut().zip(a).zip(b) {
        let e = lanes_exp::<W>(std::array::from_fn(|c| dtv[c] * ak[c]));
        for c in 0..W {
            hk[c] = e[c] * hk[c] + du[c] * bk;
        }
    }
}

/// [`advance`] from `prev` into `next`, keeping the decays `exp(dt A)`.
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn advance_keep<const W: usize>(
    next: &mut [[f32; W]],
    prev: &[[f32; W]],
    decays: &mut [[f32; W]],
    a: &[[f32; W]],
    b: &[f32],
    dtv: [f32; W],
    du: [f32; W],
) {
    for ((((nx, pv), d), ak), &bk) in next.iter_mut().zip(prev).zip(decays).zip(a).zip(b) {
        let e = lanes_exp::<W>(std::array::from_fn(|c| dtv[c] * ak[c]));
        *d = e;
        for c in 0..W {
            nx[c] = e[c] * pv[c] + du[c] * bk;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_matches_std_to_two_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp_approx(x) as f64;
            assert!(got.is_finite(), "exp_approx({x}) = {got}");
            worst = worst.max(((got - want) / want).abs());
            x += 0.013;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert!(exp_approx(-200.0) >= 0.0);
    }

    #[test]
    fn fast_softplus_and_silu_match_std() {
        let mut x = -30.0f32;
        while x < 30.0 {
            let sp = (x as f64).exp().ln_1p();
            let got = softplus_fast(x) as f64;
            assert!(
                (got - sp).abs() <= 3e-7 * sp.max(1e-30) + 1e-12,
                "softplus({x}): {got} vs {sp}"
            );
            let si = x as f64 / (1.0 + (-x as f64).exp());
            let got = silu_fast(x) as f64;
            assert!(
                (got - si).abs() <= 3e-7 * si.abs() + 1e-30,
                "silu({x}): {got} vs {si}"
            );
            x += 0.0137;
        }
        assert!(exp_approx(0.0) == 1.0);
    }
}
