//! The Markdown report (`report.md`).

use std::fmt::Write as _;

use crate::activation::Split;
use crate::inference::Timing;
use crate::{parameters_line, PaperReport};

/// The `Targets:` list items of parts 4 and 6: `met:`, `**missed**:` or not evaluated.
pub(crate) fn targets_list(o: &mut String, targets: &[(String, Option<bool>)]) {
    for (t, ok) in targets {
        let mark = match ok {
            Some(true) => "met:",
            Some(false) => "**missed**:",
            None => "not evaluated (test-size keys; the targets are for 2048-bit keys):",
        };
        let _ = writeln!(o, "- {mark} {t}");
    }
}

fn ms(s: f64) -> String {
    crate::report_ms(s)
}

fn loss(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "NaN/∞".into()
    }
}

fn split_row(out: &mut String, name: &str, unit: &str, s: &Split, params: &str) {
    let _ = writeln!(
        out,
        "| {name} | {unit} | {} | {} ({} + {}) | {} | {} | {params} |",
        ms(s.communication),
        ms(s.crypto),
        ms(s.decrypt),
        ms(s.encrypt),
        ms(s.activation),
        ms(s.total)
    );
}

/// The Paillier parameters of a table row: key size (marked when test-size), threads and
/// cores.
fn paillier_line(key_bits: u64, test_keys: bool, threads: usize, cores: usize) -> String {
    format!(
        "Paillier {key_bits} bits{}, threads {threads}, cores {cores}",
        if test_keys { " TEST-SIZE" } else { "" }
    )
}

/// One scheme's row of Table 5: its timings, then `parameters`, `detail` and the timing's
/// note; or, when it did not run, why (`error`) and `parameters`.
fn timing_row(
    out: &mut String,
    model: &str,
    scheme: &str,
    (timing, error): (Option<&Timing>, Option<&str>),
    parameters: &str,
    detail: &str,
) {
    let _ = match timing {
        Some(t) => writeln!(
            out,
            "| {model} | {scheme} | {} | {} ({}){} | {} | {} | {} | {} | {parameters}; {detail}{} |",
            ms(t.single_secs),
            ms(t.online_single_secs),
            ms(t.offline_single_secs),
            t.preprocessed_suffix(ms),
            t.batch_samples,
            ms(t.batch_secs),
            ms(t.batch_per_sample_secs),
            t.predictions_match_plaintext,
            t.note
        ),
        None => writeln!(
            out,
            "| {model} | {scheme} | not run: {} | | | | | | {parameters} |",
            error.unwrap_or_default()
        ),
    };
}

