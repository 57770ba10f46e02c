//! Tests that cannot run here: a skip on a developer's machine, a failure on CI.

/// The environment variable that turns a missing wgpu adapter (or any other missing capability
/// a test needs) into a test failure; CI sets it.
pub const REQUIRE_WGPU_VAR: &str = "SSM_ZOO_REQUIRE_WGPU";

/// Whether a missing capability fails the test instead of skipping it: on CI
/// ([`REQUIRE_WGPU_VAR`] or `CI` set to anything but `0`/`false`/empty), nothing passes by
/// skipping.
pub fn strict() -> bool {
    [REQUIRE_WGPU_VAR, "CI"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !matches!(s.trim(), "" | "0" | "false" | "FALSE")))
}

/// Skips the calling test because this machine lacks `what` (the test then returns): prints why
/// on stderr, or panics where [`strict`] holds, since a skip there would pass unseen.
pub fn skip(test: &str, what: impl std::fmt::Display) {
    if strict() {
        panic!(
            "{test}: {what}; on CI ({REQUIRE_WGPU_VAR} or CI set) a test may not pass by skipping"
        );
    }
    eprintln!("skipping {test}: {what} (on CI, with {REQUIRE_WGPU_VAR}=1 or CI=1, this fails)");
}
