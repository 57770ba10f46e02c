//! One optimizer step of the recipe on one or several devices, and the evaluation.

use super::recipe::{PackedLm, clip_grad_norm, token_losses, warmup_cosine};
use crate::precision::cast_params;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, FloatDType};
use serde::{Deserialize, Serialize};
use ssm_datasets::text::{PackedRows, batch_rows};

/// One optimizer step's record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StepLog {
    /// Steps done after this one (1 for the first).
    pub step: usize,
    /// The mean next-token loss over the step's micro-batches (nats per token).
    pub loss: f64,
    /// The learning rate the step was taken at.
    pub lr: f64,
    /// The gradient's global norm before clipping.
    pub grad_norm: f64,
}

/// One evaluation on the validation rows.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EvalLog {
    /// Steps done when it was measured (0: the untrained model).
    pub step: usize,
    /// The mean next-token loss (nats per token).
    pub val_loss: f64,
    /// `exp(val_loss)`.
    pub val_ppl: f64,
}

/// What one optimizer step needs to know.
#[derive(Debug, Clone, Copy)]
pub struct StepPlan<'a> {
    /// The training rows.
    pub rows: &'a PackedRows,
    /// The first is the main device (plain, not autodiff); one replica per device.
    pub devices: &'a [Device],
    /// Rows per micro-batch.
    pub micro: usize,
    /// Micro-batch rounds per step (each round one micro-batch per device).
    pub accumulate: usize,
    /// Decides the order of the rows.
    pub seed: u64,
    /// Total steps (for the schedule).
    pub steps: usize,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// The learning rate at the last step.
    pub min_lr: f64,
    /// The gradient's global norm is clipped to this (0: not clipped).
    pub grad_clip: f64,
    /// The dtype the forward and backward run in (f32 master weights whatever it is).
    pub dtype: FloatDType,
}

/// Optimizer step `step` (0-based) of the recipe: the step's micro-batches (a deterministic
/// function of the seed and the step) forward and backward on every device, the gradients
/// summed on the main device in a fixed order, clipped, and AdamW at the scheduled rate.
/// Returns the updated model and the step's record (`step` is then the steps done).
///
/// The micro-batch `k` of the run (`k = step * accumulate * devices + round * devices + i`)
/// holds the rows [`batch_rows`]`(rows, micro, seed, k)`, whichever device computes it: two
/// devices then take the same step as one device accumulating twice as many micro-batches.
///
/// # Errors
/// The model refuses a batch (see [`PackedLm::logits_packed`]).
pub fn train_step<M: PackedLm>(
    model: M,
    optim: &mut ModuleOptimizer,
    plan: &StepPlan,
    step: usize,
) -> crate::Result<(M, StepLog)> {
    let lr = warmup_cosine(step, plan.steps, plan.warmup, plan.lr, plan.min_lr);
    let replicas = plan.devices.len();
    let main = &plan.devices[0];
    let micros = plan.accumulate * replicas;
    let mut accum = GradientsAccumulator::new();
    let mut loss_sum = 0.0;
    // The other devices' replicas of this step's weights.
    let copies: Vec<M> = plan.devices[1..]
        .iter()
        .map(|d| model.clone().fork(&d.clone().autodiff()))
        .collect();
    for round in 0..plan.accumulate {
        let first = step * micros + round * replicas;
        let work = |replica: &M, i: usize| {
            let k = (first + i) as u64;
            let rows = batch_rows(plan.rows.len(), plan.micro, plan.seed, k);
            micro_step(replica, plan.rows, &rows, micros, main, plan.dtype)
        };
        let results: Vec<crate::Result<(f64, GradientsParams)>> = if replicas == 1 {
            vec![work(&model, 0)]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = copies
                    .iter()
                    .enumerate()
                    .map(|(j, replica)| scope.spawn(move || work(replica, j + 1)))
                    .collect();
                let mut out = vec![work(&model, 0)];
                out.extend(
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("a replica's thread does not panic")),
                );
                out
            })
        };
        // Summed in device order, as one device accumulating these micro-batches would.
        for r in results {
            let (loss, grads) = r?;
            loss_sum += loss;
            accum.accumulate(&model, grads);
        }
    }
    let mut grads = accum.grads();
    let grad_norm = clip_grad_norm(&model, &mut grads, plan.grad_clip);
    let model = optim.step(lr, model, grads);
    Ok((
        model,
        StepLog {
            step: step + 1,
            loss: loss_sum,
            lr,
            grad_norm,
        },
    ))
}

/// One micro-batch's forward and backward on `replica`'s device: its loss (already divided by
/// `micros`, the micro-batches of the step) and gradients moved to the main device.
fn micro_step<M: PackedLm>(
    replica: &M,
    rows: &PackedRows,
    idx: &[usize],
    micros: usize,
    main: &Device,
    dtype: FloatDType,
) -> crate::Result<(f64, GradientsParams)> {
    let device = replica
        .devices()
        .into_iter()
        .next()
        .expect("a model with parameters");
    let batch = rows.batch(idx, &device);
    // In half precision the weights are cast from the f32 masters inside the recorded graph,
    // so the gradients land on the masters in f32.
    let logits = if dtype == FloatDType::F32 {
        replica.logits_packed(batch.inputs, batch.seq_idx)?
    } else {
        cast_params(replica.clone(), dtype).logits_packed(batch.inputs, batch.seq_idx)?
    };
    let loss = token_losses(logits, batch.targets)
        .mean()
        .div_scalar(micros as f64);
    let value = loss.clone().into_scalar::<f32>() as f64;
    let grads = GradientsParams::from_grads(loss.backward(), replica);
    Ok((value, grads.to_device(main, replica)))
}

/// Mean next-token loss over the first `batches` batches of `micro` validation rows (in
/// order), the weights cast to `dtype` for the forward when it is not f32.
///
/// # Errors
/// The model refuses a batch (see [`PackedLm::logits_packed`]).
pub fn evaluate<M: PackedLm>(
    model: &M,
    rows: &PackedRows,
    batches: usize,
    micro: usize,
    device: &Device,
    dtype: FloatDType,
) -> crate::Result<f64> {
    let cast;
    let model = if dtype == FloatDType::F32 {
        model
    } else {
        cast = cast_params(model.clone(), dtype);
        &cast
    };
    let n = rows.len().min(batches * micro);
    let (mut sum, mut count) = (0.0, 0usize);
    for start in (0..n).step_by(micro) {
        let idx: Vec<usize> = (start..(start + micro).min(n)).collect();
        let batch = rows.batch(&idx, device);
        let logits = model.logits_packed(batch.inputs, batch.seq_idx)?;
        let losses = token_losses(logits, batch.targets);
        let k = losses.dims().iter().product::<usize>();
        sum += losses.sum().into_scalar::<f32>() as f64;
        count += k;
    }
    Ok(sum / count as f64)
}
