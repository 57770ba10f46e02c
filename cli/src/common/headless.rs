//! Quiet adapter probing on a headless machine.
//!
//! When `zoo` picks its device, wgpu asks every graphics API it knows for adapters, OpenGL
//! among them; Mesa's EGL code then tries to reach a Wayland display and, where
//! `XDG_RUNTIME_DIR` is unset (servers, containers, CI), prints `error: XDG_RUNTIME_DIR is
//! invalid or not set in the environment.` twice, although nothing failed: the Vulkan adapters
//! (a GPU, or Mesa's software lavapipe) are found as usual. A user reads "error" and thinks the
//! run failed. Pointing `XDG_RUNTIME_DIR` at a private, empty folder of this user's for the
//! process makes that probe fail quietly (there is no display socket in it); a real failure to
//! create an adapter is still reported by wgpu and by `zoo`.

/// Sets `XDG_RUNTIME_DIR` to `$TMPDIR/zoo-runtime-<uid>` (created with mode 0700) when it is
/// unset or not a folder. Must run before any thread starts (it changes the environment).
/// Elsewhere than on Linux with glibc, or when the folder cannot be made ours, it does nothing.
pub fn quiet_adapter_probing() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        if std::env::var_os("XDG_RUNTIME_DIR")
            .is_some_and(|dir| std::path::Path::new(&dir).is_dir())
        {
            return;
        }
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        let dir = std::env::temp_dir().join(format!("zoo-runtime-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        // Only a folder that is ours and private (another user could have made one first).
        let ours = std::fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0);
        if ours {
            // SAFETY: called first thing in `main`, before any thread of this process starts,
            // so no other thread reads or writes the environment concurrently.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}
