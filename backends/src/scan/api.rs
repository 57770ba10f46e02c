//! The selective scan on `Tensor`s of any device.
//!
//! [`SelectiveScan::run`] goes through the [`SsmOps`] extension (the fused kernel where the
//! backend has one); [`SelectiveScan::run_reference`] always runs the portable body, recorded op
//! by op under autodiff: it is the oracle the tests compare against.

use super::reference::{self, ScanArgs};
use crate::error::Error;
use crate::ops::SsmOps;
use crate::precision::{activation_dtype, back, wide};
use burn::backend::Dispatch;
use burn::tensor::{Int, Tensor, TensorData};

/// Results of a scan: `y` (B, D, L) and the final state (B, D, N).
#[derive(Debug, Clone)]
pub struct ScanOutput {
    /// The outputs `y` (B, D, L), in the activations' float type.
    pub y: Tensor<3>,
    /// The state after the last step (B, D, N), in f32.
    pub state: Tensor<3>,
}

/// The selective scan of Mamba with mamba_ssm's `selective_scan_fn` semantics.
///
/// With `dt = softplus(delta + delta_bias)` (or without the softplus) and for each batch `b`,
/// channel `d` in group `g = d / (D / G)`, step `t`:
///
/// ```text
/// h_t = exp(dt_t * A_d) * h_{t-1} + dt_t * B_{g,t} * u_t      (zero-order hold on A, Euler on B)
/// y_t = (C_{g,t} . h_t + D_d * u_t) * silu(z_t)
/// ```
///
/// ```ignore
/// let out = SelectiveScan::new(u, delta, a, b, c).d(d).z(z).delta_bias(bias).softplus(true).run();
/// ```
#[derive(Debug, Clone)]
pub struct SelectiveScan {
    u: Tensor<3>,
    delta: Tensor<3>,
    a: Tensor<2>,
    b: Tensor<4>,
    c: Tensor<4>,
    d: Option<Tensor<1>>,
    z: Option<Tensor<3>>,
    delta_bias: Option<Tensor<1>>,
    initial_state: Option<Tensor<3>>,
    seq_idx: Option<Tensor<2, Int>>,
    delta_softplus: bool,
}

impl SelectiveScan {
    /// `u`, `delta` (B, D, L); `a` (D, N); `b`, `c` grouped (B, G, N, L), G dividing D. Use
    /// [`ungrouped`] for (B, N, L) inputs.
    pub fn new(u: Tensor<3>, delta: Tensor<3>, a: Tensor<2>, b: Tensor<4>, c: Tensor<4>) -> Self {
        Self {
            u,
            delta,
            a,
            b,
            c,
            d: None,
            z: None,
            delta_bias: None,
            initial_state: None,
            seq_idx: None,
            delta_softplus: false,
        }
    }
    /// Packed sequences (mamba_ssm's `seq_idx`): the sequence of each token (B, L),
    /// non-decreasing along each row. Where it changes the state restarts from zero, so no
    /// sequence sees the one before it; the initial state is the first sequence's. See
    /// [`seq_idx_from_lengths`].
    pub fn seq_idx(mut self, seq_idx: Tensor<2, Int>) -> Self {
        self.seq_idx = Some(seq_idx);
        self
    }
    /// The skip term `D` (D).
    pub fn d(mut self, d: Tensor<1>) -> Self {
        self.d = Some(d);
        self
    }
    /// The gate `z` (B, D, L): the output is multiplied by `silu(z)`.
    pub fn z(mut self, z: Tensor<3>) -> Self {
        self.z = Some(z);
        self
    }
    /// A bias added to `delta` (D) before the softplus.
    pub fn delta_bias(mut self, bias: Tensor<1>) -> Self {
        self.delta_bias = Some(bias);
        self
    }
    /// The state before the first step (B, D, N); zeros when absent.
    pub fn initial_state(mut self, h0: Tensor<3>) -> Self {
        self.initial_state = Some(h0);
        self
    }
    /// Pass `delta + bias` through softplus.
    pub fn softplus(mut self, on: bool) -> Self {
        self.delta_softplus = on;
        self
    }

