//! Property tests of the convolution and pooling math (`protocol/src/conv.rs`,
//! `protocol/src/pool.rs`) against a naive `f64` implementation on an explicitly padded
//! input, and the exact identities between the forward pass, its transpose and the
//! gradients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

use gelunet_protocol::conv::{
    conv2d, conv2d_transpose, kernel_gradients, ConvGeometry, GeometryError, Padding, MAX_KERNEL,
    MAX_TENSOR_LEN,
};
use gelunet_protocol::messages::ErrorCode;
use gelunet_protocol::pool::MeanPool2;
use gelunet_protocol::{Error, MAX_WIDTH};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// The raw parameters of a geometry.
#[derive(Clone, Copy, Debug)]
struct Params {
    c: usize,
    h: usize,
    w: usize,
    f: usize,
    k: usize,
    s: usize,
    pb: usize,
    pa: usize,
}

impl Params {
    fn geometry(&self) -> Result<ConvGeometry, GeometryError> {
        ConvGeometry::new(
            self.c,
            self.h,
            self.w,
            self.f,
            self.k,
            self.s,
            Padding {
                before: self.pb,
                after: self.pa,
            },
        )
    }
    fn padded(&self) -> (usize, usize) {
        (self.h + self.pb + self.pa, self.w + self.pb + self.pa)
    }
    fn out(&self) -> (usize, usize) {
        let (ph, pw) = self.padded();
        ((ph - self.k) / self.s + 1, (pw - self.k) / self.s + 1)
    }
    /// Whether the geometry is computable, decided independently of the crate.
    fn valid(&self) -> bool {
        let (ph, pw) = self.padded();
        self.pb.max(self.pa) < self.k && self.k <= ph && self.k <= pw
    }
}

fn params() -> impl Strategy<Value = Params> {
    (
        1usize..4,
        1usize..10,
        1usize..10,
        1usize..4,
        1usize..6,
        1usize..4,
        0usize..3,
        0usize..3,
    )
        .prop_map(|(c, h, w, f, k, s, pb, pa)| Params {
            c,
            h,
            w,
            f,
            k,
            s,
            pb,
            pa,
        })
}

fn random(rng: &mut ChaCha20Rng, n: usize, bound: i128) -> Vec<i128> {
    (0..n).map(|_| rng.gen_range(-bound..=bound)).collect()
}

/// An input, kernel, bias and output error of `g` (in that order), entries uniform in
/// `−1000..=1000`, drawn from ChaCha20 seeded with `seed`.
fn small_operands(g: &ConvGeometry, seed: u64) -> [Vec<i128>; 4] {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    [g.input_len(), g.kernel_len(), g.filters(), g.output_len()].map(|n| random(&mut rng, n, 1000))
}

/// The input at padded coordinates `(ch, py, px)`, 0 on the padding.
fn padded_at(p: &Params, a: &[f64], ch: usize, py: usize, px: usize) -> f64 {
    let (y, x) = (py as isize - p.pb as isize, px as isize - p.pb as isize);
    if y < 0 || x < 0 || y >= p.h as isize || x >= p.w as isize {
        0.0
    } else {
        a[(ch * p.h + y as usize) * p.w + x as usize]
    }
}

fn kidx(p: &Params, f: usize, ch: usize, ky: usize, kx: usize) -> usize {
    ((f * p.c + ch) * p.k + ky) * p.k + kx
}

/// Naive forward convolution in `f64`, six nested loops over the padded input.
fn naive_conv(p: &Params, a: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let (oh, ow) = p.out();
    let mut z = vec![0.0; p.f * oh * ow];
    for f in 0..p.f {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = b[f];
                for ch in 0..p.c {
                    for ky in 0..p.k {
                        for kx in 0..p.k {
                            acc += w[kidx(p, f, ch, ky, kx)]
                                * padded_at(p, a, ch, oy * p.s + ky, ox * p.s + kx);
                        }
                    }
                }
                z[(f * oh + oy) * ow + ox] = acc;
            }
        }
    }
    z
}

