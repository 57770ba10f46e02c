//! The training loop: a [`MambaLm`] built from its config and trained on token documents by the
//! recipe, with evaluations, resumable checkpoints and data-parallel replicas.

use super::checkpoints::{CheckpointDir, LmArch, RunKey, TrainState};
use super::error::{TrainError, TrainResult};
use super::recipe::lm_optimizer;
use super::step::{EvalLog, StepLog, StepPlan, evaluate, train_step};
use crate::checkpoint::write_atomic;
use crate::lm::{MambaLm, MambaLmConfig};
use crate::precision::{check_dtype, dtype_name};
use burn::module::Module;
use burn::tensor::{Device, FloatDType};
use ssm_datasets::text::{PackedRows, TokenDocs};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How long a run trains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunLength {
    /// This many optimizer steps.
    Steps(usize),
    /// This many passes over the training rows (rounded up to whole steps).
    Epochs(f64),
}

impl RunLength {
    /// The optimizer steps over `rows` training rows, `per_step` rows a step (at least 1).
    pub fn steps(self, rows: usize, per_step: usize) -> usize {
        match self {
            Self::Steps(s) => s,
            Self::Epochs(e) => ((e * rows as f64) / per_step as f64).ceil() as usize,
        }
        .max(1)
    }
}

/// Everything that decides a run besides its data and devices. [`TrainerConfig::new`] gives
/// `zoo train lm`'s defaults; change the fields you need:
///
/// ```
/// # use ssm_models::lm::MambaLmConfig;
/// # use ssm_models::lm::train::{RunLength, TrainerConfig};
/// let config = TrainerConfig {
///     seq_len: 64,
///     length: RunLength::Steps(100),
///     ..TrainerConfig::new(MambaLmConfig::new(64, 2, 264))
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct TrainerConfig {
    /// The model (Mamba, Mamba2 with `mamba2`, Mamba-3 with `mamba3`); its vocabulary must
    /// hold the data's.
    pub model: MambaLmConfig,
    /// Tokens per row (default 256).
    pub seq_len: usize,
    /// Rows per micro-batch (default 16).
    pub batch_size: usize,
    /// Micro-batches accumulated per optimizer step on each device (default 1).
    pub accumulate: usize,
    /// Default: one epoch.
    pub length: RunLength,
    /// Peak learning rate (default 2e-3).
    pub lr: f64,
    /// The cosine ends at `lr` x this (default 0.1).
    pub min_lr_ratio: f64,
    /// Linear warm-up steps (default 100).
    pub warmup: usize,
    /// AdamW weight decay of the weight matrices (default 0.1; see
    /// [`no_decay_group`](super::no_decay_group)).
    pub weight_decay: f64,
    /// The gradient's global norm is clipped to this (default 1; 0: not clipped).
    pub grad_clip: f64,
    /// Validation batches per evaluation (default 8; at most all validation rows).
    pub val_batches: usize,
    /// Evaluate every this many steps, and at the end (default 100).
    pub eval_every: usize,
    /// Write a checkpoint every this many steps, and at the end (default 100; only with
    /// [`Trainer::with_checkpoints`]).
    pub checkpoint_every: usize,
    /// Seeds the weights and the order of the rows (default 0).
    pub seed: u64,
    /// f32, or bf16: the forward and backward in bf16 from f32 master weights (the optimizer,
    /// its state and the checkpoints stay f32). f16 is refused: it needs loss scaling.
    pub dtype: FloatDType,
    /// Run even when the memory estimate ([`MambaLmConfig::training_memory`]) exceeds what the
    /// machine has available (default false: such a run is refused before it allocates).
    pub force: bool,
}

