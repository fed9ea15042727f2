//! Generic CSV loader and the shared delimited-text reader used by the UCI loaders.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use ndarray::Array2;

use crate::dataset::Dataset;
use crate::error::{open_file, DatasetError, Result};

/// A non-blank row of a delimited text file: its 1-based line number and fields
/// (surrounding whitespace trimmed).
pub(crate) type Row = (usize, Vec<String>);

/// Reads every non-blank row of a delimited text file (parsed with the `csv`
/// crate: no header handling, quotes honoured, fields trimmed). Blank lines and
/// lines holding only whitespace are skipped.
///
/// # Errors
/// [`DatasetError::MissingFile`] (with `hint`) if the file does not exist,
/// [`DatasetError::Io`] on read errors, [`DatasetError::Malformed`] for invalid
/// UTF-8 or unparsable quoting.
pub(crate) fn read_rows(path: &Path, delimiter: u8, hint: &str) -> Result<Vec<Row>> {
    let file = open_file(path, hint)?;
    parse_rows(std::io::BufReader::new(file), path, delimiter)
}

/// [`read_rows`] on text already in memory (the embedded datasets); `path` names it in
/// errors.
///
/// # Errors
/// As [`read_rows`], without the missing-file case.
pub(crate) fn read_rows_from(bytes: &[u8], path: &Path, delimiter: u8) -> Result<Vec<Row>> {
    parse_rows(bytes, path, delimiter)
}

fn parse_rows(input: impl std::io::Read, path: &Path, delimiter: u8) -> Result<Vec<Row>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .trim(csv::Trim::All)
        .from_reader(input);
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                // A blank or whitespace-only line reads as one empty field.
                if record.len() == 1 && record.get(0).is_some_and(str::is_empty) {
                    continue;
                }
                let line = record.position().map_or(0, |p| p.line() as usize);
                rows.push((line, record.iter().map(str::to_owned).collect()));
            }
            Err(e) => return Err(map_csv_error(path, e)),
        }
    }
    Ok(rows)
}

fn map_csv_error(path: &Path, e: csv::Error) -> DatasetError {
    let line = e.position().map_or(0, |p| p.line() as usize);
    match e.into_kind() {
        csv::ErrorKind::Io(source) => DatasetError::Io {
            path: path.to_owned(),
            source,
        },
        csv::ErrorKind::Utf8 { err, .. } => DatasetError::malformed(
            path,
            line,
            format!("field {} is not valid UTF-8", err.field() + 1),
        ),
        kind => DatasetError::malformed(path, line, format!("unparsable row: {kind:?}")),
    }
}

/// Checks that every row has exactly `expected` fields.
///
/// # Errors
/// [`DatasetError::Malformed`] naming the first row with a different count.
pub(crate) fn check_field_count(path: &Path, rows: &[Row], expected: usize) -> Result<()> {
    for (line, fields) in rows {
        if fields.len() != expected {
            return Err(DatasetError::malformed(
                path,
                *line,
                format!("expected {expected} fields, found {}", fields.len()),
            ));
        }
    }
    Ok(())
}

/// Parses a finite number (`nan` and `inf` are rejected).
pub(crate) fn parse_number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Options for [`load_csv`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// 0-based column holding the class label; negative values count from the
    /// end (`-1` = last column). Default `-1`.
    pub label_column: isize,
    /// Columns to drop (same indexing as `label_column`). Default none.
    pub ignore_columns: Vec<isize>,
    /// `Some(true)`: the first row is a header; `Some(false)`: it is data;
    /// `None` (default): auto-detect, see [`load_csv`].
    pub header: Option<bool>,
    /// Field delimiter byte. Default `b','`.
    pub delimiter: u8,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            label_column: -1,
            ignore_columns: Vec::new(),
            header: None,
            delimiter: b',',
        }
    }
}

/// Resolves a possibly negative column index against `n_cols`.
fn resolve_column(index: isize, n_cols: usize, option: &str) -> Result<usize> {
    let resolved = if index < 0 {
        n_cols.checked_sub(index.unsigned_abs())
    } else {
        Some(index.unsigned_abs()).filter(|&i| i < n_cols)
    };
    resolved.ok_or_else(|| {
        DatasetError::bad_option(
            option,
            format!("column {index} out of range for {n_cols} columns"),
        )
    })
}

