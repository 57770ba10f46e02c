//! Fuzzing of every file reader under `cargo test`, for a bounded time: each reader gets seed
//! files (shipped fixtures, or built here), then mutated copies of them (bit flips, huge
//! numbers in headers and in text, truncation, deleted, repeated and spliced ranges) for
//! `SSM_ZOO_FUZZ_SECS` seconds (default 2; run for hours with e.g. `SSM_ZOO_FUZZ_SECS=3600
//! cargo test --release --workspace --test fuzz_readers -- --test-threads 1`;
//! `SSM_ZOO_FUZZ_SEED` varies the inputs, `SSM_ZOO_FUZZ_ONLY=tu,flax` runs only those
//! readers). A reader may refuse an input with an error; it may not panic, hang (over
//! [`HANG_SECS`] on one input) or ask for more than [`MAX_ALLOC`] bytes at once (a header
//! claiming 100 GB must be refused before allocating): this binary's allocator refuses such a
//! request, which aborts the run. Gzipped inputs expand within `ssm_datasets::files`' bound.
//!
//! An input that fails is written to `fuzz-failures/` in the target folder; copied to
//! `fixtures/fuzz/<reader>/`, it is replayed by every run from then on (the regression corpus).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ssm_datasets::graphs::{read_edge_list, read_tu};
use ssm_datasets::read_digits;
use ssm_datasets::text::{TokenDocs, read_documents};
use ssm_datasets::timeseries::{Missing, read_series_csv};
use ssm_datasets::{read_cifar10, read_image_folder, read_mnist};
use ssm_models::io::TensorMap;
use ssm_models::io::flax::read_flax_msgpack;
use ssm_models::lm::read_mamba_config;
use ssm_models::lm::tokenizer::TextTokenizer;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The largest single allocation a reader may make on these small inputs.
const MAX_ALLOC: usize = 1 << 30;
/// The longest a reader may take on one input.
const HANG_SECS: u64 = 20;

