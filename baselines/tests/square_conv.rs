//! The plaintext square-activation conv net (issue #15): exact values and refusals.

#![allow(clippy::unwrap_used)]

use gelunet_baselines::square_conv::{LayerWeights, SquareConvNet};
use gelunet_baselines::BaselineError;
use gelunet_protocol::arch::Arch;
use gelunet_protocol::conv::Shape;

fn net(center: i128) -> SquareConvNet {
    let arch: Arch = "conv3x3p1:1,meanpool,relu,dense:2".parse().unwrap();
    let network = arch
        .infer(Shape {
            channels: 1,
            height: 4,
            width: 4,
        })
        .unwrap();
    let mut kernel = vec![0; 9];
    kernel[4] = center;
    let mut dense = vec![0; 8];
    dense[0] = 1;
    dense[5] = 1;
    let params = vec![
        LayerWeights {
            weights: kernel,
            bias: vec![0],
        },
        LayerWeights::default(),
        LayerWeights::default(),
        LayerWeights {
            weights: dense,
            bias: vec![0, 1],
        },
    ];
    SquareConvNet::new(network, params).unwrap()
}

#[test]
fn conv_pool_square_dense_is_exact() {
    let x: Vec<i128> = (0..16).collect();
    // Windows {0,1,4,5} and {2,3,6,7} sum to 10 and 18; ×2, squared: 400 and 1296 (+1).
    assert_eq!(net(2).forward(&x).unwrap(), vec![400, 1297]);
}

#[test]
fn wrong_length_input_is_refused() {
    assert!(matches!(
        net(2).forward(&[0; 15]),
        Err(BaselineError::InvalidParameter { .. })
    ));
}

#[test]
fn overflow_is_refused_not_wrapped() {
    let x = vec![i128::MAX / 4; 16];
    assert!(net(2).forward(&x).is_err());
}
