//! CPU pinning: the server and the load generator run on different cores.
//!
//! Threads are pinned with `sched_setaffinity` (through `core_affinity`'s safe API). A child
//! process inherits the affinity of the thread that forks it, so servers are spawned from a
//! short-lived thread pinned to the server core: no `taskset` exec in the measured path.

use std::process::{Child, Command};

use anyhow::{Context as _, anyhow};

/// Pins the calling thread to `core`.
pub fn pin_current(core: usize) -> anyhow::Result<()> {
    // Not filtered through get_core_ids(): that lists the calling thread's current mask, which
    // a pinned parent narrows to one core.
    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        Ok(())
    } else {
        Err(anyhow!("sched_setaffinity to core {core} failed"))
    }
}

/// Number of cores this process may run on (call before pinning).
pub fn cores() -> usize {
    core_affinity::get_core_ids().map_or(1, |ids| ids.len())
}

/// Runs `f` on a fresh thread pinned to `core` and returns its result.
pub fn on_core<T: Send + 'static>(
    core: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    std::thread::spawn(move || {
        pin_current(core)?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow!("pinned thread panicked"))?
}

/// Spawns `cmd` so that the child runs on `core` only.
pub fn spawn_on(core: usize, mut cmd: Command) -> anyhow::Result<Child> {
    let program = format!("{:?}", cmd.get_program());
    on_core(core, move || cmd.spawn())?.with_context(|| format!("cannot start {program}"))
}
