//! The S4 family's convolution kernels cached per length at inference: a layer's kernel
//! depends on its parameters and the length only, so a model that sees the same lengths again
//! (a classifier's batches, a benchmark's repetitions) computes each once.
//!
//! The cache is used only when no parameter is tracked (no autodiff graph to keep), and is keyed
//! by the length, the rate and the ids of the parameters it was computed from (all the kernel
//! module's float parameters, read by a visitor, so a parameter added later is covered). Every module
//! transformation that can change parameters or their device (`map`, which optimizers and
//! loaders go through, `valid`, `train`, `to_device`, `fork`) starts an empty cache; a clone
//! shares the entries (its parameters are the same).

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
    Param, ParamId,
};
use burn::tensor::{Device, Tensor};
use std::sync::{Arc, Mutex};

/// Lengths kept at once; a further length clears the cache.
const CAPACITY: usize = 8;

/// What a kernel was computed from.
#[derive(Debug, Clone, PartialEq)]
struct Key {
    len: usize,
    rate: u64,
    params: Vec<ParamId>,
}

/// A module's float parameters: their ids, and whether any is tracked.
#[derive(Default)]
struct Params {
    ids: Vec<ParamId>,
    tracked: bool,
}

impl ModuleVisitor for Params {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.ids.push(param.id);
        self.tracked |= param.val().is_require_grad();
    }
}

/// The kernels (one or two (H, L) tensors) computed from a [`Key`].
type Entry = (Key, Vec<Tensor<2>>);

/// The entries and how many kernels were computed through this cache.
#[derive(Debug, Default)]
struct Inner {
    entries: Vec<Entry>,
    computed: usize,
}

/// Kernels (each one or two (H, L) tensors) by length (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct KernelCache(Arc<Mutex<Inner>>);

impl KernelCache {
    /// The kernels of `module` (the kernel module holding this cache) for `len` at `rate`:
    /// from the cache when they were computed before from the same parameters (their ids, read
    /// from the module), else computed by `compute`, and kept unless a parameter is tracked (a
    /// kernel in an autodiff graph is recomputed every time).
    pub(crate) fn get_or<M: Module>(
        &self,
        module: &M,
        len: usize,
        rate: f64,
        compute: impl FnOnce() -> Vec<Tensor<2>>,
    ) -> Vec<Tensor<2>> {
        let mut params = Params::default();
        module.visit(&mut params);
        if params.tracked {
            return compute();
        }
        let key = Key {
            len,
            rate: rate.to_bits(),
            params: params.ids,
        };
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, k)) = inner.entries.iter().find(|(k, _)| *k == key) {
            return k.clone();
        }
        let k = compute();
        inner.computed += 1;
        if inner.entries.len() >= CAPACITY {
            inner.entries.clear();
        }
        inner.entries.push((key, k.clone()));
        k
    }

    /// How many kernels are held (for the tests).
    pub fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    /// How many kernels this cache (and its clones, which share it) has computed and kept: a
    /// forward that found its kernel in the cache does not count.
    pub fn computed(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).computed
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Module for KernelCache {
    fn visit<V: ModuleVisitor>(&self, _: &mut V) {}

    fn map<M: ModuleMapper>(self, _: &mut M) -> Self {
        Self::default()
    }

    fn to_device(self, _: &Device) -> Self {
        Self::default()
    }

    fn fork(self, _: &Device) -> Self {
        Self::default()
    }

    fn collect_devices(&self, devices: Devices) -> Devices {
        devices
    }

    fn materialize(self) -> Self {
        self
    }

    fn valid(&self) -> Self {
        Self::default()
    }

    fn train(self) -> Self {
        Self::default()
    }
}

impl ModuleDisplayDefault for KernelCache {
    fn content(&self, content: Content) -> Option<Content> {
        content
            .add_formatted(&format!("KernelCache {{lengths: {}}}", self.len()))
            .optional()
    }
}

impl ModuleDisplay for KernelCache {}
