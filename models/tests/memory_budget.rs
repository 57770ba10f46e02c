//! The memory estimates that size a language-model run before it allocates
//! (`MambaLmConfig::{param_count, training_memory, inference_memory}`): the parameter count is
//! the built model's exactly, and each estimate is within a factor of 2 of the peak heap a run
//! actually takes on Flex, counted by this binary's allocator.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use ssm_backends::testing::seeded;
use ssm_datasets::text::TokenDocs;
use ssm_models::lm::train::{LmData, RunLength, Trainer, TrainerConfig};
use ssm_models::lm::{CausalLm, Mamba2Settings, Mamba3Settings, MambaLmConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;
static LIVE: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator; the counters never affect it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size() as u64);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size() as u64);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
            grow(new_size as u64);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn grow(bytes: u64) {
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

/// One measurement at a time (the counters are the process's).
static MEASURING: Mutex<()> = Mutex::new(());

/// The peak heap `f` adds over what was live when it started.
fn peak_of(f: impl FnOnce()) -> u64 {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - base
}

fn configs() -> Vec<(&'static str, MambaLmConfig)> {
    let base = |d, layers, vocab| {
        MambaLmConfig::new(d, layers, vocab)
            .with_d_state(16)
            .with_pad_vocab_size_multiple(8)
    };
    let mut m2 = base(64, 2, 300);
    m2.mamba2 = Some(Mamba2Settings::new().with_head_dim(16).with_chunk_size(32));
    let mut m3 = base(64, 2, 300);
    m3.mamba3 = Some(Mamba3Settings::new().with_head_dim(16).with_chunk_size(16));
    let mut m3_mimo = base(32, 2, 100).with_tie_embeddings(false);
    m3_mimo.mamba3 = Some(
        Mamba3Settings::new()
            .with_head_dim(16)
            .with_mimo(true)
            .with_mimo_rank(2)
            .with_outproj_norm(true)
            .with_chunk_size(16),
    );
    vec![
        ("mamba", base(128, 2, 300)),
        (
            "mamba, untied, biases",
            base(64, 3, 1000).with_tie_embeddings(false).with_bias(true),
        ),
        ("mamba2", m2),
        ("mamba3", m3),
        ("mamba3 mimo", m3_mimo),
    ]
}

#[test]
fn the_parameter_count_is_the_built_models() {
    let device = Device::flex();
    for (name, config) in configs() {
        let model = config.try_init(&device).unwrap();
        assert_eq!(
            config.param_count(),
            model.num_params() as u64,
            "{name}: counted from the config vs built"
        );
    }
    // Absurd sizes saturate instead of overflowing.
    let huge = MambaLmConfig::new(usize::MAX / 2, usize::MAX / 2, usize::MAX / 4);
    assert_eq!(huge.param_count(), u64::MAX);
}

fn data(vocab: usize) -> LmData {
    let mut rng = 12345u64;
    let docs = (0..64)
        .map(|_| {
            (0..200)
                .map(|_| {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((rng >> 33) % (vocab as u64 - 1)) as u32
                })
                .collect()
        })
        .collect();
    LmData::new(TokenDocs { docs }, (vocab - 1) as u32, vocab, 0.1).unwrap()
}

/// Within a factor of 2 either way.
fn assert_within_2x(what: &str, estimate: u64, measured: u64) {
    let ratio = estimate as f64 / measured as f64;
    println!("{what}: estimate {estimate} measured {measured} ratio {ratio:.2}");
    assert!(
        (0.5..=2.0).contains(&ratio),
        "{what}: estimate {estimate} bytes vs measured peak {measured} (x{ratio:.2})"
    );
}

#[test]
fn training_estimates_are_within_2x_of_the_measured_peak() {
    let _one = MEASURING.lock().unwrap();
    let device = Device::flex();
    for (name, config) in configs() {
        for (batch, seq_len) in [(4, 64), (8, 128)] {
            let vocab = config.vocab_size;
            let data = data(vocab);
            let trainer = Trainer::new(
                TrainerConfig {
                    seq_len,
                    batch_size: batch,
                    length: RunLength::Steps(2),
                    warmup: 1,
                    val_batches: 1,
                    eval_every: 100,
                    ..TrainerConfig::new(config.clone())
                },
                vec![device.clone()],
            );
            let estimate = config.training_memory(batch, seq_len, false).total();
            let measured = peak_of(|| {
                let _seed = seeded(&device, 0);
                trainer.fit(&data, &mut ()).unwrap();
            });
            assert_within_2x(
                &format!("{name} training {batch}x{seq_len}"),
                estimate,
                measured,
            );
        }
    }
}

#[test]
fn inference_estimates_are_within_2x_of_the_measured_peak() {
    let _one = MEASURING.lock().unwrap();
    let device = Device::flex();
    for (name, config) in configs() {
        for (batch, len) in [(2, 256), (4, 1024)] {
            let ids: Vec<i64> = (0..batch * len).map(|i| (i % 97) as i64).collect();
            let measured_full;
            let measured_last;
            let base = {
                let model = {
                    let _seed = seeded(&device, 0);
                    config.try_init(&device).unwrap()
                };
                let ids = Tensor::<2, Int>::from_data(
                    TensorData::new(ids.clone(), [batch, len]),
                    &device,
                );
                measured_full = peak_of(|| {
                    let logits = model.forward(ids.clone());
                    let _ = logits.into_data();
                });
                measured_last = peak_of(|| {
                    let (logits, _) = model.prefill_last(ids.clone());
                    let _ = logits.into_data();
                });
                0
            };
            let _ = base;
            // The weights were live before the measurement: add them to what was measured.
            let weights = config.param_count() * 4;
            assert_within_2x(
                &format!("{name} forward {batch}x{len}, all logits"),
                config.inference_memory(batch, len, true).total(),
                measured_full + weights,
            );
            assert_within_2x(
                &format!("{name} prefill {batch}x{len}, last logits"),
                config.inference_memory(batch, len, false).total(),
                measured_last + weights,
            );
        }
    }
}
