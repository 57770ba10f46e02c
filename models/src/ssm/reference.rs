//! Loading the S4 family from its reference checkpoints: the options a state dict does not
//! record ([`ReferenceOptions`]), the one loader trait the layers share ([`ReferenceLayer`]), and
//! the tensors of state-spaces/s4's `SSMKernel` layouts (v3 and v4, `models/s4/s4.py` and
//! `src/models/sequence/kernels`) that the S4 and S4D loaders read.

use crate::error::{ModelError, Result};
use crate::io::TensorMap;
use burn::tensor::{Device, Tensor};
use std::path::Path;

/// state-spaces/s4's `dt_transform`: how a checkpoint's `inv_dt` gives the step `Δ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtTransform {
    /// `Δ = exp(inv_dt)`: the standalone `models/s4/s4.py` default (and v3's `log_dt`).
    #[default]
    Exp,
    /// `Δ = softplus(inv_dt)`: the training repository's default (`configs/model/layer/s4.yaml`).
    Softplus,
}

/// What a state-spaces/s4 state dict does not record, and the loaders must be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReferenceOptions {
    /// The model's `dt_transform` (default `exp`).
    pub dt_transform: DtTransform,
    /// The diagonal kernel's `disc='bilinear'` (default ZOH; ignored for S4's DPLR kernel,
    /// which is always bilinear).
    pub bilinear: bool,
    /// The block's `l_max` (its `FFTConv`'s): kernels are at most this many taps, zero beyond.
    /// `None` (the standalone `S4Block` default): as long as the input, an S4 kernel's `C̃`
    /// extended by doubling beyond its `l_kernel` as the reference does. The training
    /// repository's configs set it to the dataset's length.
    pub l_max: Option<usize>,
}

/// A layer that loads from a checkpoint of its reference implementation: [`S4`](super::s4::S4)
/// and [`S4D`](super::s4d::S4D) from state-spaces/s4, [`DSS`](super::dss::DSS) from ag1988/dss.
/// Each implements [`take_reference`](Self::take_reference); reading a file and checking that
/// every key was used are shared.
pub trait ReferenceLayer: Sized {
    /// What the state dict does not record and the caller must say (the reference's options).
    type Options: Default;

    /// Builds the layer from the tensors of `w` it names (taken out of the map), every one
    /// checked for presence and shape.
    fn take_reference(w: &mut TensorMap, options: &Self::Options, device: &Device) -> Result<Self>;

    /// Loads a checkpoint file (`.pt`, `.pth`, `.ckpt`, `.safetensors`; a state dict possibly
    /// nested under `"model"` or `"state_dict"`) with the default options; every key must be
    /// used.
    fn load_reference(path: &Path, device: &Device) -> Result<Self> {
        Self::load_reference_with(path, Self::Options::default(), device)
    }

    /// [`load_reference`](Self::load_reference) with the given options.
    fn load_reference_with(path: &Path, options: Self::Options, device: &Device) -> Result<Self> {
        Self::from_reference_map(TensorMap::read(path)?, options, device)
    }

    /// [`load_reference_with`](Self::load_reference_with) from tensors already read, e.g. one
    /// block split off a whole model's checkpoint with [`TensorMap::split_prefix`] (in a
    /// Lightning checkpoint of state-spaces/s4's training repository,
    /// `state_dict.model.layers.{i}.layer.`); every key of the map must be used.
    fn from_reference_map(
        mut w: TensorMap,
        options: Self::Options,
        device: &Device,
    ) -> Result<Self> {
        let layer = Self::take_reference(&mut w, &options, device)?;
        w.finish()?;
        Ok(layer)
    }
}

