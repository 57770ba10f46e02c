//! Output shapes of the ops for Fusion: each op is recorded in the fusion stream as one custom
//! operation that runs the inner backend's implementation (the kernels on CubeCL); Burn's
//! `backend_extension` macro asks these functions for the shapes of its outputs.
#![allow(clippy::too_many_arguments, clippy::type_complexity)]

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
    _reset: &S,
    _has_reset: &bool,
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
    _reset: &S,
    _has_reset: &bool,
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

#[allow(clippy::too_many_arguments)]
pub fn mamba3_decode_step(
    _proj: &S,
    conv: &S,
    ssm: &S,
    _w: &S,
    _heads: &usize,
    _groups: &usize,
    _rank: &usize,
    _angles: &usize,
    _mimo: &bool,
    _norm: &bool,
    _a_floor: &f32,
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
