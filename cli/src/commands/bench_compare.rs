//! `zoo bench compare`: the survey's question — how do SSMs compare with a Transformer at equal
//! size? Trains a Mamba, a Mamba2 and a causal Transformer (Burn's `burn::nn::transformer`) of
//! the same width, their depths chosen for equal parameter counts, on the same packed
//! Shakespeare bytes with the same steps and optimizer, and reports validation perplexity and
//! training tokens/s; then times one forward pass (after an untimed one at the same length: steady
//! state, with what a model caches per length cached) and measures its peak heap memory against the
//! sequence length for Mamba, Mamba2, S4D and the Transformer. Writes `compare.json`, prints a
//! table, and draws `compare.png` (log-log).

use crate::common::args::RunArgs;
use crate::common::choices::CompareModel;
use crate::common::error::{CliError, CliResult, usage};
use crate::common::measure::sync;
use crate::common::memory;
use crate::common::plot::FONT;
use burn::module::Module;
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use clap::Args;
use plotters::prelude::*;
use ssm_datasets::text::{PackedRows, TokenDocs, default_text_path, read_documents};
use ssm_models::classify::{SequenceClassifier, SequenceClassifierConfig};
use ssm_models::lm::train::{PackedLm, StepPlan, evaluate, lm_optimizer, train_step};
use ssm_models::lm::{Mamba2Settings, MambaLm, MambaLmConfig, TransformerLm, TransformerLmConfig};
use std::path::Path;
use std::time::Instant;

#[derive(Args, Debug)]
#[command(
    mut_arg("out", |a| a.default_value("runs/compare").help(
        "Where compare.json and compare.png go"
    )),
    mut_arg("device", |a| a.help(
        "auto, cpu, ndarray, wgpu, wgpu:N, cuda, cuda:N (auto: a hardware GPU if this build \
         reaches one, else the CPU backend); the memory figures are the host heap's, measured \
         on a CPU backend only"
    ))
)]
pub struct CompareArgs {
    /// Training steps per model.
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// The width of every model.
    #[arg(long, default_value_t = 128)]
    d_model: usize,
    /// Mamba's depth; the others' are chosen for the same parameter count.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Sequence lengths of the inference comparison.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "256,1024,4096,8192,16384"
    )]
    lengths: Vec<usize>,
    /// A (model, length) whose attention scores alone would take more than this many GiB is
    /// skipped (the Transformer's grow as L²: 12 GiB at L = 16,384).
    #[arg(long, default_value_t = 13.0)]
    memory_limit_gib: f64,
    /// Only the inference comparison.
    #[arg(long)]
    skip_training: bool,
    /// The models compared (any of mamba, mamba2, transformer, s4d; S4D is in the inference
    /// comparison only).
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        value_delimiter = ',',
        default_value = "mamba,mamba2,transformer,s4d"
    )]
    models: Vec<CompareModel>,
    #[command(flatten)]
    run: RunArgs,
}

/// The byte vocabulary (256 bytes + end of text) rounded up to a multiple of 8.
const VOCAB: usize = 264;
const EOS: u32 = 256;

/// The models compared.
enum Net {
    Mamba(MambaLm),
    Transformer(TransformerLm),
    S4d(SequenceClassifier),
}

impl Net {
    fn params(&self) -> usize {
        match self {
            Net::Mamba(m) => m.num_params(),
            Net::Transformer(m) => m.num_params(),
            Net::S4d(m) => m.num_params(),
        }
    }

    /// One forward pass over a row of `l` tokens (S4D: `l` steps of d_model features).
    fn forward(&self, l: usize, d: usize, device: &Device) -> Tensor<1> {
        let ids = || {
            let v: Vec<i64> = (0..l).map(|i| ((i * 7919 + 13) % 256) as i64).collect();
            Tensor::<2, Int>::from_data(TensorData::new(v, [1, l]), device)
        };
        match self {
            Net::Mamba(m) => {
                use ssm_models::lm::CausalLm;
                m.forward(ids()).sum()
            }
            Net::Transformer(m) => m.forward(ids()).sum(),
            Net::S4d(m) => {
                let x = Tensor::<3>::ones([1, l, d], device).mul_scalar(0.1);
                m.forward(x).sum()
            }
        }
    }
}

