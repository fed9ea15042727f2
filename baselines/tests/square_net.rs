//! Plaintext fixed-point square network.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use gelunet_baselines::{BaselineError, SquareNet, SquareScales};
use ndarray::{array, Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_f64(
    n: usize,
    h: usize,
    c: usize,
    seed: u64,
) -> (Array2<f64>, Array1<f64>, Array2<f64>, Array1<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let w1 = Array2::from_shape_fn((h, n), |_| rng.gen_range(-1.0..1.0));
    let b1 = Array1::from_shape_fn(h, |_| rng.gen_range(-0.5..0.5));
    let w2 = Array2::from_shape_fn((c, h), |_| rng.gen_range(-1.0..1.0));
    let b2 = Array1::from_shape_fn(c, |_| rng.gen_range(-0.5..0.5));
    (w1, b1, w2, b2)
}

#[test]
fn quantization_scales() {
    let net = SquareNet::from_f64(
        &array![[0.5, -0.25]],
        &array![0.125],
        &array![[1.0], [-2.0]],
        &array![0.5, 0.0],
        4,
        6,
    )
    .unwrap();
    assert_eq!(net.w1(), &array![[32, -16]]);
    assert_eq!(net.b1(), &array![128]); // 0.125 · 2^10
    assert_eq!(net.w2(), &array![[64], [-128]]);
    assert_eq!(net.b2(), &array![1i64 << 25, 0]); // 0.5 · 2^(8+18)
    assert_eq!(net.scales(), SquareScales { fx: 4, fw: 6 });
    assert_eq!(net.scales().output(), 26);
    assert_eq!((net.inputs(), net.hidden(), net.classes()), (2, 1, 2));
}

#[test]
fn forward_plain_is_exact_and_close_to_real_network() {
    let (w1, b1, w2, b2) = random_f64(4, 12, 3, 7);
    let (fx, fw) = (8, 8);
    let net = SquareNet::from_f64(&w1, &b1, &w2, &b2, fx, fw).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let xf = Array2::from_shape_fn((20, 4), |_| rng.gen_range(-2.0..2.0));
    let x = net.quantize_inputs(&xf).unwrap();
    let z = net.forward_plain(&x).unwrap();
    assert_eq!(z.dim(), (20, 3));
    // Exact integer recomputation of one entry.
    let (s, c) = (3, 1);
    let mut expect = i128::from(net.b2()[c]);
    for j in 0..12 {
        let mut z1 = i128::from(net.b1()[j]);
        for k in 0..4 {
            z1 += i128::from(net.w1()[[j, k]]) * i128::from(x[[s, k]]);
        }
        expect += i128::from(net.w2()[[c, j]]) * z1 * z1;
    }
    assert_eq!(z[[s, c]], expect);
    // Close to the real-valued network.
    let zf = net.logits_to_f64(&z);
    let real = {
        let a = (xf.dot(&w1.t()) + &b1).mapv(|v| v * v);
        a.dot(&w2.t()) + &b2
    };
    for (a, b) in zf.iter().zip(real.iter()) {
        assert!((a - b).abs() < 0.05 * (1.0 + b.abs()), "{a} vs {b}");
    }
    // Bound: every |z2| is within the worst case for the actual input range.
    let xmax = x.iter().map(|v| v.abs()).max().unwrap();
    let bound = net.output_bound(xmax).unwrap();
    assert!(z.iter().all(|v| v.unsigned_abs() <= bound));
    let preds = net.predict_plain(&x).unwrap();
    for (s, p) in preds.iter().enumerate() {
        let row = z.row(s);
        assert!(row.iter().all(|&v| v <= row[*p]));
    }
}

#[test]
fn shape_and_range_errors() {
    let (w1, b1, w2, b2) = random_f64(4, 5, 3, 1);
    let bad_b1 = Array1::zeros(4);
    assert!(matches!(
        SquareNet::from_f64(&w1, &bad_b1, &w2, &b2, 4, 4),
        Err(BaselineError::ShapeMismatch { what: "b1", .. })
    ));
    let bad_w2 = Array2::zeros((3, 6));
    assert!(matches!(
        SquareNet::from_f64(&w1, &b1, &bad_w2, &b2, 4, 4),
        Err(BaselineError::ShapeMismatch { what: "w2", .. })
    ));
    let mut huge = w1.clone();
    huge[[0, 0]] = 1e30;
    assert!(matches!(
        SquareNet::from_f64(&huge, &b1, &w2, &b2, 4, 4),
        Err(BaselineError::QuantizationOverflow { what: "w1", .. })
    ));
    let mut nan = w1.clone();
    nan[[1, 2]] = f64::NAN;
    assert!(matches!(
        SquareNet::from_f64(&nan, &b1, &w2, &b2, 4, 4),
        Err(BaselineError::NonFinite {
            what: "w1",
            index: 6
        })
    ));
    assert!(matches!(
        SquareNet::from_f64(&w1, &b1, &w2, &b2, 40, 4),
        Err(BaselineError::InvalidParameter { name: "fx", .. })
    ));
    let net = SquareNet::from_f64(&w1, &b1, &w2, &b2, 4, 4).unwrap();
    assert!(matches!(
        net.forward_plain(&Array2::zeros((2, 5))),
        Err(BaselineError::ShapeMismatch { what: "inputs", .. })
    ));
    // Overflow is reported, not wrapped.
    let big = SquareNet::new(
        array![[i64::MAX / 2, i64::MAX / 2]],
        array![0],
        array![[i64::MAX]],
        array![0],
        SquareScales::new(0, 0).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        big.forward_plain(&array![[i64::MAX, i64::MAX]]),
        Err(BaselineError::Overflow { .. })
    ));
}
