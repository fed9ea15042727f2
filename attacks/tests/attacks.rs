//! Both directions of both attacks on small networks with 512-bit test keys: each attack
//! succeeds when its defence is off and fails when it is on, and the known leak through
//! Alg. 5 (the summed gradient of a session) is pinned down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;

use gelunet_attacks::data::{synthetic, AttackData};
use gelunet_attacks::drive::{generate_keys, SessionSweep};
use gelunet_attacks::extraction::{self, ExtractionSetup};
use gelunet_attacks::inversion::{self, Case, InversionSetup};
use gelunet_paillier::PrivateKey;
use gelunet_protocol::v2::Protocol;

fn keys() -> &'static [PrivateKey] {
    static KEYS: OnceLock<Vec<PrivateKey>> = OnceLock::new();
    KEYS.get_or_init(|| generate_keys(512, 3, 42, true).unwrap())
}

fn inversion_setup(data: AttackData, cases: Vec<Case>) -> InversionSetup {
    InversionSetup {
        run: common::attack_run(data, 6, 9, Protocol::Paper),
        sessions: 3,
        cases,
    }
}

#[test]
fn small_keys_need_permission() {
    assert!(generate_keys(512, 1, 1, false).is_err());
}

#[test]
fn gradient_inversion_succeeds_without_mask_and_fails_with_it() {
    let cases = vec![
        Case {
            batch: 1,
            iterations: 3,
            masked: false,
        },
        Case {
            batch: 1,
            iterations: 3,
            masked: true,
        },
    ];
    let r = inversion::run_experiment(&inversion_setup(synthetic(40, 32, 3, 5), cases), keys())
        .unwrap();
    let (off, on) = (&r.cases[0], &r.cases[1]);
    assert!(!off.insecure_policy && !on.insecure_policy);
    // Without masking every per-iteration update gives its input back.
    assert_eq!(off.per_iteration_attacks.len(), 6);
    for a in &off.per_iteration_attacks {
        assert!(a.ratio.mse < 1e-6, "{:?}", a.ratio);
        assert!(a.ratio.corr > 0.99, "{:?}", a.ratio);
        assert_eq!(a.span_dim, 1);
    }
    // With masking, the same attacker on D = η·Δw + r gets noise: no correlation, and an
    // error worse than guessing the data mean.
    let masked = on.per_iteration.as_ref().unwrap();
    assert_eq!(masked.updates, 6);
    assert!(masked.ratio.corr.abs() < 0.3, "{:?}", masked.ratio);
    assert!(
        masked.ratio.mse > r.mean_guess_mse,
        "{masked:?} vs {}",
        r.mean_guess_mse
    );
    for a in &on.per_iteration_attacks {
        assert!(a.ratio.corr.abs() < 0.6, "{:?}", a.ratio);
    }
    // The per-session sum of Alg. 5 is the same with and without masking.
    assert_eq!(
        format!("{:?}", off.final_update),
        format!("{:?}", on.final_update)
    );
}

#[test]
fn final_update_leaks_the_session_sum_even_with_masking() {
    // Box-bounded sparse data like images (features in [0, 1], a random third of them
    // blank in each sample), range public.
    let data = common::boxed_data();
    let cases = vec![
        Case {
            batch: 1,
            iterations: 1,
            masked: true,
        },
        Case {
            batch: 1,
            iterations: 2,
            masked: true,
        },
    ];
    let r = inversion::run_experiment(&inversion_setup(data, cases), keys()).unwrap();
    // One sample per session: w^I − w^F gives it exactly (the server must refuse this
    // unless the policy is insecure; the run says so).
    let one = &r.cases[0];
    assert!(one.insecure_policy);
    assert!(one.per_iteration.is_none());
    for a in &one.final_attacks {
        assert!(a.ratio.mse < 1e-6 && a.ratio.corr > 0.99, "{:?}", a.ratio);
    }
    // Two samples: the update spans exactly the two inputs, and the box unmixes them: in
    // every session at least one input comes out exactly (the other one too when its
    // gradient is not drowned in the 2^-16 rounding of Δw).
    let two = &r.cases[1];
    let mut corrs = Vec::new();
    for a in &two.final_attacks {
        assert_eq!(a.span_dim, 2);
        assert!(a.span.mse < 1e-6, "{:?}", a.span);
        assert!(a.unmix.is_some());
        let s: Vec<_> = a
            .pairs
            .iter()
            .map(|(t, e)| inversion::score(e.view(), t.view()))
            .collect();
        assert_eq!(s.len(), 2);
        let best = s.iter().map(|x| x.corr).fold(f64::MIN, f64::max);
        assert!(best > 0.999, "{s:?}");
        corrs.extend(s.iter().map(|x| x.corr));
    }
    let mean = corrs.iter().sum::<f64>() / corrs.len() as f64;
    assert!(mean > 0.95, "{corrs:?}");
    // Its per-iteration update (masked) still gives nothing.
    let per = two.per_iteration.as_ref().unwrap();
    assert!(per.ratio.corr.abs() < 0.6, "{per:?}");
}

