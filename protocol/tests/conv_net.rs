//! Plaintext fixed-point training of conv nets (`protocol/src/conv_net.rs`): bit-for-bit
//! equal to the dense math on dense architectures, gradients that match finite
//! differences through conv and pooling layers, a loss that goes down, typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

use gelunet_protocol::arch::Arch;
use gelunet_protocol::conv::Shape;
use gelunet_protocol::conv_net::ConvNet;
use gelunet_protocol::math::LayerParams;
use gelunet_protocol::{Activation, Error, FixedModel, ModelSpec, Scales, ValueKind};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn batch(scales: &Scales, rng: &mut ChaCha20Rng, b: usize, n: usize) -> Array2<i128> {
    Array2::from_shape_fn((b, n), |_| {
        scales
            .encode(ValueKind::Activation, rng.gen_range(-1.0..1.0))
            .unwrap()
    })
}

#[test]
fn a_dense_architecture_trains_bit_for_bit_as_the_dense_math() {
    let scales = Scales::default();
    let spec = ModelSpec::new(vec![6, 5, 4, 3], Activation::Sigmoid);
    let mut dense = FixedModel::init(&spec, &scales, 11).unwrap();
    let arch: Arch = "dense:5,sigmoid,dense:4,sigmoid,dense:3".parse().unwrap();
    let input = Shape {
        channels: 1,
        height: 2,
        width: 3,
    };
    let mut net = ConvNet::init(&arch, input, &scales, 11).unwrap();
    assert_eq!(net.params(), dense.layers.as_slice());
    let eta = scales.encode(ValueKind::LearningRate, 0.5).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for _ in 0..5 {
        let x = batch(&scales, &mut rng, 4, 6);
        let labels: Vec<usize> = (0..4).map(|_| rng.gen_range(0..3)).collect();
        let trace = dense.forward(&scales, x.view()).unwrap();
        let expected = dense.backward(&scales, &trace, &labels).unwrap();
        let grads = net.gradients(&scales, x.view(), &labels).unwrap();
        assert_eq!(grads, expected.layers);
        dense.apply_update(&scales, eta, &expected).unwrap();
        net.train_step(&scales, eta, x.view(), &labels).unwrap();
        assert_eq!(net.params(), dense.layers.as_slice());
    }
}

/// The loss summed over the batch, with one parameter moved by `±h` (real).
fn loss_sum(
    net: &ConvNet,
    scales: &Scales,
    x: &Array2<i128>,
    labels: &[usize],
    params: Vec<LayerParams>,
) -> f64 {
    let mut n = net.clone();
    n.set_params(scales, params).unwrap();
    n.loss(scales, x.view(), labels).unwrap() * labels.len() as f64
}

/// Every weight and bias gradient against a central finite difference.
fn check_gradients(arch: &str, input: Shape, seed: u64) {
    let scales = Scales::default();
    let arch: Arch = arch.parse().unwrap();
    let mut net = ConvNet::init(&arch, input, &scales, seed).unwrap();
    // Non-zero biases, so that their scaling through pooled inputs matters.
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut params = net.params().to_vec();
    for l in &mut params {
        for b in l.b.iter_mut() {
            *b = scales
                .encode(ValueKind::Bias, rng.gen_range(-0.3..0.3))
                .unwrap();
        }
    }
    net.set_params(&scales, params.clone()).unwrap();
    let x = batch(&scales, &mut rng, 3, input.len());
    let labels: Vec<usize> = (0..3)
        .map(|_| rng.gen_range(0..net.network().classes()))
        .collect();
    let grads = net.gradients(&scales, x.view(), &labels).unwrap();
    let h = 2f64.powi(-12);
    for (li, g) in grads.iter().enumerate() {
        let numeric = |bias: bool, idx: usize| {
            let mut plus = params.clone();
            let mut minus = params.clone();
            let kind = if bias {
                ValueKind::Bias
            } else {
                ValueKind::Weight
            };
            let step = scales.encode(kind, h).unwrap();
            if bias {
                plus[li].b[idx] += step;
                minus[li].b[idx] -= step;
            } else {
                plus[li].w.as_slice_mut().unwrap()[idx] += step;
                minus[li].w.as_slice_mut().unwrap()[idx] -= step;
            }
            (loss_sum(&net, &scales, &x, &labels, plus)
                - loss_sum(&net, &scales, &x, &labels, minus))
                / (2.0 * h)
        };
        for (idx, &v) in g.w.iter().enumerate() {
            let analytic = scales.decode(ValueKind::WeightGradient, v);
            let fd = numeric(false, idx);
            assert!(
                (analytic - fd).abs() <= 1e-3 + 1e-3 * fd.abs(),
                "layer {li} weight {idx}: {analytic} vs {fd}"
            );
        }
        for (idx, &v) in g.b.iter().enumerate() {
            let analytic = scales.decode(ValueKind::BiasGradient, v);
            let fd = numeric(true, idx);
            assert!(
                (analytic - fd).abs() <= 1e-3 + 1e-3 * fd.abs(),
                "layer {li} bias {idx}: {analytic} vs {fd}"
            );
        }
    }
}

