//! CryptoNets' CRT over several plaintext moduli (issue #15): the recombination, the
//! choice of moduli, and a BFV inference whose outputs need more than one `t`, exact
//! against the big-integer walk.

#![allow(clippy::unwrap_used)]

use gelunet_baselines::square_conv::SquareConvNet;
use gelunet_baselines::square_conv_bfv::random_net;
use gelunet_baselines::square_conv_crt::{
    crt_combine, crt_configs, exact_output_bound, forward_exact, time_conv_inference_crt,
};
use gelunet_baselines::BaselineError;
use gelunet_protocol::arch::Arch;
use gelunet_protocol::conv::Shape;
use ndarray::Array2;
use num_bigint::BigInt;
use rand::{Rng, SeedableRng};

const INPUT: Shape = Shape {
    channels: 1,
    height: 8,
    width: 8,
};

/// The two-square net of `square_conv_bfv.rs` (weights in `[−3, 3]`): on `|x| ≤ 4` its
/// outputs exceed one 20-bit modulus and fit one 53-bit one (asserted below).
fn two_square_net() -> SquareConvNet {
    let arch: Arch = "conv3x3:2,relu,meanpool,dense:4,relu,dense:3"
        .parse()
        .unwrap();
    random_net(&arch, INPUT, 3, 7).unwrap()
}

#[test]
fn crt_combine_recovers_every_integer_of_the_centred_range() {
    let moduli = [65537u64, 114_689, 40961];
    let m: i128 = moduli.iter().map(|&t| i128::from(t)).product();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let mut cases: Vec<i128> = vec![0, 1, -1, m / 2, -(m / 2) + 1];
    cases.extend((0..200).map(|_| rng.gen_range(-(m / 2) + 1..=m / 2)));
    for z in cases {
        let r: Vec<u64> = moduli
            .iter()
            .map(|&t| u64::try_from(z.rem_euclid(i128::from(t))).unwrap())
            .collect();
        assert_eq!(crt_combine(&r, &moduli).unwrap(), BigInt::from(z), "{z}");
    }
}

#[test]
fn crt_combine_refuses_bad_moduli() {
    let bad = |r: &[u64], m: &[u64]| {
        matches!(
            crt_combine(r, m),
            Err(BaselineError::InvalidParameter { .. })
        )
    };
    assert!(bad(&[], &[]));
    assert!(bad(&[1, 2], &[7]));
    assert!(bad(&[1, 2], &[6, 9]), "not coprime");
    assert!(bad(&[0, 0], &[1, 7]), "modulus below 2");
}

#[test]
fn crt_configs_pick_as_few_distinct_primes_as_the_bound_needs() {
    let net = two_square_net();
    let exact = exact_output_bound(&net, 4).unwrap();
    let worst = net
        .output_bound(4)
        .unwrap()
        .iter()
        .map(|v| v.unsigned_abs())
        .max()
        .unwrap();
    assert_eq!(exact, worst.into());
    let configs = crt_configs(&net, 4, 20).unwrap();
    let t: Vec<u64> = configs.iter().map(|c| c.plaintext_modulus()).collect();
    let product: num_bigint::BigUint = t.iter().product();
    assert!(product > &exact * 2u32, "{t:?}");
    // As few as needed: without the last modulus the product is too small.
    let fewer: num_bigint::BigUint = t[..t.len() - 1].iter().product();
    assert!(fewer <= &exact * 2u32, "{t:?}");
    assert!(t.len() >= 2, "{t:?}");
    for (i, a) in t.iter().enumerate() {
        assert!(t[i + 1..].iter().all(|b| b != a), "{t:?}");
    }
    // One 53-bit prime holds this net.
    assert_eq!(crt_configs(&net, 4, 53).unwrap().len(), 1);
    assert!(matches!(
        crt_configs(&net, 4, 17),
        Err(BaselineError::PlaintextModulusTooSmall { .. })
    ));
    assert!(matches!(
        crt_configs(&net, 4, 70),
        Err(BaselineError::InvalidParameter { .. })
    ));
    assert!(matches!(
        crt_configs(&net, -1, 20),
        Err(BaselineError::InvalidParameter { .. })
    ));
}

#[test]
fn a_crt_inference_equals_the_exact_walk() {
    let net = two_square_net();
    let bound = 4;
    let configs = crt_configs(&net, bound, 20).unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
    let x = Array2::from_shape_fn((5, INPUT.len()), |_| rng.gen_range(-bound..=bound));
    let out = time_conv_inference_crt(&configs, [5; 32], &net, "tiny", &x, bound).unwrap();
    assert!(out.timing.correct);
    assert_eq!(out.timing.crt_components, configs.len());
    assert_eq!(out.moduli.len(), configs.len());
    for (s, row) in x.outer_iter().enumerate() {
        let want = forward_exact(&net, row.as_slice().unwrap()).unwrap();
        assert_eq!(out.outputs[s], want, "sample {s}");
        let wide: Vec<i128> = row.iter().map(|&v| i128::from(v)).collect();
        let plain: Vec<BigInt> = net
            .forward(&wide)
            .unwrap()
            .into_iter()
            .map(BigInt::from)
            .collect();
        assert_eq!(out.outputs[s], plain);
        assert_eq!(out.predictions[s], gelunet_protocol::math::argmax(&want));
    }
}
