//! Samples without labels, for inference on new data (`gelunet infer --input FILE.csv`).

use std::path::Path;

use ndarray::Array2;

use crate::error::{DatasetError, Result};
use crate::tabular::{parse_number, read_rows};

/// Reads unlabeled samples from a CSV file: one row per sample, one numeric field per
/// model input, in the order of `feature_names` (the model card's input features; for
/// Iris, Pima and numeric CSV datasets the training file's columns without the label).
///
/// Blank lines are skipped; fields are trimmed and may be quoted. The first row is a
/// header when one of its fields is not a number; its names must then equal
/// `feature_names`, so that columns in another order are refused rather than silently
/// misread. Returns `(samples, feature_names.len())` raw (unstandardized) values.
///
/// # Errors
/// [`DatasetError::MissingFile`] if `path` does not exist; [`DatasetError::Malformed`]
/// naming the line for a row with a different number of fields than `feature_names`, a
/// field that is not a finite number, or a header that names other columns; for a file
/// with no data rows (line 0); [`DatasetError::Io`] on read errors.
pub fn load_unlabeled_csv(
    path: &Path,
    feature_names: &[String],
    delimiter: u8,
) -> Result<Array2<f64>> {
    let rows = read_rows(path, delimiter, "check the path given to --input")?;
    let width = feature_names.len();
    let columns = || {
        let mut s = feature_names
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if width > 8 {
            s.push_str(", …");
        }
        s
    };
    let mut data = &rows[..];
    if let Some((line, first)) = rows.first() {
        if first.iter().any(|f| parse_number(f).is_none()) {
            if first.len() != width || first.iter().zip(feature_names).any(|(a, b)| a != b) {
                return Err(DatasetError::malformed(
                    path,
                    *line,
                    format!(
                        "header {:?} does not name the model's {width} input features ({})",
                        first.join(","),
                        columns()
                    ),
                ));
            }
            data = &rows[1..];
        }
    }
    if data.is_empty() {
        return Err(DatasetError::malformed(path, 0, "file has no data rows"));
    }
    let mut values = Vec::with_capacity(data.len() * width);
    for (line, fields) in data {
        if fields.len() != width {
            return Err(DatasetError::malformed(
                path,
                *line,
                format!(
                    "row has {} fields, the model takes {width} input features ({})",
                    fields.len(),
                    columns()
                ),
            ));
        }
        for (j, field) in fields.iter().enumerate() {
            let v = parse_number(field).ok_or_else(|| {
                DatasetError::malformed(
                    path,
                    *line,
                    format!(
                        "field {} ({}): {field:?} is not a number",
                        j + 1,
                        feature_names[j]
                    ),
                )
            })?;
            values.push(v);
        }
    }
    Array2::from_shape_vec((data.len(), width), values)
        .map_err(|e| DatasetError::malformed(path, 0, format!("internal shape error: {e}")))
}