/// Rewrites a v3 state dict (the standalone `S4` module before the v4 rewrite: `D`,
/// `kernel.kernel.{log_dt, inv_w_real | inv_A_real, w_imag | A_imag, B, P, C, L}`, a
/// Conv1d `output_linear.0`) into the v4 `S4Block` layout read below. v3 stores `Im Λ`
/// itself where v4 stores `−Im Λ`; its diagonal kernel's `B` has no leading 1.
pub(crate) fn upgrade_v3(w: &mut TensorMap, device: &Device) -> Result<()> {
    let old = "kernel.kernel";
    if !w.contains(&format!("{old}.log_dt")) {
        return Ok(());
    }
    let new = "layer.kernel";
    w.rename("D", "layer.D");
    for (from, to) in [
        ("log_dt", "log_dt"),
        ("inv_w_real", "A_real"),
        ("inv_A_real", "A_real"),
        ("P", "P"),
        ("C", "C"),
        ("L", "l_kernel"),
    ] {
        w.rename(&format!("{old}.{from}"), format!("{new}.{to}"));
    }
    for from in ["w_imag", "A_imag"] {
        let key = format!("{old}.{from}");
        if w.contains(&key) {
            let s = w.shape_of(&key)?;
            let dim = |i: usize| s.get(i).copied().unwrap_or(0);
            let t = w.take::<2>(&key, [dim(0), dim(1)], device)?;
            w.insert(format!("{new}.A_imag"), t.neg().into_data());
        }
    }
    let b = format!("{old}.B");
    if w.contains(&b) {
        let s = w.shape_of(&b)?;
        if s.len() == 3 {
            let t = w.take::<3>(&b, [s[0], s[1], s[2]], device)?;
            w.insert(format!("{new}.B"), t.unsqueeze::<4>().into_data());
        } else {
            w.rename(&b, format!("{new}.B"));
        }
    }
    Ok(())
}

/// Python's `round` on a non-negative length: to the nearest integer, ties to the even one
/// (`round(4.5) == 4`), as state-spaces/s4 rounds every length it derives at another rate
/// (Rust's `f64::round` takes ties away from zero and would give 5 taps where the reference
/// computes 4).
pub(crate) fn python_round(x: f64) -> usize {
    x.round_ties_even() as usize
}

/// state-spaces/s4's `FFTConv` around a kernel, on `u` (B, H, L) at the sampling `rate` (1.0:
/// the kernel's own): the kernel (and a bidirectional layer's backward kernel) of
/// `min(L, round(l_max / rate))` taps from `kernels`, zero beyond, convolved with `u`
/// ([`causal_conv`](ssm_backends::causal_conv) or
/// [`bidirectional_conv`](ssm_backends::bidirectional_conv)), plus the skip `D u`.
pub(crate) fn fft_conv(
    u: Tensor<3>,
    l_max: Option<usize>,
    rate: f64,
    d: Tensor<1>,
    kernels: impl Fn(usize) -> (Tensor<2>, Option<Tensor<2>>),
) -> Tensor<3> {
    let [_, _, l] = u.dims();
    let taps = l_max.map_or(l, |m| l.min(python_round(m as f64 / rate).max(1)));
    let (k, kb) = kernels(taps);
    let pad = |k: Tensor<2>| {
        if taps == l {
            return k;
        }
        let [h, _] = k.dims();
        Tensor::cat(
            vec![k.clone(), Tensor::zeros([h, l - taps], &k.device())],
            1,
        )
    };
    let y = match kb {
        Some(kb) => ssm_backends::bidirectional_conv(u.clone(), pad(k), pad(kb)),
        None => ssm_backends::causal_conv(u.clone(), pad(k)),
    };
    y + u * d.unsqueeze_dims::<3>(&[0, 2])
}

/// H of a layer whose skip `D` has one output channel, `(1, H)` under `key` (`layer.D` of an
/// `S4Block`, `D` of an S4ND layer).
pub(crate) fn single_channel(w: &TensorMap, key: &str) -> Result<usize> {
    let d = w.shape_of(key)?;
    if d.len() != 2 || d[0] != 1 {
        return Err(ModelError::Invalid(format!(
            "weights: key '{key}' has shape {d:?}: only one output channel (channels = 1) \
             is supported"
        )));
    }
    Ok(d[1])
}

