//! Property tests of the fixed-point codec, the rounding rule, the mask bookkeeping, the
//! scheduler bound and the message codec.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

use gelunet_paillier::BigInt;
use gelunet_protocol::fixed::round_shift;
use gelunet_protocol::mask::{centered, mod_n, reduce_centered};
use gelunet_protocol::messages::{from_wire, to_wire, Abort, ClientMessage, PROTOCOL_VERSION};
use gelunet_protocol::schedule::{session_bound, Scheduler};
use gelunet_protocol::{
    Activation, Error, MaskMode, MaskTarget, ModelSpec, Scales, SessionLength, SessionPolicy,
    ValueKind,
};
use num_bigint::{BigUint, RandBigInt};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const KINDS: [ValueKind; 10] = [
    ValueKind::Activation,
    ValueKind::Weight,
    ValueKind::Bias,
    ValueKind::PreActivation,
    ValueKind::Error,
    ValueKind::Product,
    ValueKind::Derivative,
    ValueKind::LearningRate,
    ValueKind::WeightGradient,
    ValueKind::BiasGradient,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn encode_decode_round_trip(k in 0usize..10, x in -1.0e3f64..1.0e3) {
        let s = Scales::default();
        let kind = KINDS[k];
        let limit = 2f64.powi(s.limit_bits(kind) as i32);
        match s.encode(kind, x) {
            Ok(v) => {
                prop_assert!(x.abs() < limit + 1.0);
                let err = (s.decode(kind, v) - x).abs();
                // Half an ulp of the scale, plus f64 rounding of large values.
                let tol = 2f64.powi(-(s.frac_bits(kind) as i32) - 1) + x.abs() * 1e-15;
                prop_assert!(err <= tol, "{kind:?} {x} -> {v}: error {err}");
                prop_assert_eq!(s.check(kind, v), Ok(v));
            }
            Err(Error::OutOfRange { kind: k2, .. }) => {
                prop_assert_eq!(k2, kind);
                prop_assert!(x.abs() >= limit * (1.0 - 1e-12), "{kind:?} {x} refused");
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn out_of_range_never_wraps(k in 0usize..10, extra in 0u32..20, neg in any::<bool>()) {
        let s = Scales::default();
        let kind = KINDS[k];
        let x = 2f64.powi((s.limit_bits(kind) + extra) as i32) * if neg { -1.0 } else { 1.0 };
        let is_out_of_range = matches!(s.encode(kind, x), Err(Error::OutOfRange { .. }));
        prop_assert!(is_out_of_range);
        let v = 1i128 << (s.max_bits(kind) + extra);
        let is_out_of_range = matches!(s.check(kind, if neg { -v } else { v }), Err(Error::OutOfRange { .. }));
        prop_assert!(is_out_of_range);
    }

    #[test]
    fn round_shift_is_round_half_away_from_zero(x in -(1i128 << 100)..(1i128 << 100), sh in 0u32..60) {
        let r = round_shift(x, sh).unwrap();
        // Exact check with big integers: |x − r·2^s| ≤ 2^(s−1), ties away from zero.
        let diff = BigInt::from(x) - (BigInt::from(r) << sh);
        let half = if sh == 0 { BigInt::from(0) } else { BigInt::from(1) << (sh - 1) };
        prop_assert!(diff.magnitude() <= half.magnitude());
        if sh > 0 && diff.magnitude() == half.magnitude() {
            prop_assert!(r.signum() == x.signum() && r != 0);
        }
        prop_assert_eq!(round_shift(-x, sh).unwrap(), -r);
    }

    #[test]
    fn rescale_up_then_down_is_identity(v in -(1i128 << 35)..(1i128 << 35)) {
        let s = Scales::default();
        let u = s.rescale(v, ValueKind::Error, ValueKind::BiasGradient).unwrap();
        prop_assert_eq!(s.rescale(u, ValueKind::BiasGradient, ValueKind::Error).unwrap(), v);
    }

    /// Alg. 3/4/5 bookkeeping: after any sequence of masked updates, the server's masked
    /// weight plus the client's ledger is the true weight minus the applied updates, mod
    /// N_c, and D is recovered exactly from its decryption mod N_s, in every mask mode.
    #[test]
    fn mask_bookkeeping(
        seed in any::<u64>(),
        w0 in -(1i128 << 40)..(1i128 << 40),
        steps in proptest::collection::vec((1i128..(1 << 20), -(1i128 << 36)..(1i128 << 36)), 1..6),
        mode in 0usize..3,
    ) {
        let s = Scales::default();
        let mode = [MaskMode::default(), MaskMode::Uniform, MaskMode::InsecureNone][mode];
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let odd = |r: &mut ChaCha20Rng, bits: u64| (r.gen_biguint(bits) | BigUint::from(1u8)) | (BigUint::from(1u8) << (bits - 1));
        let n_c = odd(&mut rng, 512);
        let n_s = odd(&mut rng, 520);
        let g = MaskMode::g_bits(&s, MaskTarget::Weight);
        let mut masked = BigInt::from(w0);
        let mut ledger = BigUint::from(0u8);
        let mut truth = BigInt::from(w0);
        for (eta, dw) in steps {
            let step = BigInt::from(eta) * BigInt::from(dw);
            prop_assert!(step.bits() <= u64::from(g));
            let r = mode.draw(g, &n_s, &mut rng).unwrap();
            let d = &step + BigInt::from(r.clone());
            // What the server decrypts (mod N_s) and how it reads it back.
            let raw = mod_n(&d, &n_s);
            let seen = mode.interpret_decrypted(g, &n_s, &raw).unwrap();
            prop_assert_eq!(&seen, &d);
            masked = reduce_centered(&(masked - seen), &n_c);
            ledger = (ledger + r) % &n_c;
            truth -= step;
        }
        let unmasked = centered(&mod_n(&(masked + BigInt::from(ledger)), &n_c), &n_c);
        prop_assert_eq!(unmasked, truth);
    }
}

#[test]
fn masks_out_of_their_interval_are_refused() {
    let s = Scales::default();
    let g = MaskMode::g_bits(&s, MaskTarget::Weight);
    let n = (BigUint::from(1u8) << 600u32) + 1u8;
    let big = BigUint::from(1u8) << (128 + g + 2);
    assert!(MaskMode::default()
        .interpret_decrypted(g, &n, &big)
        .is_err());
    assert!(MaskMode::InsecureNone
        .interpret_decrypted(g, &n, &(BigUint::from(1u8) << (g + 1)))
        .is_err());
    // Negative values just below -G.
    let neg = mod_n(&-(BigInt::from(1) << (g + 1)), &n);
    assert!(MaskMode::default()
        .interpret_decrypted(g, &n, &neg)
        .is_err());
}

#[test]
fn session_bound_and_scheduler() {
    let spec = ModelSpec::new(vec![4, 12, 3], Activation::Relu);
    assert_eq!(spec.min_fan_in(), 4);
    assert_eq!(session_bound(&spec, 1), 4);
    assert_eq!(session_bound(&spec, 2), 2);
    assert_eq!(session_bound(&spec, 5), 0);
    let mut sch = Scheduler::new(SessionPolicy::default(), &spec, 1, 3, 9).unwrap();
    let plans: Vec<_> = (0..30).map(|_| sch.next_session()).collect();
    assert!(plans.iter().all(|p| (1..=4).contains(&p.iterations)));
    assert!(plans.iter().enumerate().all(|(i, p)| p.client == i % 3));
    assert!(plans.iter().any(|p| p.iterations == 4) && plans.iter().any(|p| p.iterations == 1));
    let random = SessionPolicy {
        order: gelunet_protocol::ClientOrder::SeededRandom,
        ..SessionPolicy::default()
    };
    let a: Vec<_> = {
        let mut s = Scheduler::new(random, &spec, 2, 3, 5).unwrap();
        (0..20).map(|_| s.next_session()).collect()
    };
    let b: Vec<_> = {
        let mut s = Scheduler::new(random, &spec, 2, 3, 5).unwrap();
        (0..20).map(|_| s.next_session()).collect()
    };
    assert_eq!(a, b, "seeded");
    assert!(a.iter().all(|p| p.iterations <= 2));
    let fixed = |d| SessionPolicy {
        length: SessionLength::Fixed(d),
        ..SessionPolicy::default()
    };
    assert!(matches!(
        Scheduler::new(fixed(5), &spec, 1, 3, 0),
        Err(Error::SessionBound { .. })
    ));
    assert!(matches!(
        Scheduler::new(SessionPolicy::default(), &spec, 5, 3, 0),
        Err(Error::SessionBound { .. })
    ));
    let insecure = SessionPolicy {
        insecure_allow_bound_violation: true,
        ..fixed(5)
    };
    assert_eq!(
        Scheduler::new(insecure, &spec, 1, 3, 0)
            .unwrap()
            .next_session()
            .iterations,
        5
    );
}

#[test]
fn specs_are_validated() {
    assert!(ModelSpec::new(vec![4], Activation::Relu)
        .validate()
        .is_err());
    assert!(ModelSpec::new(vec![4, 0, 3], Activation::Relu)
        .validate()
        .is_err());
    assert!(ModelSpec::new(vec![4, 1], Activation::Relu)
        .validate()
        .is_err());
    let mut s = ModelSpec::new(vec![4, 5, 3], Activation::Relu);
    s.hidden.push(Activation::Tanh);
    assert!(s.validate().is_err());
    assert!(ModelSpec::new(vec![4, 5, 3], Activation::Relu)
        .validate()
        .is_ok());
    let sc = Scales {
        fe: 40,
        ..Scales::default()
    };
    assert!(sc.validate().is_err());
    let mut sc = Scales::default();
    sc.limits.pre_activation = 60;
    assert!(sc.validate().is_err());
    assert!(Scales::default().validate().is_ok());
    // Serde round trip of the spec and scales (sent in the handshake).
    let json = serde_json::to_string(&(s.clone(), Scales::default())).unwrap();
    let back: (ModelSpec, Scales) = serde_json::from_str(&json).unwrap();
    assert_eq!(back, (s, Scales::default()));
}

#[test]
fn wire_codec_checks_version() {
    let msg = ClientMessage::Abort(Abort {
        session: 3,
        reason: "bye".into(),
    });
    let bytes = to_wire(&msg).unwrap();
    assert_eq!(from_wire::<ClientMessage>(&bytes).unwrap(), msg);
    let mut other = bytes.clone();
    other[0] = (PROTOCOL_VERSION + 1) as u8;
    assert!(matches!(
        from_wire::<ClientMessage>(&other),
        Err(Error::VersionMismatch { .. })
    ));
    assert!(matches!(
        from_wire::<ClientMessage>(&bytes[..3]),
        Err(Error::Codec { .. })
    ));
}
