//! A panic reaches the user as one line, not a stack trace.
//!
//! A panic in `zoo` is a bug (errors a user can cause are `Result`s), but a user should still
//! see one line saying what went wrong and in which command, and get a non-zero exit status.
//! [`install`] replaces the panic hook with one that only records the message and where it was
//! raised; `main` catches the unwinding command and prints [`last`]. Panics that a library
//! catches on purpose (adapter probing, a malformed `tokenizer.json`) are then silent, as their
//! callers report them. With `RUST_BACKTRACE` set, Rust's own hook stays, backtrace included.

use std::sync::Mutex;

static LAST: Mutex<Option<String>> = Mutex::new(None);

/// Installs the recording hook, unless `RUST_BACKTRACE` asks for Rust's own output.
pub fn install() {
    if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
        return;
    }
    install_recording();
}

/// Installs the recording hook whatever the environment says.
pub fn install_recording() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        // One line: a multi-line message is joined.
        let message = message.lines().collect::<Vec<_>>().join(" ");
        if let Ok(mut last) = LAST.lock() {
            *last = Some(format!("{message}{place}"));
        }
    }));
}

/// The last recorded panic's message and place.
pub fn last() -> String {
    LAST.lock()
        .ok()
        .and_then(|l| l.clone())
        .unwrap_or_else(|| "a panic (no message recorded)".into())
}
