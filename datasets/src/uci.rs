//! Loaders for the three UCI datasets in their original distribution formats.

use std::path::Path;

use ndarray::Array2;

use crate::dataset::Dataset;
use crate::error::{DatasetError, Result, FETCH_HINT};
use crate::tabular::{check_field_count, parse_number, read_rows, read_rows_from, Row};

/// Path of the Iris file relative to the data directory.
pub const IRIS_FILE: &str = "iris/iris.data";
/// Path of the Pima Indians Diabetes file relative to the data directory.
pub const PIMA_FILE: &str = "pima-diabetes/pima-indians-diabetes.data";
/// Path of the kr-vs-kp file relative to the data directory.
pub const KR_VS_KP_FILE: &str = "kr-vs-kp/kr-vs-kp.data";

const IRIS_FEATURES: [&str; 4] = [
    "sepal_length_cm",
    "sepal_width_cm",
    "petal_length_cm",
    "petal_width_cm",
];
const IRIS_CLASSES: [&str; 3] = ["Iris-setosa", "Iris-versicolor", "Iris-virginica"];

const PIMA_FEATURES: [&str; 8] = [
    "pregnancies",
    "plasma_glucose",
    "diastolic_bp_mmhg",
    "triceps_skinfold_mm",
    "serum_insulin_mu_u_ml",
    "bmi",
    "diabetes_pedigree",
    "age_years",
];

/// kr-vs-kp attributes in UCI order with their value domains. Two-valued
/// attributes are encoded as one 0/1 column (1 = second value); `katri` has
/// three values and is one-hot encoded.
const KR_VS_KP_ATTRS: [(&str, &[&str]); 36] = [
    ("bkblk", &["f", "t"]),
    ("bknwy", &["f", "t"]),
    ("bkon8", &["f", "t"]),
    ("bkona", &["f", "t"]),
    ("bkspr", &["f", "t"]),
    ("bkxbq", &["f", "t"]),
    ("bkxcr", &["f", "t"]),
    ("bkxwp", &["f", "t"]),
    ("blxwp", &["f", "t"]),
    ("bxqsq", &["f", "t"]),
    ("cntxt", &["f", "t"]),
    ("dsopp", &["f", "t"]),
    ("dwipd", &["g", "l"]),
    ("hdchk", &["f", "t"]),
    ("katri", &["b", "n", "w"]),
    ("mulch", &["f", "t"]),
    ("qxmsq", &["f", "t"]),
    ("r2ar8", &["f", "t"]),
    ("reskd", &["f", "t"]),
    ("reskr", &["f", "t"]),
    ("rimmx", &["f", "t"]),
    ("rkxwp", &["f", "t"]),
    ("rxmsq", &["f", "t"]),
    ("simpl", &["f", "t"]),
    ("skach", &["f", "t"]),
    ("skewr", &["f", "t"]),
    ("skrxp", &["f", "t"]),
    ("spcop", &["f", "t"]),
    ("stlmt", &["f", "t"]),
    ("thrsk", &["f", "t"]),
    ("wkcti", &["f", "t"]),
    ("wkna8", &["f", "t"]),
    ("wknck", &["f", "t"]),
    ("wkovl", &["f", "t"]),
    ("wkpos", &["f", "t"]),
    ("wtoeg", &["n", "t"]),
];
/// kr-vs-kp classes in index order (sorted, as the generic CSV loader would).
const KR_VS_KP_CLASSES: [&str; 2] = ["nowin", "won"];

fn to_strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn numeric_field(path: &Path, line: usize, fields: &[String], j: usize, name: &str) -> Result<f64> {
    let raw = fields.get(j).map_or("", String::as_str);
    parse_number(raw).ok_or_else(|| {
        DatasetError::malformed(
            path,
            line,
            format!("field {} ({name}): {raw:?} is not a number", j + 1),
        )
    })
}

fn to_array(path: &Path, rows: usize, cols: usize, values: Vec<f64>) -> Result<Array2<f64>> {
    Array2::from_shape_vec((rows, cols), values)
        .map_err(|e| DatasetError::malformed(path, 0, format!("internal shape error: {e}")))
}