impl TrainerConfig {
    /// `model` trained with `zoo train lm`'s defaults (see each field).
    pub fn new(model: MambaLmConfig) -> Self {
        Self {
            model,
            seq_len: 256,
            batch_size: 16,
            accumulate: 1,
            length: RunLength::Epochs(1.0),
            lr: 2e-3,
            min_lr_ratio: 0.1,
            warmup: 100,
            weight_decay: 0.1,
            grad_clip: 1.0,
            val_batches: 8,
            eval_every: 100,
            checkpoint_every: 100,
            seed: 0,
            dtype: FloatDType::F32,
            force: false,
        }
    }

    /// Rejects settings out of range, naming the field.
    ///
    /// # Errors
    /// [`TrainError::Invalid`], or the model config's own error.
    pub fn validate(&self) -> TrainResult<()> {
        let positive = [
            ("seq_len", self.seq_len),
            ("batch_size", self.batch_size),
            ("accumulate", self.accumulate),
            ("val_batches", self.val_batches),
            ("eval_every", self.eval_every),
            ("checkpoint_every", self.checkpoint_every),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(TrainError::Invalid(format!("{name} must be at least 1")));
        }
        match self.length {
            RunLength::Steps(0) => return Err(TrainError::Invalid("no steps to train".into())),
            RunLength::Epochs(e) if e.is_nan() || e <= 0.0 => {
                return Err(TrainError::Invalid(format!(
                    "epochs must be positive, found {e}"
                )));
            }
            _ => {}
        }
        if !(self.lr > 0.0 && self.lr <= 1.0) {
            return Err(TrainError::Invalid(format!(
                "lr must be in (0, 1], found {}",
                self.lr
            )));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(TrainError::Invalid("min_lr_ratio must be in [0, 1]".into()));
        }
        if self.weight_decay.is_nan()
            || self.weight_decay < 0.0
            || self.grad_clip.is_nan()
            || self.grad_clip < 0.0
        {
            return Err(TrainError::Invalid(
                "weight_decay and grad_clip must be at least 0".into(),
            ));
        }
        if self.dtype == FloatDType::F16 {
            return Err(TrainError::Invalid(
                "f16 training needs loss scaling (f16 gradients underflow), which this trainer \
                 has not: use bf16 (same range as f32) or f32"
                    .into(),
            ));
        }
        self.model.validate()?;
        Ok(())
    }

    /// The family the model config builds.
    pub fn arch(&self) -> LmArch {
        if self.model.mamba3.is_some() {
            LmArch::Mamba3
        } else if self.model.mamba2.is_some() {
            LmArch::Mamba2
        } else {
            LmArch::Mamba
        }
    }

    fn head_dim(&self) -> usize {
        match (&self.model.mamba2, &self.model.mamba3) {
            (Some(s), _) => s.head_dim,
            (_, Some(s)) => s.head_dim,
            // Mamba has no heads (see `RunKey::head_dim`).
            _ => 64,
        }
    }
}

/// FNV-1a, 64 bits: a content hash stable across builds and machines, for data identities
/// ([`LmData::with_key`]) and caches.
#[derive(Debug, Clone, Copy)]
pub struct ContentKey(u64);

impl Default for ContentKey {
    fn default() -> Self {
        Self::new()
    }
}

impl ContentKey {
    /// The hash of nothing.
    pub fn new() -> Self {
        Self(0xCBF2_9CE4_8422_2325)
    }

    /// Hashes `bytes` in.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }

    /// The hash as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The documents a run trains and evaluates on, as token ids, with their end-of-text token,
/// their vocabulary and their identity (part of the [`RunKey`]).
#[derive(Debug, Clone)]
pub struct LmData {
    /// The training documents.
    pub train: TokenDocs,
    /// The validation documents (none: no evaluation).
    pub val: TokenDocs,
    /// The separator between documents in a row.
    pub eos: u32,
    /// Token ids are below this.
    pub vocab: usize,
    key: Option<String>,
}

impl LmData {
    /// Holds out about `val_fraction` of `docs` for validation ([`TokenDocs::split`]).
    ///
    /// # Errors
    /// A token id (or `eos`) at or above `vocab`, or a fraction the documents cannot give.
    pub fn new(docs: TokenDocs, eos: u32, vocab: usize, val_fraction: f64) -> TrainResult<Self> {
        if let Some(m) = docs.max_id().into_iter().chain([eos]).max()
            && m as usize >= vocab
        {
            return Err(TrainError::TokenOutOfVocab { id: m, vocab });
        }
        let (train, val) = docs.split(val_fraction)?;
        Ok(Self {
            train,
            val,
            eos,
            vocab,
            key: None,
        })
    }

