//! Specs with conv layers (`ModelSpec::from_arch`, protocol/src/spec.rs) and the fixed-point
//! model and reference trainer that run them through `ConvNet` (docs/DESIGN.md
//! "Convolutional layers").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gelunet_protocol::arch::Arch;
use gelunet_protocol::conv::Shape;
use gelunet_protocol::conv_net::ConvNet;
use gelunet_protocol::data::Dataset;
use gelunet_protocol::schedule::SessionPlan;
use gelunet_protocol::spec::LayerKind;
use gelunet_protocol::{Activation, Error, FixedModel, ModelSpec, ReferenceTrainer, Scales};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const MNIST: Shape = Shape {
    channels: 1,
    height: 28,
    width: 28,
};

fn images(shape: Shape, n: usize, classes: usize, scales: &Scales, seed: u64) -> Dataset {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let x = Array2::from_shape_fn((n, shape.len()), |_| {
        scales
            .encode(
                gelunet_protocol::ValueKind::Activation,
                rng.gen_range(0.0..1.0),
            )
            .unwrap()
    });
    let labels = (0..n).map(|i| i % classes).collect();
    Dataset { x, labels }
}

#[test]
fn the_named_networks_give_conv_specs_of_the_papers_sizes() {
    let lenet = ModelSpec::from_arch(&Arch::named("lenet5").unwrap(), MNIST).unwrap();
    assert_eq!(lenet.widths, vec![784, 1176, 400, 120, 84, 10]);
    assert_eq!(lenet.hidden, vec![Activation::Relu; 4]);
    assert_eq!(lenet.num_parameters(), 61_706);
    assert!(!lenet.is_dense());
    assert!(matches!(lenet.layer_kind(1), LayerKind::Conv(c) if c.pool && c.filters == 6));
    assert_eq!(lenet.param_shape(1), (6, 25));
    assert_eq!(lenet.param_shape(2), (16, 150));
    assert_eq!(lenet.param_shape(3), (120, 400));
    // The session bound counts the dense layers' fan-ins only.
    assert_eq!(lenet.min_fan_in(), 84);

    let conv1 = ModelSpec::from_arch(&Arch::named("conv1").unwrap(), MNIST).unwrap();
    assert_eq!(conv1.widths, vec![784, 845, 100, 10]);
    assert_eq!(conv1.num_parameters(), 85_740);
    assert_eq!(conv1.min_fan_in(), 100);
    // The spec rebuilds its architecture.
    let (arch, input) = conv1.arch().unwrap();
    assert_eq!(ModelSpec::from_arch(&arch, input).unwrap(), conv1);
    assert_eq!(conv1.network().unwrap().num_parameters(), 85_740);
}

#[test]
fn a_dense_architecture_is_the_dense_spec() {
    let arch: Arch = "dense:8,relu,dense:3".parse().unwrap();
    let shape = Shape {
        channels: 1,
        height: 2,
        width: 2,
    };
    let spec = ModelSpec::from_arch(&arch, shape).unwrap();
    assert_eq!(spec, ModelSpec::new(vec![4, 8, 3], Activation::Relu));
    assert!(spec.arch().is_none());
    // Two weight layers in a row get the identity between them.
    let arch: Arch = "conv3x3:2,dense:5,relu,dense:3".parse().unwrap();
    let s = Shape {
        channels: 1,
        height: 6,
        width: 6,
    };
    let spec = ModelSpec::from_arch(&arch, s).unwrap();
    assert_eq!(spec.hidden, vec![Activation::Identity, Activation::Relu]);
}

#[test]
fn what_the_protocol_cannot_run_is_refused() {
    let s = Shape {
        channels: 1,
        height: 8,
        width: 8,
    };
    let reason = |a: &str| match ModelSpec::from_arch(&a.parse().unwrap(), s) {
        Err(Error::InvalidSpec { reason }) => reason,
        other => panic!("{a}: {other:?}"),
    };
    assert!(reason("conv3x3:2,relu,meanpool,dense:3").contains("pooling must follow"));
    // An architecture that does not fit the input names its layer.
    let big = ModelSpec::from_arch(&"conv9x9:2,relu,dense:3".parse().unwrap(), s);
    assert!(matches!(big, Err(Error::Arch(_))), "{big:?}");

    // A tampered spec (widths that disagree with the layers) fails validation.
    let mut spec = ModelSpec::from_arch(&"conv3x3:2,relu,dense:3".parse().unwrap(), s).unwrap();
    spec.validate().unwrap();
    spec.widths[1] += 1;
    assert!(matches!(spec.validate(), Err(Error::InvalidSpec { .. })));
    let mut spec = ModelSpec::from_arch(&"conv3x3:2,relu,dense:3".parse().unwrap(), s).unwrap();
    spec.layers.pop();
    assert!(matches!(spec.validate(), Err(Error::InvalidSpec { .. })));
}

#[test]
fn the_fixed_point_model_runs_conv_specs_as_the_conv_net() {
    let scales = Scales::default();
    let s = Shape {
        channels: 1,
        height: 8,
        width: 8,
    };
    let arch: Arch = "conv3x3:3,meanpool,tanh,conv3x3:2,relu,dense:3"
        .parse()
        .unwrap();
    let spec = ModelSpec::from_arch(&arch, s).unwrap();
    let model = FixedModel::init(&spec, &scales, 5).unwrap();
    model.validate(&scales).unwrap();
    let net = ConvNet::init(&arch, s, &scales, 5).unwrap();
    assert_eq!(model.layers, net.params());

    let data = images(s, 6, 3, &scales, 1);
    let grads = model
        .gradients(&scales, data.x.view(), &data.labels)
        .unwrap();
    assert_eq!(
        grads.layers,
        net.gradients(&scales, data.x.view(), &data.labels).unwrap()
    );
    let predicted = model.predict(&scales, data.x.view()).unwrap();
    let logits = net.logits(&scales, data.x.view()).unwrap();
    for (p, row) in predicted.iter().zip(logits.rows()) {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(row[*p], max);
    }
    // The dense passes refuse conv specs instead of computing something else.
    assert!(matches!(
        model.forward(&scales, data.x.view()),
        Err(Error::InvalidConfig { .. })
    ));
}

#[test]
fn the_reference_trainer_trains_a_conv_spec_as_sgd_on_the_conv_net() {
    let scales = Scales::default();
    let s = Shape {
        channels: 1,
        height: 6,
        width: 6,
    };
    let arch: Arch = "conv3x3:2,meanpool,relu,dense:4,relu,dense:2"
        .parse()
        .unwrap();
    let spec = ModelSpec::from_arch(&arch, s).unwrap();
    let eta = scales
        .encode(gelunet_protocol::ValueKind::LearningRate, 0.05)
        .unwrap();
    let data = images(s, 8, 2, &scales, 2);
    let mut trainer =
        ReferenceTrainer::new(&spec, scales, 3, eta, 2, vec![(data.clone(), 4)]).unwrap();
    let before = trainer.model().clone();
    trainer
        .run_session(SessionPlan {
            client: 0,
            iterations: 2,
        })
        .unwrap();
    assert_ne!(trainer.model().layers, before.layers);
    trainer.model().validate(&scales).unwrap();
    // An unknown client changes nothing.
    let after = trainer.model().clone();
    assert!(trainer
        .run_session(SessionPlan {
            client: 1,
            iterations: 1,
        })
        .is_err());
    assert_eq!(trainer.model(), &after);
}