#[test]
fn under_v2_neither_the_updates_nor_the_stored_differences_leak() {
    // The data where the paper's Alg. 5 gives both inputs of a 2-sample session away.
    let data = common::boxed_data();
    let case = Case {
        batch: 1,
        iterations: 2,
        masked: true,
    };
    let mut setup = inversion_setup(data, vec![case]);
    setup.run.protocol = Protocol::V2;
    let r = inversion::run_experiment(&setup, keys()).unwrap();
    assert_eq!(r.run.protocol, "v2");
    let c = &r.cases[0];
    // Every D (the plaintext update and the rollover) is noise.
    let per = c.per_iteration.as_ref().unwrap();
    assert_eq!(per.updates, 6);
    assert!(per.ratio.corr.abs() < 0.3, "{per:?}");
    assert!(per.ratio.mse > r.mean_guess_mse, "{per:?}");
    // W~_v − W~_{v+1} spans everything: no two-dimensional span to unmix.
    for a in &c.final_attacks {
        assert!(a.span_dim > 2, "{a:?}");
        assert!(a.ratio.corr.abs() < 0.6, "{:?}", a.ratio);
    }
    assert!(c.final_update.ratio.mse > r.mean_guess_mse);
    // v2 has no unmasked mode.
    let mut bad = setup.clone();
    bad.cases = vec![Case {
        masked: false,
        ..case
    }];
    assert!(inversion::run_experiment(&bad, keys()).is_err());
}

#[test]
fn model_extraction_succeeds_beyond_the_bound_and_fails_at_it() {
    model_extraction_outcome(Protocol::Paper);
}

#[test]
fn model_extraction_is_the_same_under_v2() {
    model_extraction_outcome(Protocol::V2);
}

fn model_extraction_outcome(protocol: Protocol) {
    // Layer 1 has fan-in 6 = the smallest fan-in: the bound is 6 samples per session,
    // and a row has 6 + 2 unknowns (weights, bias, η).
    let setup = ExtractionSetup {
        run: common::attack_run(synthetic(40, 6, 3, 7), 8, 11, protocol),
        sweep: SessionSweep {
            batch: 1,
            sizes: vec![3, 6, 9],
            warmup: 1,
            trials: 2,
        },
    };
    let r = extraction::run_experiment(&setup, keys()).unwrap();
    assert_eq!(r.bound, 6);
    let at = |s: usize| r.points.iter().find(|p| p.samples == s).unwrap();
    for s in [3, 6] {
        let p = at(s);
        assert!(!p.exceeds_bound);
        // Underdetermined: the minimum-norm solution is far off.
        assert!(p.median.rank < p.unknowns);
        for sc in &p.sessions {
            assert!(sc.rel_error_w > 0.1, "S = {s}: {sc:?}");
        }
    }
    let p = at(9);
    assert!(p.exceeds_bound);
    for sc in &p.sessions {
        assert!(sc.rel_error_w < 1e-3, "{sc:?}");
        assert!((sc.eta_hat - r.eta).abs() < 1e-3 * r.eta, "{sc:?}");
    }
}