fn mamba_config(d: usize, layers: usize, mamba2: bool) -> MambaLmConfig {
    let mut c = MambaLmConfig::new(d, layers, VOCAB)
        .with_pad_vocab_size_multiple(1)
        .with_eos_token_id(Some(EOS as usize));
    if mamba2 {
        c.d_state = 64;
        c.mamba2 = Some(Mamba2Settings::new().with_head_dim(32));
    }
    c
}

fn transformer_config(d: usize, layers: usize) -> TransformerLmConfig {
    TransformerLmConfig::new(d, layers, VOCAB)
}

/// The depth whose parameter count is nearest `target`, from a model's counts at depths 1, 2.
fn matched_depth(target: usize, count: impl Fn(usize) -> usize) -> usize {
    let (one, two) = (count(1), count(2));
    let per_layer = two.saturating_sub(one).max(1);
    let base = one.saturating_sub(per_layer);
    (((target.saturating_sub(base)) as f64 / per_layer as f64).round() as usize).max(1)
}

pub fn run(a: CompareArgs) -> CliResult {
    if a.steps == 0 || a.d_model == 0 || a.layers == 0 || a.seq_len == 0 || a.batch_size == 0 {
        return Err(usage(
            "--steps, --d-model, --layers, --seq-len and --batch-size must be at least 1",
        ));
    }
    if a.lengths.is_empty() || a.lengths.contains(&0) {
        return Err(usage("--lengths must be positive lengths"));
    }
    if !a.d_model.is_multiple_of(32) {
        return Err(usage(
            "--d-model must be a multiple of 32 (Mamba2's heads of 32, 4 attention heads)",
        ));
    }
    let out = a.run.out_or("runs/compare");
    let device = a.run.device()?;
    std::fs::create_dir_all(&out)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", out.display())))?;
    // A CPU backend (no kernel binding limit): its memory is the host heap the allocator counts.
    let cpu = ssm_backends::max_binding_bytes(&device).is_none();
    let d = a.d_model;
    let cpu_dev = Device::flex();
    let target = mamba_config(d, a.layers, false).init(&cpu_dev).num_params();
    let m2_layers = matched_depth(target, |n| {
        mamba_config(d, n, true).init(&cpu_dev).num_params()
    });
    let tf_layers = matched_depth(target, |n| {
        transformer_config(d, n).init(&cpu_dev).num_params()
    });
    let s4_layers = matched_depth(target, |n| s4d_config(d, n).init(&cpu_dev).num_params());
    println!(
        "width {d}; depths for ~{target} parameters: Mamba {}, Mamba2 {m2_layers}, Transformer \
         {tf_layers}, S4D {s4_layers}",
        a.layers
    );

    let data = if a.skip_training {
        None
    } else {
        Some(data(a.seq_len)?)
    };
    let mut nets: Vec<(&str, Net)> = Vec::new();
    let mut training = Vec::new();
    let wanted = |m: CompareModel| a.models.contains(&m);
    for model in [
        CompareModel::Mamba,
        CompareModel::Mamba2,
        CompareModel::Transformer,
    ]
    .into_iter()
    .filter(|m| wanted(*m))
    {
        let name = model.label();
        device.seed(a.run.seed());
        let data = data.as_ref();
        let (net, row) = match model {
            CompareModel::Transformer => fit(
                |dev| transformer_config(d, tf_layers).init(dev),
                Net::Transformer,
                &a,
                data,
                &device,
            )?,
            CompareModel::Mamba => fit(
                |dev| mamba_config(d, a.layers, false).init(dev),
                Net::Mamba,
                &a,
                data,
                &device,
            )?,
            _ => fit(
                |dev| mamba_config(d, m2_layers, true).init(dev),
                Net::Mamba,
                &a,
                data,
                &device,
            )?,
        };
        if let Some(row) = row {
            println!(
                "{name:<12} {:>8} parameters  val loss {:.4}  val ppl {:.3}  {:.0} training \
                 tokens/s",
                row.params, row.val_loss, row.val_ppl, row.tokens_per_s
            );
            training.push(serde_json::json!({
                "model": name, "parameters": row.params, "val_loss": row.val_loss,
                "val_ppl": row.val_ppl, "train_tokens_per_s": row.tokens_per_s,
            }));
        }
        nets.push((name, net));
    }
    if wanted(CompareModel::S4d) {
        nets.push((
            CompareModel::S4d.label(),
            Net::S4d(s4d_config(d, s4_layers).init(&device)),
        ));
    }

    // Inference: one forward of batch 1 at each length, after one untimed at that length.
    let mut scaling = Vec::new();
    let mut curves: Vec<Curve> = Vec::new();
    for (name, net) in &nets {
        let mut curve = Vec::new();
        for &l in &a.lengths {
            let attention_gib = match net {
                // 4 heads of (L, L) f32 scores, about three alive at once (scores, masked,
                // softmax).
                Net::Transformer(_) => 3.0 * 4.0 * (l * l * 4) as f64 / (1u64 << 30) as f64,
                _ => 0.0,
            };
            if attention_gib > a.memory_limit_gib {
                println!(
                    "{name:<12} L {l:>6}: skipped (attention scores {attention_gib:.1} GiB > \
                     --memory-limit-gib {})",
                    a.memory_limit_gib
                );
                scaling.push(serde_json::json!({"model": name, "length": l, "skipped": true}));
                continue;
            }
            // Warm at this length too (what a model computes once per length, such as S4D's
            // kernel, is then cached: the time is a forward's in steady state).
            let _ = net.forward(l, d, &device).into_scalar::<f32>();
            sync(&device)?;
            memory::mark();
            let base = memory::live();
            let t = Instant::now();
            let _ = net.forward(l, d, &device).into_scalar::<f32>();
            sync(&device)?;
            let secs = t.elapsed().as_secs_f64();
            let peak = cpu.then(|| (memory::peak_since_mark() - base) as f64 / (1u64 << 20) as f64);
            println!(
                "{name:<12} L {l:>6}: {:>9.1} ms  peak {}",
                secs * 1e3,
                peak.map_or("n/a (not the host heap)".into(), |p| format!("{p:.1} MiB"))
            );
            scaling.push(serde_json::json!({
                "model": name, "parameters": net.params(), "length": l, "ms": secs * 1e3,
                "peak_mib": peak,
            }));
            curve.push(Point {
                len: l as f64,
                ms: secs * 1e3,
                peak_mib: peak,
            });
        }
        curves.push((name.to_string(), curve));
    }
    let json = serde_json::json!({
        "width": d, "depths": {"Mamba": a.layers, "Mamba2": m2_layers, "Transformer": tf_layers, "S4D": s4_layers},
        "steps": a.steps, "seq_len": a.seq_len, "batch_size": a.batch_size, "lr": a.lr,
        "training": training, "inference": scaling,
    });
    let path = out.join("compare.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).expect("JSON") + "\n",
    )
    .map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))?;
    let png = out.join("compare.png");
    plot(&png, &curves, cpu)?;
    println!("wrote {} and {}", path.display(), png.display());
    Ok(())
}

