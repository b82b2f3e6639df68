//! The control bar's icons: small inline SVGs in the text's colour, hidden
//! from assistive technology (every button also has its words).

use leptos::prelude::*;

/// Which icon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Glyph {
    Microphone,
    Camera,
    Screen,
    Devices,
    Layout,
    Hand,
    Chat,
    People,
    Leave,
}

impl Glyph {
    /// The drawing, as SVG path data on a 24×24 grid (strokes).
    fn path(self) -> &'static str {
        match self {
            Glyph::Microphone => "M12 3a3 3 0 0 1 3 3v6a3 3 0 0 1-6 0V6a3 3 0 0 1 3-3zM5 11a7 7 0 0 0 14 0M12 18v3",
            Glyph::Camera => "M3 7h12v10H3zM15 10l6-3v10l-6-3",
            Glyph::Screen => "M3 4h18v12H3zM8 20h8M12 16v4",
            Glyph::Devices => "M12 8a4 4 0 1 0 0 8a4 4 0 1 0 0-8zM12 2v3M12 19v3M2 12h3M19 12h3",
            Glyph::Layout => "M3 3h8v8H3zM13 3h8v8h-8zM3 13h8v8H3zM13 13h8v8h-8z",
            Glyph::Hand => "M7 11V5a1.5 1.5 0 0 1 3 0v5M10 10V4a1.5 1.5 0 0 1 3 0v6M13 10V5a1.5 1.5 0 0 1 3 0v7M16 12V8a1.5 1.5 0 0 1 3 0v6a7 7 0 0 1-14 0v-3",
            Glyph::Chat => "M4 4h16v12H8l-4 4z",
            Glyph::People => "M9 11a3 3 0 1 0 0-6a3 3 0 1 0 0 6zM3 20a6 6 0 0 1 12 0M16 11a3 3 0 1 0 0-6M18 20a6 6 0 0 0-3-5",
            Glyph::Leave => "M10 4H4v16h6M14 8l4 4-4 4M8 12h10",
        }
    }
}

/// One icon.
#[component]
pub(super) fn Icon(glyph: Glyph) -> impl IntoView {
    view! {
        <svg
            class="icon"
            viewBox="0 0 24 24"
            width="18"
            height="18"
            aria-hidden="true"
            focusable="false"
            fill="none"
            stroke="currentColor"
            stroke-width="2"
            stroke-linecap="round"
            stroke-linejoin="round"
        >
            <path d=glyph.path()></path>
        </svg>
    }
}
