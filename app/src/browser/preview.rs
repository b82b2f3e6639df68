//! The pre-join preview: the chosen camera shown (again whenever the choice
//! changes), the devices listed once allowed, what is missing told, and the
//! camera stopped when the pre-join screen goes.

use leptos::prelude::*;

/// What the person chose on the pre-join screen.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    /// The camera's device id (`None`: the browser's default).
    pub camera: RwSignal<Option<String>>,
    /// The microphone's device id (`None`: the browser's default).
    pub microphone: RwSignal<Option<String>>,
    /// Join with the camera on.
    pub camera_on: RwSignal<bool>,
    /// Join with the microphone on.
    pub microphone_on: RwSignal<bool>,
}

/// Where the preview shows what it found.
#[derive(Debug, Clone, Copy)]
pub struct Shown {
    /// The preview's `<video>`.
    pub video: NodeRef<leptos::html::Video>,
    /// What is missing and why.
    pub note: RwSignal<Option<String>>,
    /// Not a secure context (no camera or microphone at all).
    pub insecure: RwSignal<bool>,
    /// The cameras, once listed.
    pub cameras: RwSignal<Vec<(String, String)>>,
    /// The microphones, once listed.
    pub microphones: RwSignal<Vec<(String, String)>>,
}

/// Shows the chosen camera in the preview (again whenever the choice
/// changes), lists the devices once allowed, and stops the camera when the
/// pre-join screen goes.
pub fn start(shown: Shown, wanted: Wanted) {
    let Shown { video, note, insecure, cameras, microphones } = shown;
    let Wanted { camera, microphone, camera_on, microphone_on } = wanted;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;

    let stream = StoredValue::new_local(None::<web_sys::MediaStream>);
    let alive = Arc::new(AtomicBool::new(true));
    // Each choice opens the devices anew; an older, slower open is dropped.
    let generation = Arc::new(AtomicU32::new(0));
    let still_alive = alive.clone();
    Effect::new(move |_| {
        let choice = super::DeviceChoice {
            camera: camera.get(),
            microphone: microphone.get(),
            camera_off: !camera_on.get(),
            microphone_off: !microphone_on.get(),
        };
        let current = generation.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(Some(old)) = stream.try_update_value(Option::take) {
            super::stop_stream(&old);
        }
        let (alive, generation) = (still_alive.clone(), generation.clone());
        // Not owned (`crate::tasks`): an open that finishes after the screen
        // went must still stop its stream, so it runs to the end and checks `alive`.
        leptos::task::spawn_local(async move {
            let media = super::open_local_media(&choice).await;
            let problem = media.problem;
            match media.stream.ok_or(()) {
                Ok(s) if alive.load(Ordering::Acquire) && generation.load(Ordering::Acquire) == current => {
                    if let Some(v) = video.get_untracked() {
                        v.set_src_object(Some(&s));
                    }
                    stream.set_value(Some(s));
                    let _ = note.try_set(problem.map(|p| p.message().to_owned()));
                    if let Ok(lists) = super::list_devices().await {
                        let _ = cameras.try_set(lists.cameras);
                        let _ = microphones.try_set(lists.microphones);
                    }
                }
                // The screen went away (or the choice changed) meanwhile: release at once.
                Ok(s) => super::stop_stream(&s),
                Err(()) => {
                    if let Some(v) = video.get_untracked() {
                        v.set_src_object(None);
                    }
                    let _ = insecure.try_set(problem == Some(super::DeviceProblem::NotSecure));
                    let _ = note.try_set(problem.map(|p| p.message().to_owned()));
                }
            }
        });
    });
    on_cleanup(move || {
        alive.store(false, Ordering::Release);
        if let Some(Some(s)) = stream.try_update_value(Option::take) {
            super::stop_stream(&s);
        }
        if let Some(v) = video.get_untracked() {
            v.set_src_object(None);
        }
    });
}
