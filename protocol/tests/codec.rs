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
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const KINDS: [ValueKind; 10] = ValueKind::ALL;

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
    // At least two samples per session (paper: d_max in (1, m+2)).
    assert!(plans.iter().all(|p| (2..=4).contains(&p.iterations)));
    assert!(plans.iter().enumerate().all(|(i, p)| p.client == i % 3));
    assert!(plans.iter().any(|p| p.iterations == 4) && plans.iter().any(|p| p.iterations == 2));
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
    assert!(a.iter().all(|p| (1..=2).contains(&p.iterations)));
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
    // Too few samples: a fixed single iteration of one sample, or a network whose
    // smallest fan-in is 1, are refused unless explicitly insecure.
    assert!(matches!(
        Scheduler::new(fixed(1), &spec, 1, 3, 0),
        Err(Error::SessionMinimum { .. })
    ));
    let thin = ModelSpec::new(vec![1, 4, 2], Activation::Relu);
    assert!(matches!(
        Scheduler::new(SessionPolicy::default(), &thin, 1, 3, 0),
        Err(Error::SessionMinimum { .. })
    ));
    let few = SessionPolicy {
        insecure_allow_few_samples: true,
        ..SessionPolicy::default()
    };
    let mut s = Scheduler::new(few, &thin, 1, 3, 0).unwrap();
    assert_eq!(s.next_session().iterations, 1);
    assert_eq!(
        Scheduler::new(
            SessionPolicy {
                insecure_allow_few_samples: true,
                ..fixed(1)
            },
            &spec,
            1,
            3,
            0
        )
        .unwrap()
        .next_session()
        .iterations,
        1
    );
    // A configurable minimum.
    let three = SessionPolicy {
        min_samples: 3,
        ..SessionPolicy::default()
    };
    let mut s = Scheduler::new(three, &spec, 2, 3, 0).unwrap();
    assert_eq!(s.lower_bound(), 2);
    assert!((0..10).all(|_| s.next_session().iterations == 2));
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The scheduler never plans a session of fewer than two samples (nor more than the
    /// smallest fan-in), whatever the widths and batch size; when no length satisfies
    /// both, the configuration is refused.
    #[test]
    fn scheduler_never_plans_fewer_than_two_samples(
        widths in proptest::collection::vec(1usize..12, 3..5),
        batch in 1usize..6,
        seed in any::<u64>(),
        fixed in proptest::option::of(1u32..8),
    ) {
        let mut widths = widths;
        *widths.last_mut().unwrap() = 3;
        let spec = ModelSpec::new(widths, Activation::Tanh);
        let policy = SessionPolicy {
            length: fixed.map_or(SessionLength::Random, SessionLength::Fixed),
            ..SessionPolicy::default()
        };
        match Scheduler::new(policy, &spec, batch, 2, seed) {
            Ok(mut s) => {
                for _ in 0..20 {
                    let samples = s.next_session().iterations as usize * batch;
                    prop_assert!(samples >= 2, "{samples} samples");
                    prop_assert!(samples <= spec.min_fan_in());
                }
            }
            Err(Error::SessionBound { .. } | Error::SessionMinimum { .. }) => {
                let ok_d = (1..=8usize).any(|d| {
                    let n = d * batch;
                    n >= 2 && n <= spec.min_fan_in() && fixed.is_none_or(|f| f as usize == d)
                });
                prop_assert!(!ok_d, "refused although a length fits");
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    /// Alg. 3/4/5 bookkeeping with packed masked updates: `k` values per plaintext, each
    /// slot `η·Δ + r + G`, computed as the client does (`η·Σ Δ_i 2^(βi) + Σ (r_i + G) 2^(βi)`
    /// mod N_s) and unpacked as the server does; every D is recovered exactly and the
    /// masked weights plus the ledger stay the true weights.
    #[test]
    fn mask_bookkeeping_packed(
        seed in any::<u64>(),
        w0 in proptest::collection::vec(-(1i128 << 40)..(1i128 << 40), 1..25),
        eta in 1i128..(1 << 20),
        steps in 1usize..4,
        mode in 0usize..2,
        key_bits in 600u64..2100,
    ) {
        let s = Scales::default();
        let mode = [MaskMode::default(), MaskMode::InsecureNone][mode];
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let odd = |r: &mut ChaCha20Rng, bits: u64| (r.gen_biguint(bits) | BigUint::from(1u8)) | (BigUint::from(1u8) << (bits - 1));
        let n_c = odd(&mut rng, 512);
        let n_s = odd(&mut rng, key_bits);
        let g = MaskMode::g_bits(&s, MaskTarget::Weight);
        let layout = gelunet_protocol::messages::UpdatePacking::masked(mode, &s, n_s.bits(), true);
        let p = layout.weights;
        prop_assert!(p.samples_per_ciphertext >= 2);
        let k = p.samples_per_ciphertext as usize;
        let mut masked: Vec<BigInt> = w0.iter().map(|&w| BigInt::from(w)).collect();
        let mut ledger = vec![BigUint::from(0u8); w0.len()];
        let mut truth = masked.clone();
        for _ in 0..steps {
            let dw: Vec<i128> = (0..w0.len()).map(|_| rng.gen_range(-(1i128 << 39)..(1i128 << 39))).collect();
            let rs: Vec<BigUint> = dw.iter().map(|_| mode.draw(g, &n_s, &mut rng).unwrap()).collect();
            let raw: Vec<BigUint> = dw
                .chunks(k)
                .zip(rs.chunks(k))
                .map(|(d, r)| {
                    let d: Vec<BigInt> = d.iter().map(|&v| BigInt::from(v)).collect();
                    let scaled = BigInt::from(eta) * gelunet_protocol::packing::pack_signed(&d, p.slot_bits);
                    let m = gelunet_protocol::packing::mask_plaintext(r, g, p.slot_bits);
                    mod_n(&(scaled + BigInt::from(m)), &n_s)
                })
                .collect();
            prop_assert_eq!(raw.len(), w0.len().div_ceil(k));
            let seen = gelunet_protocol::packing::unpack_masked(mode, g, &n_s, p, &raw, w0.len()).unwrap();
            for i in 0..w0.len() {
                let step = BigInt::from(eta) * BigInt::from(dw[i]);
                prop_assert_eq!(&seen[i], &(&step + BigInt::from(rs[i].clone())));
                if !mode.is_insecure() {
                    prop_assert_ne!(&seen[i], &step);
                }
                masked[i] = reduce_centered(&(&masked[i] - &seen[i]), &n_c);
                ledger[i] = (&ledger[i] + &rs[i]) % &n_c;
                truth[i] -= step;
            }
        }
        for i in 0..w0.len() {
            let unmasked = centered(&mod_n(&(&masked[i] + BigInt::from(ledger[i].clone())), &n_c), &n_c);
            prop_assert_eq!(&unmasked, &truth[i]);
        }
    }

    /// Sample packing round trip: signed values packed by groups, reduced mod N and
    /// unpacked from the centered representative, exactly.
    #[test]
    fn sample_packing_round_trip(
        vals in proptest::collection::vec(-(1i128 << 80)..(1i128 << 80), 1..12),
        key_bits in 300u64..2100,
    ) {
        let beta = 82;
        let k = gelunet_protocol::packing::slots_per_plaintext(key_bits, beta) as usize;
        prop_assume!(k >= 1);
        let mut rng = ChaCha20Rng::seed_from_u64(key_bits);
        let n = (rng.gen_biguint(key_bits) | BigUint::from(1u8)) | (BigUint::from(1u8) << (key_bits - 1));
        for chunk in vals.chunks(k) {
            let big: Vec<BigInt> = chunk.iter().map(|&v| BigInt::from(v)).collect();
            let beta = if chunk.len() == 1 && k == 1 { 0 } else { beta };
            let p = gelunet_protocol::packing::pack_signed(&big, beta);
            let back = gelunet_protocol::packing::unpack_signed(&centered(&mod_n(&p, &n), &n), chunk.len(), beta).unwrap();
            prop_assert_eq!(back, big);
        }
    }
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
