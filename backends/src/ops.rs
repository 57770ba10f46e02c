//! The backend-extension trait holding the ops that SSMs need and Burn lacks.
//!
//! Each op has a portable default body ([`crate::portable`]); the CPU backends (Flex, NdArray)
//! override it with the fused kernels of [`crate::cpu`], the CubeCL backend with the GPU
//! kernels of `crate::cube`; under `Fusion` each op is recorded as one custom operation that
//! runs the inner backend's implementation; `Autodiff` wraps the scan with a hand-written
//! reverse-scan backward ([`crate::autodiff`]).

// The generated dispatch names Burn's NdArray backend (deprecated in Burn 0.22) when the
// `ndarray` feature is on.
#![allow(deprecated)]

use crate::portable::{self, ScanArgs};
use burn::backend::{Backend, backend_extension, tensor::FloatTensor};

/// SSM ops as a Burn backend extension.
///
/// Call them through the user-level functions of [`crate::scan`], which take `Tensor`s on any
/// device; the methods here take backend primitives.
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
    /// `delta_bias` (D); `initial_state` (B, D, N). Returns `y` (B, D, L) and the final state
    /// (B, D, N).
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = meta::selective_scan)]
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
        delta_softplus: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        portable::selective_scan::<Self>(ScanArgs {
            u,
            delta,
            a,
            b,
            c,
            d,
            z: gate.then_some(z),
            delta_bias,
            h0: initial_state,
            delta_softplus,
        })
    }

    /// Gradients of [`SsmOps::selective_scan`] given `dy` (B, D, L) and `dstate` (B, D, N), in
    /// the order (u, delta, A, B, C, D, z, delta_bias, initial_state); `z`'s only when a gate was
    /// given (a `[1]` zero tensor stands in otherwise). A reverse scan that recomputes the states
    /// chunk by chunk.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    #[fusion(meta = meta::selective_scan_backward)]
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
        let g = portable::selective_scan_backward::<Self>(
            ScanArgs {
                u,
                delta,
                a,
                b,
                c,
                d,
                z: gate.then_some(z),
                delta_bias,
                h0: initial_state,
                delta_softplus,
            },
            dy,
            dstate,
            crate::cpu::BACKWARD_CHUNK,
        );
        g.into_tuple()
    }

    /// One decode step of the selective SSM: see [`portable::selective_state_step`].
    /// Returns `y` (B, D) and the new state (B, D, N).
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = meta::selective_state_step)]
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
        portable::selective_state_step::<Self>(
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

    /// One decode step of a causal depthwise conv1d with a rolling (B, C, K) state: see
    /// [`portable::causal_conv1d_step`]. Returns the output (B, C) and the new state.
    #[fusion(meta = meta::causal_conv1d_step)]
    fn causal_conv1d_step(
        x: FloatTensor<Self>,
        state: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        silu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        portable::causal_conv1d_step::<Self>(x, state, weight, bias, silu)
    }

    /// The whole decode step of a Mamba (v1) mixer after `in_proj` (see [`crate::step`]):
    /// `xz` (B, 2D), `conv_state` (B, D, K), `ssm_state` (B, D, N), `weights` packed by
    /// [`crate::step::pack_mamba_step_weights`]. Returns `y` (B, D) (before `out_proj`) and the
    /// new conv and SSM states. One kernel launch on the CubeCL backends.
    /// Mamba2's SSD scan (see [`crate::ssd`]): `x` (B, L, H, P), `dt` (B, L, H) (final step
    /// sizes), `a` (H), `b`, `c` (B, L, G, N), `d` (H), `initial_state` (B, H, P, N); `chunk` is
    /// the SSD chunk length. Returns `y` (B, L, H, P) with `D x` and the final state
    /// (B, H, P, N). Default body: the chunked matmul algorithm (GPU backends); the CPU backends
    /// and Autodiff run the recurrence on the selective-scan kernel (no masks at all).
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
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        crate::ssd::ssd_chunked::<Self>(x, dt, a, b, c, d, initial_state, chunk)
    }

    /// The whole Mamba2 decode step after `in_proj` (see [`crate::step::mamba2_step_composed`]):
    /// `zxbcdt` (B, 2 d_inner + 2GN + H), `conv_state` (B, d_inner + 2GN, K), `ssm_state`
    /// (B, d_inner, N), `weights` from [`crate::step::pack_mamba2_step_weights`]. Returns the
    /// gated-normed output (B, d_inner) and the new states. One kernel launch on the CubeCL
    /// backends.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = meta::mamba2_decode_step)]
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
        crate::step::mamba2_step_composed::<Self>(
            zxbcdt,
            conv_state,
            ssm_state,
            weights,
            crate::step::Mamba2StepConfig {
                heads,
                groups,
                dt_min,
                dt_max,
                eps,
            },
        )
    }

    /// The SSD's intra-chunk decay mask (see [`crate::ssd::decay_mask`]): `cum` (B, H, K, Q)
    /// to (B, H, K, Q, Q). One kernel launch on the CubeCL backends.
    #[fusion(meta = meta::ssd_decay_mask)]
    fn ssd_decay_mask(cum: FloatTensor<Self>) -> FloatTensor<Self> {
        crate::ssd::decay_mask::<Self>(cum)
    }

    /// The SSD's inter-chunk pass (see [`crate::ssd::state_pass`]): returns the state at each
    /// chunk start (B, H, K, N, P) and the final state (B, H, N, P). One kernel launch on the
    /// CubeCL backends.
    #[fusion(meta = meta::ssd_state_pass)]
    fn ssd_state_pass(
        chunk_states: FloatTensor<Self>,
        chunk_decay: FloatTensor<Self>,
        h0: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        crate::ssd::state_pass::<Self>(chunk_states, chunk_decay, h0)
    }

    /// Residual add then RMSNorm over the last axis (mamba_ssm's fused add-norm): returns
    /// `s = x + residual` (just `x` when `has_residual` is false; `residual` is then ignored)
    /// and `s / sqrt(mean(s²) + eps) * weight`. One kernel launch on the CubeCL backends.
    #[fusion(meta = meta::add_rms_norm)]
    fn add_rms_norm(
        x: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        has_residual: bool,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        portable::add_rms_norm::<Self>(x, has_residual.then_some(residual), weight, eps)
    }

    /// The real FFT along the last axis of `x` (.., m), zero-padded or truncated to `n`: the
    /// one-sided spectrum (re, im), each (.., n/2 + 1). See [`crate::fft`].
    #[fusion(meta = meta::rfft)]
    fn rfft(x: FloatTensor<Self>, n: usize) -> (FloatTensor<Self>, FloatTensor<Self>) {
        crate::fft::rfft_dft::<Self>(x, n)
    }

    /// The inverse real FFT of a one-sided spectrum (re, im) (.., n/2 + 1) along the last axis,
    /// to `n` samples. See [`crate::fft`].
    #[fusion(meta = meta::irfft)]
    fn irfft(re: FloatTensor<Self>, im: FloatTensor<Self>, n: usize) -> FloatTensor<Self> {
        crate::fft::irfft_dft::<Self>(re, im, n)
    }

    /// The causal long convolution `y[b, h, t] = Σ_{j ≤ t} k[b', h, j] u[b, h, t − j]` of `u`
    /// (B, H, L) with kernels `k` (1 or B, H, L; `b' = 0` or `b`), by FFT zero-padded to at least
    /// 2L on the backends that have one. See [`crate::fft`].
    #[fusion(meta = meta::causal_conv_fft)]
    fn causal_conv_fft(u: FloatTensor<Self>, k: FloatTensor<Self>) -> FloatTensor<Self> {
        crate::fft::causal_conv_direct::<Self>(u, k)
    }

    #[fusion(meta = meta::mamba_decode_step)]
    fn mamba_decode_step(
        xz: FloatTensor<Self>,
        conv_state: FloatTensor<Self>,
        ssm_state: FloatTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        crate::step::mamba_step_composed::<Self>(xz, conv_state, ssm_state, weights)
    }
}

