//! The person's camera and microphone: opening what they chose, telling
//! what is missing and why (not a secure context, refused, no such device),
//! listing the devices, stopping streams.

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{MediaStream, MediaStreamConstraints, MediaStreamTrack};

use super::window;

/// Opens the camera alone (turning it back on, or another camera, during a call).
pub async fn open_camera(device: Option<&str>) -> Result<MediaStreamTrack, JsValue> {
    let choice = DeviceChoice { camera: device.map(str::to_owned), ..DeviceChoice::default() };
    let stream = get_user_media(None, Some(&choice)).await?;
    stream.get_video_tracks().get(0).dyn_into::<MediaStreamTrack>()
}

/// Opens the microphone alone (another one chosen during a call).
pub async fn open_microphone(device: Option<&str>) -> Result<MediaStreamTrack, JsValue> {
    let choice = DeviceChoice { microphone: device.map(str::to_owned), ..DeviceChoice::default() };
    let stream = get_user_media(Some(&choice), None).await?;
    stream.get_audio_tracks().get(0).dyn_into::<MediaStreamTrack>()
}

/// The constraint for one kind of device: any, or exactly `device`.
fn device_constraint(device: Option<&str>) -> JsValue {
    let Some(id) = device.filter(|d| !d.is_empty()) else { return JsValue::TRUE };
    let constraint = js_sys::Object::new();
    let exact = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&exact, &"exact".into(), &id.into());
    let _ = js_sys::Reflect::set(&constraint, &"deviceId".into(), &exact);
    constraint.into()
}

/// The camera's: the chosen device, at 960×540 if it can. That size is
/// what the browser needs to send all three simulcast layers (it drops the
/// top one below it) and the largest a meeting tile needs.
fn camera_constraint(device: Option<&str>) -> JsValue {
    let constraint: js_sys::Object = match device_constraint(device).dyn_into() {
        Ok(object) => object,
        Err(_) => js_sys::Object::new(),
    };
    for (name, value) in [("width", 960), ("height", 540)] {
        let ideal = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&ideal, &"ideal".into(), &value.into());
        let _ = js_sys::Reflect::set(&constraint, &name.into(), &ideal);
    }
    constraint.into()
}

/// Asks for the chosen kinds of device (`None` = that kind not asked for).
async fn get_user_media(audio: Option<&DeviceChoice>, video: Option<&DeviceChoice>) -> Result<MediaStream, JsValue> {
    let media = window()?.navigator().media_devices()?;
    let constraints = MediaStreamConstraints::new();
    constraints.set_audio(&audio.map_or(JsValue::FALSE, |d| device_constraint(d.microphone.as_deref())));
    constraints.set_video(&video.map_or(JsValue::FALSE, |d| camera_constraint(d.camera.as_deref())));
    let stream = JsFuture::from(media.get_user_media_with_constraints(&constraints)?).await?;
    stream.dyn_into::<MediaStream>()
}

/// The `name` of a rejected `getUserMedia` (a `DOMException`).
fn error_name(e: &JsValue) -> String {
    js_sys::Reflect::get(e, &"name".into()).ok().and_then(|n| n.as_string()).unwrap_or_default()
}

/// Why some of the person's devices are not in the call; each tells them
/// what happened and what they can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceProblem {
    /// Not a secure context: the browser gives no page camera or microphone.
    NotSecure,
    /// The person (or the browser's settings) refused both.
    Denied,
    /// The camera was refused; the microphone works.
    CameraDenied,
    /// There is no camera; the microphone works.
    NoCamera,
    /// There is no microphone (or it was refused); the camera works.
    NoMicrophone,
    /// Neither could be opened: listening only.
    NoDevices,
}

impl DeviceProblem {
    /// What the person is told.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotSecure => {
                "This page was not opened over a secure connection, so the browser will not let it use your camera \
                 or microphone. Open it with https:// (the server needs HTTPS: see its README), or on the server's own \
                 computer at http://localhost."
            }
            Self::Denied => {
                "Camera and microphone are blocked for this site. Allow them from the icon in the address bar and \
                 reload; until then you join listening only."
            }
            Self::CameraDenied => "The camera is blocked for this site: you join with your microphone only.",
            Self::NoCamera => "No camera found: you join with your microphone only.",
            Self::NoMicrophone => "No microphone found: others will see you but not hear you.",
            Self::NoDevices => "No camera or microphone could be opened: you join listening only.",
        }
    }
}

