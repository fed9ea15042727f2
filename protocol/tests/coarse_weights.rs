//! `FixedModel::with_weight_frac_bits`: weights and biases rounded to coarser scales
//! (nearest, ties away from zero), the scales that go with them, and the refusals.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gelunet_protocol::arch::Arch;
use gelunet_protocol::conv::Shape;
use gelunet_protocol::{Activation, Error, FixedModel, ModelSpec, Scales};
use ndarray::array;

#[test]
fn weights_and_biases_round_to_nearest_with_ties_away_from_zero() {
    let scales = Scales::default();
    let spec = ModelSpec::new(vec![3, 1, 2], Activation::Sigmoid);
    let mut model = FixedModel::init(&spec, &scales, 1).unwrap();
    // fw 32 → 30: divide by 4.
    model.layers[0].w = array![[6, -6, 5]];
    model.layers[0].b = array![-5];
    model.layers[1].w = array![[2], [-2]];
    model.layers[1].b = array![7, -7];
    let (coarse, s) = model.with_weight_frac_bits(&scales, 30).unwrap();
    assert_eq!(s.fw, 30);
    assert_eq!((s.fa, s.fd, s.fe), (scales.fa, scales.fd, scales.fe));
    assert_eq!(coarse.layers[0].w, array![[2, -2, 1]]);
    assert_eq!(coarse.layers[0].b, array![-1]);
    assert_eq!(coarse.layers[1].w, array![[1], [-1]]);
    assert_eq!(coarse.layers[1].b, array![2, -2]);
    assert_eq!(coarse.spec, model.spec);
    // The model's own scale: unchanged.
    let (same, s32) = model.with_weight_frac_bits(&scales, scales.fw).unwrap();
    assert_eq!((same, s32), (model, scales));
}

#[test]
fn the_learning_rate_scale_follows_and_bad_widths_are_refused() {
    let scales = Scales::default();
    let spec = ModelSpec::new(vec![4, 3, 2], Activation::Tanh);
    let model = FixedModel::init(&spec, &scales, 2).unwrap();
    let (_, s8) = model.with_weight_frac_bits(&scales, 8).unwrap();
    assert_eq!((s8.fw, s8.fe), (8, 8));
    s8.validate().unwrap();
    for bad in [0, scales.fw + 1] {
        let e = model.with_weight_frac_bits(&scales, bad).unwrap_err();
        assert!(
            matches!(e, Error::InvalidScales { .. }) && e.to_string().contains("fractional bits"),
            "{bad}: {e}"
        );
    }
}

/// A conv model keeps its predictions on most inputs at 16 bits, and its pooled layers
/// round as the dense ones do.
#[test]
fn a_conv_model_rounds_and_still_predicts() {
    let scales = Scales::default();
    let arch: Arch = "conv3x3:2,meanpool,relu,dense:3".parse().unwrap();
    let input = Shape {
        channels: 1,
        height: 6,
        width: 6,
    };
    let spec = ModelSpec::from_arch(&arch, input).unwrap();
    let model = FixedModel::init(&spec, &scales, 3).unwrap();
    let (coarse, s16) = model.with_weight_frac_bits(&scales, 16).unwrap();
    for (a, b) in model.layers.iter().zip(&coarse.layers) {
        for (&x, &y) in a.w.iter().zip(&b.w) {
            assert!((x as f64 / 65536.0 - y as f64).abs() <= 0.5, "{x} {y}");
        }
    }
    let x =
        ndarray::Array2::from_shape_fn((20, 36), |(i, j)| (((i * 7 + j * 3) % 17) as i128) << 20);
    let p = model.predict(&scales, x.view()).unwrap();
    let q = coarse.predict(&s16, x.view()).unwrap();
    let same = p.iter().zip(&q).filter(|(a, b)| a == b).count();
    assert!(same >= 18, "{same} of 20");
}
