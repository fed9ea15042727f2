//! `gelunet keys` and `gelunet completions`, run as a user would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod net_support;

use net_support::{gelunet, output_ok, TempDir, TEST_KEYS};

fn stdout(args: &[&str]) -> String {
    String::from_utf8(output_ok(gelunet().args(args)).stdout).unwrap()
}

/// `gelunet keys generate` of a python-paillier test key pair; its stdout.
fn generate_phe(private: &str, public: &str) -> String {
    let mut args = vec!["keys", "generate", "--out", private, "--format", "phe"];
    args.extend(["--public-out", public]);
    args.extend(TEST_KEYS);
    stdout(&args)
}

#[test]
fn keys_generate_inspect_convert_and_refuse_overwrites() {
    let dir = TempDir::new("keys");
    let (sk, pk) = (dir.join("a.json"), dir.join("a.pub.json"));
    let (sk_s, pk_s) = (sk.to_str().unwrap(), pk.to_str().unwrap());
    let made = generate_phe(sk_s, pk_s);
    assert!(made.contains("python-paillier private key"), "{made}");
    assert!(made.contains("N: 512 bits"), "{made}");
    // Nothing secret on stdout: the private key file's p never appears.
    let key: serde_json::Value = serde_json::from_slice(&std::fs::read(&sk).unwrap()).unwrap();
    assert_eq!(key["kty"], "DAJ");
    assert_eq!(key["pub"]["alg"], "PAI-GN1");
    assert!(!made.contains(key["p"].as_str().unwrap()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sk).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let public = stdout(&["keys", "inspect", pk_s, "--insecure-test-keys"]);
    assert!(public.contains("public key"), "{public}");
    let fp = |s: &str| {
        s.lines()
            .find(|l| l.contains("fingerprint"))
            .unwrap()
            .to_string()
    };
    assert_eq!(fp(&public), fp(&made));
    // To the gelunet key file and back.
    let bin = dir.join("a.key");
    let mut conv = vec!["keys", "convert", sk_s, "--out", bin.to_str().unwrap()];
    conv.extend(["--to", "gelunet", "--insecure-test-keys"]);
    let converted = stdout(&conv);
    assert_eq!(fp(&converted), fp(&made));
    // An existing file is not replaced without --force.
    let again = gelunet().args(&conv).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    conv.push("--force");
    output_ok(gelunet().args(&conv));
    // Test-size keys need --insecure-test-keys.
    let strict = gelunet().args(["keys", "inspect", pk_s]).output().unwrap();
    assert!(!strict.status.success());
}

#[test]
fn completions_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&["completions", shell]);
        assert!(!script.is_empty(), "{shell}");
        for sub in ["train", "serve", "join", "infer", "keys"] {
            assert!(script.contains(sub), "{shell}: {sub}");
        }
    }
    assert!(!gelunet()
        .args(["completions", "tcsh"])
        .output()
        .unwrap()
        .status
        .success());
}

#[test]
fn keys_encrypt_and_decrypt_values_files() {
    let dir = TempDir::new("keys-values");
    let (sk, pk) = (dir.join("b.json"), dir.join("b.pub.json"));
    let (sk_s, pk_s) = (sk.to_str().unwrap(), pk.to_str().unwrap());
    generate_phe(sk_s, pk_s);
    std::fs::write(dir.join("v.csv"), "0.5,-3\n1e-3\n").unwrap();
    let c = dir.join("c.json");
    let (v_s, c_s) = (dir.join("v.csv"), c.to_str().unwrap());
    let enc = stdout(&[
        "keys",
        "encrypt",
        "--public-key",
        pk_s,
        "--input",
        v_s.to_str().unwrap(),
        "--output",
        c_s,
        "--insecure-test-keys",
    ]);
    assert!(enc.contains("encrypted 3 values"), "{enc}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&c).unwrap()).unwrap();
    assert_eq!(doc["ciphertexts"][0]["e"], -32);
    let out = dir.join("out.json");
    let dec_args = [
        "keys",
        "decrypt",
        "--private-key",
        sk_s,
        "--input",
        c_s,
        "--output",
        out.to_str().unwrap(),
        "--insecure-test-keys",
    ];
    let dec = stdout(&dec_args);
    assert!(dec.contains("decrypted 3 values"), "{dec}");
    let got: Vec<f64> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(got, [0.5, -3.0, 1e-3]);
    // With the public key only: refused, naming the option, nothing written.
    let mut bad = dec_args;
    bad[3] = pk_s;
    bad[7] = "never.json";
    let refused = gelunet()
        .args(bad)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--private-key"));
    assert!(!dir.join("never.json").exists());
}

/// A reader that goes away (`gelunet … | head`) ends the output, not the run: no panic
/// on the broken pipe, the exit code is the run's, and the files are written.
#[test]
fn a_closed_stdout_ends_the_output_not_the_run() {
    let dir = TempDir::new("keys-epipe");
    let sk = dir.join("k.json");
    let mut args = vec!["keys", "generate", "--out", sk.to_str().unwrap()];
    args.extend(TEST_KEYS);
    let mut child = gelunet()
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the key exists, so that every write to stdout fails.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(sk.exists());
}

/// An error with standard error already closed ends the run with the failure exit code
/// (1), not a panic (101) on the broken pipe.
#[test]
fn a_closed_stderr_keeps_the_failure_exit_code() {
    let dir = TempDir::new("keys-stderr-epipe");
    let missing = dir.join("no-such-key.json");
    let mut child = gelunet()
        .args(["keys", "inspect", missing.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status}");
}