/// The person's own media for the call, and what is missing from it.
#[derive(Debug, Clone, Default)]
pub struct LocalMedia {
    /// What could be opened (`None`: listening only).
    pub stream: Option<MediaStream>,
    /// Why something is missing, for the person.
    pub problem: Option<DeviceProblem>,
}

impl LocalMedia {
    /// Whether the stream has a microphone track.
    pub fn has_audio(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.get_audio_tracks().length() > 0)
    }
    /// Whether the stream has a camera track.
    pub fn has_video(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.get_video_tracks().length() > 0)
    }
}

/// Whether this page may use camera and microphone at all.
pub fn secure_context() -> bool {
    window().map(|w| w.is_secure_context()).unwrap_or(false)
}

/// Opens the camera and microphone the person chose (any when `None`);
/// when that fails, whatever of the two still works, and says why the
/// rest is missing. Never fails: the worst case is listening only, told.
pub async fn open_local_media(devices: &DeviceChoice) -> LocalMedia {
    if !secure_context() {
        return LocalMedia { stream: None, problem: Some(DeviceProblem::NotSecure) };
    }
    // What the person turned off is not asked for (and not missing).
    match (devices.microphone_off, devices.camera_off) {
        (true, true) => return LocalMedia { stream: None, problem: None },
        (true, false) | (false, true) => {
            let (audio, video) = (!devices.microphone_off, !devices.camera_off);
            return match get_user_media(audio.then_some(devices), video.then_some(devices)).await {
                Ok(stream) => LocalMedia { stream: Some(stream), problem: None },
                Err(e) => {
                    let denied = matches!(error_name(&e).as_str(), "NotAllowedError" | "SecurityError");
                    let problem = match (audio, denied) {
                        (true, _) => DeviceProblem::NoMicrophone,
                        (false, true) => DeviceProblem::CameraDenied,
                        (false, false) => DeviceProblem::NoCamera,
                    };
                    LocalMedia { stream: None, problem: Some(problem) }
                }
            };
        }
        (false, false) => {}
    }
    let both = match get_user_media(Some(devices), Some(devices)).await {
        Ok(stream) => return LocalMedia { stream: Some(stream), problem: None },
        Err(e) => error_name(&e),
    };
    let denied = matches!(both.as_str(), "NotAllowedError" | "SecurityError");
    // One kind alone: the microphone first (a call without video still works).
    if let Ok(stream) = get_user_media(Some(devices), None).await {
        let problem = if denied { DeviceProblem::CameraDenied } else { DeviceProblem::NoCamera };
        return LocalMedia { stream: Some(stream), problem: Some(problem) };
    }
    if let Ok(stream) = get_user_media(None, Some(devices)).await {
        return LocalMedia { stream: Some(stream), problem: Some(DeviceProblem::NoMicrophone) };
    }
    let problem = if denied { DeviceProblem::Denied } else { DeviceProblem::NoDevices };
    LocalMedia { stream: None, problem: Some(problem) }
}

/// The devices chosen on the pre-join screen (`None`: the browser's default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceChoice {
    /// The camera's device id.
    pub camera: Option<String>,
    /// The microphone's device id.
    pub microphone: Option<String>,
    /// The person turned the camera off before joining: not opened.
    pub camera_off: bool,
    /// The person turned the microphone off before joining: not opened.
    pub microphone_off: bool,
}

/// Cameras and microphones, as (device id, label), once permission was given.
pub async fn list_devices() -> Result<DeviceLists, JsValue> {
    let media = window()?.navigator().media_devices()?;
    let all: js_sys::Array = JsFuture::from(media.enumerate_devices()?).await?.dyn_into()?;
    let mut lists = DeviceLists::default();
    for (i, item) in all.iter().enumerate() {
        let Ok(info) = item.dyn_into::<web_sys::MediaDeviceInfo>() else { continue };
        let label = |fallback: &str| {
            let l = info.label();
            if l.is_empty() {
                format!("{fallback} {}", i + 1)
            } else {
                l
            }
        };
        match info.kind() {
            web_sys::MediaDeviceKind::Videoinput => lists.cameras.push((info.device_id(), label("Camera"))),
            web_sys::MediaDeviceKind::Audioinput => lists.microphones.push((info.device_id(), label("Microphone"))),
            web_sys::MediaDeviceKind::Audiooutput => lists.speakers.push((info.device_id(), label("Speaker"))),
            _ => {}
        }
    }
    Ok(lists)
}

