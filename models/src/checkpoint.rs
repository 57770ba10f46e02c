//! Checkpoints written whole or not at all: the one place where the zoo writes a file or a
//! folder atomically, whatever the task.
//!
//! - [`write_atomic`]: a file, through a temporary file in the same folder that is flushed to
//!   disk and renamed over the destination. Every file the zoo writes goes through it (exported
//!   safetensors and configs, `model.bpk`, token caches, metrics, run files).
//! - [`AtomicDir`]: a folder of several files, built under a temporary name, each file flushed,
//!   then renamed into place: the language-model trainer's `checkpoints/step-N/{model.bpk,
//!   optim.bpk,state.json}` ([`crate::lm::train`]).
//! - [`save_weights`] / [`load_weights`]: a module as `model.bpk` (Burn's burnpack, parameter
//!   ids included) in a folder, written with [`write_atomic`], read back with every parameter
//!   checked.
//! - [`AtomicCheckpointer`]: burn-train's `Checkpointer` on [`write_atomic`], with the files of
//!   Burn's `FileCheckpointer` (`checkpoint/{model,optim,scheduler}-{epoch}.bpk`), for the tasks
//!   trained with burn-train's `Learner` ([`atomic_checkpointers`]).
//!
//! A run killed at any moment leaves the previous checkpoint intact, never half of a new one; a
//! damaged file is refused on restore with its path.
//!
//! The classifiers, forecasters and Graph-Mamba keep burn-train's `Learner`: they train by
//! epochs with a validation pass and metrics after each, which is what the Learner does (its
//! metrics, renderer and experiment log included); a checkpoint per epoch is all they need, and
//! only the write had to be made atomic, which [`AtomicCheckpointer`] does inside the Learner.
//! The language model has its own loop ([`crate::lm::train::Trainer`]) because it checkpoints
//! every N steps and resumes mid-epoch on the same batch stream, which the Learner (epoch-end
//! checkpoints, an epoch restarted from its beginning) cannot.

use crate::error::{ModelError, Result};
use burn::module::Module;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::Bytes;
use burn::train::checkpoint::{Checkpoint, Checkpointer, CheckpointerError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file [`save_weights`] writes and [`load_weights`] reads in a folder.
pub const WEIGHTS_FILE: &str = "model.bpk";

/// The prefix of an [`AtomicDir`]'s temporary name until it is renamed into place
/// (`.tmp-step-00000006`).
pub const TMP_PREFIX: &str = ".tmp-";

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.into(),
        source,
    }
}

/// The folder `path` lies in (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Flushes a folder's entries (a rename in it then survives a crash); best effort, as some
/// file systems cannot open a folder for it.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes a file whole or not at all: the bytes go to a temporary file in the same folder,
/// which is flushed to disk and then renamed over `path` (a crash leaves the old file or the
/// new one, never half of one).
///
/// # Errors
/// The file cannot be created, written or renamed (the error names `path`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = io_error(path);
    let dir = parent_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(&io)?;
    f.write_all(bytes).map_err(&io)?;
    f.sync_all().map_err(&io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(&io)?;
    // The rename itself reaches the disk with the folder's entry.
    sync_dir(dir);
    Ok(())
}

/// A folder written whole or not at all: files go into [`path`](Self::path), a temporary
/// folder beside the destination (`.tmp-<name>`); [`commit`](Self::commit) flushes each of them
/// and renames the folder over the destination. A crash before the rename leaves the
/// temporary folder, which [`is_leftover`] recognises for removal.
#[derive(Debug)]
pub struct AtomicDir {
    tmp: PathBuf,
    dest: PathBuf,
}