/// How a feature column is encoded.
enum Encoding {
    /// Kept as one numeric column.
    Numeric,
    /// One-hot encoded, one 0/1 column per category (sorted).
    OneHot(Vec<String>),
}

/// Loads a classification dataset from a delimited text file.
///
/// Rules:
/// - Blank lines are skipped; every other row must have the same number of
///   fields as the first one.
/// - Header: with `header: None` the first row is taken as a header iff, in some
///   (non-ignored) column whose values in all the other rows are numbers, the
///   first row's field is not a number. A file with a single row, or with no
///   numeric column, is therefore read as header-less unless `header` forces it.
///   Without a header, columns are named `col0`, `col1`, ... (original indices).
/// - Feature columns whose values are all finite numbers stay numeric (one
///   column). Columns with no numeric value are text and are one-hot encoded
///   (one 0/1 column per distinct value, in sorted string order, named
///   `name=value`). A column that is mostly numeric but has some non-numbers
///   (e.g. a `?` missing-value marker) is rejected rather than silently one-hot
///   encoded.
/// - Class labels: if all label values are numbers, classes are ordered by
///   numeric value (class name = first spelling seen); otherwise by sorted
///   string value.
///
/// The dataset name is the file stem. Output shape: `(rows, numeric columns +
/// total categories of text columns)`.
///
/// # Errors
/// - [`DatasetError::MissingFile`] if `path` does not exist.
/// - [`DatasetError::BadOption`] if `label_column` / `ignore_columns` are out of
///   range, or the label column is also ignored.
/// - [`DatasetError::Malformed`] for a row with the wrong number of fields, a
///   non-number in a mostly numeric column, or no data rows.
/// - [`DatasetError::BadValue`] (file, row and column) for an empty field or a
///   number that is not finite (`nan`, `inf`) in a used column, label included.
/// - [`DatasetError::Io`] on read errors.
pub fn load_csv(path: &Path, opts: &CsvOptions) -> Result<Dataset> {
    let rows = read_rows(path, opts.delimiter, "check the path given as csv:PATH")?;
    let Some((_, first)) = rows.first() else {
        return Err(DatasetError::malformed(path, 0, "file has no data rows"));
    };
    let n_cols = first.len();
    check_field_count(path, &rows, n_cols)?;

    let label_col = resolve_column(opts.label_column, n_cols, "label_column")?;
    let mut ignored = HashSet::new();
    for &c in &opts.ignore_columns {
        let j = resolve_column(c, n_cols, "ignore_columns")?;
        if j == label_col {
            return Err(DatasetError::bad_option(
                "ignore_columns",
                format!("column {c} is the label column"),
            ));
        }
        ignored.insert(j);
    }
    let used: Vec<usize> = (0..n_cols).filter(|j| !ignored.contains(j)).collect();

    let has_header = match opts.header {
        Some(h) => h,
        None => {
            let rest = rows.get(1..).unwrap_or_default();
            !rest.is_empty()
                && used.iter().any(|&j| {
                    rest.iter().all(|(_, f)| parse_number(&f[j]).is_some())
                        && parse_number(&first[j]).is_none()
                })
        }
    };
    let names: Vec<String> = if has_header {
        first.clone()
    } else {
        (0..n_cols).map(|j| format!("col{j}")).collect()
    };
    let data = rows.get(usize::from(has_header)..).unwrap_or_default();
    if data.is_empty() {
        return Err(DatasetError::malformed(
            path,
            0,
            "file has no data rows after the header",
        ));
    }
    let n = data.len();
    check_values(path, data, &used, &names)?;

    // Encode the feature columns.
    let feature_cols: Vec<usize> = used.iter().copied().filter(|&j| j != label_col).collect();
    let mut encodings = Vec::with_capacity(feature_cols.len());
    let mut feature_names = Vec::new();
    for &j in &feature_cols {
        let n_numeric = data
            .iter()
            .filter(|(_, f)| parse_number(&f[j]).is_some())
            .count();
        if n_numeric == n {
            feature_names.push(names[j].clone());
            encodings.push(Encoding::Numeric);
        } else if n_numeric * 2 > n {
            let (line, value) = data
                .iter()
                .find(|(_, f)| parse_number(&f[j]).is_none())
                .map(|(l, f)| (*l, f[j].clone()))
                .unwrap_or_default();
            return Err(DatasetError::malformed(
                path,
                line,
                format!(
                    "column {j} ({}) is numeric in {n_numeric} of {n} rows but {value:?} is not a number",
                    names[j]
                ),
            ));
        } else {
            let cats: BTreeSet<&str> = data.iter().map(|(_, f)| f[j].as_str()).collect();
            let cats: Vec<String> = cats.into_iter().map(str::to_owned).collect();
            feature_names.extend(cats.iter().map(|c| format!("{}={c}", names[j])));
            encodings.push(Encoding::OneHot(cats));
        }
    }

    let mut values = Vec::with_capacity(n * feature_names.len());
    for (_, fields) in data {
        for (&j, enc) in feature_cols.iter().zip(&encodings) {
            let field = &fields[j];
            match enc {
                Encoding::Numeric => values.push(parse_number(field).unwrap_or(f64::NAN)),
                Encoding::OneHot(cats) => {
                    values.extend(cats.iter().map(|c| if c == field { 1.0 } else { 0.0 }));
                }
            }
        }
    }
    let features = Array2::from_shape_vec((n, feature_names.len()), values)
        .map_err(|e| DatasetError::malformed(path, 0, format!("internal shape error: {e}")))?;

    let (labels, class_names) = encode_labels(path, data, label_col)?;
    let name = path
        .file_stem()
        .map_or_else(|| "csv".to_owned(), |s| s.to_string_lossy().into_owned());
    Dataset::new(name, features, labels, class_names, feature_names)
}

