//! What the plots (`zoo forecast`, `zoo bench compare`) share.

/// The font the plots' text is drawn with (DejaVu Sans Mono; its licence is beside it).
pub const FONT: &[u8] = include_bytes!("../../data/DejaVuSansMono.ttf");
