//! Image classification data: readers for image folders (PNG, JPEG, BMP through the `image`
//! crate), the MNIST IDX files and the CIFAR-10 binary batches, the sequential digits as 8×8
//! images; transforms (resize, random crop with padding, horizontal flip, per-channel
//! normalisation); and a Burn [`Batcher`] that stacks them into (B, C, H, W) tensors.

use crate::digits::{DigitItem, digits_split};
use crate::files::read_bytes;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::tensor::{Device, Int, Tensor, TensorData};
use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One labelled image.
#[derive(Debug, Clone)]
pub struct ImageItem {
    /// The decoded image, at its own size and colour type.
    pub image: DynamicImage,
    /// The class index (into [`ImageSet::classes`]).
    pub label: usize,
}

/// What went wrong reading image data (the crate's one error type).
pub type ImageDataError = crate::error::DataFileError;

fn format_err(path: &Path, message: impl Into<String>) -> ImageDataError {
    ImageDataError::Format {
        path: path.into(),
        message: message.into(),
    }
}

/// A labelled image set with its class names.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// The labelled images.
    pub items: Vec<ImageItem>,
    /// The class names: class `i` is named `classes[i]`.
    pub classes: Vec<String>,
}

impl ImageSet {
    /// The items as a Burn dataset.
    pub fn into_dataset(self) -> InMemDataset<ImageItem> {
        InMemDataset::new(self.items)
    }
}

/// Reads an image folder: one sub-folder per class (sorted by name, class `i` is the `i`-th),
/// holding `.png`, `.jpg`/`.jpeg` or `.bmp` files. Other files are skipped; a file with an
/// image extension that does not decode is an error naming it.
pub fn read_image_folder(root: &Path) -> Result<ImageSet, ImageDataError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageDataError::Io { path, source }
    };
    let mut classes: Vec<(String, PathBuf)> = std::fs::read_dir(root)
        .map_err(io(root))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(format_err(root, "no class sub-folders"));
    }
    let mut items = Vec::new();
    for (label, (_, dir)) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(
                        e.to_ascii_lowercase().as_str(),
                        "png" | "jpg" | "jpeg" | "bmp"
                    )
                })
            })
            .collect();
        files.sort();
        for f in files {
            let image = image::open(&f).map_err(|e| format_err(&f, e.to_string()))?;
            items.push(ImageItem { image, label });
        }
    }
    if items.is_empty() {
        return Err(format_err(root, "no images in the class folders"));
    }
    Ok(ImageSet {
        items,
        classes: classes.into_iter().map(|(n, _)| n).collect(),
    })
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads MNIST-format IDX files (images `idx3-ubyte`, labels `idx1-ubyte`, plain or `.gz`):
/// 28×28 (or any size the header gives) grayscale images with labels 0..=9.
pub fn read_mnist(images: &Path, labels: &Path) -> Result<ImageSet, ImageDataError> {
    let ib = read_bytes(images)?;
    let lb = read_bytes(labels)?;
    if ib.len() < 16 || be_u32(&ib, 0) != 0x0000_0803 {
        return Err(format_err(
            images,
            "not an IDX image file (magic 0x00000803)",
        ));
    }
    if lb.len() < 8 || be_u32(&lb, 0) != 0x0000_0801 {
        return Err(format_err(
            labels,
            "not an IDX label file (magic 0x00000801)",
        ));
    }
    let (n, rows, cols) = (
        be_u32(&ib, 4) as usize,
        be_u32(&ib, 8) as usize,
        be_u32(&ib, 12) as usize,
    );
    if be_u32(&lb, 4) as usize != n {
        return Err(format_err(
            labels,
            format!("{} labels for {n} images", be_u32(&lb, 4)),
        ));
    }
    // Checked: header sizes are any u32, and their product may not fit.
    let size = rows.checked_mul(cols).filter(|s| *s <= u32::MAX as usize);
    let expected = size
        .and_then(|s| s.checked_mul(n))
        .and_then(|b| b.checked_add(16));
    let (Some(size), Some(expected)) = (size, expected) else {
        return Err(format_err(
            images,
            format!("the header's {n} images of {rows}x{cols} cannot be held in memory"),
        ));
    };
    if ib.len() != expected {
        return Err(format_err(
            images,
            format!(
                "truncated or padded: {} bytes, expected {expected} for {n} images of \
                 {rows}x{cols}",
                ib.len(),
            ),
        ));
    }
    if lb.len() != 8 + n {
        return Err(format_err(
            labels,
            format!("{} bytes, expected {}", lb.len(), 8 + n),
        ));
    }
    let mut items = Vec::with_capacity(n);
    for i in 0..n {
        let label = lb[8 + i] as usize;
        if label > 9 {
            return Err(format_err(
                labels,
                format!("label {label} at {i} is outside 0..=9"),
            ));
        }
        let px = ib[16 + i * size..16 + (i + 1) * size].to_vec();
        let img = GrayImage::from_raw(cols as u32, rows as u32, px).expect("sizes checked");
        items.push(ImageItem {
            image: DynamicImage::ImageLuma8(img),
            label,
        });
    }
    Ok(ImageSet {
        items,
        classes: (0..10).map(|d| d.to_string()).collect(),
    })
}