/// Naive transposed convolution in `f64`: scatter into a padded buffer, then crop.
fn naive_transpose(p: &Params, d: &[f64], w: &[f64]) -> Vec<f64> {
    let (oh, ow) = p.out();
    let (ph, pw) = p.padded();
    let mut buf = vec![0.0; p.c * ph * pw];
    for f in 0..p.f {
        for oy in 0..oh {
            for ox in 0..ow {
                let dv = d[(f * oh + oy) * ow + ox];
                for ch in 0..p.c {
                    for ky in 0..p.k {
                        for kx in 0..p.k {
                            let (py, px) = (oy * p.s + ky, ox * p.s + kx);
                            buf[(ch * ph + py) * pw + px] += dv * w[kidx(p, f, ch, ky, kx)];
                        }
                    }
                }
            }
        }
    }
    let mut q = vec![0.0; p.c * p.h * p.w];
    for ch in 0..p.c {
        for y in 0..p.h {
            for x in 0..p.w {
                q[(ch * p.h + y) * p.w + x] = buf[(ch * ph + y + p.pb) * pw + x + p.pb];
            }
        }
    }
    q
}

/// Naive kernel gradient in `f64`.
fn naive_kernel_gradient(p: &Params, d: &[f64], a: &[f64]) -> Vec<f64> {
    let (oh, ow) = p.out();
    let mut g = vec![0.0; p.f * p.c * p.k * p.k];
    for f in 0..p.f {
        for ch in 0..p.c {
            for ky in 0..p.k {
                for kx in 0..p.k {
                    let mut acc = 0.0;
                    for oy in 0..oh {
                        for ox in 0..ow {
                            acc += d[(f * oh + oy) * ow + ox]
                                * padded_at(p, a, ch, oy * p.s + ky, ox * p.s + kx);
                        }
                    }
                    g[kidx(p, f, ch, ky, kx)] = acc;
                }
            }
        }
    }
    g
}

