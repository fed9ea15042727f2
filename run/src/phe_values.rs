//! `gelunet keys encrypt|decrypt`: numbers in and out of python-paillier ciphertext JSON
//! ([`gelunet_paillier::phe_json`]; docs/DESIGN.md "Code layout"). Values are encrypted as
//! `pheutil encrypt` does (python-paillier's float encoding, exponent −32 where possible),
//! into a document that names the public key
//! (`{"public_key": {…}, "ciphertexts": [{"v": "<decimal>", "e": -32}, …]}`); decryption
//! reads that document, a JSON array of `{"v", "e"}` objects or one such object
//! (`pheutil encrypt` output) and writes a JSON array of numbers. Outputs are written
//! whole (temporary file and rename) or not at all, never over an existing file unless
//! `force`.

use std::fmt;
use std::path::{Path, PathBuf};

use gelunet_paillier::phe_json::{ciphertexts_from_json, ciphertexts_to_json, PheCiphertext};

use crate::key_files::{check_new, load_key, LoadedKey};
use crate::model_file::write_atomic;
use crate::{Result, RunError};

/// The files of `gelunet keys encrypt|decrypt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValuesFiles {
    /// The key file (any format of [`load_key`]; a private key for decryption).
    pub key_file: PathBuf,
    /// The file to read: numbers to encrypt, or ciphertext JSON to decrypt.
    pub input: PathBuf,
    /// The file to write (whole or not at all).
    pub output: PathBuf,
    /// Replace an existing `output`.
    pub force: bool,
    /// Accept keys below 2048 bits (in builds with test keys).
    pub allow_test_keys: bool,
}

/// What `gelunet keys encrypt|decrypt` did (public facts only).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ValuesInfo {
    /// `encrypted` or `decrypted`.
    pub action: &'static str,
    /// The number of values.
    pub count: usize,
    /// The key id of the public key used.
    pub key_id: String,
    /// The file written.
    pub output: PathBuf,
}

impl fmt::Display for ValuesInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {} value{} with key {} into {}",
            self.action,
            self.count,
            if self.count == 1 { "" } else { "s" },
            self.key_id,
            self.output.display()
        )
    }
}

/// The numbers of a values file: a `.json` file holds a JSON number or an array of
/// numbers; any other file is CSV-like text whose cells (separated by commas, blanks or
/// line breaks) are all numbers, read row by row. Empty cells are skipped.
///
/// # Errors
/// [`RunError::Io`] reading; [`RunError::Values`] for invalid JSON, a JSON value that is
/// not a number, or a cell that is not a finite number (naming its line and column).
pub fn read_values(path: &Path) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(path).map_err(RunError::io("--input", path))?;
    let bad = |reason: String| RunError::Values {
        path: path.to_path_buf(),
        reason,
    };
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let items = match v {
            serde_json::Value::Array(a) => a,
            other => vec![other],
        };
        return items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_f64()
                    .ok_or_else(|| bad(format!("element {i} is not a number: {x}")))
            })
            .collect();
    }
    let mut values = Vec::new();
    for (l, line) in text.lines().enumerate() {
        for (c, cell) in line.split(',').enumerate() {
            for word in cell.split_whitespace() {
                let x: f64 = word
                    .parse()
                    .ok()
                    .filter(|x: &f64| x.is_finite())
                    .ok_or_else(|| {
                        bad(format!(
                            "line {}, column {}: `{word}` is not a finite number",
                            l + 1,
                            c + 1
                        ))
                    })?;
                values.push(x);
            }
        }
    }
    Ok(values)
}

/// `gelunet keys encrypt`: the numbers of `files.input` ([`read_values`]) encrypted under the
/// public key of `files.key_file` (any key file, [`load_key`]) with
/// [`PheCiphertext::encrypt_f64`] (randomness from the operating system), written to
/// `files.output` as a ciphertext document naming that key.
///
/// # Errors
/// [`RunError::Exists`] for an existing `output` without `force` (checked first); the
/// errors of [`load_key`] and [`read_values`]; [`RunError::PheJson`] (naming `input`) for
/// a value the key's range cannot hold; [`RunError::ModelFile`] writing.
pub fn encrypt_values(files: &ValuesFiles) -> Result<ValuesInfo> {
    let (input, output) = (files.input.as_path(), files.output.as_path());
    check_new(output, files.force)?;
    let (key, _) = load_key(&files.key_file, files.allow_test_keys)?;
    let public = key.public_key();
    let values = read_values(input)?;
    let cts = values
        .iter()
        .map(|&x| PheCiphertext::encrypt_f64(public, x, &mut rand::rngs::OsRng))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|source| RunError::PheJson {
            path: input.to_path_buf(),
            source,
        })?;
    write_atomic(output, ciphertexts_to_json(public, &cts).as_bytes())?;
    Ok(ValuesInfo {
        action: "encrypted",
        count: cts.len(),
        key_id: public.id().to_string(),
        output: output.to_path_buf(),
    })
}