/// CIFAR-10's class names.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// ImageNet-1k's classes in class-index order, one line each: the WordNet id, a tab, the names
/// (from timm, Apache-2.0): the labels of the 1000-class Vim and VMamba checkpoints.
pub const IMAGENET_CLASSES: &str = include_str!("../data/imagenet_classes.txt");

/// Reads CIFAR-10 binary batches (`data_batch_*.bin`, `test_batch.bin`): records of one label
/// byte then 3072 bytes of 32×32 red, green and blue planes.
pub fn read_cifar10(files: &[PathBuf]) -> Result<ImageSet, ImageDataError> {
    const REC: usize = 1 + 3 * 1024;
    let mut items = Vec::new();
    for path in files {
        let b = read_bytes(path)?;
        if b.is_empty() || b.len() % REC != 0 {
            return Err(format_err(
                path,
                format!(
                    "{} bytes is not a whole number of {REC}-byte records",
                    b.len()
                ),
            ));
        }
        for (i, rec) in b.chunks_exact(REC).enumerate() {
            let label = rec[0] as usize;
            if label > 9 {
                return Err(format_err(path, format!("record {i}: label {label} > 9")));
            }
            let mut rgb = vec![0u8; 3 * 1024];
            for p in 0..1024 {
                for c in 0..3 {
                    rgb[3 * p + c] = rec[1 + c * 1024 + p];
                }
            }
            let img = RgbImage::from_raw(32, 32, rgb).expect("32x32x3");
            items.push(ImageItem {
                image: DynamicImage::ImageRgb8(img),
                label,
            });
        }
    }
    Ok(ImageSet {
        items,
        classes: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
    })
}