#[test]
fn gradients_through_conv_and_pooling_match_finite_differences() {
    // Pooled pre-activations (Conv–MeanPool–act), padding, two conv layers.
    check_gradients(
        "conv3x3p1:2,meanpool,tanh,conv3x3:3,sigmoid,dense:3",
        Shape {
            channels: 2,
            height: 6,
            width: 6,
        },
        3,
    );
    // Pooled activations into a dense layer (its bias at the pooled scale), stride and
    // uneven padding, two dense layers in a row.
    check_gradients(
        "conv3x3s2p0+1:2,tanh,meanpool,dense:4,dense:3",
        Shape {
            channels: 1,
            height: 9,
            width: 9,
        },
        4,
    );
}

/// Bars: class 0 a vertical bar, class 1 a horizontal one, at a random place, on noise.
fn bars(scales: &Scales, rng: &mut ChaCha20Rng, n: usize) -> (Array2<i128>, Vec<usize>) {
    let side = 6;
    let mut x = Array2::zeros((n, side * side));
    let mut labels = Vec::with_capacity(n);
    for s in 0..n {
        let label = rng.gen_range(0..2);
        let at = rng.gen_range(0..side);
        for y in 0..side {
            for c in 0..side {
                let on = if label == 0 { c == at } else { y == at };
                let v = if on { 1.0 } else { 0.0 } + rng.gen_range(-0.1..0.1);
                x[[s, y * side + c]] = scales.encode(ValueKind::Activation, v).unwrap();
            }
        }
        labels.push(label);
    }
    (x, labels)
}

#[test]
fn a_tiny_conv_net_learns_bars() {
    let scales = Scales::default();
    let input = Shape {
        channels: 1,
        height: 6,
        width: 6,
    };
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (test_x, test_y) = bars(&scales, &mut rng, 64);
    for arch in [
        "conv3x3:3,meanpool,relu,dense:2",
        "conv3x3s2p0+1:4,relu,dense:8,relu,dense:2",
    ] {
        let mut net = ConvNet::init(&arch.parse().unwrap(), input, &scales, 1).unwrap();
        let eta = scales.encode(ValueKind::LearningRate, 0.05).unwrap();
        let before = net.loss(&scales, test_x.view(), &test_y).unwrap();
        for _ in 0..200 {
            let (x, y) = bars(&scales, &mut rng, 8);
            net.train_step(&scales, eta, x.view(), &y).unwrap();
        }
        let after = net.loss(&scales, test_x.view(), &test_y).unwrap();
        assert!(after < 0.5 * before, "{arch}: loss {before} → {after}");
    }
}

