//! Where a program should call the CPU ops from: a worker of rayon's global pool, the pool that
//! Flex, gemm and the zoo's CPU kernels share.

/// Stack of the worker threads (the main thread's usual 8 MiB, for the code that runs on one).
const WORKER_STACK: usize = 8 << 20;

/// Runs `f` on a worker thread of rayon's global pool and returns its result.
///
/// A parallel region started from a thread outside the pool (a program's main thread) hands all
/// of its work to the workers and sleeps until they are done: two thread wake-ups per region,
/// and on a busy machine each waits for the scheduler, for each of the ~100 regions of a decoded
/// token. Started on a worker, the region runs on the calling thread, which also takes back the
/// parts no other worker has picked up, so a worker that the machine's load keeps off a core
/// delays nothing it has not started. A decode or training loop should run inside this (`zoo`
/// runs every command so); `benches/load/run.sh` measures the difference.
///
/// Builds the global pool (with 8 MiB stacks) unless something built it before.
pub fn on_pool_worker<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    // Fails only when the pool exists already; it is then used as it is.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(WORKER_STACK)
        .build_global();
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_on_a_worker_of_the_global_pool() {
        assert_eq!(rayon::current_thread_index(), None);
        let inside = super::on_pool_worker(rayon::current_thread_index);
        assert!(inside.is_some());
    }
}