/// Output shapes of the ops, for Fusion: each op is recorded in the fusion stream as one custom
/// operation that runs the inner backend's implementation (the kernels on CubeCL).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
mod meta {
    use burn::backend::fusion::custom::TensorSpec as S;
    use burn::tensor::Shape;

    pub fn selective_scan(
        u: &S,
        _delta: &S,
        _a: &S,
        _b: &S,
        _c: &S,
        _d: &S,
        _z: &S,
        _gate: &bool,
        _delta_bias: &S,
        h0: &S,
        _softplus: &bool,
    ) -> (S, S) {
        (u.clone(), h0.clone())
    }

    pub fn selective_scan_backward(
        u: &S,
        delta: &S,
        a: &S,
        b: &S,
        c: &S,
        d: &S,
        z: &S,
        gate: &bool,
        delta_bias: &S,
        h0: &S,
        _dy: &S,
        _dstate: &S,
        _softplus: &bool,
    ) -> (S, S, S, S, S, S, S, S, S) {
        let dz = if *gate {
            z.clone()
        } else {
            S::new(Shape::new([1]), z.dtype)
        };
        (
            u.clone(),
            delta.clone(),
            a.clone(),
            b.clone(),
            c.clone(),
            d.clone(),
            dz,
            delta_bias.clone(),
            h0.clone(),
        )
    }