#[test]
fn the_named_networks_take_a_training_step_on_mnist_shapes() {
    let scales = Scales::default();
    let mnist = Shape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let x = Array2::from_shape_fn((2, 784), |_| {
        scales
            .encode(ValueKind::Activation, rng.gen_range(0.0..1.0))
            .unwrap()
    });
    let eta = scales.encode(ValueKind::LearningRate, 0.01).unwrap();
    for (name, params) in [("conv1", 85_740), ("lenet5", 61_706)] {
        let mut net = ConvNet::init(&Arch::named(name).unwrap(), mnist, &scales, 1).unwrap();
        let count: usize = net.params().iter().map(|l| l.w.len() + l.b.len()).sum();
        assert_eq!(count, params, "{name}");
        let before = net.loss(&scales, x.view(), &[3, 7]).unwrap();
        net.train_step(&scales, eta, x.view(), &[3, 7]).unwrap();
        let after = net.loss(&scales, x.view(), &[3, 7]).unwrap();
        // One small step on the batch itself lowers its loss.
        assert!(after < before, "{name}: {before} → {after}");
    }
}

#[test]
fn bad_input_is_a_typed_error_and_changes_nothing() {
    let scales = Scales::default();
    let input = Shape {
        channels: 1,
        height: 6,
        width: 6,
    };
    let arch: Arch = "conv3x3:2,relu,dense:2".parse().unwrap();
    let mut net = ConvNet::init(&arch, input, &scales, 1).unwrap();
    let before = net.clone();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let x = batch(&scales, &mut rng, 2, 36);
    let eta = scales.encode(ValueKind::LearningRate, 0.1).unwrap();
    // Architecture that does not fit the input.
    let odd: Arch = "conv2x2:2,meanpool,dense:2".parse().unwrap();
    assert!(matches!(
        ConvNet::init(&odd, input, &scales, 1),
        Err(Error::Arch(_))
    ));
    // Wrong input length, labels, η.
    let short = batch(&scales, &mut rng, 2, 35);
    assert!(matches!(
        net.train_step(&scales, eta, short.view(), &[0, 1]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        net.train_step(&scales, eta, x.view(), &[0]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert_eq!(
        net.train_step(&scales, eta, x.view(), &[0, 2]),
        Err(Error::InvalidLabel {
            label: 2,
            classes: 2
        })
    );
    assert!(matches!(
        net.train_step(&scales, 0, x.view(), &[0, 1]),
        Err(Error::OutOfRange {
            kind: ValueKind::LearningRate,
            ..
        })
    ));
    // An input beyond the activation range.
    let mut big = x.clone();
    big[[1, 3]] = 1i128 << scales.max_bits(ValueKind::Activation);
    assert!(matches!(
        net.train_step(&scales, eta, big.view(), &[0, 1]),
        Err(Error::OutOfRange {
            kind: ValueKind::Activation,
            ..
        })
    ));
    // Parameters of the wrong shape or range.
    let mut wrong = net.params().to_vec();
    wrong.pop();
    assert!(matches!(
        net.set_params(&scales, wrong),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut wrong = net.params().to_vec();
    wrong[0].w[[0, 0]] = 1i128 << scales.max_bits(ValueKind::Weight);
    assert!(matches!(
        net.set_params(&scales, wrong),
        Err(Error::OutOfRange {
            kind: ValueKind::Weight,
            ..
        })
    ));
    // An update that takes the last layer's weights out of range is refused as a whole:
    // the first layer, whose update fits, is unchanged too.
    let mut grads = net.gradients(&scales, x.view(), &[0, 1]).unwrap();
    let last = grads.len() - 1;
    grads[last]
        .w
        .fill((1i128 << scales.max_bits(ValueKind::WeightGradient)) - 1);
    let r = net.apply_update(&scales, eta, &grads);
    assert!(
        matches!(
            r,
            Err(Error::OutOfRange {
                kind: ValueKind::Weight,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(matches!(
        net.apply_update(&scales, eta, &grads[..1]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert_eq!(net, before);
}
