//! Comparing computed values with reference values without panicking: the measure behind the
//! test helpers (`testing`, which panic) and `zoo selftest` (which reports). A NaN or an infinity
//! on either side is an error, never a small difference: `f32::max` skips NaN, so a fold with it
//! would hide one.

/// How far a computed tensor is from its reference: the largest absolute difference, where it
/// is, and the reference's scale (its largest magnitude) that relative bounds are taken against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gap {
    /// The largest `|got - want|`.
    pub max_abs: f64,
    /// The flat index of that largest difference.
    pub at: usize,
    /// The largest `|want|` (the reference's scale).
    pub scale: f64,
}

impl Gap {
    /// `max_abs / scale`: the error relative to the reference's own scale (a reference of all
    /// zeros has scale [`f32::MIN_POSITIVE`], so any difference from it is large).
    pub fn rel(&self) -> f64 {
        self.max_abs / self.scale.max(f32::MIN_POSITIVE as f64)
    }
}

/// Compares `got` with `want` element by element. An error, naming `what`, when the lengths
/// differ or when either side holds a NaN or an infinity (with its index and both values).
pub(crate) fn try_gap<T: Copy + Into<f64>>(
    what: &str,
    got: &[T],
    want: &[T],
) -> Result<Gap, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} values computed, {} in the reference",
            got.len(),
            want.len()
        ));
    }
    let mut g = Gap {
        max_abs: 0.0,
        at: 0,
        scale: 0.0,
    };
    for (i, (&x, &y)) in got.iter().zip(want).enumerate() {
        let (x, y): (f64, f64) = (x.into(), y.into());
        if !x.is_finite() || !y.is_finite() {
            let side = if x.is_finite() {
                "reference"
            } else {
                "computed"
            };
            return Err(format!(
                "{what}: non-finite {side} value at index {i}: computed {x}, reference {y}"
            ));
        }
        let d = (x - y).abs();
        if d > g.max_abs {
            g.max_abs = d;
            g.at = i;
        }
        g.scale = g.scale.max(y.abs());
    }
    Ok(g)
}
