//! CryptoNets' conv net under BFV (issue #15): exact against the plaintext walk.

#![allow(clippy::unwrap_used)]

use gelunet_baselines::square_conv_bfv::{
    decrypt_and_predict, measure_square_conv, random_net, SquareConvNetBfv,
};
use gelunet_baselines::{BaselineError, BfvContext};
use gelunet_protocol::arch::Arch;
use gelunet_protocol::conv::Shape;
use gelunet_protocol::math::argmax;
use ndarray::Array2;
use rand::{Rng, SeedableRng};

const INPUT: Shape = Shape {
    channels: 1,
    height: 8,
    width: 8,
};

#[test]
fn two_squares_decrypt_exactly_for_every_sample() {
    let arch: Arch = "conv3x3:2,relu,meanpool,dense:4,relu,dense:3"
        .parse()
        .unwrap();
    let net = random_net(&arch, INPUT, 3, 7).unwrap();
    let bound = 4;
    let config = SquareConvNetBfv::config_for(&net, bound).unwrap();
    assert_eq!(config.degree(), 16384);
    let mut ctx = BfvContext::new(&config, [3; 32]).unwrap();
    let model = SquareConvNetBfv::new(&net, &ctx.server_key(), bound).unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
    let x = Array2::from_shape_fn((5, INPUT.len()), |_| rng.gen_range(-bound..=bound));
    let out = model.infer(&ctx.encrypt_batch(&x, bound).unwrap()).unwrap();
    let (z, pred) = decrypt_and_predict(&ctx, &out).unwrap();
    assert_eq!(z.dim(), (5, 3));
    for (s, row) in x.outer_iter().enumerate() {
        let xs: Vec<i128> = row.iter().map(|&v| i128::from(v)).collect();
        let want = net.forward(&xs).unwrap();
        assert_eq!(z.row(s).to_vec(), want, "sample {s}");
        assert_eq!(pred[s], argmax(z.row(s)));
        assert_eq!(pred[s], argmax(ndarray::ArrayView1::from(&want[..])));
    }
}

#[test]
fn outputs_beyond_61_bits_are_refused() {
    let arch: Arch = "conv3x3:2,relu,meanpool,dense:4,relu,dense:3"
        .parse()
        .unwrap();
    let net = random_net(&arch, INPUT, 1 << 6, 1).unwrap();
    assert!(matches!(
        SquareConvNetBfv::config_for(&net, 1 << 6),
        Err(BaselineError::PlaintextModulusTooSmall { .. })
    ));
    let three: Arch = "conv3x3:2,relu,meanpool,dense:4,relu,dense:3,relu,dense:2"
        .parse()
        .unwrap();
    let net = random_net(&three, INPUT, 1, 1).unwrap();
    assert!(matches!(
        SquareConvNetBfv::config_for(&net, 1),
        Err(BaselineError::InvalidParameter { .. })
    ));
}

#[test]
fn measurement_on_a_tiny_net_is_correct() {
    let arch: Arch = "conv3x3:2,relu,meanpool,dense:3".parse().unwrap();
    let m = measure_square_conv(&arch, INPUT, 4, 15, 8, 5).unwrap();
    assert!(m.single.correct && m.batch.correct);
    assert_eq!((m.single.samples, m.batch.samples), (1, 8));
    assert_eq!(m.batch.parameters.degree, 8192);
    assert!(m.batch.per_sample_secs() <= m.batch.latency_secs());
}
