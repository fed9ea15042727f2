//! Model files and model cards through the library: a round trip, and damaged or
//! inconsistent files refused with a typed error naming the file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use gelunet_protocol::{Activation, FixedModel, ModelSpec, Scales};
use gelunet_run::{DataCard, ModelCard, ModelFile, ModelFileError};

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("gelunet-run-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sample() -> ModelFile {
    let spec = ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid);
    let scales = Scales::default();
    ModelFile {
        model: FixedModel::init(&spec, &scales, 9).unwrap(),
        scales,
        data: DataCard {
            mean: vec![0.5, -1.0, 2.0, 0.0],
            std: vec![1.0, 2.0, 0.5, 1.5],
            class_names: vec!["a".into(), "b".into(), "c".into()],
            feature_names: vec!["w".into(), "x".into(), "y".into(), "z".into()],
            dataset: "toy".into(),
            split_seed: 3,
            test_fraction: 0.2,
        },
    }
}

#[test]
fn model_files_round_trip_and_damage_is_refused() {
    let dir = Dir::new("model-file");
    let path = dir.0.join("m.model");
    let file = sample();
    file.save(&path).unwrap();
    assert_eq!(ModelFile::load(&path).unwrap(), file);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert_eq!(names.len(), 1);

    let good = std::fs::read(&path).unwrap();
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 1;
    for (bytes, needle) in [
        (good[..good.len() - 3].to_vec(), "truncated"),
        (flipped, "checksum"),
        (b"NOTMODEL".repeat(8), "magic"),
    ] {
        std::fs::write(&path, bytes).unwrap();
        match ModelFile::load(&path) {
            Err(e @ ModelFileError::Invalid { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(needle) && msg.contains("m.model"), "{msg}");
            }
            other => panic!("{needle}: {other:?}"),
        }
    }
    let mut bad = sample();
    bad.data.std[1] = 0.0;
    assert!(matches!(
        bad.save(&path),
        Err(ModelFileError::Invalid { .. })
    ));
}

#[test]
fn model_cards_hold_no_weights_and_are_checked() {
    let dir = Dir::new("model-card");
    let path = dir.0.join("card.json");
    let file = sample();
    let card = file.card();
    card.save(&path).unwrap();
    assert_eq!(ModelCard::load(&path).unwrap(), card);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(json.get("layers").is_none() && json.get("model").is_none());
    let mut damaged = json.clone();
    damaged["std"] = serde_json::json!([1.0, 0.0, 1.0, 1.0]);
    std::fs::write(&path, damaged.to_string()).unwrap();
    assert!(matches!(
        ModelCard::load(&path),
        Err(ModelFileError::InvalidCard { .. })
    ));
    assert!(matches!(
        ModelCard::load(&dir.0.join("missing.json")),
        Err(ModelFileError::InvalidCard { .. })
    ));
}

/// A model with conv layers is written as format version 2 and reads back equal; a dense
/// model keeps version 1 (its bytes unchanged by the conv support).
#[test]
fn conv_models_round_trip_as_version_2_and_dense_models_stay_version_1() {
    use gelunet_protocol::arch::Arch;
    use gelunet_protocol::conv::Shape;

    let dir = Dir::new("model-file-conv");
    let dense = dir.0.join("dense.model");
    sample().save(&dense).unwrap();
    let version = |p: &std::path::Path| {
        let b = std::fs::read(p).unwrap();
        u32::from_le_bytes(b[8..12].try_into().unwrap())
    };
    assert_eq!(version(&dense), 1);

    let arch: Arch = "conv3x3:2,meanpool,relu,dense:3".parse().unwrap();
    let shape = Shape {
        channels: 1,
        height: 4,
        width: 4,
    };
    let spec = ModelSpec::from_arch(&arch, shape).unwrap();
    let scales = Scales::default();
    let mut file = sample();
    file.model = FixedModel::init(&spec, &scales, 2).unwrap();
    file.data.mean = vec![0.0; 16];
    file.data.std = vec![1.0; 16];
    file.data.feature_names = Vec::new();
    let conv = dir.0.join("conv.model");
    file.save(&conv).unwrap();
    assert_eq!(version(&conv), 2);
    assert_eq!(ModelFile::load(&conv).unwrap(), file);

    // A version-2 header on a dense payload is refused.
    let mut bytes = std::fs::read(&dense).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let bad = dir.0.join("bad.model");
    std::fs::write(&bad, bytes).unwrap();
    assert!(matches!(
        ModelFile::load(&bad),
        Err(ModelFileError::Invalid { .. })
    ));
}
