//! Small dense linear algebra for the attacks: a one-sided Jacobi SVD (Hestenes), least
//! squares through it with column scaling (the minimum-norm solution when the system is
//! underdetermined), orthonormal bases of row spaces and projections onto them.
//!
//! The matrices are small (tens of columns), so accuracy matters more than speed: one-sided
//! Jacobi computes small singular values to high relative accuracy and never forms `AᵀA`.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Slice};

/// A thin singular value decomposition `A = U·diag(σ)·Vᵀ` of an `m × n` matrix, with the
/// singular values sorted in decreasing order (`k = n` of them; some may be 0).
#[derive(Clone, Debug)]
pub struct Svd {
    /// `m × k`, orthonormal columns (a zero column where `σ = 0`).
    pub u: Array2<f64>,
    /// The `k` singular values, decreasing.
    pub sigma: Array1<f64>,
    /// `n × k`, orthonormal columns.
    pub v: Array2<f64>,
}

impl Svd {
    /// Numerical rank: singular values above `rcond · σ_max`.
    pub fn rank(&self, rcond: f64) -> usize {
        let top = self.sigma.first().copied().unwrap_or(0.0);
        if top <= 0.0 {
            return 0;
        }
        self.sigma.iter().filter(|&&s| s > rcond * top).count()
    }
}