/// Renders the whole report.
#[must_use]
#[allow(clippy::too_many_lines)]
pub fn markdown(r: &PaperReport) -> String {
    let env = &r.environment;
    let mut o = String::new();
    let _ = writeln!(o, "# GELU-Net paper comparisons (`gelunet bench paper`)\n");
    if env.quick {
        let _ = writeln!(
            o,
            "> **Quick mode**: small sizes for tests (few epochs, Iris only, {}-bit keys{}). Not the paper's figures.\n",
            env.key_bits,
            if env.test_keys { ", TEST-SIZE" } else { "" }
        );
    }
    let _ = writeln!(o, "| | |\n| --- | --- |");
    let _ = writeln!(o, "| command | `{}` |", env.command);
    let _ = writeln!(
        o,
        "| machine | {} cores (`available_parallelism`), {} |",
        env.cores, env.platform
    );
    let _ = writeln!(o, "| threads | rayon {} |", env.rayon_threads);
    let _ = writeln!(
        o,
        "| Paillier | {} bits{}, backend {} |",
        env.key_bits,
        if env.test_keys {
            " (TEST-SIZE, insecure)"
        } else {
            ""
        },
        env.backend
    );
    let _ = writeln!(o, "| wall time | {:.1} s |\n", env.seconds);

    if let Some(s) = &r.stability {
        let _ = writeln!(o, "## 1. Training stability (paper Fig. 3)\n");
        let _ = writeln!(
            o,
            "Dataset **{}** ({} training samples over {} clients; the paper does not say which dataset Fig. 3 uses — Iris is quick and is the dataset of the paper's Dense(12) timings). \
             Architecture: one hidden layer of {:?} neurons, softmax output; mini-batch SGD with the gradient summed over B = {}, {} epochs, learning rates {:?}, seed {}. \
             All four runs of a panel start from the same Xavier weights and see the same mini-batches (the stream GELU-Net's clients draw). \
             GELU-Net is its exact fixed-point reference (sigmoid applied by the client; bit-identical to the encrypted run); the baselines are `f64` networks with the polynomial activation. \
             Diverged = a NaN/∞ loss, a fixed-point overflow, or a final loss above the initial one. Plaintext training only: no keys, threads {}, cores {}.\n",
            s.dataset, s.train_samples, s.clients, s.widths, s.batch, s.epochs, s.lrs, s.seed, env.rayon_threads, env.cores
        );
        let _ = writeln!(
            o,
            "| hidden | η | scheme | loss at start | final loss | diverged | status | parameters |"
        );
        let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- |");
        let params = format!(
            "plaintext training (no keys, no BFV), batch {}, {} epochs, threads {}, cores {}",
            s.batch, s.epochs, env.rayon_threads, env.cores
        );
        for run in &s.runs {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {params} |",
                run.width,
                run.lr,
                run.scheme,
                run.losses.first().map_or("–".into(), |&v| loss(v)),
                run.losses.last().map_or("–".into(), |&v| loss(v)),
                if run.diverged { "**yes**" } else { "no" },
                run.status
            );
        }
        let _ = writeln!(o);
        for p in &s.plots {
            let _ = writeln!(o, "![{p}]({p})\n");
        }
    }

    if let Some(a) = &r.accuracy {
        let _ = writeln!(o, "## 2. Accuracy (paper Table 3)\n");
        let _ = writeln!(
            o,
            "Test accuracy, mean ± std over seeds (each seed: its own stratified 80/20 split, standardization fitted on the training split, initialization and mini-batch stream). \
             All schemes train on the same batches from the same initial weights, {} clients, B = {}. \
             CryptoNets = the square-activation network trained in plaintext and **deployed** as a fixed-point integer network (`SquareNet`, scale `fx = fw` chosen as large as a BFV plaintext modulus ≤ {} bits allows); \
             BGN-Net = the Taylor-5 sigmoid network evaluated in plaintext.\n",
            crate::CLIENTS,
            crate::BATCH,
            crate::accuracy::MAX_DEPLOY_T_BITS
        );
        let _ = writeln!(o, "| dataset | network | epochs, η | seeds | GELU-Net | CryptoNets | BGN-Net | paper (GELU / CN / BGN) | parameters |");
        let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for row in &a.rows {
            let bfv = row.bfv.as_ref().map(|b| &b.parameters);
            let _ = writeln!(
                o,
                "| {} | {:?} | {}, {} | {} | {} | {} | {} | {} | {} |",
                row.dataset,
                row.widths,
                row.epochs,
                row.lr,
                row.seeds.len(),
                row.gelu.show(),
                row.cryptonets.show(),
                row.bgn.show(),
                row.paper
                    .map_or("–".into(), |(g, c, b)| format!("{g} / {c} / {b}")),
                parameters_line(env, bfv, Some(row.batch))
            );
        }
        let _ = writeln!(o, "\nWhere GELU-Net's numbers come from, and the checks:\n");
        for row in &a.rows {
            let _ = writeln!(o, "- **{}**: {}.", row.dataset, row.gelu_source);
            if let Some(e) = &row.encrypted {
                let _ = writeln!(
                    o,
                    "  Encrypted run: {} sessions / {} iterations in {:.1} s ({} per iteration, {:.0} bytes on the wire per iteration), key generation {:.1} s; {}-bit keys{}, mask {}, {} clients, B = {}, threads {}, cores {}.",
                    e.sessions,
                    e.iterations,
                    e.seconds,
                    ms(e.secs_per_iteration),
                    e.bytes_per_iteration,
                    e.keygen_secs,
                    e.key_bits,
                    if e.test_keys { " (TEST-SIZE)" } else { "" },
                    e.mask,
                    e.clients,
                    e.batch,
                    e.threads,
                    env.cores
                );
            }
            if let Some(b) = &row.bfv {
                let _ = writeln!(
                    o,
                    "  CryptoNets through BFV (seed 0, whole test set, {} samples in one ciphertext batch): {}/{} predictions equal the plaintext fixed-point ones, logits exact: {}, accuracy {:.3}, {:.2} s; {}.",
                    b.samples, b.agree, b.samples, b.logits_exact, b.accuracy, b.seconds, b.parameters
                );
            }
            let _ = writeln!(
                o,
                "  `f64` views: square network before quantization {}, sigmoid network {}; deployed square scales (bits) per seed {:?}.",
                row.cryptonets_f64.show(),
                row.sigmoid_f64.show(),
                row.cryptonets_scale_bits
            );
        }
        if let Some(p) = &a.plot {
            let _ = writeln!(o, "\n![{p}]({p})\n");
        }
    }

    if let Some(c) = &r.activation {
        let _ = writeln!(o, "## 3. Cost of one activation (paper Table 1)\n");
        let _ = writeln!(
            o,
            "GELU-Net: the server sends `[z]_c` over loopback QUIC (gelunet-net, TLS 1.3, in this process, {} tokio workers), the client decrypts, applies the sigmoid, re-encrypts (CRT encryption, it owns the key) and sends `[a]_c` back; \
             communication = round trip − client work. Packed: {} values per ciphertext in {}-bit slots. Mean of {} rounds. \
             FHE: one full BFV ciphertext ({} slots): CryptoNets' square (one ct×ct product + relinearization) and BGN-Net's degree-5 Taylor sigmoid (four ct×ct products, depth 3), from the baselines' measurement helpers.\n",
            c.tokio_workers,
            c.gelu.get(1).map_or(1, |g| g.values_per_ciphertext),
            c.gelu.get(1).map_or(0, |g| g.slot_bits),
            c.repetitions,
            c.bfv_parameters.slots
        );
        let pp = paillier_line(c.key_bits, c.test_keys, c.threads, env.cores);
        let _ = writeln!(o, "| scheme | per | communication | crypto (decrypt + encrypt) | activation | total | parameters |");
        let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- |");
        for g in &c.gelu {
            let name = if g.values_per_ciphertext == 1 {
                "GELU-Net, 1 value/ct".to_string()
            } else {
                format!("GELU-Net, packed {} values/ct", g.values_per_ciphertext)
            };
            split_row(
                &mut o,
                &name,
                "ciphertext",
                &g.per_ciphertext,
                &format!("{pp}, {} B on the wire", g.wire_bytes),
            );
            split_row(&mut o, &name, "value", &g.per_value, &pp);
        }
        let bp = format!(
            "{}; threads 1 (fhe.rs), cores {}",
            c.bfv_parameters, env.cores
        );
        for (name, t) in [
            ("CryptoNets square (BFV)", &c.bfv_square),
            ("BGN-Net Taylor-5 (BFV)", &c.bfv_taylor5),
        ] {
            let _ = writeln!(
                o,
                "| {name} | ciphertext | – | {} | (homomorphic) | {} | {bp}; exact: {} |",
                ms(t.per_ciphertext_secs),
                ms(t.per_ciphertext_secs),
                t.correct
            );
            let _ = writeln!(
                o,
                "| {name} | value (÷ {} slots) | – | {} | (homomorphic) | {} | BFV N = {}, log q = {}, t = {} bits, all slots filled; threads 1, cores {} |",
                t.slots,
                ms(t.per_value_secs),
                ms(t.per_value_secs),
                c.bfv_parameters.degree,
                c.bfv_parameters.log_q,
                c.bfv_parameters.t_bits,
                env.cores
            );
        }
        let _ = writeln!(
            o,
            "| BFV encrypt / decrypt | ciphertext | – | {} / {} | – | – | {bp} |",
            ms(c.bfv_encrypt.per_ciphertext_secs),
            ms(c.bfv_decrypt.per_ciphertext_secs)
        );
        let _ = writeln!(
            o,
            "\nPer *value*, a fully packed BFV ciphertext amortizes its cost over {} slots, which GELU-Net's Paillier plaintexts cannot match; per *ciphertext* (and so for one sample, where only one slot is used) GELU-Net's round trip is compared with the homomorphic evaluation alone (BFV encryption and decryption excluded).\n",
            c.bfv_parameters.slots
        );
    }

    if let Some(inf) = &r.inference {
        let _ = writeln!(
            o,
            "## 4. Inference latency and throughput (paper Table 5, §5.2)\n"
        );
        let _ = writeln!(
            o,
            "GELU-Net: the trained model on the server, an in-memory inference client (one round trip per layer); one sample with row packing, a batch with sample packing. CryptoNets: the square network of the same shape under BFV, one sample per SIMD slot (a single sample costs a whole batch). Key generation and model preparation excluded. *Online*: the encryption randomness of one sample computed beforehand on both sides (GELU-Net: the client's obfuscators; BFV: encryptions of zero), the offline time in brackets. Ratio = BFV time / GELU-Net time (> 1: GELU-Net faster).\n"
        );
        let _ = writeln!(o, "| model | scheme | 1 sample (latency) | 1 sample online (offline); layers preprocessed (offline) | batch | batch time | per sample | predictions = plaintext | parameters |");
        let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for row in &inf.rows {
            let pl = paillier_line(inf.key_bits, env.test_keys, inf.threads, env.cores);
            timing_row(
                &mut o,
                &row.model,
                "GELU-Net",
                (row.gelu.as_ref(), row.gelu_error.as_deref()),
                &pl,
                "",
            );
            let bp = row
                .bfv_parameters
                .as_ref()
                .map_or(String::new(), |d| format!("{d}"));
            timing_row(
                &mut o,
                &row.model,
                "CryptoNets (BFV)",
                (row.bfv.as_ref(), row.bfv_error.as_deref()),
                &bp,
                &format!(
                    "square net at fx = fw = {} bits; threads {}, cores {}; ",
                    row.square_scale_bits.map_or("?".into(), |f| f.to_string()),
                    env.rayon_threads,
                    env.cores
                ),
            );
            let _ = writeln!(
                o,
                "| {} | ratio BFV / GELU-Net | {} | {} | | | {} | | {pl}; {bp}; paper Table 5 (GELU-Net, local-local): {} |",
                row.model,
                row.latency_ratio.map_or("–".into(), |v| format!("{v:.1}×")),
                row.online_latency_ratio.map_or("–".into(), |v| format!("{v:.1}×")),
                row.throughput_ratio.map_or("–".into(), |v| format!("{v:.2}×")),
                row.paper_secs.map_or("–".into(), ms)
            );
            if let (Some(r), Some(b)) = (row.throughput_ratio_full_bfv, &row.bfv) {
                let _ = writeln!(
                    o,
                    "| {} | ratio with BFV's batch full ({} samples/ciphertext) | | | | | {} | | {pl}; {bp}; {} |",
                    row.model,
                    row.bfv_parameters.as_ref().map_or(0, |d| d.slots),
                    format_args!("{r:.3}×"),
                    if r < 1.0 {
                        format!("batched FHE wins per sample by {:.0}× ({} vs {} per sample)", 1.0 / r, ms(b.full_batch_per_sample_secs.unwrap_or(f64::NAN)), row.gelu.as_ref().map_or("–".into(), |g| ms(g.batch_per_sample_secs)))
                    } else {
                        "GELU-Net wins per sample even against a full BFV batch".to_string()
                    }
                );
            }
        }
        let _ = writeln!(o, "\nTargets:\n");
        targets_list(&mut o, &inf.targets);
        if let Some(p) = &inf.plot {
            let _ = writeln!(o, "\n![{p}]({p})\n");
        }
    }

    if let Some(sch) = &r.schemes {
        let _ = writeln!(
            o,
            "## 5. Other schemes of the seed papers: PROUD, SecureNets, complement and partition\n"
        );
        o.push_str(&crate::schemes::markdown(sch));
        o.push('\n');
    }

    if let Some(conv) = &r.conv {
        let _ = writeln!(
            o,
            "## 6. Convolutional networks: Conv-1 and LeNet-5 (paper Table 4)\n"
        );
        o.push_str(&crate::conv_table::markdown(conv));
        o.push('\n');
    }

    if !r.failures.is_empty() {
        let _ = writeln!(o, "## Parts that failed\n");
        for (p, e) in &r.failures {
            let _ = writeln!(o, "- part {p}: {e}");
        }
    }
    o
}