fn s4d_config(d: usize, layers: usize) -> SequenceClassifierConfig {
    SequenceClassifierConfig::new(d, VOCAB)
        .with_d_model(d)
        .with_n_layers(layers)
        .with_dropout(0.0)
}

/// The shipped text as bytes, packed; 5% of the documents for validation.
fn data(seq_len: usize) -> CliResult<(PackedRows, PackedRows)> {
    let err = |e: ssm_datasets::DataFileError| CliError::Io(e.to_string());
    let docs = read_documents(&default_text_path()).map_err(err)?;
    let docs = TokenDocs {
        docs: docs
            .iter()
            .map(|t| t.bytes().map(u32::from).collect())
            .collect(),
    };
    let (train, val) = docs.split(0.05).map_err(err)?;
    Ok((
        PackedRows::new(&train, EOS, seq_len).map_err(err)?,
        PackedRows::new(&val, EOS, seq_len).map_err(err)?,
    ))
}

/// A model built by `init`: trained on `data` (built on the autodiff device) when given, else
/// as initialised.
fn fit<M: PackedLm>(
    init: impl Fn(&Device) -> M,
    wrap: impl Fn(M) -> Net,
    a: &CompareArgs,
    data: Option<&(PackedRows, PackedRows)>,
    device: &Device,
) -> CliResult<(Net, Option<TrainRow>)> {
    match data {
        None => Ok((wrap(init(device)), None)),
        Some((train, val)) => {
            let (model, row) = train_one(init(&device.clone().autodiff()), a, train, val, device)?;
            Ok((wrap(model), Some(row)))
        }
    }
}

