//! MNIST loader: gzip-compressed IDX files as distributed by LeCun et al.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use ndarray::Array2;

use crate::dataset::Dataset;
use crate::error::{open_file, DatasetError, Result, FETCH_HINT};

/// Training images, relative to the data directory.
pub const MNIST_TRAIN_IMAGES: &str = "mnist/train-images-idx3-ubyte.gz";
/// Training labels, relative to the data directory.
pub const MNIST_TRAIN_LABELS: &str = "mnist/train-labels-idx1-ubyte.gz";
/// Test images, relative to the data directory.
pub const MNIST_TEST_IMAGES: &str = "mnist/t10k-images-idx3-ubyte.gz";
/// Test labels, relative to the data directory.
pub const MNIST_TEST_LABELS: &str = "mnist/t10k-labels-idx1-ubyte.gz";

/// IDX magic number of an unsigned-byte 3-D file (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic number of an unsigned-byte 1-D file (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// Options for [`load_mnist`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MnistOptions {
    /// Load at most this many training samples (the first ones in file order);
    /// `None` = all 60000. Only the needed prefix is decompressed.
    pub max_train: Option<usize>,
    /// Load at most this many test samples (the first ones); `None` = all 10000.
    pub max_test: Option<usize>,
}

/// Both MNIST splits, as returned by [`load_mnist`].
#[derive(Debug, Clone, PartialEq)]
pub struct Mnist {
    /// Training split (`mnist-train`): `(n, 784)` pixels in `[0, 1]`, labels 0–9.
    pub train: Dataset,
    /// Test split (`mnist-test`): `(n, 784)` pixels in `[0, 1]`, labels 0–9.
    pub test: Dataset,
    /// Number of training samples declared in the IDX header (60000 for MNIST),
    /// whatever `max_train` was.
    pub train_total: usize,
    /// Number of test samples declared in the IDX header (10000 for MNIST).
    pub test_total: usize,
}

/// Header of an IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxHeader {
    /// The 32-bit big-endian magic number (`0x00000803`, `0x00000801`, ...).
    pub magic: u32,
    /// Size of each dimension, outermost (sample count) first.
    pub dims: Vec<usize>,
}

/// Maps an I/O error raised while decompressing/reading `path`.
fn read_error(path: &Path, e: std::io::Error, what: &str) -> DatasetError {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::UnexpectedEof => DatasetError::BadBinary {
            path: path.to_owned(),
            reason: format!("truncated file: unexpected end of data while reading {what}"),
        },
        ErrorKind::InvalidInput | ErrorKind::InvalidData => DatasetError::BadBinary {
            path: path.to_owned(),
            reason: format!("corrupt gzip stream while reading {what}: {e}"),
        },
        _ => DatasetError::Io {
            path: path.to_owned(),
            source: e,
        },
    }
}

/// An open gzip-compressed IDX file positioned after its header.
struct IdxReader {
    path: PathBuf,
    header: IdxHeader,
    inner: GzDecoder<BufReader<std::fs::File>>,
}

impl IdxReader {
    fn open(path: &Path, expected_magic: u32) -> Result<Self> {
        let file = open_file(path, FETCH_HINT)?;
        let mut inner = GzDecoder::new(BufReader::new(file));
        let mut word = [0u8; 4];
        inner
            .read_exact(&mut word)
            .map_err(|e| read_error(path, e, "the IDX magic number"))?;
        let magic = u32::from_be_bytes(word);
        if magic != expected_magic {
            return Err(DatasetError::BadMagic {
                path: path.to_owned(),
                expected: expected_magic,
                found: magic,
            });
        }
        let ndims = usize::from(word[3]);
        let mut dims = Vec::with_capacity(ndims);
        for _ in 0..ndims {
            inner
                .read_exact(&mut word)
                .map_err(|e| read_error(path, e, "the IDX header"))?;
            let d = u32::from_be_bytes(word);
            dims.push(usize::try_from(d).map_err(|_| DatasetError::BadBinary {
                path: path.to_owned(),
                reason: format!("dimension {d} does not fit in usize"),
            })?);
        }
        Ok(Self {
            path: path.to_owned(),
            header: IdxHeader { magic, dims },
            inner,
        })
    }

    /// Reads `count` items of `item_len` bytes each; if that is every item in
    /// the file, also checks that nothing follows (which verifies the gzip CRC).
    fn read_items(&mut self, count: usize, item_len: usize, what: &str) -> Result<Vec<u8>> {
        let total = self.header.dims.first().copied().unwrap_or(0);
        let len = count
            .checked_mul(item_len)
            .ok_or_else(|| self.bad("size overflows usize"))?;
        let mut buf = Vec::new();
        (&mut self.inner)
            .take(len as u64)
            .read_to_end(&mut buf)
            .map_err(|e| read_error(&self.path, e, what))?;
        if buf.len() < len {
            return Err(self.bad(&format!(
                "truncated file: header declares {total} {what} but data ends after {} bytes of {len}",
                buf.len()
            )));
        }
        if count == total {
            let mut extra = [0u8; 1];
            let n = self
                .inner
                .read(&mut extra)
                .map_err(|e| read_error(&self.path, e, what))?;
            if n != 0 {
                return Err(self.bad(&format!("trailing data after {total} {what}")));
            }
        }
        Ok(buf)
    }

