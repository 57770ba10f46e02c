//! burn-train's per-epoch checkpoints written whole or not at all: the same files as Burn's
//! `FileCheckpointer` (`checkpoint/{model,optim,scheduler}-{epoch}.bpk`), each written to a
//! temporary file, flushed to disk and renamed into place ([`write_atomic`]), so a run killed
//! while saving leaves the previous checkpoint intact rather than half a file; a damaged one is
//! refused on restore with its path.

use burn::tensor::Bytes;
use burn::train::checkpoint::{Checkpoint, Checkpointer, CheckpointerError};
use ssm_models::io::write_atomic;
use std::path::{Path, PathBuf};

/// One kind of record's checkpoints (`name`-`epoch`.bpk in `dir`), written atomically.
pub(crate) struct AtomicCheckpointer {
    dir: PathBuf,
    name: &'static str,
}

impl AtomicCheckpointer {
    fn path(&self, epoch: usize) -> PathBuf {
        self.dir.join(format!("{}-{epoch}.bpk", self.name))
    }
}

impl<R: Checkpoint> Checkpointer<R> for AtomicCheckpointer {
    fn save(&self, epoch: usize, record: R) -> Result<(), CheckpointerError> {
        let bytes = record
            .checkpoint_into_bytes()
            .map_err(CheckpointerError::Record)?;
        std::fs::create_dir_all(&self.dir).map_err(CheckpointerError::IOError)?;
        write_atomic(&self.path(epoch), &bytes)
            .map_err(|e| CheckpointerError::Unknown(e.to_string()))
    }

    fn delete(&self, epoch: usize) -> Result<(), CheckpointerError> {
        match std::fs::remove_file(self.path(epoch)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CheckpointerError::IOError(e))
            }
            _ => Ok(()),
        }
    }

    fn restore(&self, epoch: usize) -> Result<R, CheckpointerError> {
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

/// The model's, the optimizer's and the scheduler's checkpointers under `run/checkpoint`, for
/// `SupervisedTraining::with_custom_checkpointers`.
pub(crate) fn atomic_checkpointers(
    run: &Path,
) -> (AtomicCheckpointer, AtomicCheckpointer, AtomicCheckpointer) {
    let dir = run.join("checkpoint");
    let of = |name| AtomicCheckpointer {
        dir: dir.clone(),
        name,
    };
    (of("model"), of("optim"), of("scheduler"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::nn::LinearConfig;
    use burn::store::ModuleRecord;
    use burn::tensor::Device;

    #[test]
    fn a_checkpoint_round_trips_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (model, _, _) = atomic_checkpointers(dir.path());
        let record = LinearConfig::new(3, 2).init(&Device::flex()).into_record();
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
}