/// `System`, refusing any single request over [`MAX_ALLOC`] (Rust then aborts the process with
/// "memory allocation of N bytes failed").
struct Bounded;

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(repo().join(path)).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// One reader under test: its files (name, seed contents), of which one is mutated per run,
/// and the call (given the folder holding the files); its result is ignored, only panics,
/// hangs and huge allocations count.
struct Target {
    name: &'static str,
    files: Vec<(&'static str, Vec<Vec<u8>>)>,
    read: fn(&Path),
}

fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "safetensors",
            files: vec![(
                "w.safetensors",
                vec![
                    fixture("fixtures/s5_reference/tensors.safetensors"),
                    fixture("fixtures/vim_tiny/tensors.safetensors"),
                ],
            )],
            read: |d| drop(TensorMap::read(&d.join("w.safetensors"))),
        },
        Target {
            name: "pytorch",
            files: vec![("w.pth", vec![fixture("fixtures/vim_tiny/model.pth")])],
            read: |d| drop(TensorMap::read(&d.join("w.pth"))),
        },
        Target {
            name: "flax",
            files: vec![(
                "w.msgpack",
                vec![
                    fixture("fixtures/s5_reference/zoh.msgpack"),
                    fixture("fixtures/s5_reference/classifier.msgpack"),
                ],
            )],
            read: |d| drop(read_flax_msgpack(&d.join("w.msgpack"))),
        },
        Target {
            name: "mamba_config",
            files: vec![(
                "config.json",
                vec![
                    fixture("fixtures/mamba_tiny/model/config.json"),
                    fixture("fixtures/mamba_tiny/state_spaces/config.json"),
                    fixture("fixtures/mamba3_mimo/model/config.json"),
                ],
            )],
            read: |d| {
                if let Ok((config, _)) = read_mamba_config(&d.join("config.json")) {
                    drop(config.validate());
                }
            },
        },
        Target {
            name: "tokenizer",
            files: vec![(
                "tokenizer.json",
                vec![fixture("fixtures/mamba_tiny/tokenizer.json")],
            )],
            read: |d| {
                if let Ok(t) = TextTokenizer::from_file(&d.join("tokenizer.json")) {
                    if let Ok(ids) = t.encode("To be, or not to be: 1e40 ünïcødé") {
                        drop(t.decode(&ids));
                    }
                    drop(t.decode(&[0, 1, usize::MAX, 1 << 40]));
                }
            },
        },
        Target {
            name: "series_csv",
            files: vec![(
                "s.csv",
                vec![
                    head_lines(&fixture("datasets/data/macrodata.csv"), 12),
                    head_lines(&fixture("datasets/data/co2_weekly.csv"), 12),
                ],
            )],
            read: |d| {
                drop(read_series_csv(&d.join("s.csv"), Missing::Error));
                drop(read_series_csv(&d.join("s.csv"), Missing::Interpolate));
            },
        },
        Target {
            name: "mnist",
            files: vec![
                ("images.idx3-ubyte", vec![idx(0x803, &[3, 4, 5], &[7; 60])]),
                ("labels.idx1-ubyte", vec![idx(0x801, &[3], &[1, 9, 0])]),
            ],
            read: |d| {
                drop(read_mnist(
                    &d.join("images.idx3-ubyte"),
                    &d.join("labels.idx1-ubyte"),
                ))
            },
        },
        Target {
            name: "cifar10",
            files: vec![("batch.bin", vec![cifar_records(2)])],
            read: |d| drop(read_cifar10(&[d.join("batch.bin")])),
        },
        Target {
            name: "image_folder",
            files: vec![
                ("cat/0.png", vec![png(3, 2)]),
                ("dog/0.png", vec![png(2, 2)]),
            ],
            read: |d| drop(read_image_folder(d)),
        },
        Target {
            name: "edge_list",
            files: vec![
                ("g.edges", vec![b"# c\n0 1\n1 2\n2 0\n".to_vec()]),
                ("g.labels", vec![b"0 0\n1 1\n2 0\n".to_vec()]),
            ],
            read: |d| drop(read_edge_list(&d.join("g.edges"), &d.join("g.labels"))),
        },
        Target {
            name: "tu",
            files: vec![
                ("T_A.txt", vec![b"1, 2\n2, 1\n3, 4\n4, 3\n".to_vec()]),
                ("T_graph_indicator.txt", vec![b"1\n1\n2\n2\n".to_vec()]),
                ("T_graph_labels.txt", vec![b"1\n-1\n".to_vec()]),
                ("T_node_labels.txt", vec![b"0\n1\n2\n0\n".to_vec()]),
            ],
            read: |d| drop(read_tu(d, "T")),
        },
        Target {
            name: "text_documents",
            files: vec![(
                "d.jsonl",
                vec![
                    b"{\"text\": \"To be\", \"id\": 1}\n\n{\"text\": \"or not\\u00e9\"}\n".to_vec(),
                ],
            )],
            read: |d| drop(read_documents(&d.join("d.jsonl"))),
        },
        Target {
            name: "gzip_text",
            files: vec![(
                "d.jsonl.gz",
                vec![
                    gzip(b"{\"text\": \"To be\"}\n{\"text\": \"or not\"}\n"),
                    [gzip(b"{\"text\": \"a\"}\n"), gzip(b"{\"text\": \"b\"}\n")].concat(),
                    gzip(&[b'x'; 4096]),
                ],
            )],
            read: |d| drop(read_documents(&d.join("d.jsonl.gz"))),
        },
        Target {
            name: "gzip_mnist",
            files: vec![
                (
                    "images.idx3-ubyte.gz",
                    vec![gzip(&idx(0x803, &[3, 4, 5], &[7; 60]))],
                ),
                (
                    "labels.idx1-ubyte.gz",
                    vec![gzip(&idx(0x801, &[3], &[1, 9, 0]))],
                ),
            ],
            read: |d| {
                drop(read_mnist(
                    &d.join("images.idx3-ubyte.gz"),
                    &d.join("labels.idx1-ubyte.gz"),
                ))
            },
        },
        Target {
            name: "digits_csv",
            files: vec![(
                "digits.csv",
                vec![
                    [
                        (0..64).map(|i| (i % 17).to_string()).collect::<Vec<_>>(),
                        vec!["7".into()],
                    ]
                    .concat()
                    .join(",")
                    .into_bytes(),
                ],
            )],
            read: |d| drop(read_digits(&d.join("digits.csv"))),
        },
        Target {
            name: "token_files",
            files: vec![
                (
                    "docs.tokens",
                    vec![
                        TokenDocs {
                            docs: vec![vec![1, 2, 3], vec![], vec![70_000]],
                        }
                        .to_bytes(),
                    ],
                ),
                ("ids.bin", vec![vec![1, 0, 2, 0, 0, 1, 3, 0]]),
            ],
            read: |d| {
                drop(TokenDocs::read(&d.join("docs.tokens"), 0));
                drop(TokenDocs::read(&d.join("ids.bin"), 256));
            },
        },
    ]
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("compressing in memory");
    enc.finish().expect("compressing in memory")
}