    /// Checks the shapes; `Err` says which input is wrong and how.
    pub fn check(&self) -> Result<(), Error> {
        let [bs, d, l] = self.u.dims();
        let [dn, n] = self.a.dims();
        let [bb, g, bn, bl] = self.b.dims();
        let want3 = [bs, d, l];
        if self.delta.dims() != want3 {
            return Err(Error::Shape(format!(
                "delta is {:?}, expected {want3:?} like u",
                self.delta.dims()
            )));
        }
        if dn != d {
            return Err(Error::Shape(format!(
                "A is {:?}, expected ({d}, N)",
                self.a.dims()
            )));
        }
        if g == 0 || d % g != 0 {
            return Err(Error::Shape(format!(
                "B has {g} groups, which must divide D = {d}"
            )));
        }
        let want4 = [bs, g, n, l];
        if [bb, g, bn, bl] != want4 {
            return Err(Error::Shape(format!(
                "B is {:?}, expected {want4:?}",
                self.b.dims()
            )));
        }
        if self.c.dims() != want4 {
            return Err(Error::Shape(format!(
                "C is {:?}, expected {want4:?}",
                self.c.dims()
            )));
        }
        for (name, t) in [("D", &self.d), ("delta_bias", &self.delta_bias)] {
            if let Some(t) = t
                && t.dims() != [d]
            {
                return Err(Error::Shape(format!(
                    "{name} is {:?}, expected [{d}]",
                    t.dims()
                )));
            }
        }
        if let Some(z) = &self.z
            && z.dims() != want3
        {
            return Err(Error::Shape(format!(
                "z is {:?}, expected {want3:?}",
                z.dims()
            )));
        }
        if let Some(h) = &self.initial_state
            && h.dims() != [bs, d, n]
        {
            return Err(Error::Shape(format!(
                "initial_state is {:?}, expected {:?}",
                h.dims(),
                [bs, d, n]
            )));
        }
        if let Some(s) = &self.seq_idx
            && s.dims() != [bs, l]
        {
            return Err(Error::Shape(format!(
                "seq_idx is {:?}, expected {:?}",
                s.dims(),
                [bs, l]
            )));
        }
        Ok(())
    }

    fn filled(self) -> Filled {
        if let Err(e) = self.check() {
            panic!("selective scan: {e}");
        }
        let [bs, d, _] = self.u.dims();
        let [_, n] = self.a.dims();
        let device = self.u.device();
        // The activations go to the op in `u`'s type (the GPU kernel reads f16/bf16 itself, the
        // CPU kernels widen them as they read); the parameters and the state in f32.
        let dtype = activation_dtype(&self.u);
        let act = |t| back(t, dtype);
        let zeros_d = || Tensor::<1>::zeros([d], &device);
        Filled {
            d: wide(self.d.unwrap_or_else(zeros_d)),
            delta_bias: wide(self.delta_bias.unwrap_or_else(zeros_d)),
            h0: wide(
                self.initial_state
                    .unwrap_or_else(|| Tensor::zeros([bs, d, n], &device)),
            ),
            u: self.u,
            delta: act(self.delta),
            a: wide(self.a),
            b: back(self.b, dtype),
            c: back(self.c, dtype),
            z: self.z.map(act),
            reset: self.seq_idx.map(reset_mask),
            delta_softplus: self.delta_softplus,
            dtype,
        }
    }

    /// Runs the op on the tensors' device (fused kernel where the backend has one).
    ///
    /// # Panics
    /// On inconsistent shapes (see [`SelectiveScan::check`]).
    pub fn run(self) -> ScanOutput {
        let f = self.filled();
        let dtype = f.dtype;
        let gate = f.z.is_some();
        // Without a gate the op ignores `z`; `u` stands in (no copy).
        let z = f.z.clone().unwrap_or_else(|| f.u.clone());
        let has_reset = f.reset.is_some();
        let reset = f
            .reset
            .clone()
            .unwrap_or_else(|| f.u.clone().narrow(1, 0, 1).squeeze_dim(1));
        let (y, state) = <Dispatch as SsmOps>::selective_scan(
            f.u.into_dispatch(),
            f.delta.into_dispatch(),
            f.a.into_dispatch(),
            f.b.into_dispatch(),
            f.c.into_dispatch(),
            f.d.into_dispatch(),
            z.into_dispatch(),
            gate,
            f.delta_bias.into_dispatch(),
            f.h0.into_dispatch(),
            reset.into_dispatch(),
            has_reset,
            f.delta_softplus,
        );
        ScanOutput {
            y: back(Tensor::from_dispatch(y), dtype),
            state: Tensor::from_dispatch(state),
        }
    }