/// One-sided Jacobi SVD of `a` (`m × n`, any shape). Costs `O(sweeps · m · n²)`: meant for
/// a few dozen columns.
pub fn svd(a: ArrayView2<'_, f64>) -> Svd {
    let (m, n) = a.dim();
    let mut u = a.to_owned();
    let mut v = Array2::<f64>::eye(n);
    let eps = f64::EPSILON;
    for _sweep in 0..80 {
        let mut rotated = false;
        for p in 0..n {
            for q in (p + 1)..n {
                let (alpha, beta, gamma) = {
                    let cp = u.column(p);
                    let cq = u.column(q);
                    (cp.dot(&cp), cq.dot(&cq), cp.dot(&cq))
                };
                if alpha == 0.0 || beta == 0.0 || gamma.abs() <= eps * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let sn = c * t;
                rotate(&mut u, p, q, c, sn);
                rotate(&mut v, p, q, c, sn);
            }
        }
        if !rotated {
            break;
        }
    }
    let mut sigma: Vec<f64> = (0..n)
        .map(|j| u.column(j).dot(&u.column(j)).sqrt())
        .collect();
    for (j, &s) in sigma.iter().enumerate() {
        if s > 0.0 {
            u.column_mut(j).mapv_inplace(|x| x / s);
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| sigma[j].total_cmp(&sigma[i]));
    let u = u.select(Axis(1), &order);
    let v = v.select(Axis(1), &order);
    sigma = order.iter().map(|&i| sigma[i]).collect();
    debug_assert_eq!(u.dim(), (m, n));
    Svd {
        u,
        sigma: Array1::from(sigma),
        v,
    }
}

fn rotate(a: &mut Array2<f64>, p: usize, q: usize, c: f64, s: f64) {
    for mut row in a.rows_mut() {
        let (x, y) = (row[p], row[q]);
        row[p] = c * x - s * y;
        row[q] = s * x + c * y;
    }
}

/// A least-squares solution with what it took to get it.
#[derive(Clone, Debug)]
pub struct Lstsq {
    /// The solution `x` (minimum norm in the column-scaled coordinates when `rank <
    /// unknowns`).
    pub x: Array1<f64>,
    /// Numerical rank of the column-scaled matrix.
    pub rank: usize,
    /// `‖A·x − b‖₂`.
    pub residual: f64,
}

/// Least squares `min ‖A·x − b‖₂` with every column of `A` first scaled to unit norm (zero
/// columns are left out), solved through [`svd`] with singular values below
/// `rcond · σ_max` treated as zero. For an underdetermined or rank-deficient system this is
/// the minimum-norm solution of the scaled system, mapped back.
pub fn lstsq(a: ArrayView2<'_, f64>, b: ArrayView1<'_, f64>, rcond: f64) -> Lstsq {
    let n = a.ncols();
    let norms: Vec<f64> = (0..n)
        .map(|j| a.column(j).dot(&a.column(j)).sqrt())
        .collect();
    let mut scaled = a.to_owned();
    for (j, &d) in norms.iter().enumerate() {
        if d > 0.0 {
            scaled.column_mut(j).mapv_inplace(|x| x / d);
        }
    }
    let dec = svd(scaled.view());
    let rank = dec.rank(rcond);
    let mut y = Array1::<f64>::zeros(n);
    for i in 0..rank {
        let coef = dec.u.column(i).dot(&b) / dec.sigma[i];
        y.scaled_add(coef, &dec.v.column(i));
    }
    let x = Array1::from_iter(
        y.iter()
            .zip(&norms)
            .map(|(&yi, &d)| if d > 0.0 { yi / d } else { 0.0 }),
    );
    let residual = (&a.dot(&x) - &b).mapv(|r| r * r).sum().sqrt();
    Lstsq { x, rank, residual }
}

/// An orthonormal basis (`r × n`, one basis vector per row) of the span of the rows of `m`,
/// with `r` the numerical rank at `rcond`.
pub fn row_space_basis(m: ArrayView2<'_, f64>, rcond: f64) -> Array2<f64> {
    // The left singular vectors of mᵀ (n × rows) span the row space of m.
    let dec = svd(m.t());
    let r = dec.rank(rcond);
    dec.u.slice_axis(Axis(1), Slice::from(..r)).t().to_owned()
}

/// The orthogonal projection of `x` onto the span of the rows of `basis` (orthonormal rows).
pub fn project(basis: ArrayView2<'_, f64>, x: ArrayView1<'_, f64>) -> Array1<f64> {
    let coef = basis.dot(&x);
    basis.t().dot(&coef)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use ndarray::array;

    #[test]
    fn svd_reconstructs() {
        let a = array![
            [3.0, 1.0, 2.0],
            [1.0, 4.0, 0.5],
            [0.0, 2.0, 1.0],
            [1.0, 1.0, 1.0]
        ];
        let d = svd(a.view());
        let back = d.u.dot(&Array2::from_diag(&d.sigma)).dot(&d.v.t());
        assert!((&back - &a).iter().all(|x| x.abs() < 1e-12));
        assert!(d.sigma.windows(2).into_iter().all(|w| w[0] >= w[1]));
    }

    #[test]
    fn lstsq_overdetermined_exact() {
        let a = array![[1.0, 1e-6], [2.0, 3e-6], [3.0, -1e-6], [1.0, 0.0]];
        let x = array![2.0, 5e5];
        let b = a.dot(&x);
        let sol = lstsq(a.view(), b.view(), 1e-12);
        assert_eq!(sol.rank, 2);
        assert!((sol.x[0] - 2.0).abs() < 1e-9 && (sol.x[1] - 5e5).abs() < 1e-3);
    }

    #[test]
    fn lstsq_underdetermined_min_norm() {
        let a = array![[1.0, 1.0, 0.0]];
        let b = array![2.0];
        let sol = lstsq(a.view(), b.view(), 1e-12);
        assert_eq!(sol.rank, 1);
        assert!((sol.x[0] - 1.0).abs() < 1e-12 && (sol.x[1] - 1.0).abs() < 1e-12);
        assert!(sol.x[2].abs() < 1e-12);
    }

    #[test]
    fn projection_onto_row_space() {
        let m = array![[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [2.0, 1.0, 0.0]];
        let basis = row_space_basis(m.view(), 1e-10);
        assert_eq!(basis.nrows(), 2);
        let p = project(basis.view(), array![3.0, -2.0, 7.0].view());
        assert!((p[0] - 3.0).abs() < 1e-12 && (p[1] + 2.0).abs() < 1e-12 && p[2].abs() < 1e-12);
    }
}
