//! The trainer's checkpoints: `step-N` folders (`model.bpk`, `optim.bpk`, `state.json`), each
//! committed whole ([`AtomicDir`]), the two newest kept, and refused on resume when they were
//! written under other settings ([`RunKey`]).

use super::error::{TrainError, TrainResult};
use super::step::{EvalLog, StepLog};
use crate::checkpoint::{AtomicDir, is_leftover, load_weights, save_weights};
use crate::lm::MambaLm;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The language-model families the trainer builds (from the [`MambaLmConfig`]'s settings).
///
/// [`MambaLmConfig`]: crate::lm::MambaLmConfig
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LmArch {
    /// Mamba (S6).
    Mamba,
    /// Mamba2 (SSD).
    Mamba2,
    /// Mamba-3 (SISO).
    Mamba3,
}

/// The settings that decide a run's trajectory: a checkpoint resumes only under the same ones.
/// Written in each checkpoint's `state.json` (and in the metrics under `run`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RunKey {
    /// The model family.
    pub arch: LmArch,
    /// The model width.
    pub d_model: usize,
    /// The number of blocks.
    pub layers: usize,
    /// The SSM state size N.
    pub d_state: usize,
    /// Channels per head of Mamba2 and Mamba-3. A Mamba mixer has no heads: its runs record
    /// 64 (the `zoo train lm --head-dim` default), and the field is not compared for them.
    pub head_dim: usize,
    /// The data's vocabulary ([`LmData::vocab`](super::LmData::vocab)).
    pub vocab: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches accumulated per optimizer step on each device.
    pub accumulate: usize,
    /// Devices, each with a replica of the model.
    pub replicas: usize,
    /// Optimizer steps of the whole run.
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// The cosine schedule ends at `lr` x this.
    pub min_lr_ratio: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// AdamW weight decay of the weight matrices.
    pub weight_decay: f64,
    /// The gradient's global norm is clipped to this (0: not clipped).
    pub grad_clip: f64,
    /// Seeds the weights and the order of the rows.
    pub seed: u64,
    /// The data's identity ([`LmData::key`](super::LmData::key)).
    pub data: String,
    /// The compute dtype (runs from before the option existed were f32).
    #[serde(default = "f32_name")]
    pub dtype: String,
}

fn f32_name() -> String {
    "f32".into()
}

impl RunKey {
    /// The settings of `self` (saved) that differ in `now`, as `name saved (now current)`.
    pub fn differences(&self, now: &RunKey) -> Vec<String> {
        let saved = serde_json::to_value(self).expect("JSON");
        let current = serde_json::to_value(now).expect("JSON");
        let headless = self.arch == LmArch::Mamba && now.arch == LmArch::Mamba;
        saved
            .as_object()
            .expect("an object")
            .iter()
            .filter(|(k, _)| !(headless && k.as_str() == "head_dim"))
            .filter(|(k, v)| current.get(k.as_str()) != Some(v))
            .map(|(k, v)| format!("{k} {v} (now {})", current[k.as_str()]))
            .collect()
    }
}

/// What a checkpoint holds besides the model and the optimizer.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct TrainState {
    pub run: RunKey,
    /// Steps done.
    pub step: usize,
    pub history: Vec<StepLog>,
    pub evals: Vec<EvalLog>,
}

const STATE_FILE: &str = "state.json";
const OPTIM_FILE: &str = "optim.bpk";
/// Checkpoints kept (the newest).
const KEEP: usize = 2;

/// A run's checkpoint folder: `step-00000012/` per checkpoint (`model.bpk`, `optim.bpk`,
/// `state.json`), each committed whole, the two newest kept.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    dir: PathBuf,
}

impl CheckpointDir {
    /// The checkpoints in `dir` (created at the first checkpoint).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The checkpoints `(steps done, folder)`, oldest first (none when the folder does not
    /// exist); what an interrupted write left is removed.
    pub fn list(&self) -> Vec<(usize, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_leftover(&name) {
                let _ = std::fs::remove_dir_all(e.path());
            } else if let Some(n) = name.strip_prefix("step-").and_then(|s| s.parse().ok()) {
                found.push((n, e.path()));
            }
        }
        found.sort();
        found
    }

    /// The newest checkpoint, to resume from when `resume`.
    ///
    /// # Errors
    /// [`TrainError::EarlierRun`] when there is one and `resume` is false.
    pub fn to_resume(&self, resume: bool) -> TrainResult<Option<(usize, PathBuf)>> {
        let newest = self.list().pop();
        if newest.is_some() && !resume {
            return Err(TrainError::EarlierRun {
                dir: self.dir.clone(),
            });
        }
        Ok(newest)
    }

    /// Writes the model, the optimizer and the run state as `step-N` (whole or not at all) and
    /// keeps the two newest; returns the checkpoint's folder.
    pub(crate) fn save(
        &self,
        model: &MambaLm,
        optim: &ModuleOptimizer,
        state: &TrainState,
    ) -> TrainResult<PathBuf> {
        let io = |e: crate::ModelError| match e {
            crate::ModelError::Io { path, source } => TrainError::checkpoint(path, source),
            e => TrainError::Model(e),
        };
        let folder =
            AtomicDir::begin(self.dir.join(format!("step-{:08}", state.step))).map_err(io)?;
        let tmp = folder.path();
        save_weights(model, tmp)?;
        let optim_path = tmp.join(OPTIM_FILE);
        optim
            .save(&optim_path)
            .map_err(|e| TrainError::checkpoint(&optim_path, e))?;
        let json = serde_json::to_string(state).expect("JSON");
        std::fs::write(tmp.join(STATE_FILE), json).map_err(|e| TrainError::checkpoint(tmp, e))?;
        let dest = folder.commit().map_err(io)?;
        for (_, p) in self.list().iter().rev().skip(KEEP) {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(dest)
    }

    /// Restores the checkpoint in `dir` into a freshly built model and optimizer; refuses one
    /// written under other settings than `run`, and says which file is unreadable.
    pub(crate) fn load(
        dir: &Path,
        model: MambaLm,
        optim: ModuleOptimizer,
        run: &RunKey,
    ) -> TrainResult<(MambaLm, ModuleOptimizer, TrainState)> {
        let state_path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&state_path)
            .map_err(|e| TrainError::checkpoint(&state_path, e))?;
        let state: TrainState = serde_json::from_str(&text).map_err(|e| {
            TrainError::checkpoint(&state_path, format!("not a checkpoint state: {e}"))
        })?;
        let differences = state.run.differences(run);
        if !differences.is_empty() {
            return Err(TrainError::OtherSettings {
                dir: dir.to_path_buf(),
                differences,
            });
        }
        let model = load_weights(model, dir)?;
        let optim_path = dir.join(OPTIM_FILE);
        let optim = optim.load(&optim_path).map_err(|e| {
            TrainError::checkpoint(&optim_path, format!("unreadable optimizer state: {e}"))
        })?;
        Ok((model, optim, state))
    }
}
