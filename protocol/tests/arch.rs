//! The architecture syntax, the named networks and shape inference
//! (`protocol/src/arch.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

use gelunet_protocol::arch::{Arch, ArchError, ArchErrorKind, Layer, Op, NAMES};
use gelunet_protocol::conv::{GeometryError, Padding, Shape};
use gelunet_protocol::messages::ErrorCode;
use gelunet_protocol::{Activation, Error, MAX_LAYERS, MAX_PARAMETERS, MAX_WIDTH};
use proptest::prelude::*;

const MNIST: Shape = Shape {
    channels: 1,
    height: 28,
    width: 28,
};

fn shapes(arch: &str) -> Vec<String> {
    let net = arch.parse::<Arch>().unwrap().infer(MNIST).unwrap();
    net.layers.iter().map(|l| l.output.to_string()).collect()
}

#[test]
fn conv1_is_cryptonets_network() {
    let arch = Arch::named("conv1").unwrap();
    assert_eq!(
        arch.to_string(),
        "conv5x5s2p0+1:5,relu,dense:100,relu,dense:10"
    );
    assert_eq!("conv1".parse::<Arch>().unwrap(), arch);
    let net = arch.infer(MNIST).unwrap();
    // CryptoNets: 5 maps of 13×13 = 845 values, then 100 units, then 10.
    assert_eq!(
        shapes("conv1"),
        ["5×13×13", "5×13×13", "100×1×1", "100×1×1", "10×1×1"]
    );
    let params: Vec<usize> = net.layers.iter().map(|l| l.parameters).collect();
    assert_eq!(params, [5 * 25 + 5, 0, 845 * 100 + 100, 0, 100 * 10 + 10]);
    assert_eq!(net.num_parameters(), 85_740);
    assert_eq!(net.classes(), 10);
    let Op::Conv(g) = net.layers[0].op else {
        panic!("{:?}", net.layers[0].op)
    };
    assert_eq!(
        (g.stride(), g.padding()),
        (
            2,
            Padding {
                before: 0,
                after: 1
            }
        )
    );
}

#[test]
fn lenet5_has_lenet5s_shapes() {
    let arch = Arch::named("lenet5").unwrap();
    assert_eq!("  lenet5 ".parse::<Arch>().unwrap(), arch);
    assert_eq!(
        shapes("lenet5"),
        [
            "6×28×28",
            "6×14×14",
            "6×14×14",
            "16×10×10",
            "16×5×5",
            "16×5×5",
            "120×1×1",
            "120×1×1",
            "84×1×1",
            "84×1×1",
            "10×1×1"
        ]
    );
    let net = arch.infer(MNIST).unwrap();
    assert_eq!(net.num_parameters(), 156 + 2_416 + 48_120 + 10_164 + 850);
    assert_eq!(net.num_parameters(), 61_706);
    assert!(matches!(
        net.layers[1].op,
        Op::MeanPool(p) if p.input() == Shape { channels: 6, height: 28, width: 28 }
    ));
    assert!(matches!(
        net.layers[6].op,
        Op::Dense {
            inputs: 400,
            units: 120
        }
    ));
    for name in NAMES {
        assert!(Arch::named(name).is_some(), "{name}");
    }
    assert_eq!(Arch::named("lenet"), None);
}

#[test]
fn the_syntax_reads_every_layer_and_its_options() {
    let arch: Arch =
        " conv3x3s2p1:4 , sigmoid,conv2x2p0+1:3,tanh,meanpool,dense:7,identity,dense:2"
            .parse()
            .unwrap();
    assert_eq!(
        arch.layers(),
        [
            Layer::Conv {
                kernel: 3,
                stride: 2,
                padding: Padding::same(1),
                filters: 4
            },
            Layer::Activation(Activation::Sigmoid),
            Layer::Conv {
                kernel: 2,
                stride: 1,
                padding: Padding {
                    before: 0,
                    after: 1
                },
                filters: 3
            },
            Layer::Activation(Activation::Tanh),
            Layer::MeanPool,
            Layer::Dense { units: 7 },
            Layer::Activation(Activation::Identity),
            Layer::Dense { units: 2 },
        ]
    );
    // Canonical text: defaults left out, no spaces.
    assert_eq!(
        arch.to_string(),
        "conv3x3s2p1:4,sigmoid,conv2x2p0+1:3,tanh,meanpool,dense:7,identity,dense:2"
    );
    // 28 padded to 30, stride 2 → 14; padded 15 → 14; pooled 7.
    assert_eq!(
        arch.infer(MNIST).unwrap().layers[4].output,
        Shape {
            channels: 3,
            height: 7,
            width: 7
        }
    );
    // The example.
    assert_eq!(
        shapes("conv5x5s2:5,relu,meanpool,dense:100,relu,dense:10"),
        [
            "5×12×12",
            "5×12×12",
            "5×6×6",
            "100×1×1",
            "100×1×1",
            "10×1×1"
        ]
    );
    // Dense networks too; relu on a pooled or dense layer is kept elementwise.
    assert_eq!(
        shapes("dense:128,relu,dense:10"),
        ["128×1×1", "128×1×1", "10×1×1"]
    );
}