    /// Names the data (a checkpoint resumes only on data of the same name); the default is a
    /// hash of the tokens.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The data's name: the one given, else a hash of the documents' tokens.
    pub fn key(&self) -> String {
        if let Some(k) = &self.key {
            return k.clone();
        }
        let mut h = ContentKey::new();
        for split in [&self.train, &self.val] {
            h.update(&(split.docs.len() as u64).to_le_bytes());
            for d in &split.docs {
                h.update(&(d.len() as u64).to_le_bytes());
                for t in d {
                    h.update(&t.to_le_bytes());
                }
            }
        }
        h.hex()
    }
}

/// The run as it starts (after a checkpoint was restored, if one was).
#[derive(Debug)]
pub struct RunStart<'a> {
    /// The checkpoint resumed from: (steps done, folder).
    pub resumed: Option<(usize, &'a Path)>,
    /// Steps done (0 on a fresh run).
    pub step: usize,
    /// Steps of the whole run.
    pub steps: usize,
    /// The model's parameter count.
    pub params: usize,
    /// Training rows and the documents they hold.
    pub train_rows: usize,
    /// The training documents those rows hold.
    pub train_docs: usize,
    /// Validation rows (0: no evaluation).
    pub val_rows: usize,
    /// Tokens per optimizer step (over every device and micro-batch).
    pub tokens_per_step: usize,
    /// The main device (it steps the optimizer and evaluates).
    pub device: &'a Device,
    /// The settings the checkpoints are written under.
    pub run: &'a RunKey,
}

/// One optimizer step as it was taken.
#[derive(Debug)]
pub struct StepReport<'a> {
    /// The step's record (loss, learning rate, gradient norm).
    pub log: &'a StepLog,
    /// Steps of the whole run.
    pub steps: usize,
    /// Training tokens per second since this session started.
    pub tokens_per_s: f64,
}

