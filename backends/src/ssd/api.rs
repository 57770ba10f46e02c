//! Mamba2's SSD scan on `Tensor`s: `h_t = exp(dt_t A_h) h_{t-1} + dt_t x_t ⊗ B_t`,
//! `y_t = h_t C_t + D_h x_t` (Dao & Gu, 2024, eq. 1 with the scalar-identity A).

use super::reference::{SsdDims, ssd_chunked_log_decay};
use crate::ops::SsmOps;
use crate::precision::{activation_dtype, back, note_widened, wide};
use crate::scan::api::reset_mask;
use burn::backend::Dispatch;
use burn::tensor::{Int, Tensor};

/// The SSD scan with its options: `x` (B, L, H, P), `dt` (B, L, H) (the final step sizes,
/// after bias, softplus and limits), `a` (H), `b`, `c` (B, L, G, N); optional `d` (H), an
/// initial state (B, H, P, N), a sequence index for packed rows (B, L), and the chunk length
/// (it changes the float order, not the result; default 256).
///
/// ```ignore
/// let (y, state) = Ssd::new(x, dt, a, b, c).d(d).seq_idx(seq_idx).chunk(64).run();
/// ```
#[derive(Debug, Clone)]
pub struct Ssd {
    x: Tensor<4>,
    dt: Tensor<3>,
    a: Tensor<1>,
    b: Tensor<4>,
    c: Tensor<4>,
    d: Option<Tensor<1>>,
    initial_state: Option<Tensor<4>>,
    seq_idx: Option<Tensor<2, Int>>,
    log_decay: Option<Tensor<3>>,
    chunk: usize,
    rank: usize,
}

impl Ssd {
    /// The scan of `x` with step sizes `dt`, decays `a` and input/output maps `b`, `c`.
    pub fn new(x: Tensor<4>, dt: Tensor<3>, a: Tensor<1>, b: Tensor<4>, c: Tensor<4>) -> Self {
        Self {
            x,
            dt,
            a,
            b,
            c,
            d: None,
            initial_state: None,
            seq_idx: None,
            log_decay: None,
            chunk: 256,
            rank: 1,
        }
    }
    /// Per-step log decays (B, L, H) in place of `dt·A` (`a` is then unused): `h_t =
    /// exp(log_decay_t) h_{t−1} + dt_t B_t x_tᵀ`, `dt` the input weight alone (Mamba-3's
    /// data-dependent `A`). On the CPU backends the fused SSD recurrence; on CubeCL the
    /// chunked body with its decay-mask and state-pass kernels, as Mamba2's SSD
    /// ([`SsmOps::ssd_log_decay`]).
    pub fn log_decay(mut self, log_decay: Tensor<3>) -> Self {
        self.log_decay = Some(log_decay);
        self
    }
    /// R sub-steps per time step (Mamba-3's MIMO; default 1): `x` (B, L·R, H, P) and `b`, `c`
    /// (B, L·R, G, N) ordered (step, rank), `dt` and the decays per time step (B, L, H); the
    /// state takes all R rank-one updates of a step, `h_t = exp(dt_t A) h_{t−1} + dt_t Σ_r
    /// B_{t,r} x_{t,r}ᵀ`, and each sub-step reads it, `y_{t,r} = h_t C_{t,r} + D x_{t,r}`;
    /// `y` is (B, L·R, H, P). Runs on [`SsmOps::ssd_log_decay`].
    pub fn rank(mut self, rank: usize) -> Self {
        self.rank = rank;
        self
    }
    /// The skip term `D` (H).
    pub fn d(mut self, d: Tensor<1>) -> Self {
        self.d = Some(d);
        self
    }
    /// The state before the first step (B, H, P, N); zeros when absent.
    pub fn initial_state(mut self, h0: Tensor<4>) -> Self {
        self.initial_state = Some(h0);
        self
    }
    /// Packed sequences: each token's sequence (B, L), non-decreasing along a row; the state
    /// restarts from zero where it changes (the initial state is the first sequence's).
    pub fn seq_idx(mut self, seq_idx: Tensor<2, Int>) -> Self {
        self.seq_idx = Some(seq_idx);
        self
    }
    /// The chunk length Q of the chunked form (at least 1).
    pub fn chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// Runs the op on the tensors' device. Returns `y` (B, L·R, H, P) and the final state
    /// (B, H, P, N).
    ///
    /// # Panics
    /// On inconsistent shapes, with a message naming the input and both shapes.
    pub fn run(self) -> (Tensor<4>, Tensor<4>) {
        let f = self.filled();
        let dtype = f.dtype;
        let has_reset = f.reset.is_some();
        let reset = f
            .reset
            .unwrap_or_else(|| f.dt.clone().narrow(2, 0, 1).squeeze_dim(2));
        let log_decay = match f.log_decay {
            None if f.rank > 1 => Some(f.dt.clone() * f.a.clone().reshape([1, 1, -1])),
            other => other,
        };
        if let Some(log_decay) = log_decay {
            let (y, h) = <Dispatch as SsmOps>::ssd_log_decay(
                f.x.into_dispatch(),
                f.dt.into_dispatch(),
                log_decay.into_dispatch(),
                f.b.into_dispatch(),
                f.c.into_dispatch(),
                f.d.into_dispatch(),
                f.h0.into_dispatch(),
                reset.into_dispatch(),
                has_reset,
                f.chunk,
                f.rank,
            );
            return (
                back(Tensor::from_dispatch(y), dtype),
                Tensor::from_dispatch(h),
            );
        }
        let (y, h) = <Dispatch as SsmOps>::ssd(
            f.x.into_dispatch(),
            f.dt.into_dispatch(),
            f.a.into_dispatch(),
            f.b.into_dispatch(),
            f.c.into_dispatch(),
            f.d.into_dispatch(),
            f.h0.into_dispatch(),
            reset.into_dispatch(),
            has_reset,
            f.chunk,
        );
        (
            back(Tensor::from_dispatch(y), dtype),
            Tensor::from_dispatch(h),
        )
    }

