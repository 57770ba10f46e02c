//! Comparing computed values with reference values. Every helper here fails on a non-finite
//! value on either side (naming the tensor, the index and both values): a NaN never compares as
//! close, and an output of all NaN is not "error 0" (`f32::max` skips NaN, so a fold with it
//! would hide them).

pub use crate::compare::Gap;

/// Compares `got` with `want` element by element. Panics, naming `what`, when the lengths
/// differ or when either side holds a NaN or an infinity (with its index and both values).
pub fn gap<T: Copy + Into<f64>>(what: &str, got: &[T], want: &[T]) -> Gap {
    crate::compare::try_gap(what, got, want).unwrap_or_else(|e| panic!("{e}"))
}

/// The largest absolute difference; panics on a non-finite value on either side (see [`gap`]).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    gap("values", a, b).max_abs as f32
}

/// The largest absolute difference relative to the largest magnitude of the reference `b`;
/// panics on a non-finite value on either side (see [`gap`]).
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    gap("values", a, b).rel() as f32
}

/// Asserts that every `|got - want|` is at most `tol` times the reference's largest magnitude
/// (a bound relative to the tensor's own scale), and prints the error (`--nocapture`) for the
/// notes. Returns the gap.
pub fn assert_rel<T: Copy + Into<f64>>(what: &str, got: &[T], want: &[T], tol: f64) -> Gap {
    let g = gap(what, got, want);
    eprintln!(
        "{what}: relative error {:.2e} (bound {tol:.0e}; max abs {:.2e} at {}, scale {:.2e})",
        g.rel(),
        g.max_abs,
        g.at,
        g.scale
    );
    assert!(
        g.rel() <= tol,
        "{what}: relative error {:e} > {tol:e} (max abs {:e} at index {}, reference scale {:e})",
        g.rel(),
        g.max_abs,
        g.at,
        g.scale
    );
    g
}

/// Asserts that every `|got - want|` is at most `tol`, for values whose scale is fixed by
/// construction (probabilities, losses, unit-scale inputs); prints the error. Returns the gap.
pub fn assert_abs<T: Copy + Into<f64>>(what: &str, got: &[T], want: &[T], tol: f64) -> Gap {
    let g = gap(what, got, want);
    eprintln!(
        "{what}: max abs error {:.2e} (bound {tol:.0e}; at {}, scale {:.2e})",
        g.max_abs, g.at, g.scale
    );
    assert!(
        g.max_abs <= tol,
        "{what}: max abs error {:e} > {tol:e} at index {} (reference scale {:e})",
        g.max_abs,
        g.at,
        g.scale
    );
    g
}

/// Asserts that every value is finite, naming the first that is not.
pub fn assert_finite<T: Copy + Into<f64>>(what: &str, values: &[T]) {
    if let Some((i, v)) = values
        .iter()
        .map(|&v| v.into())
        .enumerate()
        .find(|(_, v): &(usize, f64)| !v.is_finite())
    {
        panic!("{what}: non-finite value {v} at index {i}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "non-finite computed value at index 0")]
    fn a_nan_fails() {
        max_abs_diff(&[f32::NAN, 2.5], &[1.0, 2.0]);
    }

    #[test]
    #[should_panic(expected = "non-finite computed value at index 1")]
    fn an_infinity_fails() {
        max_rel_diff(&[1.0, f32::INFINITY], &[1.0, 2.0]);
    }

    #[test]
    #[should_panic(expected = "non-finite reference value at index 1")]
    fn a_non_finite_reference_fails() {
        max_abs_diff(&[1.0, 2.0], &[1.0, f32::NEG_INFINITY]);
    }

    #[test]
    #[should_panic(expected = "logits: non-finite computed value at index 700")]
    fn a_nan_hidden_among_finite_values_fails() {
        let want: Vec<f32> = (0..1000).map(|i| i as f32 * 1e-3).collect();
        let mut got = want.clone();
        got[700] = f32::NAN;
        assert_rel("logits", &got, &want, 1.0);
    }

    #[test]
    #[should_panic(expected = "all NaN: non-finite computed value at index 0")]
    fn all_nan_fails() {
        assert_abs("all NaN", &[f32::NAN; 4], &[0.0f32; 4], 1.0);
    }

    #[test]
    #[should_panic(expected = "states: relative error")]
    fn a_bound_is_relative_to_the_tensors_own_scale() {
        // 1e-3 off on values of scale 2e-2 is 5 % of the tensor: an absolute 1e-3 would pass.
        assert_rel("states", &[0.02f32, 0.011], &[0.02f32, 0.01], 1e-2);
    }

    #[test]
    fn gap_reports_the_largest_difference_and_the_scale() {
        let g = gap("x", &[1.0f32, 2.5, -4.0], &[1.0f32, 2.0, -3.0]);
        assert_eq!((g.max_abs, g.at, g.scale), (1.0, 2, 3.0));
        assert_eq!(g.rel(), 1.0 / 3.0);
        assert_eq!(assert_rel("x", &[1.0f64], &[1.0f64], 0.0).max_abs, 0.0);
        assert_finite("x", &[1.0f32, -2.0]);
    }

    #[test]
    #[should_panic(expected = "y: non-finite value NaN at index 2")]
    fn assert_finite_names_the_first_bad_value() {
        assert_finite("y", &[1.0f32, 2.0, f32::NAN]);
    }

    #[test]
    #[should_panic(expected = "3 values computed, 2 in the reference")]
    fn lengths_must_agree() {
        gap("x", &[1.0f32; 3], &[1.0f32; 2]);
    }
}