/// Refuses empty fields and non-finite numbers (`nan`, `inf`, `-inf`, `infinity`, any
/// case) in the columns `used` of the data rows, naming the row and the column.
fn check_values(path: &Path, data: &[Row], used: &[usize], names: &[String]) -> Result<()> {
    for (line, fields) in data {
        for &j in used {
            let field = fields.get(j).map_or("", String::as_str);
            let reason = if field.is_empty() {
                "empty field (missing values are not supported; drop the row or the \
                 column with --ignore-columns)"
                    .to_owned()
            } else if field.parse::<f64>().is_ok_and(|v| !v.is_finite()) {
                format!("{field:?} is not a finite number")
            } else {
                continue;
            };
            return Err(DatasetError::BadValue {
                path: path.to_owned(),
                line: *line,
                column: j,
                column_name: names.get(j).cloned().unwrap_or_default(),
                reason,
            });
        }
    }
    Ok(())
}

/// Maps the label column to class indices (numeric order if all numeric, else
/// sorted string order).
fn encode_labels(path: &Path, data: &[Row], col: usize) -> Result<(Vec<usize>, Vec<String>)> {
    if let Some((line, _)) = data.iter().find(|(_, f)| f[col].is_empty()) {
        return Err(DatasetError::malformed(path, *line, "empty class label"));
    }
    let numeric: Option<Vec<f64>> = data.iter().map(|(_, f)| parse_number(&f[col])).collect();
    if let Some(nums) = numeric {
        // Distinct values in numeric order, named by their first spelling.
        let mut distinct: Vec<(f64, &str)> = Vec::new();
        for (v, (_, f)) in nums.iter().zip(data) {
            if !distinct.iter().any(|(d, _)| d == v) {
                distinct.push((*v, f[col].as_str()));
            }
        }
        distinct.sort_by(|a, b| a.0.total_cmp(&b.0));
        let labels = nums
            .iter()
            .map(|v| distinct.iter().position(|(d, _)| d == v).unwrap_or(0))
            .collect();
        let names = distinct.into_iter().map(|(_, s)| s.to_owned()).collect();
        Ok((labels, names))
    } else {
        let index: BTreeMap<&str, usize> = data
            .iter()
            .map(|(_, f)| f[col].as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, i))
            .collect();
        let labels = data
            .iter()
            .map(|(_, f)| index.get(f[col].as_str()).copied().unwrap_or(0))
            .collect();
        let names = index.keys().map(|s| (*s).to_owned()).collect();
        Ok((labels, names))
    }
}
