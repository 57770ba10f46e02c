//! An S4D sequence classifier trained for a few steps on sequential digits.
//!
//! ```sh
//! cargo run --release -p ssm-models --example s4d_classifier -- [STEPS]
//! ```
//!
//! Each 8x8 digit of the shipped data set (1,797 images, 80/20 split) is read pixel by pixel as a
//! sequence of length 64; the model is a linear encoder, residual S4D blocks (Gu et al. 2022:
//! `x' = A x + B u`, `y = C x + D u` with a diagonal `A`, discretised by zero-order hold and run
//! as a convolution with its kernel `K_l = C exp(Δ A)^l B Δ`), mean pooling and a linear head.
//! A plain training loop: autodiff device, Adam, `loss.backward()`, `optimizer.step`. `zoo train
//! s4d-digits` trains the same model with burn-train (checkpoints, metrics) to ~98% accuracy.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor};
use ssm_datasets::{DigitItem, DigitsBatcher, digits_split};
use ssm_models::classify::SequenceClassifierConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = std::env::args().nth(1).map_or(Ok(150), |s| s.parse())?;
    let (train, test) = digits_split()?;
    let train: Vec<DigitItem> = train.iter().flatten().collect();
    let test: Vec<DigitItem> = test.iter().flatten().collect();

    let device = Device::flex();
    device.seed(0);
    let train_device = device.clone().autodiff();
    // One input feature (the pixel), ten classes; a small model so that it trains in seconds.
    let config = SequenceClassifierConfig::new(1, 10)
        .with_d_model(32)
        .with_n_layers(2)
        .with_d_state(32)
        .with_dropout(0.0);
    let mut model = config.init(&train_device);
    let mut optimizer = AdamConfig::new().init();
    println!(
        "S4D classifier: {} parameters; {} training and {} test sequences of 64 pixels",
        model.num_params(),
        train.len(),
        test.len()
    );

    let batch_size = 32;
    for step in 0..steps {
        let start = (step * batch_size) % train.len();
        let items: Vec<DigitItem> = train
            .iter()
            .cycle()
            .skip(start)
            .take(batch_size)
            .cloned()
            .collect();
        let output = model.classify(DigitsBatcher.batch(items, &train_device));
        let loss = output.loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(output.loss.backward(), &model);
        model = optimizer.step(1e-2, model, grads);
        if step % 25 == 0 || step + 1 == steps {
            println!("step {step:>4}  loss {loss:.3}");
        }
    }

    // Evaluation without autodiff.
    let model = model.valid();
    let batch = DigitsBatcher.batch(test.clone(), &device);
    let predicted: Tensor<1, Int> = model.forward(batch.inputs).argmax(1).squeeze_dim(1);
    let right = predicted
        .equal(batch.targets)
        .int()
        .sum()
        .into_scalar::<i64>();
    println!(
        "test accuracy after {steps} steps: {:.1}% ({right}/{})",
        100.0 * right as f64 / test.len() as f64,
        test.len()
    );
    Ok(())
}