    pub fn selective_state_step(
        state: &S,
        x: &S,
        _dt: &S,
        _a: &S,
        _b: &S,
        _c: &S,
        _d: &S,
        _z: &S,
        _gate: &bool,
        _dt_bias: &S,
        _softplus: &bool,
    ) -> (S, S) {
        (x.clone(), state.clone())
    }

    pub fn causal_conv1d_step(x: &S, state: &S, _w: &S, _b: &S, _silu: &bool) -> (S, S) {
        (x.clone(), state.clone())
    }

    pub fn mamba2_decode_step(
        _zxbcdt: &S,
        conv: &S,
        ssm: &S,
        _w: &S,
        _heads: &usize,
        _groups: &usize,
        _dt_min: &f32,
        _dt_max: &f32,
        _eps: &f32,
    ) -> (S, S, S) {
        let y = S::new(Shape::new([ssm.shape[0], ssm.shape[1]]), ssm.dtype);
        (y, conv.clone(), ssm.clone())
    }

    pub fn ssd_decay_mask(cum: &S) -> S {
        let mut dims = cum.shape.to_vec();
        dims.push(dims[3]);
        S::new(Shape::from(dims), cum.dtype)
    }

    pub fn ssd_state_pass(chunk_states: &S, _decay: &S, h0: &S) -> (S, S) {
        (chunk_states.clone(), h0.clone())
    }

    pub fn add_rms_norm(x: &S, _r: &S, _has: &bool, _w: &S, _eps: &f32) -> (S, S) {
        (x.clone(), x.clone())
    }

    pub fn rfft(x: &S, n: &usize) -> (S, S) {
        let mut dims = x.shape.to_vec();
        *dims.last_mut().expect("rank >= 1") = n / 2 + 1;
        let s = S::new(Shape::from(dims), x.dtype);
        (s.clone(), s)
    }

    pub fn irfft(re: &S, _im: &S, n: &usize) -> S {
        let mut dims = re.shape.to_vec();
        *dims.last_mut().expect("rank >= 1") = *n;
        S::new(Shape::from(dims), re.dtype)
    }

    pub fn causal_conv_fft(u: &S, _k: &S) -> S {
        u.clone()
    }

