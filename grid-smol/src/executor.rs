//! The executor the driver's tasks run on. smol's global executor would do,
//! but only the `smol` umbrella crate has it; this is the same small thing
//! on `async-executor`, so the driver needs only `async-io`, `async-net` and
//! `async-executor`.

use std::future::Future;
use std::panic::catch_unwind;
use std::sync::OnceLock;
use std::thread;

use async_executor::{Executor, Task};

/// Spawns `future` on the executor the driver's tasks run on, started on
/// first use with `SMOL_THREADS` threads (default 1, as smol's global
/// executor). Use it for [`serve`](crate::serve) and for the tasks that
/// make calls: a task on another executor works as well, but every call
/// and answer then crosses between two executors' threads (one caller in
/// another process, measured once for 3 s each way: median 113 µs per
/// request from smol's global executor, 75 µs from this one).
/// Drop the returned [`Task`] to cancel it, or `detach` it.
pub fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
    executor().spawn(future)
}

fn executor() -> &'static Executor<'static> {
    static EXECUTOR: OnceLock<Executor<'static>> = OnceLock::new();
    EXECUTOR.get_or_init(|| {
        let threads = std::env::var("SMOL_THREADS")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        for n in 1..=threads {
            // The threads block in `executor()` until this initialisation
            // returns. A panicking task unwinds out of `run`; the loop
            // starts it again so one bad task cannot stop the others.
            thread::Builder::new()
                .name(format!("grid-smol-{n}"))
                .spawn(|| {
                    loop {
                        let _ = catch_unwind(|| {
                            async_io::block_on(executor().run(std::future::pending::<()>()))
                        });
                    }
                })
                .expect("cannot start a grid-smol executor thread");
        }
        Executor::new()
    })
}
