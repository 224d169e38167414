//! The store's own tokio runtime, on threads of its own: connections, the writer and the
//! listener live there whatever the caller runs on. The store contract's synchronous calls
//! hand their work to it and wait on a plain channel, so they work from any thread: a
//! blocking thread, a `spawn_blocking` task, a thread with no runtime, or (briefly blocking
//! it) an async task of another runtime. Only the runtime's own threads may not wait on it,
//! and the store never does.

use std::future::Future;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

const THREAD_NAME: &str = "eshost-pg";

/// How long closing the store waits for its tasks (the writer finishing its batch).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct StoreRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl StoreRuntime {
    pub fn start() -> std::io::Result<StoreRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("eshost-pg-runtime".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_timeout(SHUTDOWN_GRACE);
            })?;
        Ok(StoreRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Run `work` on the store's runtime and wait for it on this thread.
    pub fn block<T, F>(&self, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        block(&self.handle, work)
    }
}

/// Run `work` on the runtime of `handle` and wait for it on this thread; `None` only if the
/// runtime is shutting down and dropped the task.
///
/// # Panics
/// On one of the store runtime's own threads, where waiting could deadlock.
pub(crate) fn block<T, F>(handle: &Handle, work: F) -> Option<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    assert!(
        !on_runtime_thread(),
        "the postgres store's blocking calls must not run on its own runtime"
    );
    let (sender, receiver) = mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = sender.send(work.await);
    });
    receiver.recv().ok()
}

impl Drop for StoreRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Dropped on one of its own threads (cannot happen through the store's API), the
            // runtime finishes on its thread without being waited for.
            if on_runtime_thread() {
                return;
            }
            let _ = thread.join();
        }
    }
}

fn on_runtime_thread() -> bool {
    std::thread::current().name() == Some(THREAD_NAME)
}
