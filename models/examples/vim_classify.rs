//! Vim (Zhu et al. 2024, bidirectional Mamba over image patches) classifying images.
//!
//! ```sh
//! cargo run --release -p ssm-models --example vim_classify -- [CHECKPOINT] [IMAGE...]
//! ```
//!
//! `CHECKPOINT` is a hustvl/Vim `.pth` file (e.g. `vim_t_midclstok_76p1acc.pth`, downloaded by
//! hand); the architecture is read from its keys and shapes, and a 1000-class model prints
//! ImageNet's class names. The images (PNG, JPEG, BMP) get ImageNet's evaluation transform
//! (shorter side to 256, centre crop 224 at Vim-T's size). Without arguments it runs the tiny
//! reference-made checkpoint in `fixtures/vim_tiny` (8x8 inputs, 5 classes, random weights) on
//! one of the shipped digits: its classes mean nothing, but every step runs.

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use image::DynamicImage;
use ssm_datasets::images::{IMAGENET_CLASSES, ImageTransform, digit_image, read_image};
use ssm_datasets::read_digits;
use ssm_models::io::weights::TensorMap;
use ssm_models::vision::Vim;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = std::env::args().skip(1);
    let checkpoint = args
        .next()
        .map_or_else(|| root.join("fixtures/vim_tiny/model.pth"), PathBuf::from);
    let mut images: Vec<(String, DynamicImage)> = args
        .map(|p| Ok((p.clone(), read_image(&PathBuf::from(p))?)))
        .collect::<Result<_, ssm_datasets::images::ImageDataError>>()?;
    if images.is_empty() {
        let digit = &read_digits(&ssm_datasets::digits::default_digits_path())?[0];
        let img = digit_image(digit).image;
        images.push((format!("a shipped digit (a {})", digit.label), img));
    }

    // The weights, with the architecture read from the keys and shapes; every key must be used.
    let device = Device::flex();
    let mut weights = TensorMap::read(&checkpoint)?;
    let config = Vim::config_of(&weights, None)?;
    let model = Vim::from_weights(&config, &mut weights, &device)?;
    weights.finish()?;
    let [width, classes] = model.head.weight.dims();
    let names: Vec<String> = if classes == 1000 {
        IMAGENET_CLASSES.lines().map(str::to_string).collect()
    } else {
        (0..classes).map(|i| format!("class {i}")).collect()
    };
    println!(
        "Vim: width {width}, {} blocks, {classes} classes, {side}x{side} inputs",
        model.layers.len(),
        side = model.img_size
    );

    let transform = ImageTransform::imagenet_eval(model.img_size as u32);
    for (name, image) in &images {
        let (pixels, w, h) = transform.apply(image, None);
        let x = Tensor::<4>::from_data(
            TensorData::new(pixels, [1, 3, h as usize, w as usize]),
            &device,
        );
        let probs = ssm_backends::to_vec(softmax(model.forward(x), 1));
        let mut ranked: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        println!("{name}:");
        for (class, p) in ranked.into_iter().take(5) {
            println!("  {:5.1}%  {}", 100.0 * p, names[class]);
        }
    }
    Ok(())
}
