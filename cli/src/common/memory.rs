//! The process's heap use, counted: the system allocator wrapped so that the bytes live now and
//! the most live since a mark are known (`zoo bench compare`'s peak-memory figures). Two atomic
//! updates per allocation.
//!
//! A large allocation that fails (a run past its memory estimate, or forced past it with
//! `--force`) ends the process with one line naming the command and the size, exit status 1,
//! instead of Rust's abort ("memory allocation of N bytes failed", a core dump). Small failed
//! allocations keep Rust's handling: a library may be asking with `try_reserve`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Failed allocations of at least this many bytes end the process with one line.
const REPORTED: usize = 16 << 20;

/// The command's words (`train lm`), for that line; set once by `main`.
static COMMAND: OnceLock<String> = OnceLock::new();

/// Names the running command for the out-of-memory line.
pub fn set_command(words: String) {
    let _ = COMMAND.set(words);
}

/// One line on stderr and exit status 1 after a failed allocation of `bytes`. Writes without
/// allocating (stderr is unbuffered; integers format in place).
fn out_of_memory(bytes: usize) -> ! {
    let command = COMMAND.get().map_or("", String::as_str);
    let _ = writeln!(
        std::io::stderr(),
        "error: zoo {command}: out of memory: an allocation of {} MiB failed; make the run's \
         sizes smaller (its memory estimate was passed or forced)",
        bytes >> 20
    );
    std::process::exit(1)
}

/// The system allocator, counting.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are only
// read by `live`/`peak_since_mark` and never influence an allocation (a failed large one ends
// the process instead of returning).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        } else if layout.size() >= REPORTED {
            out_of_memory(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        } else if layout.size() >= REPORTED {
            out_of_memory(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grow(new_size);
        } else if new_size >= REPORTED {
            out_of_memory(new_size);
        }
        p
    }
}

fn grow(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

/// Bytes allocated and not freed.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Starts a measurement: the peak is reset to what is live now.
pub fn mark() {
    PEAK.store(live(), Ordering::Relaxed);
}

/// The most bytes live at once since [`mark`].
pub fn peak_since_mark() -> usize {
    PEAK.load(Ordering::Relaxed)
}
