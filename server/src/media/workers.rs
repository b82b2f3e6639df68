//! The threads that run rooms' media.
//!
//! A room's media (its sessions' tasks, their peer connections' drivers,
//! the fan-out loops and the forwarders) runs on one thread: a worker, a
//! Tokio runtime of one thread, one worker per core. A new room goes to
//! the worker with the fewest rooms and stays there while it has media.
//! A packet's way through the SFU (socket read, fan-out, each
//! subscriber's write) then never wakes another thread, which at a call's
//! rates, a few packets at a time, is most of what the multi-threaded
//! runtime cost per packet (BENCHMARKS.md "One thread per room").
//! Pages, sockets and the stores stay on the process's runtime; the two
//! sides talk over channels, as before.
//!
//! A worker stops when [`Workers`] is dropped: its thread ends and any
//! task still there is dropped with its runtime. The node's task tracker
//! still counts every media task, wherever it runs.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The media workers of a node.
pub(crate) struct Workers {
    /// Never empty ([`Workers::start`] starts at least one).
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    /// Rooms placed here and not yet forgotten.
    rooms: Arc<AtomicUsize>,
    /// Dropped with the worker: its thread's `block_on` returns.
    _stop: oneshot::Sender<()>,
}

/// A room's place on a worker, held by the room's media; dropping it
/// frees the place.
pub(crate) struct Lease {
    handle: Handle,
    rooms: Arc<AtomicUsize>,
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub(crate) fn start(count: usize) -> std::io::Result<Self> {
        let workers = (0..count.max(1)).map(Worker::start).collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self { workers })
    }

    /// One worker per core the process may run on.
    pub(crate) fn per_core() -> std::io::Result<Self> {
        Self::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// A place for a new room on the worker with the fewest rooms.
    pub(crate) fn lease(&self) -> Lease {
        let load = |i: usize| self.workers[i].rooms.load(Ordering::Relaxed);
        let least = (1..self.workers.len()).fold(0, |best, i| if load(i) < load(best) { i } else { best });
        let worker = &self.workers[least];
        worker.rooms.fetch_add(1, Ordering::Relaxed);
        Lease { handle: worker.handle.clone(), rooms: worker.rooms.clone() }
    }
}

impl Worker {
    fn start(index: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new().name(format!("media-{index}")).spawn(move || {
            // Either outcome (a send, or the sender dropped) means stop.
            let _ = runtime.block_on(stopped);
        })?;
        Ok(Self { handle, rooms: Arc::default(), _stop: stop })
    }
}

impl Lease {
    /// Runs `task` on this room's worker. Tasks it spawns stay there.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.handle.spawn(task));
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.rooms.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn thread_of(lease: &Lease) -> String {
        let (tx, rx) = oneshot::channel();
        lease.spawn(async move {
            // A task spawned by a room's task stays on the room's worker.
            let inner = tokio::spawn(async { std::thread::current().name().map(str::to_owned) });
            let _ = tx.send(inner.await.ok().flatten());
        });
        rx.await.ok().flatten().unwrap_or_default()
    }

    #[tokio::test]
    async fn a_new_room_goes_to_the_worker_with_fewest_rooms_and_its_tasks_run_there() {
        let workers = Workers::start(2).unwrap();
        let a = workers.lease();
        let b = workers.lease();
        assert_eq!(thread_of(&a).await, "media-0");
        assert_eq!(thread_of(&b).await, "media-1");
        // Both hold one room: the next goes to the first; once `a` is
        // forgotten its worker is the emptier one again.
        let c = workers.lease();
        assert_eq!(thread_of(&c).await, "media-0");
        drop(a);
        drop(c);
        assert_eq!(thread_of(&workers.lease()).await, "media-0");
    }

    #[tokio::test]
    async fn dropping_the_workers_drops_their_tasks() {
        let workers = Workers::start(1).unwrap();
        let lease = workers.lease();
        let (held, dropped) = oneshot::channel::<()>();
        let (started, running) = oneshot::channel::<()>();
        lease.spawn(async move {
            let _held = held;
            let _ = started.send(());
            std::future::pending::<()>().await;
        });
        running.await.unwrap();
        drop(lease);
        drop(workers);
        // The task never ends by itself: its sender closes only when the
        // worker's runtime drops it.
        let closed = tokio::time::timeout(std::time::Duration::from_secs(10), dropped).await;
        assert!(matches!(closed, Ok(Err(_))), "the task outlived its worker");
    }
}