/// The devices the browser lists, each as (device id, label).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceLists {
    /// Cameras.
    pub cameras: Vec<(String, String)>,
    /// Microphones.
    pub microphones: Vec<(String, String)>,
    /// Speakers and headphones (audio outputs).
    pub speakers: Vec<(String, String)>,
}

/// Whether this browser lets a page choose where sound plays (`setSinkId`).
pub fn can_choose_output() -> bool {
    let Ok(window) = window() else { return false };
    let Ok(element) = js_sys::Reflect::get(&window, &"HTMLMediaElement".into()) else { return false };
    let prototype = js_sys::Reflect::get(&element, &"prototype".into()).unwrap_or(JsValue::UNDEFINED);
    js_sys::Reflect::has(&prototype, &"setSinkId".into()).unwrap_or(false)
}

/// Plays `element`'s sound on the output `device` (only offered where
/// [`can_choose_output`]); `false` if the browser refused the call.
pub fn set_output(element: &web_sys::HtmlMediaElement, device: &str) -> bool {
    let Ok(set) = js_sys::Reflect::get(element, &"setSinkId".into()).and_then(|f| f.dyn_into::<js_sys::Function>())
    else {
        return false;
    };
    set.call1(element, &device.into()).is_ok()
}

/// Stops every track of `stream` (the camera light goes out).
pub fn stop_stream(stream: &MediaStream) {
    for track in stream.get_tracks().iter() {
        if let Ok(track) = track.dyn_into::<MediaStreamTrack>() {
            track.stop();
        }
    }
}

/// The tracks of `kind` (`audio`/`video`) in `stream` that ended without
/// being stopped by us (the device was unplugged, or the system took it),
/// taken out of the stream. What we stop ourselves leaves the stream at
/// once, so anything ended still in it was lost.
pub fn take_lost_tracks(stream: &MediaStream, kind: &str) -> Vec<MediaStreamTrack> {
    let tracks = if kind == "audio" { stream.get_audio_tracks() } else { stream.get_video_tracks() };
    let lost: Vec<MediaStreamTrack> = tracks
        .iter()
        .filter_map(|t| t.dyn_into::<MediaStreamTrack>().ok())
        .filter(|t| {
            js_sys::Reflect::get(t, &"readyState".into()).ok().and_then(|s| s.as_string()).as_deref() == Some("ended")
        })
        .collect();
    for track in &lost {
        stream.remove_track(track);
    }
    lost
}

/// A screen share's frame rate: what it asks for, and the most it takes.
/// Text and slides change seldom; sharpness matters more than motion.
const SCREEN_FPS: (u32, u32) = (5, 15);

/// Asks the person which screen, window or tab to share (`getDisplayMedia`,
/// video only): one layer at the screen's own resolution and a low frame
/// rate, marked as detail (under congestion the browser keeps the
/// resolution and drops frames). `Err` when they cancel or the browser
/// refuses.
pub async fn open_screen() -> Result<MediaStream, JsValue> {
    let media = window()?.navigator().media_devices()?;
    let rate = js_sys::Object::new();
    js_sys::Reflect::set(&rate, &"ideal".into(), &SCREEN_FPS.0.into())?;
    js_sys::Reflect::set(&rate, &"max".into(), &SCREEN_FPS.1.into())?;
    let video = js_sys::Object::new();
    js_sys::Reflect::set(&video, &"frameRate".into(), &rate)?;
    let constraints = js_sys::Object::new();
    js_sys::Reflect::set(&constraints, &"video".into(), &video)?;
    js_sys::Reflect::set(&constraints, &"audio".into(), &JsValue::FALSE)?;
    let get: js_sys::Function = js_sys::Reflect::get(&media, &"getDisplayMedia".into())?.dyn_into()?;
    let promise: js_sys::Promise = get.call1(&media, &constraints)?.dyn_into()?;
    let stream = JsFuture::from(promise).await?.dyn_into::<MediaStream>()?;
    for track in stream.get_video_tracks().iter() {
        js_sys::Reflect::set(&track, &"contentHint".into(), &"detail".into())?;
    }
    Ok(stream)
}