/// What the [`Trainer`] tells while it runs: every method has an empty default, and `()`
/// observes nothing.
pub trait TrainObserver {
    /// Once, before the first step.
    fn start(&mut self, _run: &RunStart<'_>) {}
    /// After each optimizer step.
    fn step(&mut self, _step: &StepReport<'_>) {}
    /// After each evaluation, with the mean training loss of the steps since the last one
    /// (`None` for the untrained model's evaluation at step 0).
    fn eval(&mut self, _eval: &EvalLog, _train_loss: Option<f64>) {}
    /// After each checkpoint is committed.
    fn checkpoint(&mut self, _step: usize, _dir: &Path) {}
    /// Asked after each step but the last (its evaluation and checkpoint done): `false` stops
    /// the run there, as an interruption would; the newest checkpoint resumes it.
    fn keep_going(&mut self, _steps_done: usize) -> bool {
        true
    }
    /// When the loop ends (every step done, or stopped by [`keep_going`](Self::keep_going)).
    fn finish(&mut self) {}
}

impl TrainObserver for () {}

/// A finished (or stopped) run.
#[derive(Debug)]
pub struct Trained {
    /// The trained model on the main device (no autodiff).
    pub model: MambaLm,
    /// Its config (the vocabulary as trained).
    pub config: MambaLmConfig,
    /// Every step's record, from step 1 (resumed runs included).
    pub history: Vec<StepLog>,
    /// Every evaluation, from step 0.
    pub evals: Vec<EvalLog>,
    /// The settings of the run.
    pub run: RunKey,
    /// Steps done (below `run.steps` when stopped).
    pub steps_done: usize,
    /// Tokens per optimizer step.
    pub tokens_per_step: usize,
    /// Tokens trained on in this session (not before a resume) and the seconds it took.
    pub session_tokens: usize,
    /// Seconds spent on this session's `session_tokens`.
    pub session_secs: f64,
}

impl Trained {
    /// Whether every step of the run was taken.
    pub fn finished(&self) -> bool {
        self.steps_done >= self.run.steps
    }

    /// Saves the model in `dir`: Mamba and Mamba2 as a Hugging Face directory (`config.json`,
    /// `model.safetensors`), Mamba-3, which transformers lacks, in state-spaces/mamba's layout.
    ///
    /// # Errors
    /// A file cannot be written.
    pub fn save_model(&self, dir: &Path) -> crate::Result<()> {
        if self.config.mamba3.is_some() {
            self.model.save_state_spaces(&self.config, dir)
        } else {
            self.model.save_hf(&self.config, dir)
        }
    }

    /// The run's metrics: the last losses, throughput, every step and evaluation, the settings.
    pub fn metrics(&self) -> serde_json::Value {
        serde_json::json!({
            "arch": self.run.arch,
            "parameters": self.model.num_params(),
            "steps": self.steps_done,
            "tokens_per_step": self.tokens_per_step,
            "train_loss": self.history.last().map(|h| h.loss),
            "val_loss": self.evals.last().map(|e| e.val_loss),
            "val_ppl": self.evals.last().map(|e| e.val_ppl),
            "tokens_per_s_this_session": self.session_tokens as f64 / self.session_secs.max(1e-9),
            "history": self.history,
            "evals": self.evals,
            "run": self.run,
        })
    }

    /// Writes [`metrics`](Self::metrics) as pretty JSON to `path`, whole or not at all.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_metrics(&self, path: &Path) -> crate::Result<()> {
        let text = serde_json::to_string_pretty(&self.metrics()).expect("JSON") + "\n";
        write_atomic(path, text.as_bytes())
    }
}

/// Trains a [`MambaLm`] by the reference recipe ([`super::recipe`]): AdamW with weight decay on
/// the weight matrices, linear warm-up then cosine decay, the gradient clipped by its global
/// norm, on rows of packed documents that never see each other.
///
/// - **Data order**: the `k`-th micro-batch of the run holds
///   [`batch_rows`](ssm_datasets::text::batch_rows)`(rows, batch_size, seed, k)`, a function of
///   the seed and `k` alone; a step takes `accumulate` x devices of them.
/// - **Several devices**: each holds a replica and takes its own micro-batches; the gradients
///   are summed on the first in device order, which steps the optimizer and evaluates. Two
///   devices take the same steps as one device accumulating twice as many micro-batches.
/// - **Checkpoints** ([`with_checkpoints`](Self::with_checkpoints)): every
///   `checkpoint_every` steps and at the end, each `step-N` folder committed whole; a resumed
///   run continues the same batch stream and ends with the same weights, bit for bit, as one
///   that never stopped. A checkpoint written under other settings ([`RunKey`]) is refused.
/// - **bf16**: see [`TrainerConfig::dtype`].
///
/// ```no_run
/// # use burn::tensor::Device;
/// # use ssm_datasets::text::TokenDocs;
/// # use ssm_models::lm::MambaLmConfig;
/// # use ssm_models::lm::train::{LmData, RunLength, Trainer, TrainerConfig};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let docs = TokenDocs { docs: vec![b"to be or not to be".iter().map(|&b| b as u32).collect(); 40] };
/// let data = LmData::new(docs, 256, 257, 0.1)?;
/// let config = TrainerConfig {
///     seq_len: 32,
///     length: RunLength::Steps(20),
///     ..TrainerConfig::new(MambaLmConfig::new(32, 2, 264).with_eos_token_id(Some(256)))
/// };
/// let trained = Trainer::new(config, vec![Device::flex()])
///     .with_checkpoints("runs/mine/checkpoints", true)
///     .fit(&data, &mut ())?;
/// trained.save_model("runs/mine".as_ref())?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Trainer {
    config: TrainerConfig,
    devices: Vec<Device>,
    checkpoints: Option<CheckpointDir>,
    resume: bool,
}

