//! The README's S4-family loading example, compiled and run as written (the files it names do
//! not exist here, so it must stop at the first with a clear error).

use burn::tensor::{Device, Tensor};
use ssm_models::classify::SequenceClassifier;
use ssm_models::io::TensorMap;
use ssm_models::ssm::reference::{DtTransform, ReferenceLayer, ReferenceOptions};
use ssm_models::ssm::s4::S4;

fn load(device: &Device) -> ssm_models::Result<()> {
    // One S4Block out of a training run's Lightning checkpoint (its configs default to softplus
    // and set l_max to the dataset's length).
    let mut ckpt = TensorMap::read("last.ckpt".as_ref())?;
    let block = ckpt.split_prefix("state_dict.model.layers.0.layer.");
    let options = ReferenceOptions {
        dt_transform: DtTransform::Softplus,
        bilinear: false,
        l_max: Some(1024),
    };
    let s4 = S4::from_reference_map(block, options, device)?;
    let y: Tensor<3> = s4.forward(Tensor::zeros([1, s4.D.dims()[0], 1024], device));
    // state-spaces/s4's example.py classifier (post-norm), and lindermanlab/S5 (Flax msgpack).
    let _s4d = SequenceClassifier::load_reference(
        "s4d.pt".as_ref(),
        false,
        ReferenceOptions::default(),
        device,
    )?;
    let _s5 = SequenceClassifier::load_s5_reference("s5.msgpack".as_ref(), false, false, device)?;
    let _ = y;
    Ok(())
}

#[test]
fn the_readme_example_compiles_and_names_a_missing_file() {
    let err = load(&Device::flex()).unwrap_err().to_string();
    assert!(
        err.contains("last.ckpt") && err.contains("no such file"),
        "{err}"
    );
}
