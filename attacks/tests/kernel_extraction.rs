//! What conv layers disclose (`gelunet_attacks::kernel_extraction`, docs/DESIGN.md
//! "Convolutional layers"): one sample's client view `(a, z)` recovers the first conv
//! layer's integer kernels and biases exactly; the same view of a dense row does not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gelunet_attacks::kernel_extraction::{run_experiment, InputSource, KernelExtractionSetup};
use gelunet_attacks::AttackError;
use gelunet_protocol::arch::Arch;
use gelunet_protocol::Scales;

fn setup(arch: &str, seed: u64) -> KernelExtractionSetup {
    KernelExtractionSetup {
        arch: arch.parse::<Arch>().unwrap(),
        input: InputSource::Random,
        seed,
        scales: Scales::default(),
    }
}

#[test]
fn one_sample_recovers_the_first_conv_kernels_exactly() {
    for (arch, filters, positions) in [("lenet5", 6, 28 * 28), ("conv1", 5, 13 * 13)] {
        let r = run_experiment(&setup(arch, 7)).unwrap();
        assert!(r.recovered_exactly, "{arch}: {r:?}");
        assert_eq!(r.conv.filters.len(), filters, "{arch}");
        // Integer equality with the net's true first-layer parameters.
        let truth = gelunet_protocol::conv_net::ConvNet::init(
            &arch.parse().unwrap(),
            gelunet_attacks::kernel_extraction::MNIST_SHAPE,
            &Scales::default(),
            7,
        )
        .unwrap();
        assert_eq!(r.conv.w, truth.params()[0].w, "{arch}: kernel");
        assert_eq!(r.conv.b, r.truth.b, "{arch}: bias");
        assert!(
            r.conv.b.iter().any(|&b| b != 0),
            "{arch}: biases are unknowns"
        );
        for f in &r.conv.filters {
            assert_eq!(f.equations, positions, "{arch}");
            assert_eq!(f.unknowns, 26, "{arch}");
            assert!(f.equations > f.unknowns, "{arch}: overdetermined");
            assert_eq!(f.rank, f.unknowns, "{arch}: full rank");
            assert!(f.max_weight_error < 0.5 * 2f64.powi(-32), "{arch}: {f:?}");
        }
    }
}

#[test]
fn one_sample_does_not_recover_a_dense_row() {
    let r = run_experiment(&setup("lenet5", 3)).unwrap();
    for f in &r.dense.filters {
        assert_eq!(f.equations, 1);
        assert_eq!(f.unknowns, 28 * 28 + 1);
        assert!(f.rank < f.unknowns, "{f:?}");
        assert!(!f.exact, "{f:?}");
    }
}

#[test]
fn a_bad_arch_is_a_typed_error() {
    // Syntax the parser refuses.
    assert!("conv5x5:".parse::<Arch>().is_err());
    #[cfg(feature = "cli")]
    {
        use gelunet_attacks::cli::{kernel_extraction_setup, KernelExtractionArgs};
        let args = |arch: &str| KernelExtractionArgs {
            arch: arch.into(),
            seed: 1,
            data_dir: None,
            json: false,
        };
        assert!(matches!(
            kernel_extraction_setup(&args("conv5x5:")),
            Err(AttackError::Protocol(gelunet_protocol::Error::Arch(_)))
        ));
    }
    // A kernel larger than the input: the shape inference refuses it.
    let big = setup("conv29x29:2,relu,dense:10", 1);
    assert!(matches!(
        run_experiment(&big),
        Err(AttackError::Protocol(gelunet_protocol::Error::Arch(_)))
    ));
    // No conv layer to attack.
    let dense = setup("dense:16,relu,dense:10", 1);
    assert!(matches!(
        run_experiment(&dense),
        Err(AttackError::Invalid(_))
    ));
}