fn head_lines(text: &[u8], lines: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.split_inclusive(|b| *b == b'\n').take(lines) {
        out.extend_from_slice(line);
    }
    out
}

/// An IDX file: big-endian magic and dimensions, then the bytes.
fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn cifar_records(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let mut rec = vec![i as u8 % 10];
            rec.extend((0..3072).map(|p| (p * 7 + i) as u8));
            rec
        })
        .collect()
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 9]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encoding a PNG in memory");
    out.into_inner()
}

/// Numbers that break size arithmetic.
const WORDS: [u64; 9] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];
const NUMBERS: [&str; 8] = [
    "0",
    "-1",
    "99999999999999999999",
    "4294967296",
    "1e40",
    "nan",
    "-inf",
    "18446744073709551615",
];

/// One to four random edits of `seed` (`others`: the other seeds, for splicing).
fn mutate(rng: &mut StdRng, seed: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = v.len();
        let at = if len == 0 {
            0
        } else {
            rng.random_range(0..len)
        };
        match rng.random_range(0..9) {
            0 if len > 0 => v[at] ^= 1 << rng.random_range(0..8),
            1 if len > 0 => {
                v[at] = [0u8, 0xff, 0x7f, 0x80, b'"', b'{', b'\n'][rng.random_range(0..7)]
            }
            2 => {
                let w = WORDS[rng.random_range(0..WORDS.len())];
                let bytes = match rng.random_range(0..4) {
                    0 => (w as u32).to_le_bytes().to_vec(),
                    1 => (w as u32).to_be_bytes().to_vec(),
                    2 => w.to_le_bytes().to_vec(),
                    _ => w.to_be_bytes().to_vec(),
                };
                for (i, b) in bytes.into_iter().enumerate() {
                    if at + i < len {
                        v[at + i] = b;
                    }
                }
            }
            3 => v.truncate(rng.random_range(0..=len)),
            4 if len > 0 => {
                let end = (at + rng.random_range(1..=64)).min(len);
                v.drain(at..end);
            }
            5 => {
                let n = rng.random_range(1..=16);
                let fill: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                v.splice(at..at, fill);
            }
            6 if len > 0 => {
                let end = (at + rng.random_range(1..=256)).min(len);
                let copy = v[at..end].to_vec();
                v.splice(at..at, copy);
            }
            7 if !others.is_empty() => {
                let other = &others[rng.random_range(0..others.len())];
                let from = rng.random_range(0..=other.len());
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                // A run of digits (or any position) replaced by a hostile number.
                let start = (at..len).find(|&i| v[i].is_ascii_digit()).unwrap_or(at);
                let end = (start..len)
                    .find(|&i| !v[i].is_ascii_digit())
                    .unwrap_or(len);
                let number = NUMBERS[rng.random_range(0..NUMBERS.len())];
                v.splice(start..end, number.bytes());
            }
        }
    }
    v
}

/// Writes the target's files (file `which` as `content`, the others their first seed).
fn write_case(dir: &Path, t: &Target, which: usize, content: &[u8]) {
    for (i, (name, seeds)) in t.files.iter().enumerate() {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("creating the case folder");
        }
        let bytes = if i == which { content } else { &seeds[0] };
        std::fs::write(&path, bytes).expect("writing a fuzz case");
    }
}

/// Milliseconds since the start of the current call (0: none running), for the watchdog.
static CALL_STARTED: AtomicU64 = AtomicU64::new(0);

fn watchdog(epoch: Instant) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let started = CALL_STARTED.load(Ordering::SeqCst);
            let now = epoch.elapsed().as_millis() as u64;
            if started != 0 && now.saturating_sub(started) > HANG_SECS * 1000 {
                eprintln!(
                    "fuzz: a reader ran over {HANG_SECS} s on one input (left in fuzz-failures/current)"
                );
                std::process::abort();
            }
        }
    });
}

