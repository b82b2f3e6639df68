//! Tasks owned by a component: [`Tasks::spawn`] runs a future on the page's
//! executor and aborts it when the component that made the [`Tasks`] is
//! cleaned up, so no task outlives the state it writes to.
//!
//! Two kinds of task are deliberately *not* owned this way, each said where
//! it is spawned: the leave's confirmation (it must outlive the page it
//! leaves) and work whose result must be released even when nobody wants it
//! any more (an open of the camera that finishes after the screen went:
//! aborting it would leave the camera on; it checks its owner's liveness and
//! stops the stream instead).

use std::collections::HashMap;
use std::future::Future;

use futures::future::{AbortHandle, Abortable};
use leptos::prelude::*;

/// The running tasks of one component, by id.
#[derive(Debug, Clone, Copy)]
pub struct Tasks {
    running: StoredValue<(u64, HashMap<u64, AbortHandle>)>,
}

impl Tasks {
    /// Tasks of the current component: every one still running is aborted
    /// when the component is cleaned up.
    pub fn new() -> Self {
        // Thread-safe storage: on the server the page renders (and is cleaned up) on any worker thread.
        let running = StoredValue::new((0u64, HashMap::<u64, AbortHandle>::new()));
        on_cleanup(move || {
            if let Some((_, handles)) = running.try_update_value(std::mem::take) {
                for handle in handles.into_values() {
                    handle.abort();
                }
            }
        });
        Self { running }
    }

    /// Runs `task` until it finishes or the owner goes, whichever is first.
    pub fn spawn(self, task: impl Future<Output = ()> + 'static) {
        let (handle, registration) = AbortHandle::new_pair();
        let Some(id) = self.running.try_update_value(|(next, handles)| {
            *next += 1;
            handles.insert(*next, handle);
            *next
        }) else {
            return; // the owner is gone already
        };
        let running = self.running;
        leptos::task::spawn_local(async move {
            let _ = Abortable::new(task, registration).await;
            let _ = running.try_update_value(|(_, handles)| handles.remove(&id));
        });
    }
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}