    /// [`Ssd::run`] through the portable chunked body, whatever the backend (the oracle in
    /// tests).
    ///
    /// # Panics
    /// On inconsistent shapes.
    pub fn run_reference(self) -> (Tensor<4>, Tensor<4>) {
        let f = self.filled();
        let dtype = f.dtype;
        let log_decay = f
            .log_decay
            .unwrap_or_else(|| f.dt.clone() * f.a.clone().reshape([1, 1, -1]));
        let (y, h) = ssd_chunked_log_decay::<Dispatch>(
            f.x.into_dispatch(),
            f.dt.into_dispatch(),
            log_decay.into_dispatch(),
            f.b.into_dispatch(),
            f.c.into_dispatch(),
            f.d.into_dispatch(),
            f.h0.into_dispatch(),
            f.reset.map(Tensor::into_dispatch),
            f.chunk,
            f.rank,
        );
        (
            back(Tensor::from_dispatch(y), dtype),
            Tensor::from_dispatch(h),
        )
    }

    fn filled(self) -> Filled {
        let [bs, lr, h, p] = self.x.dims();
        let l = lr / self.rank.max(1);
        let n = self.b.dims()[3];
        let device = self.x.device();
        let d = self.d.unwrap_or_else(|| Tensor::zeros([h], &device));
        let h0 = self
            .initial_state
            .unwrap_or_else(|| Tensor::zeros([bs, h, p, n], &device));
        if let Err(e) = SsdDims::check(
            &self.x.dims(),
            &self.dt.dims(),
            &self.a.dims(),
            &self.b.dims(),
            &self.c.dims(),
            &d.dims(),
            &h0.dims(),
            self.rank,
        ) {
            panic!("{e}");
        }
        if let Some(s) = &self.seq_idx {
            assert!(
                s.dims() == [bs, l],
                "ssd: seq_idx has shape {:?}, expected {:?}",
                s.dims(),
                [bs, l]
            );
        }
        if let Some(t) = &self.log_decay {
            assert!(
                t.dims() == [bs, l, h],
                "ssd: log_decay has shape {:?}, expected {:?}",
                t.dims(),
                [bs, l, h]
            );
        }
        let dtype = activation_dtype(&self.x);
        note_widened("SSD scan", dtype);
        Filled {
            x: wide(self.x),
            dt: wide(self.dt),
            a: wide(self.a),
            b: wide(self.b),
            c: wide(self.c),
            d: wide(d),
            h0: wide(h0),
            reset: self.seq_idx.map(reset_mask),
            log_decay: self.log_decay.map(wide),
            dtype,
            chunk: self.chunk,
            rank: self.rank,
        }
    }
}

struct Filled {
    x: Tensor<4>,
    dt: Tensor<3>,
    a: Tensor<1>,
    b: Tensor<4>,
    c: Tensor<4>,
    d: Tensor<1>,
    h0: Tensor<4>,
    reset: Option<Tensor<2>>,
    log_decay: Option<Tensor<3>>,
    chunk: usize,
    rank: usize,
    /// The activations' dtype, which `y` returns in.
    dtype: burn::tensor::DType,
}

/// The SSD scan on the tensors' device through the op (see [`Ssd`], which also takes packed
/// sequences): `initial_state` zeros when `None`; `chunk` the chunk length. Returns `y`
/// (B, L, H, P) and the final state (B, H, P, N).
///
/// # Panics
/// On inconsistent shapes, with a message naming the input and both shapes.
#[allow(clippy::too_many_arguments)]
pub fn ssd(
    x: Tensor<4>,
    dt: Tensor<3>,
    a: Tensor<1>,
    b: Tensor<4>,
    c: Tensor<4>,
    d: Option<Tensor<1>>,
    initial_state: Option<Tensor<4>>,
    chunk: usize,
) -> (Tensor<4>, Tensor<4>) {
    with_options(Ssd::new(x, dt, a, b, c), d, initial_state, chunk).run()
}

/// [`ssd`] through the portable chunked body, whatever the backend (the oracle in tests).
///
/// # Panics
/// On inconsistent shapes.
#[allow(clippy::too_many_arguments)]
pub fn ssd_reference(
    x: Tensor<4>,
    dt: Tensor<3>,
    a: Tensor<1>,
    b: Tensor<4>,
    c: Tensor<4>,
    d: Option<Tensor<1>>,
    initial_state: Option<Tensor<4>>,
    chunk: usize,
) -> (Tensor<4>, Tensor<4>) {
    with_options(Ssd::new(x, dt, a, b, c), d, initial_state, chunk).run_reference()
}

fn with_options(s: Ssd, d: Option<Tensor<1>>, h0: Option<Tensor<4>>, chunk: usize) -> Ssd {
    let s = s.chunk(chunk);
    let s = match d {
        Some(d) => s.d(d),
        None => s,
    };
    match h0 {
        Some(h0) => s.initial_state(h0),
        None => s,
    }
}
