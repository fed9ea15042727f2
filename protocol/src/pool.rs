//! 2×2 mean pooling, stride 2, as an exact sum (paper §4 end: "max pooling can be
//! adapted by mean pooling, thus handled by the server"; docs/DESIGN.md "Convolutional
//! layers").
//!
//! The server adds the four values of each window (on ciphertexts `[Σ] = Π [z]`, no
//! exponentiation). The `¼` is never applied: the sum of four values at `2^f` *is* their
//! mean at `2^(f+2)`, so pooling moves a tensor to the next scale but two
//! ([`POOL_SCALE_BITS`]) and stays exact. Backward, `∂mean/∂x = ¼`: an error `δ` of the
//! pooled mean at `2^fd` is, copied to each of the window's four inputs, their error at
//! `2^(fd+2)`. The server pools ciphertexts through [`crate::linear_layer`].
//!
//! Layout as [`crate::conv`]: input `c × h × w`, output `c × h/2 × w/2`, flat,
//! channel-major, row-major.
//!
//! ```
//! use gelunet_protocol::pool::MeanPool2;
//!
//! let p = MeanPool2::new(1, 2, 4)?;
//! assert_eq!(p.sum(&[1, 2, 3, 4, 5, 6, 7, 8])?, vec![1 + 2 + 5 + 6, 3 + 4 + 7 + 8]);
//! assert_eq!(p.backward(&[10, 20])?, vec![10, 10, 20, 20, 10, 10, 20, 20]);
//!
//! // 13×13 (Conv-1's feature maps) cannot be pooled 2×2.
//! assert!(MeanPool2::new(5, 13, 13).is_err());
//! # Ok::<(), gelunet_protocol::Error>(())
//! ```

use crate::conv::{check_len, nonzero, GeometryError, Shape, MAX_TENSOR_LEN};
use crate::{Error, Result};

/// How many bits of scale 2×2 pooling adds: `log2 4 = 2`.
pub const POOL_SCALE_BITS: u32 = 2;

/// A validated 2×2, stride-2 pooling of a `c × h × w` input with `h`, `w` even.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MeanPool2 {
    input: Shape,
}

impl MeanPool2 {
    /// Checks and builds a pooling geometry.
    ///
    /// # Errors
    /// [`GeometryError::Zero`] for a zero size,
    /// [`GeometryError::OddPoolInput`] for an odd height or width,
    /// [`GeometryError::TooLarge`] for more than [`MAX_TENSOR_LEN`] input values.
    pub fn new(channels: usize, height: usize, width: usize) -> Result<Self, GeometryError> {
        nonzero(&[("channels", channels), ("height", height), ("width", width)])?;
        let input = Shape {
            channels,
            height,
            width,
        };
        if input.len() > MAX_TENSOR_LEN {
            return Err(GeometryError::TooLarge {
                what: "input length",
                value: input.len(),
                max: MAX_TENSOR_LEN,
            });
        }
        if !height.is_multiple_of(2) || !width.is_multiple_of(2) {
            return Err(GeometryError::OddPoolInput { height, width });
        }
        Ok(Self { input })
    }

    /// The input shape `c × h × w`.
    pub fn input(&self) -> Shape {
        self.input
    }

    /// The output shape `c × h/2 × w/2`.
    pub fn output(&self) -> Shape {
        Shape {
            channels: self.input.channels,
            height: self.input.height / 2,
            width: self.input.width / 2,
        }
    }

    /// The four flat input indices of output `o` (top-left, top-right, bottom-left,
    /// bottom-right); `None` for `o ≥ output().len()`.
    pub fn window(&self, o: usize) -> Option<[usize; 4]> {
        let out = self.output();
        if o >= out.len() {
            return None;
        }
        let per_map = out.height * out.width;
        let (ch, p) = (o / per_map, o % per_map);
        let (y, x) = (2 * (p / out.width), 2 * (p % out.width));
        let w = self.input.width;
        let top = (ch * self.input.height + y) * w + x;
        Some([top, top + 1, top + w, top + w + 1])
    }

    /// The pooled sums over any value type: output `o` is `start(x[i0])` then
    /// `add(acc, x[i])` for the other three inputs of [`MeanPool2::window`]`(o)`, in
    /// order (ciphertexts: `acc ← acc · [x]`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` is not `c·h·w` long; the errors of `add`.
    pub fn sum_with<T, S>(
        &self,
        x: &[T],
        mut start: impl FnMut(&T) -> S,
        mut add: impl FnMut(&mut S, &T) -> Result<()>,
    ) -> Result<Vec<S>> {
        check_len("pool input", self.input.len(), x.len())?;
        let mut out = Vec::with_capacity(self.output().len());
        for o in 0..self.output().len() {
            // o < output().len(): the window exists.
            let Some([i0, rest @ ..]) = self.window(o) else {
                break;
            };
            let mut acc = start(&x[i0]);
            for i in rest {
                add(&mut acc, &x[i])?;
            }
            out.push(acc);
        }
        Ok(out)
    }

    /// The pooled sums in exact integers: values at `2^f` give their 2×2 means at
    /// `2^(f + POOL_SCALE_BITS)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`]; [`Error::Overflow`].
    pub fn sum(&self, x: &[i128]) -> Result<Vec<i128>> {
        self.sum_with(
            x,
            |&v| v,
            |acc, &v| {
                *acc = acc.checked_add(v).ok_or_else(Error::overflow("pool sum"))?;
                Ok(())
            },
        )
    }

    /// Backward: each input gets the error of its window's output, copied (the `¼` is
    /// the scale's two extra bits, module docs). `delta` is `c·(h/2)·(w/2)` long; the
    /// result `c·h·w`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a `delta` of the wrong length.
    pub fn backward<T: Clone>(&self, delta: &[T]) -> Result<Vec<T>> {
        let out = self.output();
        check_len("pool error", out.len(), delta.len())?;
        let w = self.input.width;
        let per_in = self.input.height * w;
        let per_out = out.height * out.width;
        let mut r = Vec::with_capacity(self.input.len());
        for i in 0..self.input.len() {
            let (ch, p) = (i / per_in, i % per_in);
            let (y, x) = (p / w, p % w);
            r.push(delta[ch * per_out + (y / 2) * out.width + x / 2].clone());
        }
        Ok(r)
    }
}