impl AtomicDir {
    /// Starts the folder `dest` (its parent is created if missing; a temporary folder left by
    /// an earlier attempt is removed).
    ///
    /// # Errors
    /// The temporary folder cannot be created.
    pub fn begin(dest: impl Into<PathBuf>) -> Result<Self> {
        let dest = dest.into();
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent_of(&dest).join(format!("{TMP_PREFIX}{name}"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io_error(&tmp))?;
        Ok(Self { tmp, dest })
    }

    /// The temporary folder the files go into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Flushes every file of the folder, replaces the destination by it (a rename: atomic) and
    /// returns the destination.
    ///
    /// # Errors
    /// A file cannot be flushed, or the folder cannot be renamed (the error names the path).
    pub fn commit(self) -> Result<PathBuf> {
        let entries = std::fs::read_dir(&self.tmp).map_err(io_error(&self.tmp))?;
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for p in &files {
            std::fs::File::open(p)
                .and_then(|f| f.sync_all())
                .map_err(io_error(p))?;
        }
        let _ = std::fs::remove_dir_all(&self.dest);
        std::fs::rename(&self.tmp, &self.dest).map_err(io_error(&self.dest))?;
        sync_dir(parent_of(&self.dest));
        Ok(self.dest)
    }
}

/// Whether a folder entry named `name` is what an interrupted [`AtomicDir`] leaves.
pub fn is_leftover(name: &str) -> bool {
    name.starts_with(TMP_PREFIX)
}

/// Writes `model` as `model.bpk` in `dir` (Burn's burnpack, parameter ids included), the file
/// [`load_weights`] reads; whole or not at all ([`write_atomic`]).
///
/// # Errors
/// The module cannot be serialised or the file written.
pub fn save_weights<M: Module>(model: &M, dir: &Path) -> Result<()> {
    let cannot =
        |e: String| ModelError::Invalid(format!("cannot save the model in {}: {e}", dir.display()));
    let mut store = BurnpackStore::from_bytes(None);
    model
        .save_into(&mut store)
        .map_err(|e| cannot(e.to_string()))?;
    let bytes = store.get_bytes().map_err(|e| cannot(e.to_string()))?;
    write_atomic(&dir.join(WEIGHTS_FILE), &bytes)
}

/// Loads `model.bpk` of `dir` into `model`, checking that every parameter was found with its
/// shape.
///
/// # Errors
/// The file is missing or unreadable, or a parameter is missing or mis-shaped.
pub fn load_weights<M: Module>(mut model: M, dir: &Path) -> Result<M> {
    let model_path = dir.join(WEIGHTS_FILE);
    if !model_path.is_file() {
        return Err(ModelError::Invalid(format!(
            "{} does not exist",
            model_path.display()
        )));
    }
    let mut store = BurnpackStore::from_file(&model_path);
    let applied = model
        .load_from(&mut store)
        .map_err(|e| ModelError::Invalid(format!("cannot read {}: {e}", model_path.display())))?;
    if !applied.errors.is_empty() || !applied.missing.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{}: {} missing and {} mis-shaped tensors (first: {:?} {:?})",
            model_path.display(),
            applied.missing.len(),
            applied.errors.len(),
            applied.missing.first().map(|m| &m.0),
            applied.errors.first()
        )));
    }
    Ok(model)
}

/// One kind of burn-train record's checkpoints (`name`-`epoch`.bpk in `dir`), each written with
/// [`write_atomic`].
#[derive(Debug, Clone)]
pub struct AtomicCheckpointer {
    dir: PathBuf,
    name: &'static str,
}

impl AtomicCheckpointer {
    /// The checkpoints `dir/name-<epoch>.bpk`.
    pub fn new(dir: impl Into<PathBuf>, name: &'static str) -> Self {
        Self {
            dir: dir.into(),
            name,
        }
    }

    fn path(&self, epoch: usize) -> PathBuf {
        self.dir.join(format!("{}-{epoch}.bpk", self.name))
    }
}

impl<R: Checkpoint> Checkpointer<R> for AtomicCheckpointer {
    fn save(&self, epoch: usize, record: R) -> std::result::Result<(), CheckpointerError> {
        let bytes = record
            .checkpoint_into_bytes()
            .map_err(CheckpointerError::Record)?;
        std::fs::create_dir_all(&self.dir).map_err(CheckpointerError::IOError)?;
        write_atomic(&self.path(epoch), &bytes)
            .map_err(|e| CheckpointerError::Unknown(e.to_string()))
    }