fn to_f64(v: &[i128]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn dot(x: &[i128], y: &[i128]) -> i128 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn geometry_is_accepted_exactly_when_it_fits(p in params()) {
        match p.geometry() {
            Ok(g) => {
                prop_assert!(p.valid(), "{p:?} accepted");
                let (oh, ow) = p.out();
                prop_assert_eq!((g.output().height, g.output().width), (oh, ow));
                prop_assert_eq!(g.output_len(), p.f * oh * ow);
                prop_assert_eq!(g.num_parameters(), p.f * p.c * p.k * p.k + p.f);
                // Every (output, kernel) pair at most once, every index in range.
                let mut seen = std::collections::HashSet::new();
                for t in g.taps() {
                    prop_assert!(t.input < g.input_len() && t.kernel < g.kernel_len());
                    prop_assert!(seen.insert((t.output, t.kernel)));
                }
            }
            Err(e) => {
                prop_assert!(!p.valid(), "{p:?} refused: {e}");
                prop_assert_eq!(Error::from(e).code(), ErrorCode::Config);
            }
        }
    }

    #[test]
    fn conv_and_its_transpose_match_the_naive_implementation(p in params(), seed in any::<u64>()) {
        prop_assume!(p.valid());
        let g = p.geometry().unwrap();
        let [a, w, b, d] = small_operands(&g, seed);
        // Small integers: the f64 sums are exact.
        let z = conv2d(&g, &a, &w, &b).unwrap();
        prop_assert_eq!(to_f64(&z), naive_conv(&p, &to_f64(&a), &to_f64(&w), &to_f64(&b)));
        let q = conv2d_transpose(&g, &d, &w).unwrap();
        prop_assert_eq!(to_f64(&q), naive_transpose(&p, &to_f64(&d), &to_f64(&w)));
        let mut dw = vec![0; g.kernel_len()];
        let mut db = vec![0; g.filters()];
        kernel_gradients(&g, &d, &a, &mut dw, &mut db).unwrap();
        prop_assert_eq!(to_f64(&dw), naive_kernel_gradient(&p, &to_f64(&d), &to_f64(&a)));
        let per_filter = g.output().height * g.output().width;
        for (f, &v) in db.iter().enumerate() {
            prop_assert_eq!(v, d[f * per_filter..(f + 1) * per_filter].iter().sum::<i128>());
        }
    }

    #[test]
    fn adjoint_and_gradient_identities_hold_exactly(p in params(), seed in any::<u64>()) {
        prop_assume!(p.valid());
        let g = p.geometry().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        // Fixed-point sized values (about 2^30 each), beyond f64's exact range in sums.
        let big = 1i128 << 30;
        let a = random(&mut rng, g.input_len(), big);
        let w = random(&mut rng, g.kernel_len(), big);
        let v = random(&mut rng, g.kernel_len(), big);
        let d = random(&mut rng, g.output_len(), big);
        let zero_b = vec![0; g.filters()];
        // ⟨conv(a, W), δ⟩ = ⟨a, convᵀ(δ, W)⟩.
        let z = conv2d(&g, &a, &w, &zero_b).unwrap();
        let q = conv2d_transpose(&g, &d, &w).unwrap();
        prop_assert_eq!(dot(&z, &d), dot(&a, &q));
        // ΔW is the gradient of ⟨conv(a, W), δ⟩ in W: ⟨ΔW, V⟩ = ⟨conv(a, V), δ⟩ for all V,
        // and Δb of ⟨conv(a, 0) + b, δ⟩ in b.
        let mut dw = vec![0; g.kernel_len()];
        let mut db = vec![0; g.filters()];
        kernel_gradients(&g, &d, &a, &mut dw, &mut db).unwrap();
        let zv = conv2d(&g, &a, &v, &zero_b).unwrap();
        prop_assert_eq!(dot(&dw, &v), dot(&zv, &d));
        let c = random(&mut rng, g.filters(), big);
        let zc = conv2d(&g, &vec![0; g.input_len()], &v, &c).unwrap();
        prop_assert_eq!(dot(&db, &c), dot(&zc, &d));
        // A second sample accumulates: the batch sum is the sum of the samples' gradients.
        let mut dw2 = dw.clone();
        let mut db2 = db.clone();
        kernel_gradients(&g, &d, &a, &mut dw2, &mut db2).unwrap();
        prop_assert_eq!(dw2, dw.iter().map(|x| 2 * x).collect::<Vec<_>>());
        prop_assert_eq!(db2, db.iter().map(|x| 2 * x).collect::<Vec<_>>());
    }

    #[test]
    fn the_fast_and_the_checked_integer_paths_agree(p in params(), seed in any::<u64>()) {
        // Factors below 2^63 take one 64×64-bit product per tap; a factor above it (the
        // input scaled by 2^64) takes the checked i128 path. Both are exact.
        prop_assume!(p.valid());
        let g = p.geometry().unwrap();
        let [a, w, b, d] = small_operands(&g, seed);
        let up = |v: &[i128]| v.iter().map(|x| x << 64).collect::<Vec<_>>();
        prop_assert_eq!(
            conv2d(&g, &up(&a), &w, &up(&b)).unwrap(),
            up(&conv2d(&g, &a, &w, &b).unwrap())
        );
        prop_assert_eq!(
            conv2d_transpose(&g, &up(&d), &w).unwrap(),
            up(&conv2d_transpose(&g, &d, &w).unwrap())
        );
        let (mut dw, mut db) = (vec![0; g.kernel_len()], vec![0; g.filters()]);
        kernel_gradients(&g, &d, &a, &mut dw, &mut db).unwrap();
        let (mut dw_up, mut db_up) = (vec![0; g.kernel_len()], vec![0; g.filters()]);
        kernel_gradients(&g, &up(&d), &a, &mut dw_up, &mut db_up).unwrap();
        prop_assert_eq!(dw_up, up(&dw));
        prop_assert_eq!(db_up, up(&db));
    }

    #[test]
    fn pooling_matches_the_naive_sum_and_its_backward_is_its_adjoint(
        c in 1usize..4, h2 in 1usize..6, w2 in 1usize..6, seed in any::<u64>()
    ) {
        let (h, w) = (2 * h2, 2 * w2);
        let pool = MeanPool2::new(c, h, w).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let x = random(&mut rng, c * h * w, 1 << 40);
        let d = random(&mut rng, c * h2 * w2, 1 << 40);
        let s = pool.sum(&x).unwrap();
        for ch in 0..c {
            for y in 0..h2 {
                for xx in 0..w2 {
                    let at = |dy: usize, dx: usize| x[(ch * h + 2 * y + dy) * w + 2 * xx + dx];
                    let expect = at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1);
                    prop_assert_eq!(s[(ch * h2 + y) * w2 + xx], expect);
                }
            }
        }
        // ⟨sum(x), δ⟩ = ⟨x, backward(δ)⟩: backward is the exact transpose of the sum.
        prop_assert_eq!(dot(&s, &d), dot(&x, &pool.backward(&d).unwrap()));
    }
}