/// `gelunet keys decrypt`: the ciphertexts of `files.input` (a document of [`encrypt_values`],
/// an array of `{"v", "e"}` objects, or one) decrypted with the private key of `key_file`
/// and written to `files.output` as a JSON array of numbers (`m · 16^e` rounded to `f64`).
///
/// # Errors
/// [`RunError::Exists`] for an existing `output` without `force`;
/// [`RunError::InvalidOption`] (`--private-key`) for a public key file; the errors of
/// [`load_key`]; [`RunError::Io`] reading `input`; [`RunError::PheJson`] naming `input`
/// for malformed JSON, a document of another key, an exponent out of range, a value not in
/// `Z*_{N²}`, or a plaintext that overflowed python-paillier's signed range;
/// [`RunError::ModelFile`] writing.
pub fn decrypt_values(files: &ValuesFiles) -> Result<ValuesInfo> {
    let (key_file, input, output) = (&files.key_file, &files.input, &files.output);
    check_new(output, files.force)?;
    let (LoadedKey::Private(key), _) = load_key(key_file, files.allow_test_keys)? else {
        return Err(RunError::option(
            "--private-key",
            format!(
                "`{}` holds a public key only; decryption needs the private key",
                key_file.display()
            ),
        ));
    };
    let text = std::fs::read_to_string(input).map_err(RunError::io("--input", input))?;
    let phe = |source| RunError::PheJson {
        path: input.to_path_buf(),
        source,
    };
    let values = ciphertexts_from_json(key.public_key(), &text)
        .map_err(phe)?
        .iter()
        .map(|c| c.decrypt_f64(&key))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(phe)?;
    let mut json = serde_json::to_string(&values).map_err(|e| RunError::Values {
        path: output.to_path_buf(),
        reason: e.to_string(),
    })?;
    json.push('\n');
    write_atomic(output, json.as_bytes())?;
    Ok(ValuesInfo {
        action: "decrypted",
        count: values.len(),
        key_id: key.public_key().id().to_string(),
        output: output.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_files::tests::{dir, TEST_KEYS};
    use crate::{generate_key, KeyFormat};

    /// The files of a test-key run.
    fn files(key: &Path, input: &Path, output: &Path) -> ValuesFiles {
        ValuesFiles {
            key_file: key.into(),
            input: input.into(),
            output: output.into(),
            force: false,
            allow_test_keys: true,
        }
    }

    fn encrypt(key: &Path, input: &Path, output: &Path) -> Result<ValuesInfo> {
        encrypt_values(&files(key, input, output))
    }

    fn decrypt(key: &Path, input: &Path, output: &Path) -> Result<ValuesInfo> {
        decrypt_values(&files(key, input, output))
    }

    #[test]
    fn values_round_trip_through_encrypt_and_decrypt() {
        let d = dir("values-cycle");
        let (sk, pk) = (d.join("k.json"), d.join("k.pub.json"));
        generate_key(&TEST_KEYS, &sk, KeyFormat::Phe, Some(&pk), false).unwrap();
        std::fs::write(d.join("v.csv"), "1.5, -2\n0.125,,3e-5\n\n7 8\n").unwrap();
        let info = encrypt(&pk, &d.join("v.csv"), &d.join("c.json")).unwrap();
        assert_eq!(info.count, 6);
        let out = d.join("v.json");
        let back = decrypt(&sk, &d.join("c.json"), &out).unwrap();
        assert_eq!(back.key_id, info.key_id);
        let got: Vec<f64> = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(got, [1.5, -2.0, 0.125, 3e-5, 7.0, 8.0]);
        // The JSON values file reads back the same, and encrypts again.
        assert_eq!(read_values(&out).unwrap(), got);
        encrypt(&sk, &out, &d.join("c2.json")).unwrap();
        // Existing outputs are kept without force.
        assert!(matches!(
            decrypt(&sk, &d.join("c.json"), &out),
            Err(RunError::Exists { .. })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_values_keys_and_ciphertexts_are_refused() {
        let d = dir("values-refuse");
        let (sk, pk) = (d.join("k.json"), d.join("k.pub.json"));
        generate_key(&TEST_KEYS, &sk, KeyFormat::Phe, Some(&pk), false).unwrap();
        let other = d.join("other.json");
        generate_key(&TEST_KEYS, &other, KeyFormat::Phe, None, false).unwrap();
        for (name, text, needle) in [
            ("a.csv", "1,2\n3,x\n", "line 2, column 2"),
            ("b.csv", "1,inf\n", "line 1, column 2"),
            ("e.json", "[1, \"2\"]", "element 1"),
            ("d.json", "[1,", "not valid JSON"),
        ] {
            std::fs::write(d.join(name), text).unwrap();
            let e = encrypt(&pk, &d.join(name), &d.join("out")).unwrap_err();
            assert!(matches!(e, RunError::Values { .. }), "{e}");
            assert!(e.to_string().contains(needle), "{e}");
            assert!(!d.join("out").exists());
        }
        // A value too large for a 512-bit key at exponent -32.
        std::fs::write(d.join("big.csv"), "1e300\n").unwrap();
        assert!(matches!(
            encrypt(&pk, &d.join("big.csv"), &d.join("out")),
            Err(RunError::PheJson { .. })
        ));
        std::fs::write(d.join("v.csv"), "1\n").unwrap();
        let c = d.join("c.json");
        encrypt(&pk, &d.join("v.csv"), &c).unwrap();
        // Decryption needs a private key, and the one of the document's public key.
        assert!(matches!(
            decrypt(&pk, &c, &d.join("out")),
            Err(RunError::InvalidOption {
                option: "--private-key",
                ..
            })
        ));
        let e = decrypt(&other, &c, &d.join("out")).unwrap_err();
        assert!(
            matches!(
                e,
                RunError::PheJson {
                    source: gelunet_paillier::phe_json::PheJsonError::WrongKey { .. },
                    ..
                }
            ),
            "{e}"
        );
        for bad in [
            "{\"v\": ",
            "[{\"v\": \"1\", \"e\": 99999}]",
            "[{\"v\": \"0\", \"e\": 0}]",
        ] {
            std::fs::write(d.join("bad.json"), bad).unwrap();
            assert!(matches!(
                decrypt(&sk, &d.join("bad.json"), &d.join("out")),
                Err(RunError::PheJson { .. })
            ));
        }
        assert!(!d.join("out").exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
