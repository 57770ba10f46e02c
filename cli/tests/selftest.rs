//! `zoo selftest` on the CPU backend: every kernel check and the built-in model fixtures pass,
//! the table and the JSON say so, and the device is named. (Its wgpu run is CI's kit step, on
//! lavapipe: benches/gpu/on-device.sh.)

mod common;

use common::*;

#[test]
fn selftest_passes_on_the_cpu_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("selftest.json");
    let out = zoo(&[
        "selftest",
        "--device",
        "cpu",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("device: Device<Flex(Cpu)> (host"),
        "{stdout}"
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["device"]["kind"], "host");
    assert_eq!(report["passed"], true);
    let checks = report["checks"].as_array().unwrap();
    for op in [
        "scan forward",
        "scan backward",
        "ssd backward, log decays, packed rows",
        "mamba3 decode step, SISO",
        "fft convolution",
        "vandermonde kernel",
        "vandermonde kernel, from the end",
        "cauchy sums",
        "mamba_tiny logits, forward",
        "mamba2_tiny logits, decode",
        "mamba3_mimo logits, decode",
    ] {
        let row = checks
            .iter()
            .find(|c| c["op"] == op)
            .unwrap_or_else(|| panic!("no {op} row in {checks:?}"));
        assert_eq!(row["passed"], true, "{row}");
        assert!(row["launches"].as_u64().unwrap() >= 1, "{row}");
        let (error, bound) = (
            row["max_error"].as_f64().unwrap(),
            row["bound"].as_f64().unwrap(),
        );
        assert!(error <= bound, "{row}");
    }
}