/// Reads the comma-separated file at `path`, `file_fields` fields a row (checked by
/// [`read_checked`]), into the dataset `name`: `row(line, fields, values)` appends the
/// row's `feature_names.len()` feature values and returns its class index into
/// `classes`.
fn load_table(
    (path, bytes): Text<'_>,
    (name, file_fields): (&str, usize),
    feature_names: Vec<String>,
    classes: Vec<String>,
    mut row: impl FnMut(usize, &[String], &mut Vec<f64>) -> Result<usize>,
) -> Result<Dataset> {
    let rows = read_checked((path, bytes), file_fields)?;
    let width = feature_names.len();
    let mut values = Vec::with_capacity(rows.len() * width);
    let mut labels = Vec::with_capacity(rows.len());
    for (line, fields) in &rows {
        labels.push(row(*line, fields, &mut values)?);
    }
    let features = to_array(path, rows.len(), width, values)?;
    Dataset::new(name, features, labels, classes, feature_names)
}

/// The index of `class` in `classes`.
///
/// # Errors
/// [`DatasetError::Malformed`] naming the dataset (`what`) for an unknown class.
fn named_class(
    path: &Path,
    line: usize,
    class: &str,
    classes: &[&str],
    what: &str,
) -> Result<usize> {
    classes.iter().position(|c| *c == class).ok_or_else(|| {
        DatasetError::malformed(path, line, format!("unknown {what} class {class:?}"))
    })
}

/// A dataset file: its path (named in errors) and, for an embedded copy, its bytes
/// (`None`: read the file).
pub(crate) type Text<'a> = (&'a Path, Option<&'a [u8]>);

fn read_checked((path, bytes): Text<'_>, fields: usize) -> Result<Vec<Row>> {
    let rows = match bytes {
        Some(b) => read_rows_from(b, path, b',')?,
        None => read_rows(path, b',', FETCH_HINT)?,
    };
    if rows.is_empty() {
        return Err(DatasetError::malformed(path, 0, "file has no data rows"));
    }
    check_field_count(path, &rows, fields)?;
    Ok(rows)
}

/// Loads UCI Iris from `data_dir/iris/iris.data` (the standard UCI file, with
/// its two known transcription errors; blank lines skipped).
///
/// Returns 150 samples × 4 features (sepal length, sepal width, petal length,
/// petal width, in cm, unscaled) and 3 classes `Iris-setosa`,
/// `Iris-versicolor`, `Iris-virginica` (indices 0, 1, 2; 50 each). Source: UCI
/// Machine Learning Repository, "Iris" (R.A. Fisher, 1936).
///
/// # Errors
/// [`DatasetError::MissingFile`] if the file is absent; [`DatasetError::Malformed`]
/// for a row without 5 fields, a non-numeric measurement or an unknown class;
/// [`DatasetError::Io`] on read errors.
pub fn load_iris(data_dir: &Path) -> Result<Dataset> {
    iris((&data_dir.join(IRIS_FILE), None))
}

/// [`load_iris`] on the file `text`.
pub(crate) fn iris(text: Text<'_>) -> Result<Dataset> {
    let path = text.0;
    load_table(
        text,
        ("iris", 5),
        to_strings(&IRIS_FEATURES),
        to_strings(&IRIS_CLASSES),
        |line, fields, values| {
            for (j, name) in IRIS_FEATURES.iter().enumerate() {
                values.push(numeric_field(path, line, fields, j, name)?);
            }
            named_class(path, line, &fields[4], &IRIS_CLASSES, "iris")
        },
    )
}