fn parse_err(text: &str) -> ArchError {
    let e = text.parse::<Arch>().expect_err(text);
    assert_eq!(Error::from(e.clone()).code(), ErrorCode::Config);
    e
}

#[test]
fn parse_errors_name_the_layer_and_say_why() {
    let cases: Vec<(&str, usize, &str, ArchErrorKind)> = vec![
        ("", 0, "", ArchErrorKind::Empty),
        ("  ", 0, "  ", ArchErrorKind::Empty),
        ("dense:5,,dense:2", 2, "", ArchErrorKind::EmptyLayer),
        (
            "dense:5,maxpool,dense:2",
            2,
            "maxpool",
            ArchErrorKind::UnknownLayer,
        ),
        ("Dense:5", 1, "Dense:5", ArchErrorKind::UnknownLayer),
        ("conv5x5,dense:2", 1, "conv5x5", ArchErrorKind::BadConv),
        ("conv5:3,dense:2", 1, "conv5:3", ArchErrorKind::BadConv),
        ("convx5:3,dense:2", 1, "convx5:3", ArchErrorKind::BadConv),
        (
            "conv5x5q2:3,dense:2",
            1,
            "conv5x5q2:3",
            ArchErrorKind::BadConv,
        ),
        (
            "conv5x5p1s2:3,dense:2",
            1,
            "conv5x5p1s2:3",
            ArchErrorKind::BadConv,
        ),
        (
            "conv5x3:3,dense:2",
            1,
            "conv5x3:3",
            ArchErrorKind::NonSquareKernel { rows: 5, cols: 3 },
        ),
        (
            "conv5x5s:3,dense:2",
            1,
            "conv5x5s:3",
            ArchErrorKind::BadNumber { text: "".into() },
        ),
        (
            "conv5x5p1+:3,dense:2",
            1,
            "conv5x5p1+:3",
            ArchErrorKind::BadNumber { text: "".into() },
        ),
        (
            "conv5x5:six,dense:2",
            1,
            "conv5x5:six",
            ArchErrorKind::BadNumber { text: "six".into() },
        ),
        (
            "dense:+5,dense:2",
            1,
            "dense:+5",
            ArchErrorKind::BadNumber { text: "+5".into() },
        ),
        (
            "dense:99999999999999999999999,dense:2",
            1,
            "dense:99999999999999999999999",
            ArchErrorKind::BadNumber {
                text: "99999999999999999999999".into(),
            },
        ),
        (
            "relu,dense:2",
            1,
            "relu",
            ArchErrorKind::Misplaced {
                reason: "an activation needs a layer before it",
            },
        ),
        (
            "conv3x3:2,relu,tanh,dense:2",
            3,
            "tanh",
            ArchErrorKind::Misplaced {
                reason: "two activations in a row",
            },
        ),
        (
            "dense:20,conv3x3:2,dense:2",
            2,
            "conv3x3:2",
            ArchErrorKind::Misplaced {
                reason: "a conv or pooling layer cannot follow a dense layer",
            },
        ),
        (
            "conv3x3:2,relu",
            2,
            "relu",
            ArchErrorKind::Misplaced {
                reason: "the last layer must be dense:<classes> (the softmax output)",
            },
        ),
        (
            "conv3x3:2,dense:1",
            2,
            "dense:1",
            ArchErrorKind::TooFewClasses { classes: 1 },
        ),
    ];
    for (text, position, token, kind) in cases {
        let e = parse_err(text);
        assert_eq!(
            e,
            ArchError {
                position,
                token: token.into(),
                kind
            },
            "{text}"
        );
    }
    assert_eq!(
        parse_err("conv5x5:6,relu,dense:10x").to_string(),
        "layer 3 `dense:10x`: `10x` is not a number"
    );
    // Long text is cut in the error.
    let long = format!("dense:5,{}", "x".repeat(1000));
    let e = parse_err(&long);
    assert_eq!(e.token, format!("{}…", "x".repeat(40)));
    assert!(e.to_string().len() < 300, "{e}");
    // Arch::new checks the same rules.
    assert!(Arch::new(vec![]).is_err());
    assert!(Arch::new(vec![Layer::MeanPool]).is_err());
    assert!(Arch::new(vec![Layer::MeanPool, Layer::Dense { units: 3 }]).is_ok());
}

fn infer_err(text: &str, input: Shape) -> ArchError {
    let e = text.parse::<Arch>().unwrap().infer(input).expect_err(text);
    assert_eq!(Error::from(e.clone()).code(), ErrorCode::Config);
    e
}