    fn delete(&self, epoch: usize) -> std::result::Result<(), CheckpointerError> {
        match std::fs::remove_file(self.path(epoch)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CheckpointerError::IOError(e))
            }
            _ => Ok(()),
        }
    }

    fn restore(&self, epoch: usize) -> std::result::Result<R, CheckpointerError> {
        let path = self.path(epoch);
        let bytes = std::fs::read(&path).map_err(CheckpointerError::IOError)?;
        R::checkpoint_from_bytes(Bytes::from_bytes_vec(bytes)).map_err(|e| {
            CheckpointerError::Unknown(format!(
                "{}: not a readable checkpoint: {e}",
                path.display()
            ))
        })
    }
}

/// The model's, the optimizer's and the scheduler's checkpointers under `run/checkpoint` (the
/// files of Burn's `FileCheckpointer`), for `SupervisedTraining::with_custom_checkpointers`.
pub fn atomic_checkpointers(
    run: &Path,
) -> (AtomicCheckpointer, AtomicCheckpointer, AtomicCheckpointer) {
    let dir = run.join("checkpoint");
    (
        AtomicCheckpointer::new(&dir, "model"),
        AtomicCheckpointer::new(&dir, "optim"),
        AtomicCheckpointer::new(&dir, "scheduler"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::store::ModuleRecord;
    use burn::tensor::Device;
    use ssm_backends::testing::seeded;

    #[test]
    fn a_checkpoint_round_trips_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (model, _, _) = atomic_checkpointers(dir.path());
        let record = {
            let device = Device::flex();
            let _seed = seeded(&device, 1);
            LinearConfig::new(3, 2).init(&device).into_record()
        };
        Checkpointer::<ModuleRecord>::save(&model, 3, record).expect("saves");
        let path = dir.path().join("checkpoint/model-3.bpk");
        assert!(path.is_file());
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("checkpoint"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        Checkpointer::<ModuleRecord>::restore(&model, 3).expect("restores");
        // Half a file: refused, naming it.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = Checkpointer::<ModuleRecord>::restore(&model, 3)
            .expect_err("a truncated checkpoint is refused")
            .to_string();
        assert!(err.contains("model-3.bpk"), "{err}");
        Checkpointer::<ModuleRecord>::delete(&model, 3).unwrap();
        Checkpointer::<ModuleRecord>::delete(&model, 3).expect("deleting twice is fine");
    }

    #[test]
    fn a_folder_appears_whole_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("step-1");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("stale"), b"old").unwrap();
        let folder = AtomicDir::begin(&dest).unwrap();
        std::fs::write(folder.path().join("a"), b"new").unwrap();
        // Until the commit, the destination holds the old folder only.
        assert!(dest.join("stale").is_file() && !dest.join("a").exists());
        assert!(is_leftover(
            &folder.path().file_name().unwrap().to_string_lossy()
        ));
        assert_eq!(folder.commit().unwrap(), dest);
        assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"new");
        assert!(!dest.join("stale").exists());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("step-1")]);
    }

    #[test]
    fn weights_round_trip_and_a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let device = Device::flex();
        let (a, fresh) = {
            let _seed = seeded(&device, 2);
            let a = LinearConfig::new(3, 2).init(&device);
            (a, LinearConfig::new(3, 2).init(&device))
        };
        save_weights(&a, dir.path()).unwrap();
        let b = load_weights(fresh, dir.path()).unwrap();
        assert_eq!(
            a.weight.val().into_data().try_to_vec::<f32>().unwrap(),
            b.weight.val().into_data().try_to_vec::<f32>().unwrap()
        );
        let err = load_weights(a, &dir.path().join("none")).unwrap_err();
        assert!(err.to_string().contains("model.bpk"), "{err}");
    }
}
