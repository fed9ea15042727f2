//! Deterministic stratified train/test split and split of a training set among
//! K clients. All randomness comes from `ChaCha8Rng::seed_from_u64(seed)`, so
//! results are identical across runs and platforms for the same seed.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::dataset::Dataset;
use crate::error::{DatasetError, Result};

/// Default fraction of samples put in the test split.
pub const DEFAULT_TEST_FRACTION: f64 = 0.2;

/// Tolerance on the sum of client shares (they are then normalised to sum to 1).
pub const SHARES_SUM_TOLERANCE: f64 = 0.01;

/// Indices of each class `0..=max(labels)`, in increasing order.
fn indices_by_class(labels: &[usize]) -> Vec<Vec<usize>> {
    let n_classes = labels.iter().max().map_or(0, |m| m + 1);
    let mut by_class = vec![Vec::new(); n_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    by_class
}

/// Computes a stratified train/test split of sample indices.
///
/// For each class (in class-index order) the indices of that class are shuffled
/// with one `ChaCha8Rng` seeded by `seed`, and the first
/// `round(test_fraction × class count)` go to the test set. Both index lists
/// are then shuffled with the same RNG, so neither is ordered by class.
/// Returns `(train_indices, test_indices)`; together they hold each index in
/// `0..labels.len()` exactly once.
///
/// # Errors
/// [`DatasetError::BadOption`] (option `"test_fraction"`) unless `test_fraction`
/// is a finite number in `[0, 1]`.
pub fn stratified_split_indices(
    labels: &[usize],
    test_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..=1.0).contains(&test_fraction) {
        return Err(DatasetError::bad_option(
            "test_fraction",
            format!("{test_fraction} is not in [0, 1]"),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut train = Vec::with_capacity(labels.len());
    let mut test = Vec::new();
    for mut idx in indices_by_class(labels) {
        idx.shuffle(&mut rng);
        let n_test = ((test_fraction * idx.len() as f64).round() as usize).min(idx.len());
        let (t, r) = idx.split_at(n_test);
        test.extend_from_slice(t);
        train.extend_from_slice(r);
    }
    train.shuffle(&mut rng);
    test.shuffle(&mut rng);
    Ok((train, test))
}

/// Splits a dataset into `(train, test)` with [`stratified_split_indices`]
/// (class proportions kept up to rounding; deterministic for a given `seed`).
/// The parts are named `<name>-train` and `<name>-test`. Use
/// [`DEFAULT_TEST_FRACTION`] (0.2) for the usual 80/20 split.
///
/// # Errors
/// [`DatasetError::BadOption`] if `test_fraction` is not in `[0, 1]`.
pub fn stratified_split(ds: &Dataset, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
    let (train, test) = stratified_split_indices(&ds.labels, test_fraction, seed)?;
    Ok((ds.select(&train, "-train")?, ds.select(&test, "-test")?))
}

/// Parses a comma-separated list of client shares such as `"0.5,0.3,0.2"`
/// (the `--client-shares` flag). Values are only parsed here; they are checked
/// by [`client_split_indices`].
///
/// # Errors
/// [`DatasetError::BadOption`] (option `"client shares"`) if the list is empty or
/// an item is not a number.
pub fn parse_client_shares(s: &str) -> Result<Vec<f64>> {
    if s.trim().is_empty() {
        return Err(DatasetError::bad_option("client shares", "empty list"));
    }
    s.split(',')
        .map(|item| {
            item.trim().parse::<f64>().map_err(|_| {
                DatasetError::bad_option("client shares", format!("{item:?} is not a number"))
            })
        })
        .collect()
}

/// Number of samples per client: largest-remainder apportionment of `n` by
/// `weights` (ties go to the lower client index). The result sums to `n`.
fn apportion(n: usize, weights: &[f64]) -> Vec<usize> {
    let total: f64 = weights.iter().sum();
    let quotas: Vec<f64> = weights.iter().map(|w| w / total * n as f64).collect();
    let mut counts: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let assigned: usize = counts.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = quotas[a] - quotas[a].floor();
        let fb = quotas[b] - quotas[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &k in order.iter().cycle().take(n.saturating_sub(assigned)) {
        counts[k] += 1;
    }
    counts
}

/// Splits sample indices among `n_clients` clients, deterministically.
///
/// `shares = None` gives equal shares (sizes differ by at most one);
/// `Some(w)` gives client `k` a fraction `w[k]` of the samples (`w` must have
/// `n_clients` non-negative entries summing to 1 within
/// [`SHARES_SUM_TOLERANCE`]; they are normalised). Sizes are apportioned by the
/// largest-remainder method.
///
/// Stratification: the indices of each class are shuffled with a
/// `ChaCha8Rng` seeded by `seed` and concatenated class by class; this sequence
/// is dealt out in order, each sample going to the client (with room left)
/// that is furthest behind its target pace. With equal shares this is plain
/// round-robin, so every client gets a near-identical class balance. Each
/// client's list is finally shuffled with the same RNG. Every index in
/// `0..labels.len()` appears in exactly one client's list.
///
/// # Errors
/// [`DatasetError::BadOption`] if `n_clients` is 0, `shares` is empty, has a
/// length other than `n_clients`, has a negative or non-finite entry or does not
/// sum to ~1, or if some client would receive no sample (a share too small);
/// [`DatasetError::TooLittleData`] for fewer samples than clients.
pub fn client_split_indices(
    labels: &[usize],
    n_clients: usize,
    shares: Option<&[f64]>,
    seed: u64,
) -> Result<Vec<Vec<usize>>> {
    if n_clients == 0 {
        return Err(DatasetError::bad_option(
            "number of clients",
            "must be at least 1",
        ));
    }
    let weights: Vec<f64> = match shares {
        None => vec![1.0; n_clients],
        Some(w) => {
            let bad = |reason: String| Err(DatasetError::bad_option("client shares", reason));
            if w.is_empty() {
                return bad("empty list".to_owned());
            }
            if w.len() != n_clients {
                return bad(format!("{} shares given for {n_clients} clients", w.len()));
            }
            if let Some(x) = w.iter().find(|x| !x.is_finite() || **x < 0.0) {
                return bad(format!("share {x} is negative or not finite"));
            }
            let sum: f64 = w.iter().sum();
            if (sum - 1.0).abs() > SHARES_SUM_TOLERANCE {
                return bad(format!("shares sum to {sum}, expected 1"));
            }
            w.to_vec()
        }
    };
    let n = labels.len();
    if n < n_clients {
        return Err(DatasetError::TooLittleData {
            dataset: "the training split".to_owned(),
            reason: format!(
                "{n} samples cannot be shared among {n_clients} clients (each needs at least one)"
            ),
        });
    }
    let targets = apportion(n, &weights);
    if let Some(k) = targets.iter().position(|&t| t == 0) {
        return Err(DatasetError::bad_option(
            "client shares",
            format!(
                "client {k} would get 0 of {n} samples (share {:.4})",
                weights[k] / weights.iter().sum::<f64>()
            ),
        ));
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sequence = Vec::with_capacity(n);
    for mut idx in indices_by_class(labels) {
        idx.shuffle(&mut rng);
        sequence.extend(idx);
    }
    let mut clients: Vec<Vec<usize>> = targets.iter().map(|&t| Vec::with_capacity(t)).collect();
    let n_i = n as i128;
    for (t, &sample) in sequence.iter().enumerate() {
        // Lag of client k after t+1 deals, scaled by n: target·(t+1) − assigned·n.
        let pick = clients
            .iter()
            .zip(&targets)
            .enumerate()
            .filter(|(_, (c, &target))| c.len() < target)
            .max_by(|(ka, (ca, &ta)), (kb, (cb, &tb))| {
                let lag_a = ta as i128 * (t as i128 + 1) - ca.len() as i128 * n_i;
                let lag_b = tb as i128 * (t as i128 + 1) - cb.len() as i128 * n_i;
                lag_a.cmp(&lag_b).then(kb.cmp(ka))
            })
            .map(|(k, _)| k);
        if let Some(client) = pick.and_then(|k| clients.get_mut(k)) {
            client.push(sample);
        }
    }
    for c in &mut clients {
        c.shuffle(&mut rng);
    }
    Ok(clients)
}

/// Splits a (training) dataset among `n_clients` clients with
/// [`client_split_indices`]; client `k`'s part is named `<name>-client<k>`.
///
/// # Errors
/// As [`client_split_indices`].
pub fn split_clients(
    ds: &Dataset,
    n_clients: usize,
    shares: Option<&[f64]>,
    seed: u64,
) -> Result<Vec<Dataset>> {
    client_split_indices(&ds.labels, n_clients, shares, seed)?
        .iter()
        .enumerate()
        .map(|(k, idx)| ds.select(idx, &format!("-client{k}")))
        .collect()
}