fn geometry_error(r: Result<ConvGeometry, GeometryError>) -> GeometryError {
    r.expect_err("a geometry error")
}

#[test]
fn every_bad_geometry_has_its_typed_error() {
    let none = Padding::NONE;
    let new = |c, h, w, f, k, s, p| geometry_error(ConvGeometry::new(c, h, w, f, k, s, p));
    for (i, what) in ["channels", "height", "width", "filters", "kernel", "stride"]
        .into_iter()
        .enumerate()
    {
        let mut v = [1usize, 5, 5, 2, 3, 1];
        v[i] = 0;
        assert_eq!(
            new(v[0], v[1], v[2], v[3], v[4], v[5], none),
            GeometryError::Zero { what }
        );
    }
    assert_eq!(
        new(1, 4, 9, 1, 5, 1, none),
        GeometryError::KernelTooLarge {
            kernel: 5,
            height: 4,
            width: 9
        }
    );
    // Padding can make a kernel fit…
    assert!(ConvGeometry::new(1, 4, 4, 1, 5, 1, Padding::same(1)).is_ok());
    // …but not be as large as the kernel.
    assert_eq!(
        new(
            1,
            8,
            8,
            1,
            3,
            1,
            Padding {
                before: 0,
                after: 3
            }
        ),
        GeometryError::PaddingTooLarge {
            padding: 3,
            kernel: 3
        }
    );
    // Each size above its limit is refused, naming what is too large.
    for ([c, h, w, f, k, s], what) in [
        ([1, 100, 100, 1, MAX_KERNEL + 1, 1], "kernel"),
        ([MAX_TENSOR_LEN, 2, 1, 1, 1, 1], "input length"),
        ([3000, 8, 8, 1, 5, 1], "fan-in c·k·k"),
        ([1, 8, 8, 3000, 5, 1], "transposed fan-in f·k·k"),
        ([1, 8, 8, MAX_WIDTH + 1, 1, 1], "filters"),
        ([1, 300, 300, 1, 1, 1], "output positions oh·ow"),
        ([1, 256, 256, 257, 1, 1], "output length"),
    ] {
        let e = new(c, h, w, f, k, s, none);
        assert!(
            matches!(e, GeometryError::TooLarge { what: got, .. } if got == what),
            "{what}: {e:?}"
        );
    }
    // Sizes whose product overflows usize are refused, not wrapped.
    assert!(matches!(
        new(usize::MAX, usize::MAX, 3, 1, 1, 1, none),
        GeometryError::TooLarge {
            what: "input length",
            value: usize::MAX,
            ..
        }
    ));
    // The error texts name the values.
    let e = Error::from(ConvGeometry::new(1, 4, 9, 1, 5, 1, none).unwrap_err());
    assert_eq!(e.code(), ErrorCode::Config);
    assert_eq!(
        e.to_string(),
        "invalid layer geometry: kernel 5×5 is larger than the padded input 4×9"
    );
}

