//! The polynomial activations compute the formulas they claim.

use gelunet_baselines::poly::{sigmoid, square, taylor3, taylor5};
use gelunet_baselines::PolyActivation;

#[test]
fn square_values() {
    assert_eq!(square(3.0), 9.0);
    assert_eq!(PolyActivation::Square.apply(-3.0), 9.0);
    assert_eq!(PolyActivation::Square.derivative(3.0), 6.0);
}

#[test]
fn taylor_formulas() {
    for &x in &[-3.0f64, -1.0, -0.5, 0.0, 0.25, 1.0, 2.0, 5.0] {
        let t3 = 0.5 + x / 4.0 - x * x * x / 48.0;
        let t5 = t3 + x.powi(5) / 480.0;
        assert!((taylor3(x) - t3).abs() < 1e-12);
        assert!((taylor5(x) - t5).abs() < 1e-12);
        assert!((PolyActivation::Taylor3.apply(x) - t3).abs() < 1e-12);
        assert!((PolyActivation::Taylor5.apply(x) - t5).abs() < 1e-12);
    }
    assert_eq!(taylor3(0.0), 0.5);
    assert_eq!(taylor5(2.0), 0.5 + 0.5 - 8.0 / 48.0 + 32.0 / 480.0);
}

#[test]
fn taylor_approximates_sigmoid_near_zero_and_diverges_far_away() {
    for &x in &[-0.5, -0.1, 0.0, 0.1, 0.5] {
        assert!((taylor3(x) - sigmoid(x)).abs() < 1e-3, "taylor3 at {x}");
        assert!((taylor5(x) - sigmoid(x)).abs() < 1e-4, "taylor5 at {x}");
    }
    // Far from 0 the polynomials leave (0, 1) entirely.
    assert!((taylor3(6.0) - sigmoid(6.0)).abs() > 1.0);
    assert!((taylor5(6.0) - sigmoid(6.0)).abs() > 1.0);
    assert!(taylor3(6.0) < 0.0);
    assert!(taylor5(-6.0) < 0.0);
    // The square is no sigmoid at all: it is even and unbounded.
    assert!((square(4.0) - sigmoid(4.0)).abs() > 10.0);
}

#[test]
fn derivatives_match_finite_differences() {
    let h = 1e-5;
    for act in PolyActivation::ALL {
        for &x in &[-4.0, -1.5, -0.3, 0.0, 0.7, 2.0, 3.5] {
            let fd = (act.apply(x + h) - act.apply(x - h)) / (2.0 * h);
            let d = act.derivative(x);
            assert!(
                (fd - d).abs() < 1e-6 * (1.0 + d.abs()),
                "{act} at {x}: fd {fd} vs {d}"
            );
        }
    }
}

#[test]
fn names_and_degrees() {
    let names: Vec<_> = PolyActivation::ALL.iter().map(|a| a.name()).collect();
    assert_eq!(names, ["square", "taylor3", "taylor5"]);
    let degrees: Vec<_> = PolyActivation::ALL.iter().map(|a| a.degree()).collect();
    assert_eq!(degrees, [2, 3, 5]);
    assert_eq!(PolyActivation::Taylor5.to_string(), "taylor5");
}