/// Reads one image file (PNG, JPEG, BMP), naming the file on failure.
pub fn read_image(path: &Path) -> Result<DynamicImage, ImageDataError> {
    if !path.is_file() {
        return Err(ImageDataError::Io {
            path: path.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    image::open(path).map_err(|e| format_err(path, e.to_string()))
}

/// A digit (8×8, intensities 0..=1) as a grayscale image.
pub fn digit_image(d: &DigitItem) -> ImageItem {
    let px = d
        .pixels
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    ImageItem {
        image: DynamicImage::ImageLuma8(GrayImage::from_raw(8, 8, px).expect("8x8")),
        label: d.label,
    }
}

/// The shipped digits as 8×8 grayscale images, with the fixed split of
/// [`crate::digits::digits_split`] (1438 train, 359 test).
pub fn digits_images() -> Result<(InMemDataset<ImageItem>, InMemDataset<ImageItem>), ImageDataError>
{
    use burn::data::dataset::Dataset;
    let (train, test) = digits_split()?;
    let conv = |d: InMemDataset<DigitItem>| {
        InMemDataset::new(d.iter().flatten().map(|i| digit_image(&i)).collect())
    };
    Ok((conv(train), conv(test)))
}

/// The preprocessing of an image before batching: resize, then (training only) random crop
/// with zero padding and random horizontal flip, then per-channel `(x − mean) / std` on
/// intensities in [0, 1].
#[derive(Debug, Clone)]
pub struct ImageTransform {
    /// Output channels: 1 (grayscale) or 3 (RGB); inputs are converted.
    pub channels: usize,
    /// Resize to this square side first (bilinear), if set.
    pub resize: Option<u32>,
    /// Evaluation-style resize instead: scale the shorter side to this (bicubic, aspect kept)
    /// then take the centred `center_crop` square.
    pub shorter_side: Option<u32>,
    /// The centred square kept after `shorter_side`.
    pub center_crop: Option<u32>,
    /// Training: pad by this many pixels on each side, then crop back at a random offset.
    pub crop_padding: u32,
    /// Training: flip horizontally with probability 1/2.
    pub hflip: bool,
    /// Per-channel mean subtracted from the [0, 1] pixel values (`channels` values).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation dividing the centred values (`channels` positive values).
    pub std: Vec<f32>,
}

impl ImageTransform {
    /// ImageNet's normalisation at `side` pixels, RGB, no augmentation.
    pub fn imagenet(side: u32) -> Self {
        Self {
            channels: 3,
            resize: Some(side),
            shorter_side: None,
            center_crop: None,
            crop_padding: 0,
            hflip: false,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// The ImageNet evaluation transform of the Vim and VMamba recipes (timm's defaults): the
    /// shorter side scaled to `side / 0.875` (bicubic), the centred `side` square, ImageNet's
    /// normalisation.
    pub fn imagenet_eval(side: u32) -> Self {
        Self {
            resize: None,
            shorter_side: Some((side as f64 / 0.875).floor() as u32),
            center_crop: Some(side),
            ..Self::imagenet(side)
        }
    }

    /// Grayscale at `side` pixels normalised to about zero mean, unit spread.
    pub fn grayscale(side: u32) -> Self {
        Self {
            channels: 1,
            resize: Some(side),
            shorter_side: None,
            center_crop: None,
            crop_padding: 0,
            hflip: false,
            mean: vec![0.5],
            std: vec![0.5],
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ImageDataError> {
        if self.channels != 1 && self.channels != 3 {
            return Err(ImageDataError::Invalid(format!(
                "channels must be 1 or 3, not {}",
                self.channels
            )));
        }
        if self.mean.len() != self.channels || self.std.len() != self.channels {
            return Err(ImageDataError::Invalid(format!(
                "mean and std need {} values each (found {} and {})",
                self.channels,
                self.mean.len(),
                self.std.len()
            )));
        }
        if self.std.iter().any(|s| *s <= 0.0)
            || [self.resize, self.shorter_side, self.center_crop].contains(&Some(0))
        {
            return Err(ImageDataError::Invalid(
                "std must be positive and every size at least 1".into(),
            ));
        }
        if let (Some(s), Some(c)) = (self.shorter_side, self.center_crop)
            && c > s
        {
            return Err(ImageDataError::Invalid(format!(
                "center_crop {c} is larger than shorter_side {s}"
            )));
        }
        Ok(())
    }

    /// Applies the transform; `rng` drives the augmentation (training), `None` turns it off.
    /// Returns the (C, H, W) values and the side lengths.
    pub fn apply(&self, image: &DynamicImage, rng: Option<&mut StdRng>) -> (Vec<f32>, u32, u32) {
        let mut img = match self.resize {
            Some(s) if image.width() != s || image.height() != s => {
                image.resize_exact(s, s, FilterType::Triangle)
            }
            _ => image.clone(),
        };
        if let Some(s) = self.shorter_side {
            let (w, h) = (img.width().max(1), img.height().max(1));
            let scale = s as f64 / w.min(h) as f64;
            let (nw, nh) = (
                ((w as f64 * scale).round() as u32).max(s),
                ((h as f64 * scale).round() as u32).max(s),
            );
            img = img.resize_exact(nw, nh, FilterType::CatmullRom);
        }
        if let Some(c) = self.center_crop {
            let (w, h) = (img.width(), img.height());
            let (cw, ch) = (c.min(w), c.min(h));
            img = img.crop_imm((w - cw) / 2, (h - ch) / 2, cw, ch);
        }
        if let Some(rng) = rng {
            if self.crop_padding > 0 {
                let p = self.crop_padding;
                let (w, h) = (img.width(), img.height());
                let mut canvas = DynamicImage::new(w + 2 * p, h + 2 * p, img.color());
                imageops::overlay(&mut canvas, &img, p as i64, p as i64);
                let (x, y) = (rng.random_range(0..=2 * p), rng.random_range(0..=2 * p));
                img = canvas.crop_imm(x, y, w, h);
            }
            if self.hflip && rng.random_bool(0.5) {
                img = img.fliph();
            }
        }
        let (w, h) = (img.width(), img.height());
        let hw = (w * h) as usize;
        let mut out = vec![0f32; self.channels * hw];
        if self.channels == 1 {
            for (i, p) in img.to_luma32f().pixels().enumerate() {
                out[i] = (p.0[0] - self.mean[0]) / self.std[0];
            }
        } else {
            for (i, p) in img.to_rgb32f().pixels().enumerate() {
                for c in 0..3 {
                    out[c * hw + i] = (p.0[c] - self.mean[c]) / self.std[c];
                }
            }
        }
        (out, w, h)
    }
}

/// A batch of images (B, C, H, W) and their labels.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// The transformed images (B, C, H, W).
    pub images: Tensor<4>,
    /// The class of each image (B).
    pub targets: Tensor<1, Int>,
}

/// Stacks transformed images; with augmentation on, a seeded generator drives it.
#[derive(Debug)]
pub struct ImageBatcher {
    transform: ImageTransform,
    rng: Option<Mutex<StdRng>>,
}

impl ImageBatcher {
    /// Without augmentation (evaluation).
    ///
    /// # Panics
    /// On an invalid transform (see [`ImageTransform::validate`]).
    pub fn eval(transform: ImageTransform) -> Self {
        transform.validate().unwrap_or_else(|e| panic!("{e}"));
        Self {
            transform,
            rng: None,
        }
    }

    /// With the transform's augmentation, seeded.
    ///
    /// # Panics
    /// On an invalid transform (see [`ImageTransform::validate`]).
    pub fn train(transform: ImageTransform, seed: u64) -> Self {
        transform.validate().unwrap_or_else(|e| panic!("{e}"));
        Self {
            transform,
            rng: Some(Mutex::new(StdRng::seed_from_u64(seed))),
        }
    }

    /// The transform.
    pub fn transform(&self) -> &ImageTransform {
        &self.transform
    }
}

impl Batcher<ImageItem, ImageBatch> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        let b = items.len();
        let mut guard = self.rng.as_ref().map(|m| m.lock().expect("batcher rng"));
        let mut values = Vec::new();
        let mut size = (0, 0);
        for item in &items {
            let (v, w, h) = self.transform.apply(&item.image, guard.as_deref_mut());
            assert!(
                size == (0, 0) || size == (w, h),
                "images of one batch must share a size: set a resize"
            );
            size = (w, h);
            values.extend(v);
        }
        let (w, h) = (size.0 as usize, size.1 as usize);
        let labels: Vec<i64> = items.iter().map(|i| i.label as i64).collect();
        ImageBatch {
            images: Tensor::from_data(
                TensorData::new(values, [b, self.transform.channels, h, w]),
                device,
            ),
            targets: Tensor::from_data(TensorData::new(labels, [b]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend(body);
        v
    }

    #[test]
    fn mnist_idx_files_read_and_truncation_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (ip, lp) = (dir.path().join("img.idx"), dir.path().join("lab.idx"));
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8 * 10).collect();
        std::fs::write(&ip, idx(0x803, &[2, 3, 4], &pixels)).unwrap();
        std::fs::write(&lp, idx(0x801, &[2], &[7, 1])).unwrap();
        let set = read_mnist(&ip, &lp).unwrap();
        assert_eq!(set.items.len(), 2);
        assert_eq!(set.items[1].label, 1);
        let img = set.items[1].image.to_luma8();
        assert_eq!((img.width(), img.height()), (4, 3));
        assert_eq!(img.get_pixel(1, 0).0[0], 130);
        std::fs::write(&ip, idx(0x803, &[2, 3, 4], &pixels[..20])).unwrap();
        let e = read_mnist(&ip, &lp).unwrap_err().to_string();
        assert!(e.contains("img.idx") && e.contains("truncated"), "{e}");
        std::fs::write(&ip, [1u8, 2, 3]).unwrap();
        assert!(
            read_mnist(&ip, &lp)
                .unwrap_err()
                .to_string()
                .contains("IDX")
        );
    }

    /// IDX header sizes whose product overflows are an error, not a wrapped size.
    #[test]
    fn mnist_headers_too_large_to_hold_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (ip, lp) = (
            dir.path().join("i.idx3-ubyte"),
            dir.path().join("l.idx1-ubyte"),
        );
        std::fs::write(&ip, idx(0x803, &[2, u32::MAX, u32::MAX], &[0; 8])).unwrap();
        std::fs::write(&lp, idx(0x801, &[2], &[1, 2])).unwrap();
        let err = read_mnist(&ip, &lp).unwrap_err().to_string();
        assert!(err.contains("cannot be held in memory"), "{err}");
    }

    #[test]
    fn cifar_records_are_planar_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data_batch_1.bin");
        let mut rec = vec![3u8];
        rec.extend((0..3072).map(|i| (i / 1024) as u8 * 100 + (i % 1024 == 5) as u8));
        std::fs::write(&p, &rec).unwrap();
        let set = read_cifar10(std::slice::from_ref(&p)).unwrap();
        assert_eq!(set.items[0].label, 3);
        assert_eq!(set.classes[3], "cat");
        let img = set.items[0].image.to_rgb8();
        assert_eq!(img.get_pixel(5, 0).0, [1, 101, 201]);
        assert_eq!(img.get_pixel(6, 0).0, [0, 100, 200]);
        std::fs::write(&p, &rec[..100]).unwrap();
        let e = read_cifar10(&[p]).unwrap_err().to_string();
        assert!(e.contains("data_batch_1.bin") && e.contains("3073"), "{e}");
    }

    #[test]
    fn image_folders_give_sorted_classes() {
        let dir = tempfile::tempdir().unwrap();
        for (class, n) in [("dog", 2), ("cat", 1)] {
            let d = dir.path().join(class);
            std::fs::create_dir(&d).unwrap();
            for i in 0..n {
                let img = RgbImage::from_pixel(5, 4, image::Rgb([i as u8 * 50, 0, 255]));
                img.save(d.join(format!("{i}.png"))).unwrap();
            }
            std::fs::write(d.join("notes.txt"), "skipped").unwrap();
        }
        let set = read_image_folder(dir.path()).unwrap();
        assert_eq!(set.classes, ["cat", "dog"]);
        assert_eq!(
            set.items.iter().map(|i| i.label).collect::<Vec<_>>(),
            [0, 1, 1]
        );
        std::fs::write(dir.path().join("cat/broken.png"), "not a png").unwrap();
        let e = read_image_folder(dir.path()).unwrap_err().to_string();
        assert!(e.contains("broken.png"), "{e}");
    }

    #[test]
    fn transforms_resize_normalise_flip_and_crop() {
        let mut img = GrayImage::new(4, 4);
        img.put_pixel(0, 0, image::Luma([255]));
        let img = DynamicImage::ImageLuma8(img);
        let t = ImageTransform {
            channels: 1,
            resize: None,
            shorter_side: None,
            center_crop: None,
            crop_padding: 0,
            hflip: false,
            mean: vec![0.5],
            std: vec![0.25],
        };
        let (v, w, h) = t.apply(&img, None);
        assert_eq!((w, h, v.len()), (4, 4, 16));
        assert!((v[0] - 2.0).abs() < 1e-6 && (v[1] + 2.0).abs() < 1e-6);
        // Always flipping: the bright pixel moves to the right edge.
        let mut rng = StdRng::seed_from_u64(0);
        let flip = ImageTransform {
            hflip: true,
            ..t.clone()
        };
        let flipped = (0..16)
            .map(|_| flip.apply(&img, Some(&mut rng)).0)
            .any(|v| v[3] > 1.0);
        assert!(flipped);
        // Cropping with padding keeps the size and shifts the content within the padding.
        let crop = ImageTransform {
            crop_padding: 2,
            ..t.clone()
        };
        for _ in 0..8 {
            let (v, w, h) = crop.apply(&img, Some(&mut rng));
            assert_eq!((w, h), (4, 4));
            let bright: Vec<usize> = (0..16).filter(|&i| v[i] > 1.0).collect();
            assert!(bright.len() <= 1);
        }
        // RGB from gray, resized.
        let rgb = ImageTransform::imagenet(6);
        let (v, w, h) = rgb.apply(&img, None);
        assert_eq!((w, h, v.len()), (6, 6, 108));
        assert!(
            ImageTransform {
                mean: vec![0.0; 2],
                ..rgb
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn the_batcher_stacks_nchw() {
        let (train, _) = digits_images().unwrap();
        use burn::data::dataset::Dataset;
        let items: Vec<ImageItem> = (0..3).map(|i| train.get(i).unwrap()).collect();
        let batcher = ImageBatcher::eval(ImageTransform::grayscale(16));
        let b = batcher.batch(items, &Device::flex());
        assert_eq!(b.images.dims(), [3, 1, 16, 16]);
        assert_eq!(b.targets.dims(), [3]);
    }
}
