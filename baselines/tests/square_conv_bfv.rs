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
    assert_eq!(config.degree(), 8192);
    let mut ctx = BfvContext::new(&config, [3; 32]).unwrap();
    // Without the lower-level keys both squares run at level 0 (only the last one,
    // which needs no further key, switches down).
    let flat = SquareConvNetBfv::new(&net, &ctx.server_key(), bound).unwrap();
    assert_eq!((flat.square_levels(), flat.output_level()), (vec![0, 0], 1));
    ctx.prepare_levels(SquareConvNetBfv::relinearization_levels(&net, &config))
        .unwrap();
    let model = SquareConvNetBfv::new(&net, &ctx.server_key(), bound).unwrap();
    assert_eq!(
        (model.square_levels(), model.output_level()),
        (vec![0, 1], 2)
    );
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
    let batch = ctx.encrypt_batch(&x, bound).unwrap();
    let (z_flat, _) = decrypt_and_predict(&ctx, &flat.infer(&batch).unwrap()).unwrap();
    assert_eq!(z_flat, z);
}

/// LeNet-5's shape (conv, pool, square twice, then dense) at 16×16: the conv+pool
/// blocks are composed, both squares switch down, worst-case inputs decrypt exactly.
#[test]
fn lenet_like_net_with_two_squares_is_exact() {
    let arch: Arch = "conv5x5p2:2,meanpool,relu,conv5x5:3,meanpool,relu,dense:10"
        .parse()
        .unwrap();
    let input = Shape {
        channels: 1,
        height: 16,
        width: 16,
    };
    let net = random_net(&arch, input, 1, 3).unwrap();
    let bound = 1;
    let config = SquareConvNetBfv::config_for(&net, bound).unwrap();
    assert_eq!(config.degree(), 8192);
    let mut ctx = BfvContext::new(&config, [5; 32]).unwrap();
    ctx.prepare_levels(SquareConvNetBfv::relinearization_levels(&net, &config))
        .unwrap();
    let model = SquareConvNetBfv::new(&net, &ctx.server_key(), bound).unwrap();
    assert_eq!(model.square_levels(), vec![0, 1]);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
    // Row 0 is the all-bound input (largest outputs), row 1 its negation.
    let mut x = Array2::from_shape_fn((6, input.len()), |_| rng.gen_range(-bound..=bound));
    x.row_mut(0).fill(bound);
    x.row_mut(1).fill(-bound);
    let (out, steps) = model
        .infer_timed(&ctx.encrypt_batch(&x, bound).unwrap())
        .unwrap();
    let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv+meanpool+square@0",
            "conv+meanpool+square@1",
            "dense@2"
        ]
    );
    let (z, _) = decrypt_and_predict(&ctx, &out).unwrap();
    for (s, row) in x.outer_iter().enumerate() {
        let xs: Vec<i128> = row.iter().map(|&v| i128::from(v)).collect();
        assert_eq!(z.row(s).to_vec(), net.forward(&xs).unwrap(), "sample {s}");
    }
    let worst = net.output_bound(1).unwrap();
    assert!(z.row(0).iter().zip(&worst).all(|(a, b)| a.abs() <= *b));
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
    let five: Arch =
        "conv3x3:2,relu,meanpool,dense:4,relu,dense:3,relu,dense:3,relu,dense:3,relu,dense:2"
            .parse()
            .unwrap();
    let net = random_net(&five, INPUT, 1, 1).unwrap();
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

#[test]
fn residues_agree_with_the_exact_walk_and_lenet5_needs_crt() {
    use gelunet_baselines::square_conv_bfv::{crt_components, forward_mod, RESIDUE_T_BITS};
    let arch: Arch = "conv3x3:2,relu,meanpool,dense:4,relu,dense:3"
        .parse()
        .unwrap();
    let net = random_net(&arch, INPUT, 3, 7).unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
    let t = 65537u64;
    for _ in 0..4 {
        let x: Vec<i64> = (0..INPUT.len()).map(|_| rng.gen_range(-4..=4)).collect();
        let xs: Vec<i128> = x.iter().map(|&v| i128::from(v)).collect();
        let want: Vec<u64> = net
            .forward(&xs)
            .unwrap()
            .iter()
            .map(|v| u64::try_from(v.rem_euclid(i128::from(t))).unwrap())
            .collect();
        assert_eq!(forward_mod(&net, &x, t).unwrap(), want);
    }
    assert_eq!(crt_components(&net, 4, RESIDUE_T_BITS), 1);
    let lenet = Arch::named("lenet5").unwrap();
    let mnist = Shape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let net = random_net(&lenet, mnist, 1, 1).unwrap();
    // Four squares: the worst case leaves i128, one 61-bit t cannot hold it.
    assert!(SquareConvNetBfv::config_for(&net, 1).is_err());
    let k = crt_components(&net, 1, RESIDUE_T_BITS);
    assert!((4..=6).contains(&k), "{k} components");
}