struct TrainRow {
    params: usize,
    val_loss: f64,
    val_ppl: f64,
    tokens_per_s: f64,
}

/// Trains with the library trainer's step (`zoo train lm`'s recipe, the same for every model)
/// and evaluates.
fn train_one<M: PackedLm>(
    mut model: M,
    a: &CompareArgs,
    train_rows: &PackedRows,
    val_rows: &PackedRows,
    device: &Device,
) -> CliResult<(M, TrainRow)> {
    let params = model.num_params();
    let mut optim = lm_optimizer(0.1);
    let devices = [device.clone()];
    let plan = StepPlan {
        rows: train_rows,
        devices: &devices,
        micro: a.batch_size,
        accumulate: 1,
        seed: a.run.seed(),
        steps: a.steps,
        warmup: (a.steps / 10).max(1),
        lr: a.lr,
        min_lr: a.lr * 0.1,
        grad_clip: 1.0,
        dtype: FloatDType::F32,
    };
    let start = Instant::now();
    for step in 0..a.steps {
        let (next, log) = train_step(model, &mut optim, &plan, step)?;
        model = next;
        if !log.loss.is_finite() {
            return Err(usage(format!("the loss is {} at step {step}", log.loss)));
        }
    }
    let tokens_per_s = (a.steps * a.batch_size * a.seq_len) as f64 / start.elapsed().as_secs_f64();
    let valid = model.valid();
    let val_loss = evaluate(&valid, val_rows, 16, a.batch_size, device, FloatDType::F32)?;
    Ok((
        valid,
        TrainRow {
            params,
            val_loss,
            val_ppl: val_loss.exp(),
            tokens_per_s,
        },
    ))
}

/// Time (and, on the CPU, peak memory) against length, log-log.
/// One inference measurement.
struct Point {
    len: f64,
    ms: f64,
    peak_mib: Option<f64>,
}

/// A model's measurements.
type Curve = (String, Vec<Point>);

/// Each model's (x, y) points.
type Series = Vec<Vec<(f64, f64)>>;

fn plot(path: &Path, curves: &[Curve], memory: bool) -> CliResult {
    let io = |m: String| CliError::Io(format!("cannot draw {}: {m}", path.display()));
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| io("the bundled font cannot be read".into()))?;
    let root = BitMapBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| io(e.to_string()))?;
    let panels = if memory {
        root.split_evenly((1, 2))
    } else {
        vec![root.clone()]
    };
    let colors = [BLUE, RED, BLACK, GREEN];
    let pts = |f: &dyn Fn(&Point) -> Option<f64>| -> Series {
        curves
            .iter()
            .map(|(_, c)| c.iter().filter_map(|p| f(p).map(|y| (p.len, y))).collect())
            .collect()
    };
    let time = pts(&|p| Some(p.ms));
    let mem = pts(&|p| p.peak_mib);
    let specs: Vec<(&str, &str, Series)> = if memory {
        vec![
            ("forward time (ms)", "ms", time),
            ("peak heap (MiB)", "MiB", mem),
        ]
    } else {
        vec![("forward time (ms)", "ms", time)]
    };
    for (panel, (title, unit, series)) in panels.iter().zip(specs) {
        let all: Vec<&(f64, f64)> = series.iter().flatten().collect();
        if all.is_empty() {
            continue;
        }
        let (x0, x1) = all
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (y0, y1) = all
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{title} vs sequence length, batch 1"),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (x0 * 0.8..x1 * 1.25).log_scale(),
                ((y0 * 0.5).max(1e-3)..y1 * 2.0).log_scale(),
            )
            .map_err(|e| io(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("L (tokens)")
            .y_desc(unit)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| io(e.to_string()))?;
        for (i, ((name, _), pts)) in curves.iter().zip(series).enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| io(e.to_string()))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| io(e.to_string()))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| io(e.to_string()))?;
    }
    root.present().map_err(|e| io(e.to_string()))?;
    Ok(())
}
