//! `zoo devices`: every device this build reaches, one JSON object per line: the `--device`
//! string, the name, whether it is the CPU backend, a hardware GPU or a software adapter, the
//! vendor, driver and graphics API; and which one `--device auto` picks.

use crate::common::error::CliResult;
use clap::Args;

#[derive(Args, Debug)]
pub struct DevicesArgs {}

pub fn run(_: DevicesArgs) -> CliResult {
    let (auto, _) = ssm_backends::default_device();
    for (spec, device) in ssm_backends::devices() {
        let info = ssm_backends::describe(&device);
        let line = serde_json::json!({
            "device": spec,
            "name": info.name,
            "kind": info.kind.name(),
            "vendor": info.vendor,
            "driver": info.driver,
            "api": info.api,
            "target": info.target,
            "auto": device == auto,
        });
        println!("{line}");
    }
    Ok(())
}
