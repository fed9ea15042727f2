//! Synthetic data for tests, examples and attack demos.

/// A small synthetic classification problem: `classes` Gaussian blobs in `features`
/// dimensions (centers uniform on `[−1.5, 1.5]`, standard deviation `spread`), labels
/// balanced, from `ChaCha20Rng::seed_from_u64(seed)`. Returns `(samples × features,
/// labels)`.
pub fn synthetic_blobs(
    samples: usize,
    features: usize,
    classes: usize,
    spread: f64,
    seed: u64,
) -> (ndarray::Array2<f64>, Vec<usize>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let centers: Vec<Vec<f64>> = (0..classes)
        .map(|_| (0..features).map(|_| rng.gen_range(-1.5..1.5)).collect())
        .collect();
    let mut x = ndarray::Array2::zeros((samples, features));
    let mut labels = Vec::with_capacity(samples);
    for s in 0..samples {
        let c = s % classes;
        labels.push(c);
        for f in 0..features {
            // Box–Muller.
            let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
            let u2: f64 = rng.gen_range(0.0..1.0);
            let n = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            x[[s, f]] = centers[c][f] + spread * n;
        }
    }
    (x, labels)
}