    /// Runs the portable body (the oracle), differentiable op by op under autodiff.
    pub fn run_reference(self) -> ScanOutput {
        let f = self.filled();
        let dtype = f.dtype;
        let (y, state) = reference::selective_scan::<Dispatch>(ScanArgs {
            u: f.u.into_dispatch(),
            delta: f.delta.into_dispatch(),
            a: f.a.into_dispatch(),
            b: f.b.into_dispatch(),
            c: f.c.into_dispatch(),
            d: f.d.into_dispatch(),
            z: f.z.map(Tensor::into_dispatch),
            delta_bias: f.delta_bias.into_dispatch(),
            h0: f.h0.into_dispatch(),
            reset: f.reset.map(Tensor::into_dispatch),
            delta_softplus: f.delta_softplus,
        });
        ScanOutput {
            y: back(Tensor::from_dispatch(y), dtype),
            state: Tensor::from_dispatch(state),
        }
    }
}

struct Filled {
    u: Tensor<3>,
    delta: Tensor<3>,
    a: Tensor<2>,
    b: Tensor<4>,
    c: Tensor<4>,
    d: Tensor<1>,
    z: Option<Tensor<3>>,
    delta_bias: Tensor<1>,
    h0: Tensor<3>,
    reset: Option<Tensor<2>>,
    delta_softplus: bool,
    /// The activations' dtype, which `y` returns in.
    dtype: burn::tensor::DType,
}

/// The reset mask of the ops from a sequence index (B, L): 1 where the index changes from the
/// step before, 0 elsewhere (and at step 0, whose state before is the initial state).
pub(crate) fn reset_mask(seq_idx: Tensor<2, Int>) -> Tensor<2> {
    let [b, l] = seq_idx.dims();
    let device = seq_idx.device();
    let first = Tensor::<2>::zeros([b, 1], &device);
    if l < 2 {
        return first.narrow(1, 0, l);
    }
    let changed = seq_idx
        .clone()
        .narrow(1, 1, l - 1)
        .not_equal(seq_idx.narrow(1, 0, l - 1))
        .float();
    Tensor::cat(vec![first, changed], 1)
}

/// The sequence index (B, L) of rows packed from documents of the given lengths (each row's
/// lengths must add up to L): document `i` of a row gets index `i` (mamba_ssm's `seq_idx` from
/// cumulative lengths).
///
/// # Errors
/// When the rows' lengths do not add up to one L.
pub fn seq_idx_from_lengths(
    rows: &[Vec<usize>],
    device: &burn::tensor::Device,
) -> Result<Tensor<2, Int>, Error> {
    let len = rows.first().map_or(0, |r| r.iter().sum::<usize>());
    let mut idx = Vec::with_capacity(rows.len() * len);
    for (b, row) in rows.iter().enumerate() {
        let total: usize = row.iter().sum();
        if total != len {
            return Err(Error::Shape(format!(
                "row {b}'s documents add up to {total} tokens, row 0's to {len}"
            )));
        }
        for (i, &n) in row.iter().enumerate() {
            idx.extend(std::iter::repeat_n(i as i64, n));
        }
    }
    Ok(Tensor::from_data(
        TensorData::new(idx, [rows.len(), len]),
        device,
    ))
}

/// (B, N, L) to the grouped layout (B, 1, N, L).
pub fn ungrouped(x: Tensor<3>) -> Tensor<4> {
    x.unsqueeze_dim(1)
}