/// Runs `t.read` on the case in `dir`; `Err` with the panic's message if it panicked.
fn run_case(t: &Target, dir: &Path, epoch: Instant) -> Result<(), String> {
    CALL_STARTED.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
    let outcome = std::panic::catch_unwind(|| (t.read)(dir));
    CALL_STARTED.store(0, Ordering::SeqCst);
    outcome.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into())
    })
}

/// The saved inputs of a target (`fixtures/fuzz/<name>/<file>/...`).
fn regression_corpus(t: &Target) -> Vec<(usize, Vec<u8>, PathBuf)> {
    let mut out = Vec::new();
    for (i, (name, _)) in t.files.iter().enumerate() {
        let dir = repo()
            .join("fixtures/fuzz")
            .join(t.name)
            .join(name.replace('/', "_"));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            out.push((i, std::fs::read(&p).expect("reading a saved case"), p));
        }
    }
    out
}

#[test]
fn readers_survive_mutated_files() {
    let secs: f64 = std::env::var("SSM_ZOO_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let base_seed: u64 = std::env::var("SSM_ZOO_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SSM_ZOO_FUZZ_ONLY=a,b: only these readers (for long runs split over processes).
    let only: Option<Vec<String>> = std::env::var("SSM_ZOO_FUZZ_ONLY")
        .ok()
        .map(|s| s.split(',').map(|n| n.trim().to_string()).collect());
    let failures_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    std::fs::create_dir_all(&failures_dir).expect("creating fuzz-failures/");
    let epoch = Instant::now();
    watchdog(epoch);
    // Panics are caught and reported below; keep their default messages off the output.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for (ti, t) in targets().iter().enumerate() {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == t.name))
        {
            continue;
        }
        let case_dir = tempfile::tempdir().expect("a temporary folder");
        // The saved corpus first, then the seeds themselves, then mutations.
        let mut cases: Vec<(usize, Vec<u8>, String)> = regression_corpus(t)
            .into_iter()
            .map(|(i, bytes, p)| (i, bytes, p.display().to_string()))
            .collect();
        for (i, (_, seeds)) in t.files.iter().enumerate() {
            for s in seeds {
                cases.push((i, s.clone(), "a seed".into()));
            }
        }
        let mut rng = StdRng::seed_from_u64(base_seed.wrapping_mul(1000) + ti as u64);
        let start = Instant::now();
        let mut runs = 0usize;
        let mut next_case = 0usize;
        while next_case < cases.len() || start.elapsed().as_secs_f64() < secs {
            let (which, bytes, origin) = if next_case < cases.len() {
                next_case += 1;
                cases[next_case - 1].clone()
            } else {
                let which = rng.random_range(0..t.files.len());
                let seeds = &t.files[which].1;
                let seed = &seeds[rng.random_range(0..seeds.len())];
                (which, mutate(&mut rng, seed, seeds), "a mutation".into())
            };
            std::fs::remove_dir_all(case_dir.path()).ok();
            std::fs::create_dir_all(case_dir.path()).expect("the case folder");
            write_case(case_dir.path(), t, which, &bytes);
            std::fs::write(failures_dir.join("current"), &bytes).ok();
            let began = Instant::now();
            let result = run_case(t, case_dir.path(), epoch);
            let took = began.elapsed();
            runs += 1;
            let problem = match result {
                Err(message) => Some(format!("panicked: {message}")),
                Ok(()) if took > Duration::from_secs(HANG_SECS / 4) => {
                    Some(format!("took {took:?} on a {}-byte input", bytes.len()))
                }
                Ok(()) => None,
            };
            if let Some(problem) = problem {
                let file = failures_dir.join(format!(
                    "{}-{}-{runs}",
                    t.name,
                    t.files[which].0.replace('/', "_")
                ));
                std::fs::write(&file, &bytes).expect("saving a failing input");
                failures.push(format!(
                    "{} ({}, {origin}): {problem}; input saved as {}",
                    t.name,
                    t.files[which].0,
                    file.display()
                ));
                if failures.len() > 20 {
                    break;
                }
            }
        }
        summary.push(format!("{}: {runs} inputs", t.name));
    }
    std::panic::set_hook(hook);
    println!("fuzz ({secs} s per reader): {}", summary.join(", "));
    assert!(
        failures.is_empty(),
        "{} failing inputs:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