#[test]
fn shapes_that_do_not_fit_are_refused_at_their_layer() {
    let geometry = |text: &str, input| match infer_err(text, input) {
        ArchError {
            position,
            token,
            kind: ArchErrorKind::Geometry(g),
        } => (position, token, g),
        other => panic!("{text}: {other:?}"),
    };
    assert_eq!(
        geometry("conv5x5s2p0+1:5,meanpool,dense:10", MNIST),
        (
            2,
            "meanpool".into(),
            GeometryError::OddPoolInput {
                height: 13,
                width: 13
            }
        )
    );
    assert_eq!(
        geometry(
            "conv5x5:6,meanpool,conv5x5:6,meanpool,conv5x5:3,dense:2",
            MNIST
        ),
        (
            5,
            "conv5x5:3".into(),
            GeometryError::KernelTooLarge {
                kernel: 5,
                height: 4,
                width: 4
            }
        )
    );
    for (text, what) in [
        ("conv0x0:2,dense:2", "kernel"),
        ("conv3x3s0:2,dense:2", "stride"),
        ("conv3x3:0,dense:2", "filters"),
    ] {
        assert_eq!(
            geometry(text, MNIST).2,
            GeometryError::Zero { what },
            "{text}"
        );
    }
    assert!(matches!(
        geometry("conv3x3p3:2,dense:2", MNIST).2,
        GeometryError::PaddingTooLarge { .. }
    ));
    // A zero-sized input: position 0.
    let e = infer_err(
        "dense:2",
        Shape {
            channels: 1,
            height: 0,
            width: 28,
        },
    );
    assert_eq!((e.position, e.token.as_str()), (0, "1×0×28"));

    // Dense widths and fan-ins within ModelSpec's limits.
    assert_eq!(
        infer_err("dense:0,relu,dense:2", MNIST).kind,
        ArchErrorKind::DenseWidth {
            what: "units",
            value: 0
        }
    );
    let wide = format!("dense:{},dense:2", MAX_WIDTH + 1);
    assert_eq!(
        infer_err(&wide, MNIST).kind,
        ArchErrorKind::DenseWidth {
            what: "units",
            value: MAX_WIDTH + 1
        }
    );
    let big = Shape {
        channels: 3,
        height: 224,
        width: 224,
    };
    let e = infer_err("conv3x3p1:4,dense:10", big);
    assert_eq!(
        (e.position, e.kind),
        (
            2,
            ArchErrorKind::DenseWidth {
                what: "inputs",
                value: 4 * 224 * 224
            }
        )
    );
    // Too many parameters: 40,000 inputs × 2,000 units > 2^26.
    let e = infer_err(
        "dense:2000,dense:2",
        Shape {
            channels: 1,
            height: 200,
            width: 200,
        },
    );
    assert_eq!(
        (e.position, e.kind),
        (
            1,
            ArchErrorKind::TooManyParameters {
                parameters: 2000 * 40_000 + 2000
            }
        )
    );
    const { assert!(2000 * 40_000 > MAX_PARAMETERS) };
    // Too many weight layers.
    let deep = vec!["dense:2"; MAX_LAYERS + 1].join(",");
    let e = infer_err(&deep, MNIST);
    assert_eq!(
        (e.position, e.kind),
        (MAX_LAYERS + 1, ArchErrorKind::TooManyLayers)
    );
    let edge = vec!["dense:2"; MAX_LAYERS].join(",");
    assert!(edge.parse::<Arch>().unwrap().infer(MNIST).is_ok());
}

fn layer() -> impl Strategy<Value = Layer> {
    prop_oneof![
        (0usize..9, 0usize..4, 0usize..3, 0usize..3, 0usize..9).prop_map(
            |(kernel, stride, before, after, filters)| Layer::Conv {
                kernel,
                stride,
                padding: Padding { before, after },
                filters
            }
        ),
        Just(Layer::MeanPool),
        (0usize..300).prop_map(|units| Layer::Dense { units }),
        prop_oneof![
            Just(Activation::Relu),
            Just(Activation::Sigmoid),
            Just(Activation::Tanh),
            Just(Activation::Identity)
        ]
        .prop_map(Layer::Activation),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Display is the canonical syntax: whatever `Arch::new` accepts prints to text that
    /// parses back to it, and inference never panics.
    #[test]
    fn display_parses_back(layers in prop::collection::vec(layer(), 1..8)) {
        if let Ok(arch) = Arch::new(layers) {
            let text = arch.to_string();
            prop_assert_eq!(text.parse::<Arch>(), Ok(arch.clone()), "{}", text);
            if let Ok(net) = arch.infer(MNIST) {
                prop_assert_eq!(net.layers.len(), arch.layers().len());
                prop_assert!(net.classes() >= 2);
                prop_assert!(net.num_parameters() <= MAX_PARAMETERS);
            }
        }
    }

    /// Any text gives an architecture or an error, never a panic.
    #[test]
    fn arbitrary_text_never_panics(text in "[a-z0-9:,+ x]{0,40}") {
        let _ = text.parse::<Arch>().map(|a| a.infer(MNIST));
    }
}
