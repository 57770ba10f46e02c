//! The backend-extension trait holding the ops that SSMs need and Burn lacks: one trait for
//! every op (Burn's `#[backend_extension]` generates the run-time dispatch from it).
//!
//! Each method's default body is its op's reference body (`crate::<op>::reference`); the CPU
//! backends (Flex, NdArray) override it in `crate::cpu`, the CubeCL backend in `crate::cube`,
//! `Autodiff` in `crate::autodiff`, each override one call into the op's own file
//! (`crate::<op>::{cpu, cube, autodiff}`); under `Fusion` each op is recorded as one custom
//! operation that runs the inner backend's implementation, its output shapes from
//! `crate::<op>::fusion`, or takes its default body (`#[fusion(default)]`).

// The generated dispatch names Burn's NdArray backend (deprecated in Burn 0.22) when the
// `ndarray` feature is on.
#![allow(deprecated)]

use crate::scan::reference::{BACKWARD_CHUNK, ScanArgs};
use crate::{cauchy, fft, linear, mamba3_step, norm, scan, ssd, step, vandermonde};
use burn::backend::{
    Backend, backend_extension,
    tensor::{FloatTensor, IntTensor, QuantizedTensor},
};

/// SSM ops as a Burn backend extension.
///
/// Call them through the tensor-level functions at the crate root ([`crate::SelectiveScan`],
/// [`crate::ssd()`], [`crate::mamba_decode_step`], [`crate::rfft`], ...), which take `Tensor`s on
/// any device and check their shapes; the methods here take backend primitives.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Fusion: cfg(any(feature = "wgpu", feature = "cuda")),
    Autodiff
)]
pub trait SsmOps: Backend {
    /// The selective scan of Mamba (mamba_ssm's `selective_scan_fn`).
    ///
    /// With `dt = softplus(delta + delta_bias)` (or without the softplus), for each batch `b`,
    /// channel `d` (of group `g`) and step `t`:
    /// `h_t = exp(dt_t A_d) * h_{t-1} + dt_t B_{g,t} u_t`, `y_t = (C_{g,t} . h_t + D_d u_t) * silu(z_t)`.
    ///
    /// Shapes: `u`, `delta`, `z` (B, D, L); `a` (D, N); `b`, `c` (B, G, N, L); `d`,
    /// `delta_bias` (D); `initial_state` (B, D, N). With `has_reset`, `reset` (B, L) holds 1
    /// where a new sequence starts inside a row (packed documents): the state before that step
    /// is zeroed (`h_{t-1} := 0`); without it `reset` is a stand-in and ignored. Returns `y`
    /// (B, D, L) and the final state (B, D, N).
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = scan::fusion::selective_scan)]
    fn selective_scan(
        u: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        z: FloatTensor<Self>,
        gate: bool,
        delta_bias: FloatTensor<Self>,
        initial_state: FloatTensor<Self>,
        reset: FloatTensor<Self>,
        has_reset: bool,
        delta_softplus: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        scan::reference::selective_scan::<Self>(ScanArgs::<Self>::from_op(
            u,
            delta,
            a,
            b,
            c,
            d,
            z,
            gate,
            delta_bias,
            initial_state,
            reset,
            has_reset,
            delta_softplus,
        ))
    }

    /// Gradients of [`SsmOps::selective_scan`] given `dy` (B, D, L) and `dstate` (B, D, N), in
    /// the order (u, delta, A, B, C, D, z, delta_bias, initial_state); `z`'s only when a gate was
    /// given (a `[1]` zero tensor stands in otherwise). A reverse scan that recomputes the states
    /// chunk by chunk.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    #[fusion(meta = scan::fusion::selective_scan_backward)]
    fn selective_scan_backward(
        u: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        z: FloatTensor<Self>,
        gate: bool,
        delta_bias: FloatTensor<Self>,
        initial_state: FloatTensor<Self>,
        reset: FloatTensor<Self>,
        has_reset: bool,
        dy: FloatTensor<Self>,
        dstate: FloatTensor<Self>,
        delta_softplus: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let args = ScanArgs::<Self>::from_op(
            u,
            delta,
            a,
            b,
            c,
            d,
            z,
            gate,
            delta_bias,
            initial_state,
            reset,
            has_reset,
            delta_softplus,
        );
        scan::reference::selective_scan_backward::<Self>(args, dy, dstate, BACKWARD_CHUNK)
            .into_tuple()
    }

    /// One decode step of the selective SSM: with `dt = softplus(dt + dt_bias)` (or without the
    /// softplus), `h = exp(dt A) h + dt B x`, `y = (C . h + D x) * silu(z)` for every (batch,
    /// channel). Shapes: `state` (B, D, N); `x`, `dt`, `z` (B, D); `a` (D, N); `b`, `c`
    /// (B, G, N); `d`, `dt_bias` (D).
    /// Returns `y` (B, D) and the new state (B, D, N).
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = step::fusion::selective_state_step)]
    fn selective_state_step(
        state: FloatTensor<Self>,
        x: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        z: FloatTensor<Self>,
        gate: bool,
        dt_bias: FloatTensor<Self>,
        dt_softplus: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        step::reference::selective_state_step::<Self>(
            state,
            x,
            dt,
            a,
            b,
            c,
            d,
            gate.then_some(z),
            dt_bias,
            dt_softplus,
        )
    }

    /// One decode step of a causal depthwise conv1d with a rolling (B, C, K) state holding the
    /// last K inputs: `x` (B, C) enters the window, the output is `bias + Σ_k weight[c, k]
    /// window[k]` (through SiLU when `silu`). Returns the output (B, C) and the new state.
    #[fusion(meta = step::fusion::causal_conv1d_step)]
    fn causal_conv1d_step(
        x: FloatTensor<Self>,
        state: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        silu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        step::reference::causal_conv1d_step::<Self>(x, state, weight, bias, silu)
    }

    /// Mamba2's SSD scan (Dao & Gu, 2024): `h_t = exp(dt_t A_h) h_{t-1} + dt_t x_t ⊗ B_t`,
    /// `y_t = h_t C_t + D_h x_t`, with `x` (B, L, H, P), `dt` (B, L, H) (final step sizes), `a`
    /// (H), `b`, `c` (B, L, G, N), `d` (H), `initial_state` (B, H, P, N); `chunk` is the SSD
    /// chunk length; with `has_reset`, `reset` (B, L) is 1 where a packed sequence starts (the
    /// state before it is zeroed), else a stand-in. Returns `y` (B, L, H, P) with `D x` and the
    /// final state (B, H, P, N).
    /// Default body: the chunked matmul algorithm (GPU backends); the CPU backends and Autodiff
    /// run the recurrence on the selective-scan kernel (no masks at all).
    #[allow(clippy::too_many_arguments)]
    #[fusion(default)]
    fn ssd(
        x: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        initial_state: FloatTensor<Self>,
        reset: FloatTensor<Self>,
        has_reset: bool,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let reset = has_reset.then_some(reset);
        ssd::reference::ssd_chunked::<Self>(x, dt, a, b, c, d, initial_state, reset, chunk)
    }

    /// [`SsmOps::ssd`] with per-step log decays `log_decay` (B, L, H) in place of `dt·A`:
    /// `h_t = exp(log_decay_t) h_{t−1} + dt_t B_t x_tᵀ` (Mamba-3's data-dependent `A`; `dt` is
    /// then the input weight alone). The CPU backends run the fused SSD recurrence (one `exp`
    /// per step and head, as for Mamba2); elsewhere the chunked body (on CubeCL with its
    /// decay-mask and state-pass kernels), differentiable op by op under autodiff.
    ///
    /// With `rank` R > 1 (Mamba-3's MIMO) `x` (B, L·R, H, P) and `b`, `c` (B, L·R, G, N) hold R
    /// sub-steps per time step (`dt`, `log_decay` (B, L, H) and `reset` (B, L) stay per time
    /// step): `h_t = exp(log_decay_t) h_{t−1} + dt_t Σ_r B_{t,r} x_{t,r}ᵀ`, `y_{t,r} = h_t
    /// C_{t,r} + D x_{t,r}`; `y` is then (B, L·R, H, P).
    #[allow(clippy::too_many_arguments)]
    #[fusion(default)]
    fn ssd_log_decay(
        x: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        log_decay: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        initial_state: FloatTensor<Self>,
        reset: FloatTensor<Self>,
        has_reset: bool,
        chunk: usize,
        rank: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let reset = has_reset.then_some(reset);
        ssd::reference::ssd_chunked_log_decay::<Self>(
            x,
            dt,
            log_decay,
            b,
            c,
            d,
            initial_state,
            reset,
            chunk,
            rank,
        )
    }

    /// Gradients of [`SsmOps::ssd_log_decay`] given `dy` (B, L·R, H, P) and `dstate`
    /// (B, H, P, N), the gradients reaching `y` and the final state, in the order (x, dt,
    /// log_decay, B, C, D, initial_state), each shaped as its input (`reset` is a constant).
    ///
    /// With `g_t` the gradient reaching the state after step `t` (before `t + 1` reads it):
    /// `g_t = Σ_r C_{t,r} dy_{t,r}ᵀ + exp(a_{t+1}) g_{t+1}` (nothing crosses a reset), then
    /// `dx_{t,r} = dt_t g_tᵀ B_{t,r} + D dy_{t,r}`, `dB_{t,r} = dt_t g_t x_{t,r}`,
    /// `dC_{t,r} = h_t dy_{t,r}`, `d dt_t = Σ_r ⟨g_t, B_{t,r} x_{t,r}ᵀ⟩`,
    /// `d a_t = exp(a_t) ⟨g_t, h_{t−1}⟩`, `dD = Σ ⟨dy, x⟩`, `dh_0 = exp(a_1) g_1`. The CPU
    /// backends run this reverse recurrence fused (states recomputed from checkpoints, one
    /// task per (row, head)); elsewhere Burn's autodiff through the chunked form, whose
    /// inter-chunk pass runs backward on the state-pass kernel (see `crate::autodiff`).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    #[fusion(default)]
    fn ssd_log_decay_backward(
        x: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        log_decay: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        initial_state: FloatTensor<Self>,
        reset: FloatTensor<Self>,
        has_reset: bool,
        chunk: usize,
        rank: usize,
        dy: FloatTensor<Self>,
        dstate: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        ssd::reference_backward::ssd_log_decay_grads::<Self>(
            [x, dt, log_decay, b, c, d, initial_state],
            has_reset.then_some(reset),
            chunk,
            rank,
            dy,
            dstate,
        )
        .into_tuple()
    }

    /// The whole Mamba2 decode step after `in_proj`: the conv step over `xBC`, `dt =
    /// clamp(softplus(dt + dt_bias), dt_min, dt_max)`, the state update with a scalar `A` per
    /// head, then the gated RMSNorm. `zxbcdt` (B, 2 d_inner + 2GN + H), `conv_state`
    /// (B, d_inner + 2GN, K), `ssm_state` (B, d_inner, N), `weights` from
    /// [`crate::pack_mamba2_step_weights`]. Returns the
    /// gated-normed output (B, d_inner) and the new states. One kernel launch on the CubeCL
    /// backends.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = step::fusion::mamba2_decode_step)]
    fn mamba2_decode_step(
        zxbcdt: FloatTensor<Self>,
        conv_state: FloatTensor<Self>,
        ssm_state: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        heads: usize,
        groups: usize,
        dt_min: f32,
        dt_max: f32,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        step::reference::mamba2_step_composed::<Self>(
            zxbcdt,
            conv_state,
            ssm_state,
            weights,
            step::reference::Mamba2StepConfig {
                heads,
                groups,
                dt_min,
                dt_max,
                eps,
            },
        )
    }

    /// The whole Mamba-3 decode step after `in_proj` (SISO or MIMO; see
    /// [`crate::mamba3_decode_step`]): `proj` (B, 2HP + 2RGN + 3H + S), `conv_state`
    /// (B, H, S + RN + P) = `[Θ | keys | x]`, `ssm_state` (B, HP, N), `weights` from
    /// [`crate::pack_mamba3_step_weights`]. Returns the output (B, HP) (before out_proj) and the
    /// new states. One kernel launch on the CubeCL backends, one fused pass on the CPU ones.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = mamba3_step::fusion::mamba3_decode_step)]
    fn mamba3_decode_step(
        proj: FloatTensor<Self>,
        conv_state: FloatTensor<Self>,
        ssm_state: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        heads: usize,
        groups: usize,
        rank: usize,
        angles: usize,
        mimo: bool,
        outproj_norm: bool,
        a_floor: f32,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        mamba3_step::reference::mamba3_step_composed::<Self>(
            proj,
            conv_state,
            ssm_state,
            weights,
            mamba3_step::reference::Mamba3StepConfig {
                heads,
                groups,
                rank,
                angles,
                mimo,
                outproj_norm,
                a_floor,
                eps,
            },
        )
    }

    /// The SSD's intra-chunk decay mask from the chunks' inclusive cumulative `dt A` sums `cum`
    /// (B, H, K, Q): `L[t, s] = exp(cum_t − cum_s)` for `s ≤ t`, else 0; (B, H, K, Q, Q). One
    /// kernel launch on the CubeCL backends.
    #[fusion(meta = ssd::fusion::ssd_decay_mask)]
    fn ssd_decay_mask(cum: FloatTensor<Self>) -> FloatTensor<Self> {
        ssd::reference::decay_mask::<Self>(cum)
    }

    /// The SSD's inter-chunk pass: from the state `h0` (B, H, N, P) before the first chunk, each
    /// chunk's own contribution `chunk_states` (B, H, K, N, P) and total decay `chunk_decay`
    /// (B, H, K), the state at each chunk start (B, H, K, N, P) and after the last (B, H, N, P).
    /// One kernel launch on the CubeCL backends.
    #[fusion(meta = ssd::fusion::ssd_state_pass)]
    fn ssd_state_pass(
        chunk_states: FloatTensor<Self>,
        chunk_decay: FloatTensor<Self>,
        h0: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        ssd::reference::state_pass::<Self>(chunk_states, chunk_decay, h0)
    }

    /// `x w` for a few rows `x` (M, K), `w` (K, N); or `x wᵀ` with `w` (N, K) when `transposed`
    /// (a tied LM head in the embedding's layout). The projections of a decode step: on Flex a
    /// kernel that reads the weight in place (f32, or bf16 widened in the register, so a bf16
    /// model streams half the bytes) and spreads its columns over the cores (for M ≤ 8; Flex's
    /// matmul otherwise). Elsewhere the backend's matmul, and under Fusion the
    /// fusable matmul of the stream. See [`crate::rows_matmul`].
    #[fusion(default)]
    fn rows_matmul(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        transposed: bool,
    ) -> FloatTensor<Self> {
        linear::reference::rows_matmul::<Self>(x, w, transposed)
    }

    /// [`SsmOps::rows_matmul`] with the weight held in 8 bits ([`crate::quantize_q8`]: int8
    /// values, one f32 scale per block of consecutive elements along K). On Flex, for M ≤ 8, a
    /// kernel that multiplies from the int8 values in place (a quarter of the f32 weight's
    /// bytes streamed); more rows dequantize the weight once and run Flex's GEMM. Elsewhere, and
    /// for other quantization schemes, the weight is dequantized per product (memory saved, no
    /// time; said once).
    #[fusion(default)]
    fn q_rows_matmul(
        x: FloatTensor<Self>,
        w: QuantizedTensor<Self>,
        transposed: bool,
    ) -> FloatTensor<Self> {
        linear::reference::q_rows_matmul::<Self>(x, w, transposed)
    }

    /// Rows `ids` (M) of an 8-bit (N, K) matrix (a quantized embedding), dequantized: (M, K).
    /// On Flex only those rows are read; elsewhere the matrix is dequantized per lookup (said
    /// once).
    #[fusion(default)]
    fn q_embedding(w: QuantizedTensor<Self>, ids: IntTensor<Self>) -> FloatTensor<Self> {
        linear::reference::q_embedding::<Self>(w, ids)
    }

    /// Residual add then RMSNorm over the last axis (mamba_ssm's fused add-norm): returns
    /// `s = x + residual` (just `x` when `has_residual` is false; `residual` is then ignored)
    /// and `s / sqrt(mean(s²) + eps) * weight`. One kernel launch on the CubeCL backends.
    #[fusion(meta = norm::fusion::add_rms_norm)]
    fn add_rms_norm(
        x: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        has_residual: bool,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        norm::reference::add_rms_norm::<Self>(x, has_residual.then_some(residual), weight, eps)
    }

    /// The real FFT along the last axis of `x` (.., m), zero-padded or truncated to `n`: the
    /// one-sided spectrum (re, im), each (.., n/2 + 1). See [`crate::rfft`].
    #[fusion(meta = fft::fusion::rfft)]
    fn rfft(x: FloatTensor<Self>, n: usize) -> (FloatTensor<Self>, FloatTensor<Self>) {
        fft::reference::rfft_dft::<Self>(x, n)
    }

    /// The inverse real FFT of a one-sided spectrum (re, im) (.., n/2 + 1) along the last axis,
    /// to `n` samples. See [`crate::irfft`].
    #[fusion(meta = fft::fusion::irfft)]
    fn irfft(re: FloatTensor<Self>, im: FloatTensor<Self>, n: usize) -> FloatTensor<Self> {
        fft::reference::irfft_dft::<Self>(re, im, n)
    }

    /// The causal long convolution `y[b, h, t] = Σ_{j ≤ t} k[b', h, j] u[b, h, t − j]` of `u`
    /// (B, H, L) with kernels `k` (1 or B, H, L; `b' = 0` or `b`), by FFT zero-padded to at least
    /// 2L on the backends that have one (the direct Toeplitz product otherwise).
    #[fusion(meta = fft::fusion::causal_conv_fft)]
    fn causal_conv_fft(u: FloatTensor<Self>, k: FloatTensor<Self>) -> FloatTensor<Self> {
        fft::reference::causal_conv_direct::<Self>(u, k)
    }

    /// The Vandermonde kernel of a diagonal SSM: `K[h, l] = Σ_n Re(c_hn exp(z_hn (l − s_hn)))`
    /// for `l = 0..len` (H, L), from `c = (c_re, c_im)`, `z = (z_re, z_im)` and `shift` (H, N).
    /// See [`crate::vandermonde()`].
    #[fusion(meta = vandermonde::fusion::vandermonde)]
    fn vandermonde(
        c_re: FloatTensor<Self>,
        c_im: FloatTensor<Self>,
        z_re: FloatTensor<Self>,
        z_im: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        len: usize,
    ) -> FloatTensor<Self> {
        vandermonde::reference::vandermonde::<Self>(c_re, c_im, z_re, z_im, shift, len)
    }

    /// The Vandermonde kernel's backward: from `grad` (H, L), the gradients of `c_re`, `c_im`,
    /// `z_re`, `z_im` (each (H, N)); `shift` is a constant.
    #[allow(clippy::type_complexity)]
    #[fusion(meta = vandermonde::fusion::vandermonde_backward)]
    fn vandermonde_backward(
        grad: FloatTensor<Self>,
        c_re: FloatTensor<Self>,
        c_im: FloatTensor<Self>,
        z_re: FloatTensor<Self>,
        z_im: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        vandermonde::reference::vandermonde_backward::<Self>(grad, c_re, c_im, z_re, z_im, shift)
    }

    /// The Cauchy sums of S4's DPLR kernel: `out[h, m, k] = Σ_n v[h, m, n] / (w[h, k] − λ[h, n])`
    /// as (re, im), each (H, M, K), for `v` (H, M, N), `w` (H, K), `λ` (H, N), each as (re, im).
    /// See [`crate::cauchy()`].
    #[fusion(meta = cauchy::fusion::cauchy)]
    fn cauchy(
        v_re: FloatTensor<Self>,
        v_im: FloatTensor<Self>,
        w_re: FloatTensor<Self>,
        w_im: FloatTensor<Self>,
        l_re: FloatTensor<Self>,
        l_im: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        cauchy::reference::cauchy::<Self>(v_re, v_im, w_re, w_im, l_re, l_im)
    }

    /// The Cauchy sums' backward: from the output gradient `(g_re, g_im)` (H, M, K), the
    /// gradients of `v`, `w` and `λ`, each as (re, im).
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    #[fusion(meta = cauchy::fusion::cauchy_backward)]
    fn cauchy_backward(
        g_re: FloatTensor<Self>,
        g_im: FloatTensor<Self>,
        v_re: FloatTensor<Self>,
        v_im: FloatTensor<Self>,
        w_re: FloatTensor<Self>,
        w_im: FloatTensor<Self>,
        l_re: FloatTensor<Self>,
        l_im: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        cauchy::reference::cauchy_backward::<Self>(g_re, g_im, v_re, v_im, w_re, w_im, l_re, l_im)
    }

    /// The whole decode step of a Mamba (v1) mixer after `in_proj`: the conv step and SiLU,
    /// `x_proj` (split into `dt_low`, `B`, `C`), `dt = softplus(dt_proj(dt_low) + dt_bias)`,
    /// `h = exp(dt A) h + dt B x`, `y = (C . h + D x) * silu(z)`. `xz` (B, 2D), `conv_state`
    /// (B, D, K), `ssm_state` (B, D, N), `weights` packed by [`crate::pack_mamba_step_weights`].
    /// Returns `y` (B, D) (before `out_proj`) and the new conv and SSM states. One kernel launch
    /// on the CubeCL backends.
    #[fusion(meta = step::fusion::mamba_decode_step)]
    fn mamba_decode_step(
        xz: FloatTensor<Self>,
        conv_state: FloatTensor<Self>,
        ssm_state: FloatTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        step::reference::mamba_step_composed::<Self>(xz, conv_state, ssm_state, weights)
    }
}