/// (H, the number of trained copies S of (A, B) (`n_ssm`), N/2) of the kernel under `k` for
/// `h` channels, checked: S divides H.
pub(crate) fn sizes(w: &TensorMap, k: &str, h: usize) -> Result<(usize, usize, usize)> {
    let a = w.shape_of(&format!("{k}.A_real"))?;
    let (s, n2) = (
        a.first().copied().unwrap_or(0),
        a.get(1).copied().unwrap_or(0),
    );
    if a.len() != 2 || s == 0 || !h.is_multiple_of(s) {
        return Err(ModelError::Invalid(format!(
            "weights: key '{k}.A_real' has shape {a:?}: expected (n_ssm, N/2) with n_ssm \
             dividing H = {h}"
        )));
    }
    Ok((h, s, n2))
}

/// `log Δ` (H): from `inv_dt` (H, 1) under the model's `dt_transform`, or v3's `log_dt`
/// (H).
pub(crate) fn log_dt(
    w: &mut TensorMap,
    k: &str,
    h: usize,
    transform: DtTransform,
    device: &Device,
) -> Result<Tensor<1>> {
    let old = format!("{k}.log_dt");
    if w.contains(&old) {
        return w.take(&old, [h], device);
    }
    let inv = w.take(&format!("{k}.inv_dt"), [h, 1], device)?.reshape([h]);
    Ok(match transform {
        DtTransform::Exp => inv,
        DtTransform::Softplus => burn::tensor::activation::softplus(inv, 1.0).log(),
    })
}

/// The kernel's `C` (1 or 2, H, N/2, 2): the forward `C` (H, N/2, 2) and, for a
/// bidirectional layer (two kernel channels under one output channel, `layer.D` (1, H)),
/// the backward one.
pub(crate) fn output_c(
    w: &mut TensorMap,
    k: &str,
    h: usize,
    n2: usize,
    device: &Device,
) -> Result<(Tensor<3>, Option<Tensor<3>>)> {
    let key = format!("{k}.C");
    let two = w.shape_of(&key)?.first() == Some(&2);
    let c = w.take(&key, [if two { 2 } else { 1 }, h, n2, 2], device)?;
    Ok(if two {
        (
            c.clone().narrow(0, 0, 1).reshape([h, n2, 2]),
            Some(c.narrow(0, 1, 1).reshape([h, n2, 2])),
        )
    } else {
        (c.reshape([h, n2, 2]), None)
    })
}

/// Λ (H, N/2) from `A_real` (stored `log(−Re Λ)`) and `A_imag` (stored `−Im Λ`), each
/// (S, N/2) and repeated over the H/S groups of channels as the reference does.
pub(crate) fn lambda(
    w: &mut TensorMap,
    k: &str,
    (h, s, n2): (usize, usize, usize),
    device: &Device,
) -> Result<(Tensor<2>, Tensor<2>)> {
    let re = w.take(&format!("{k}.A_real"), [s, n2], device)?.exp().neg();
    let im = w.take(&format!("{k}.A_imag"), [s, n2], device)?.neg();
    Ok((re.repeat_dim(0, h / s), im.repeat_dim(0, h / s)))
}

/// A complex (1, S, N/2, 2) tensor, `B` or a rank-1 `P`, as (H, N/2, 2), repeated over
/// the channel groups.
pub(crate) fn shared(
    w: &mut TensorMap,
    key: &str,
    (h, s, n2): (usize, usize, usize),
    device: &Device,
) -> Result<Tensor<3>> {
    Ok(w.take(key, [1, s, n2, 2], device)?
        .reshape([s, n2, 2])
        .repeat_dim(0, h / s))
}

/// `output_linear.0` (`nn.Linear(H, 2H)` before the GLU; v3: a Conv1d (2H, H, 1)).
pub(crate) fn glu_linear(w: &mut TensorMap, h: usize, device: &Device) -> Result<burn::nn::Linear> {
    w.linear("output_linear.0", h, 2 * h, true, device)
}
