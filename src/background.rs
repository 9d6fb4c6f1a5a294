//! A task that does one round of work, waits, and does it again until it
//! is shut down: the shape of the upload cleaner and the webhook sender.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Whether the round that just ran wants the next one at once (it left work
/// behind) or after the interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    AtOnce,
    AfterInterval,
}

pub struct PeriodicTask {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl PeriodicTask {
    /// Runs `round` now and then every `interval` (or at once when it says
    /// so) until [`PeriodicTask::shutdown`]; a round under way is finished.
    pub fn spawn<F, Fut>(interval: Duration, mut round: F) -> PeriodicTask
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Next> + Send,
    {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                if *stopped.borrow() {
                    return;
                }
                if round().await == Next::AtOnce {
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stopped.changed() => return,
                }
            }
        });
        PeriodicTask {
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    /// Stops it, waiting for a round under way to finish.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