    pub fn mamba_decode_step(_xz: &S, conv: &S, ssm: &S, _w: &S) -> (S, S, S) {
        let y = S::new(Shape::new([ssm.shape[0], ssm.shape[1]]), ssm.dtype);
        (y, conv.clone(), ssm.clone())
    }
}

/// The CubeCL backend (wgpu, vulkan, cuda, rocm): the kernels of [`crate::cube`], with the
/// portable bodies for the shapes a kernel does not take.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl SsmOps for burn_cubecl::CubeBackend {
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
        delta_softplus: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let args = ScanArgs {
            u,
            delta,
            a,
            b,
            c,
            d,
            z: gate.then_some(z),
            delta_bias,
            h0: initial_state,
            delta_softplus,
        };
        crate::cube::selective_scan(args.clone())
            .unwrap_or_else(|| portable::selective_scan::<Self>(args))
    }

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
        let args = ScanArgs {
            u,
            delta,
            a,
            b,
            c,
            d,
            z: gate.then_some(z),
            delta_bias,
            h0: initial_state,
            delta_softplus,
        };
        let grads = crate::cube::selective_scan_backward(args.clone(), dy.clone(), dstate.clone())
            .unwrap_or_else(|| {
                portable::selective_scan_backward::<Self>(
                    args,
                    dy,
                    dstate,
                    crate::cpu::BACKWARD_CHUNK,
                )
            });
        grads.into_tuple()
    }

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
        crate::cube::selective_state_step(
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

    fn causal_conv1d_step(
        x: FloatTensor<Self>,
        state: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        silu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        crate::cube::causal_conv1d_step(x, state, weight, bias, silu)
    }

    fn ssd_decay_mask(cum: FloatTensor<Self>) -> FloatTensor<Self> {
        crate::cube::ssd_decay_mask(cum)
    }

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
        let cfg = crate::step::Mamba2StepConfig {
            heads,
            groups,
            dt_min,
            dt_max,
            eps,
        };
        crate::cube::mamba2_step(
            zxbcdt.clone(),
            conv_state.clone(),
            ssm_state.clone(),
            weights.clone(),
            cfg,
        )
        .unwrap_or_else(|| {
            crate::step::mamba2_step_composed::<Self>(zxbcdt, conv_state, ssm_state, weights, cfg)
        })
    }

    fn ssd_state_pass(
        chunk_states: FloatTensor<Self>,
        chunk_decay: FloatTensor<Self>,
        h0: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        crate::cube::ssd_state_pass(chunk_states, chunk_decay, h0)
    }

    fn rfft(x: FloatTensor<Self>, n: usize) -> (FloatTensor<Self>, FloatTensor<Self>) {
        crate::cube::rfft(x, n)
    }

    fn irfft(re: FloatTensor<Self>, im: FloatTensor<Self>, n: usize) -> FloatTensor<Self> {
        crate::cube::irfft(re, im, n)
    }

    fn causal_conv_fft(u: FloatTensor<Self>, k: FloatTensor<Self>) -> FloatTensor<Self> {
        crate::cube::causal_conv_fft(u, k)
    }

    fn add_rms_norm(
        x: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        has_residual: bool,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        crate::cube::add_rms_norm(x, has_residual.then_some(residual), weight, eps)
    }

    fn mamba_decode_step(
        xz: FloatTensor<Self>,
        conv_state: FloatTensor<Self>,
        ssm_state: FloatTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        use burn::backend::TensorMetadata;
        let dims = crate::step::MambaStepDims::infer(
            &xz.shape(),
            &conv_state.shape(),
            &ssm_state.shape(),
            weights.shape().num_elements(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        crate::cube::mamba_step(
            xz.clone(),
            conv_state.clone(),
            ssm_state.clone(),
            weights.clone(),
            dims,
        )
        .unwrap_or_else(|| {
            crate::step::mamba_step_composed::<Self>(xz, conv_state, ssm_state, weights)
        })
    }
}
