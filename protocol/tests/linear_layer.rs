//! `LinearLayer` (protocol/src/linear_layer.rs), the index map the client's unmasking and
//! the server's per-position products share, against the integer convolution and pooling
//! of `conv.rs` and `pool.rs` on random geometries: forward, one output at a time; the
//! backward product; the position taps; the packing bounds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gelunet_protocol::arch::{Arch, Layer};
use gelunet_protocol::conv::{conv2d, conv2d_transpose, Padding, Shape};
use gelunet_protocol::linear_layer::LinearLayer;
use gelunet_protocol::{Activation, ModelSpec};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// A spec whose first layer is the given convolution (pooled if `pool` and its output
/// sides are even), then a dense output layer.
fn spec_of(
    input: Shape,
    filters: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    pool: bool,
) -> Option<ModelSpec> {
    let mut layers = vec![Layer::Conv {
        kernel,
        stride,
        padding: Padding::same(pad),
        filters,
    }];
    if pool {
        layers.push(Layer::MeanPool);
    }
    layers.push(Layer::Activation(Activation::Relu));
    layers.push(Layer::Dense { units: 2 });
    let arch = Arch::new(layers).ok()?;
    ModelSpec::from_arch(&arch, input).ok()
}

fn random(rng: &mut ChaCha20Rng, n: usize) -> Vec<i128> {
    (0..n).map(|_| rng.gen_range(-50..50)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_layer_map_is_the_integer_conv_and_pool(
        channels in 1usize..4, side in 3usize..10, filters in 1usize..4, kernel in 1usize..4,
        stride in 1usize..3, pad in 0usize..2, pool: bool, seed: u64,
    ) {
        let input = Shape { channels, height: side, width: side };
        let Some(spec) = spec_of(input, filters, kernel, stride, pad, pool) else {
            return Ok(()); // a geometry the architecture refuses
        };
        let layer = LinearLayer::of(&spec, 1).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let a = random(&mut rng, layer.fan_in());
        let w = random(&mut rng, layer.filters() * layer.columns());
        let b = random(&mut rng, layer.filters());
        // Forward: one output at a time equals pool(conv2d(a, W) + b).
        let conv = conv2d(layer.geometry(), &a, &w, &b).unwrap();
        let expected = match layer.pool() {
            Some(p) => p.sum(&conv).unwrap(),
            None => conv,
        };
        prop_assert_eq!(expected.len(), layer.width());
        prop_assert_eq!(layer.width(), spec.widths[1]);
        for (o, &e) in expected.iter().enumerate() {
            let z = layer
                .output_with(
                    o,
                    &a,
                    &w,
                    |f, mult| Ok(b[f] * i128::from(mult)),
                    |acc, w, a| {
                        *acc += w * a;
                        Ok(())
                    },
                )
                .unwrap();
            prop_assert_eq!(z, e, "output {}", o);
        }
        // Backward: convᵀ(pool_back(δ), W).
        let delta = random(&mut rng, layer.width());
        let unpooled = match layer.pool() {
            Some(p) => p.backward(&delta).unwrap(),
            None => delta.clone(),
        };
        let q = layer
            .transpose_with(&delta, &w, || 0i128, |acc, d, w| {
                *acc += d * w;
                Ok(())
            })
            .unwrap();
        prop_assert_eq!(q, conv2d_transpose(layer.geometry(), &unpooled, &w).unwrap());
        // The position taps rebuild every conv output: z[f, p] = b[f] + Σ W[f, u]·a[i].
        let conv = conv2d(layer.geometry(), &a, &w, &b).unwrap();
        for p in 0..layer.positions() {
            let taps = layer.position_taps(p);
            prop_assert!(taps.len() <= layer.columns());
            for f in 0..layer.filters() {
                let z: i128 = b[f] + taps.iter().map(|&(u, i)| w[f * layer.columns() + u] * a[i]).sum::<i128>();
                prop_assert_eq!(z, conv[layer.conv_output(f, p)]);
            }
        }
        // Bounds: a pooled output sums 4 positions with their biases.
        prop_assert_eq!(layer.forward_terms(), (layer.columns() + 1) * if pool && layer.pool().is_some() { 4 } else { 1 });
    }
}

#[test]
fn a_dense_layer_is_one_position_with_every_column() {
    let spec = ModelSpec::new(vec![5, 3, 2], Activation::Tanh);
    let layer = LinearLayer::of(&spec, 1).unwrap();
    assert!(layer.is_dense());
    assert_eq!(
        (layer.width(), layer.fan_in(), layer.positions()),
        (3, 5, 1)
    );
    assert_eq!(
        layer.position_taps(0),
        (0..5).map(|u| (u, u)).collect::<Vec<_>>()
    );
    assert_eq!((layer.forward_terms(), layer.backward_terms()), (6, 3));
    for bad in [0, 3] {
        assert!(LinearLayer::of(&spec, bad).is_err(), "layer {bad}");
    }
    // An output index past the width is a typed error, not a panic.
    let err = layer
        .output_with(
            3,
            &[0i128; 5],
            &[0i128; 15],
            |_, _| Ok(0i128),
            |_, _, _| Ok(()),
        )
        .unwrap_err();
    assert!(err.to_string().contains("output index"), "{err}");
}