#[test]
fn bad_pooling_geometries_have_their_typed_errors() {
    let err = |r: Result<MeanPool2, GeometryError>| r.expect_err("a geometry error");
    assert_eq!(
        err(MeanPool2::new(5, 13, 13)),
        GeometryError::OddPoolInput {
            height: 13,
            width: 13
        }
    );
    assert_eq!(
        err(MeanPool2::new(1, 4, 3)),
        GeometryError::OddPoolInput {
            height: 4,
            width: 3
        }
    );
    assert_eq!(
        err(MeanPool2::new(0, 4, 4)),
        GeometryError::Zero { what: "channels" }
    );
    assert_eq!(
        err(MeanPool2::new(1, 0, 4)),
        GeometryError::Zero { what: "height" }
    );
    assert_eq!(
        err(MeanPool2::new(1, 4, 0)),
        GeometryError::Zero { what: "width" }
    );
    assert!(matches!(
        err(MeanPool2::new(usize::MAX, 2, 2)),
        GeometryError::TooLarge { .. }
    ));
    let p = MeanPool2::new(2, 2, 2).unwrap();
    assert_eq!(p.window(1), Some([4, 5, 6, 7]));
    assert_eq!(p.window(2), None);
    assert!(matches!(p.sum(&[0; 7]), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(
        p.backward(&[0; 3]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert_eq!(
        p.sum(&[i128::MAX, 1, 0, 0, 0, 0, 0, 0]),
        Err(Error::Overflow { op: "pool sum" })
    );
}

#[test]
fn wrong_lengths_and_overflow_are_typed_errors_and_change_nothing() {
    let g = ConvGeometry::new(2, 4, 4, 3, 3, 1, Padding::NONE).unwrap();
    let (a, w, b, d) = (
        vec![1; g.input_len()],
        vec![1; g.kernel_len()],
        vec![0; g.filters()],
        vec![1; g.output_len()],
    );
    let shape = |r: Result<Vec<i128>, Error>| matches!(r, Err(Error::ShapeMismatch { .. }));
    assert!(shape(conv2d(&g, &a[1..], &w, &b)));
    assert!(shape(conv2d(&g, &a, &w[1..], &b)));
    assert!(shape(conv2d(&g, &a, &w, &b[1..])));
    assert!(shape(conv2d_transpose(&g, &d[1..], &w)));
    assert!(shape(conv2d_transpose(&g, &d, &w[1..])));
    let (mut dw, mut db) = (vec![0; g.kernel_len()], vec![0; g.filters()]);
    for r in [
        kernel_gradients(&g, &d[1..], &a, &mut dw, &mut db),
        kernel_gradients(&g, &d, &a[1..], &mut dw, &mut db),
        kernel_gradients(&g, &d, &a, &mut dw[1..], &mut db),
        kernel_gradients(&g, &d, &a, &mut vec![0; g.kernel_len()], &mut db[1..]),
    ] {
        assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    }
    // Overflow is an error, never a wrap.
    let huge = vec![i128::MAX / 2; g.input_len()];
    assert_eq!(
        conv2d(&g, &huge, &w, &b),
        Err(Error::Overflow {
            op: "conv sum of w * a"
        })
    );
    assert_eq!(
        conv2d_transpose(&g, &vec![i128::MAX / 2; g.output_len()], &w),
        Err(Error::Overflow {
            op: "conv sum of delta * w"
        })
    );
    // All or nothing: a gradient overflow leaves the accumulators as they were.
    let mut dw = vec![7; g.kernel_len()];
    let mut db = vec![i128::MAX; g.filters()];
    assert_eq!(
        kernel_gradients(&g, &d, &a, &mut dw, &mut db),
        Err(Error::Overflow {
            op: "conv sum of delta"
        })
    );
    assert_eq!(dw, vec![7; g.kernel_len()]);
    assert_eq!(db, vec![i128::MAX; g.filters()]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The generic walks serve modular arithmetic as the client's unmasking will use it
    /// (docs/DESIGN.md "Convolutional layers"): with masked kernels `W~ = W − R (mod N)`
    /// and biases `b~ = b − R_b`, `conv(a, W~) + b~ + conv(a, R) + R_b ≡ conv(a, W) + b`,
    /// and `convᵀ(δ, W~) + convᵀ(δ, R) ≡ convᵀ(δ, W)`, exactly, centered mod `N`.
    #[test]
    fn the_generic_walks_unmask_modulo_n(p in params(), seed in any::<u64>()) {
        use gelunet_protocol::mask::{centered, mod_n};
        use num_bigint::{BigInt, BigUint, RandBigInt};
        prop_assume!(p.valid());
        let g = p.geometry().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let n: BigUint = rng.gen_biguint(256) | (BigUint::from(1u8) << 255u32) | BigUint::from(1u8);
        let a = random(&mut rng, g.input_len(), 1 << 40);
        let w = random(&mut rng, g.kernel_len(), 1 << 40);
        let b = random(&mut rng, g.filters(), 1 << 60);
        let d = random(&mut rng, g.output_len(), 1 << 40);
        let r: Vec<BigUint> = (0..g.kernel_len()).map(|_| rng.gen_biguint_below(&n)).collect();
        let rb: Vec<BigUint> = (0..g.filters()).map(|_| rng.gen_biguint_below(&n)).collect();
        let masked: Vec<BigUint> = w
            .iter()
            .zip(&r)
            .map(|(&w, r)| mod_n(&(BigInt::from(w) - BigInt::from(r.clone())), &n))
            .collect();
        let masked_b: Vec<BigUint> = b
            .iter()
            .zip(&rb)
            .map(|(&b, r)| mod_n(&(BigInt::from(b) - BigInt::from(r.clone())), &n))
            .collect();
        let a_n: Vec<BigUint> = a.iter().map(|&v| mod_n(&BigInt::from(v), &n)).collect();
        let d_n: Vec<BigUint> = d.iter().map(|&v| mod_n(&BigInt::from(v), &n)).collect();
        let mac = |acc: &mut BigUint, x: &BigUint, y: &BigUint| {
            *acc = (&*acc + x * y) % &n;
            Ok(())
        };
        // The server's side (on ciphertexts it would be Π [a]^{W~}·(1 + b~·N)).
        let z_masked = g.forward_with(&a_n, &masked, |f| Ok(masked_b[f].clone()), mac).unwrap();
        // The client's side: the same walk over its own activations and the ledger's masks.
        let z_mask = g.forward_with(&a_n, &r, |f| Ok(rb[f].clone()), mac).unwrap();
        let z: Vec<BigInt> = z_masked
            .iter()
            .zip(&z_mask)
            .map(|(x, y)| centered(&((x + y) % &n), &n))
            .collect();
        let expected = conv2d(&g, &a, &w, &b).unwrap();
        prop_assert_eq!(z, expected.into_iter().map(BigInt::from).collect::<Vec<_>>());
        let q_masked = g.transpose_with(&d_n, &masked, BigUint::default, mac).unwrap();
        let q_mask = g.transpose_with(&d_n, &r, BigUint::default, mac).unwrap();
        let q: Vec<BigInt> = q_masked
            .iter()
            .zip(&q_mask)
            .map(|(x, y)| centered(&((x + y) % &n), &n))
            .collect();
        let expected = conv2d_transpose(&g, &d, &w).unwrap();
        prop_assert_eq!(q, expected.into_iter().map(BigInt::from).collect::<Vec<_>>());
    }
}