impl Trainer {
    /// A run of `config` on `devices` (the first is the main one; one replica per device).
    pub fn new(config: TrainerConfig, devices: Vec<Device>) -> Self {
        Self {
            config,
            devices,
            checkpoints: None,
            resume: false,
        }
    }

    /// Writes checkpoints in `dir`; with `resume`, continues from its newest one (if any),
    /// else refuses a folder holding an earlier run's.
    pub fn with_checkpoints(mut self, dir: impl Into<PathBuf>, resume: bool) -> Self {
        self.checkpoints = Some(CheckpointDir::new(dir));
        self.resume = resume;
        self
    }

    /// The settings.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// Trains on `data`, telling `observer` as it goes.
    ///
    /// # Errors
    /// Settings out of range, data that does not fit the model, a device that cannot compute
    /// in the dtype, an unreadable or foreign checkpoint, a diverged loss
    /// ([`TrainError::Diverged`]), a file that cannot be written.
    pub fn fit(&self, data: &LmData, observer: &mut dyn TrainObserver) -> TrainResult<Trained> {
        let c = &self.config;
        c.validate()?;
        if self.devices.is_empty() {
            return Err(TrainError::Invalid("no device to train on".into()));
        }
        if data.vocab > c.model.vocab_size {
            return Err(TrainError::Invalid(format!(
                "the data's vocabulary ({}) is larger than the model's ({})",
                data.vocab, c.model.vocab_size
            )));
        }
        let newest = match &self.checkpoints {
            Some(dir) => dir.to_resume(self.resume)?,
            None => None,
        };
        let train_rows = PackedRows::new(&data.train, data.eos, c.seq_len)?;
        let val_rows = if data.val.docs.is_empty() {
            None
        } else {
            Some(
                PackedRows::new(&data.val, data.eos, c.seq_len)
                    .map_err(TrainError::ValidationRows)?,
            )
        };
        let micro = c.batch_size;
        let replicas = self.devices.len();
        let per_step = micro * c.accumulate * replicas;
        let steps = c.length.steps(train_rows.len(), per_step);
        let run_key = RunKey {
            arch: c.arch(),
            d_model: c.model.d_model,
            layers: c.model.n_layer,
            d_state: c.model.d_state,
            head_dim: c.head_dim(),
            vocab: data.vocab,
            seq_len: c.seq_len,
            batch_size: c.batch_size,
            accumulate: c.accumulate,
            replicas,
            steps,
            lr: c.lr,
            min_lr_ratio: c.min_lr_ratio,
            warmup: c.warmup,
            weight_decay: c.weight_decay,
            grad_clip: c.grad_clip,
            seed: c.seed,
            data: data.key(),
            dtype: dtype_name(c.dtype).to_string(),
        };

        for d in &self.devices {
            check_dtype(d, c.dtype)?;
        }
        let device = self.devices[0].clone();
        // Sized before anything is allocated: each replica on the host holds a model and a
        // micro-batch's activations.
        let host_replicas = self
            .devices
            .iter()
            .filter(|d| ssm_backends::is_host(d))
            .count();
        let mut need = c
            .model
            .training_memory(c.batch_size, c.seq_len, c.dtype != FloatDType::F32);
        for part in &mut need.parts {
            part.1 = part.1.saturating_mul(host_replicas.max(1) as u64);
        }
        need.check(&device, c.force || crate::memory::forced_by_env())?;
        device.seed(c.seed);
        let train_device = device.clone().autodiff();
        let mut model = c.model.try_init(&train_device)?;
        model.check_fits(c.batch_size, c.seq_len, true, false)?;
        let mut optim = lm_optimizer(c.weight_decay);
        let mut state = TrainState {
            run: run_key,
            step: 0,
            history: Vec::new(),
            evals: Vec::new(),
        };
        if let Some((_, dir)) = &newest {
            let (m, o, s) = CheckpointDir::load(dir, model, optim, &state.run)?;
            (model, optim, state) = (m, o, s);
        }
        observer.start(&RunStart {
            resumed: newest.as_ref().map(|(s, d)| (*s, d.as_path())),
            step: state.step,
            steps,
            params: model.num_params(),
            train_rows: train_rows.len(),
            train_docs: data.train.docs.len(),
            val_rows: val_rows.as_ref().map_or(0, PackedRows::len),
            tokens_per_step: per_step * c.seq_len,
            device: &device,
            run: &state.run,
        });
        if state.step == 0
            && let Some(val) = &val_rows
        {
            // The untrained model's loss: where the curve starts (about ln(vocab)).
            let val_loss = evaluate(&model.valid(), val, c.val_batches, micro, &device, c.dtype)?;
            let e = EvalLog {
                step: 0,
                val_loss,
                val_ppl: val_loss.exp(),
            };
            observer.eval(&e, None);
            state.evals.push(e);
        }
        let start = Instant::now();
        let start_step = state.step;
        let plan = StepPlan {
            rows: &train_rows,
            devices: &self.devices,
            micro,
            accumulate: c.accumulate,
            seed: c.seed,
            steps,
            warmup: c.warmup,
            lr: c.lr,
            min_lr: c.lr * c.min_lr_ratio,
            grad_clip: c.grad_clip,
            dtype: c.dtype,
        };
        while state.step < steps {
            let (next, log) = train_step(model, &mut optim, &plan, state.step)?;
            model = next;
            let loss = log.loss;
            state.step += 1;
            state.history.push(log);
            let done = state.step - start_step;
            let tokens_per_s = (done * per_step * c.seq_len) as f64 / start.elapsed().as_secs_f64();
            observer.step(&StepReport {
                log: state.history.last().expect("a step"),
                steps,
                tokens_per_s,
            });
            if !loss.is_finite() {
                return Err(TrainError::Diverged {
                    step: state.step,
                    loss,
                });
            }
            let last = state.step == steps;
            if let Some(val) = &val_rows
                && (state.step.is_multiple_of(c.eval_every) || last)
            {
                let val_loss =
                    evaluate(&model.valid(), val, c.val_batches, micro, &device, c.dtype)?;
                let e = EvalLog {
                    step: state.step,
                    val_loss,
                    val_ppl: val_loss.exp(),
                };
                let n = c.eval_every.min(state.history.len());
                let train_loss = state.history[state.history.len() - n..]
                    .iter()
                    .map(|h| h.loss)
                    .sum::<f64>()
                    / n as f64;
                observer.eval(&e, Some(train_loss));
                state.evals.push(e);
            }
            if let Some(dir) = &self.checkpoints
                && (state.step.is_multiple_of(c.checkpoint_every) || last)
            {
                let path = dir.save(&model, &optim, &state)?;
                observer.checkpoint(state.step, &path);
            }
            if !last && !observer.keep_going(state.step) {
                break;
            }
        }
        observer.finish();
        let session_secs = start.elapsed().as_secs_f64();
        Ok(Trained {
            model: model.valid(),
            config: c.model.clone(),
            history: state.history,
            evals: state.evals,
            run: state.run,
            steps_done: state.step,
            tokens_per_step: per_step * c.seq_len,
            session_tokens: (state.step - start_step) * per_step * c.seq_len,
            session_secs,
        })
    }
}