    fn bad(&self, reason: &str) -> DatasetError {
        DatasetError::BadBinary {
            path: self.path.clone(),
            reason: reason.to_owned(),
        }
    }
}

/// Reads only the header of a gzip-compressed IDX file, checking its magic number.
///
/// # Errors
/// [`DatasetError::MissingFile`], [`DatasetError::BadMagic`] if the magic is not
/// `expected_magic`, [`DatasetError::BadBinary`] if the file is not gzip or is
/// truncated inside the header, [`DatasetError::Io`] on read errors.
pub fn read_idx_header(path: &Path, expected_magic: u32) -> Result<IdxHeader> {
    IdxReader::open(path, expected_magic).map(|r| r.header)
}

/// Loads one split: the first `limit` images (scaled to `[0, 1]`) and labels.
/// The largest image an IDX file may declare (`rows · cols`; MNIST's are 784): a header
/// beyond it is refused before any allocation that depends on it.
pub const MAX_IMAGE_PIXELS: usize = 1 << 20;

fn load_split(
    images_path: &Path,
    labels_path: &Path,
    limit: Option<usize>,
    name: &str,
) -> Result<(Dataset, usize)> {
    let mut images = IdxReader::open(images_path, IDX_IMAGES_MAGIC)?;
    let (n, rows, cols) = match images.header.dims.as_slice() {
        &[n, r, c] if r > 0 && c > 0 => (n, r, c),
        dims => return Err(images.bad(&format!("expected 3 non-zero dimensions, found {dims:?}"))),
    };
    let pixels_per_image = rows
        .checked_mul(cols)
        .ok_or_else(|| images.bad("image size overflows usize"))?;
    // Checked before anything is allocated from the header (one feature name per pixel).
    if pixels_per_image > MAX_IMAGE_PIXELS {
        return Err(images.bad(&format!(
            "images of {rows} × {cols} pixels: at most {MAX_IMAGE_PIXELS} pixels per image"
        )));
    }
    if n == 0 {
        return Err(images.bad("the file holds no image"));
    }
    let mut labels = IdxReader::open(labels_path, IDX_LABELS_MAGIC)?;
    let n_labels = match labels.header.dims.as_slice() {
        &[m] => m,
        dims => return Err(labels.bad(&format!("expected 1 dimension, found {dims:?}"))),
    };
    if n_labels != n {
        return Err(labels.bad(&format!(
            "{n_labels} labels but {} holds {n} images",
            images_path.display()
        )));
    }
    let k = limit.map_or(n, |l| l.min(n));
    let pixels = images.read_items(k, pixels_per_image, "images")?;
    let raw_labels = labels.read_items(k, 1, "labels")?;
    if let Some((i, &l)) = raw_labels.iter().enumerate().find(|(_, &l)| l > 9) {
        return Err(labels.bad(&format!("label {l} of sample {i} is not a digit 0-9")));
    }
    let values: Vec<f64> = pixels.iter().map(|&p| f64::from(p) / 255.0).collect();
    let features = Array2::from_shape_vec((k, pixels_per_image), values)
        .map_err(|e| images.bad(&format!("internal shape error: {e}")))?;
    let feature_names = (0..rows)
        .flat_map(|r| (0..cols).map(move |c| format!("px_{r}_{c}")))
        .collect();
    let class_names = (0..10).map(|d: u8| d.to_string()).collect();
    let labels = raw_labels.into_iter().map(usize::from).collect();
    Ok((
        Dataset::new(name, features, labels, class_names, feature_names)?,
        n,
    ))
}

/// Loads MNIST (both the 60000-sample training split and the 10000-sample test
/// split) from the four gzip-compressed IDX files in `data_dir/mnist/`.
///
/// Each sample is a 28×28 image flattened row-major to 784 features
/// (`px_{row}_{col}`), pixel byte `p` mapped to `p / 255` in `[0, 1]` (0 =
/// background). Labels are the digits 0–9 (class names `"0"`..`"9"`). The
/// limits in `opts` keep the first samples in file order (not stratified).
/// Source: Y. LeCun, C. Cortes, C.J.C. Burges, "The MNIST database of
/// handwritten digits".
///
/// # Errors
/// [`DatasetError::MissingFile`] if a file is absent; [`DatasetError::BadMagic`]
/// for a wrong IDX magic number; [`DatasetError::BadBinary`] for a non-gzip or
/// truncated file, a CRC failure, bad dimensions, image/label count mismatch,
/// trailing data or a label above 9; [`DatasetError::Io`] on read errors.
pub fn load_mnist(data_dir: &Path, opts: MnistOptions) -> Result<Mnist> {
    let (train, train_total) = load_split(
        &data_dir.join(MNIST_TRAIN_IMAGES),
        &data_dir.join(MNIST_TRAIN_LABELS),
        opts.max_train,
        "mnist-train",
    )?;
    let (test, test_total) = load_split(
        &data_dir.join(MNIST_TEST_IMAGES),
        &data_dir.join(MNIST_TEST_LABELS),
        opts.max_test,
        "mnist-test",
    )?;
    Ok(Mnist {
        train,
        test,
        train_total,
        test_total,
    })
}