/// Loads the Pima Indians Diabetes data from
/// `data_dir/pima-diabetes/pima-indians-diabetes.data` (UCI format, no header).
///
/// Returns 768 samples × 8 features (pregnancies, plasma glucose, diastolic
/// blood pressure in mm Hg, triceps skinfold in mm, 2-h serum insulin in mu U/ml,
/// BMI, diabetes pedigree function, age in years; unscaled, zeros kept as in
/// the file even where they mean "missing") and 2 classes `"0"` (500 samples)
/// and `"1"` (tested positive, 268 samples). Source: UCI Machine Learning
/// Repository, "Pima Indians Diabetes Database" (NIDDK, 1990).
///
/// # Errors
/// [`DatasetError::MissingFile`] if the file is absent; [`DatasetError::Malformed`]
/// for a row without 9 fields, a non-numeric value or a class other than 0/1;
/// [`DatasetError::Io`] on read errors.
pub fn load_pima(data_dir: &Path) -> Result<Dataset> {
    pima((&data_dir.join(PIMA_FILE), None))
}

/// [`load_pima`] on the file `text`.
pub(crate) fn pima(text: Text<'_>) -> Result<Dataset> {
    let path = text.0;
    load_table(
        text,
        ("pima", 9),
        to_strings(&PIMA_FEATURES),
        to_strings(&["0", "1"]),
        |line, fields, values| {
            for (j, name) in PIMA_FEATURES.iter().enumerate() {
                values.push(numeric_field(path, line, fields, j, name)?);
            }
            let class = numeric_field(path, line, fields, 8, "class")?;
            if class == 0.0 {
                Ok(0)
            } else if class == 1.0 {
                Ok(1)
            } else {
                Err(DatasetError::malformed(
                    path,
                    line,
                    format!("class must be 0 or 1, found {:?}", fields[8]),
                ))
            }
        },
    )
}

/// Loads UCI Chess (King-Rook vs. King-Pawn, KRKPA7) from
/// `data_dir/kr-vs-kp/kr-vs-kp.data`.
///
/// Encoding: each of the 35 two-valued attributes becomes one 0/1 column named
/// `attr=v` where `v` is the value encoded as 1 (`t` for f/t attributes, `l` for
/// `dwipd` g/l, `t` for `wtoeg` n/t); attribute 15 `katri` (b/n/w) is one-hot
/// encoded as `katri=b`, `katri=n`, `katri=w`. Returns 3196 samples × 38
/// features and 2 classes `nowin` (index 0, 1527 samples) and `won` (index 1,
/// 1669 samples). Source: UCI Machine Learning Repository (A. Shapiro, 1989).
///
/// # Errors
/// [`DatasetError::MissingFile`] if the file is absent; [`DatasetError::Malformed`]
/// for a row without 37 fields, a value outside an attribute's domain or an
/// unknown class; [`DatasetError::Io`] on read errors.
pub fn load_kr_vs_kp(data_dir: &Path) -> Result<Dataset> {
    kr_vs_kp((&data_dir.join(KR_VS_KP_FILE), None))
}

/// [`load_kr_vs_kp`] on the file `text`.
pub(crate) fn kr_vs_kp(text: Text<'_>) -> Result<Dataset> {
    let path = text.0;
    let mut feature_names = Vec::new();
    for (name, domain) in KR_VS_KP_ATTRS {
        if domain.len() == 2 {
            feature_names.push(format!("{name}={}", domain[1]));
        } else {
            feature_names.extend(domain.iter().map(|v| format!("{name}={v}")));
        }
    }
    load_table(
        text,
        ("kr-vs-kp", KR_VS_KP_ATTRS.len() + 1),
        feature_names,
        to_strings(&KR_VS_KP_CLASSES),
        |line, fields, values| {
            for (j, (name, domain)) in KR_VS_KP_ATTRS.iter().enumerate() {
                let raw = fields[j].as_str();
                let k = domain.iter().position(|v| *v == raw).ok_or_else(|| {
                    DatasetError::malformed(
                        path,
                        line,
                        format!("attribute {} ({name}): {raw:?} not in {domain:?}", j + 1),
                    )
                })?;
                if domain.len() == 2 {
                    values.push(k as f64);
                } else {
                    values.extend((0..domain.len()).map(|i| if i == k { 1.0 } else { 0.0 }));
                }
            }
            let class = &fields[KR_VS_KP_ATTRS.len()];
            named_class(path, line, class, &KR_VS_KP_CLASSES, "kr-vs-kp")
        },
    )
}
