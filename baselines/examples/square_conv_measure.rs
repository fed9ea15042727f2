//! Measures CryptoNets' BFV conv net on a named architecture (MNIST 1×28×28), weights
//! in {−1, 0, 1} and binarized inputs: `cargo run --release -p gelunet-baselines
//! --example square_conv_measure -- conv1 8192` (one sample, then the batch; the
//! seconds of every block; LeNet-5's outputs exceed one 61-bit `t`, so `lenet5` runs
//! CryptoNets' CRT: one run per plaintext modulus, timings summed).

use gelunet_baselines::square_conv_bfv::measure_square_conv;
use gelunet_protocol::arch::Arch;
use gelunet_protocol::conv::Shape;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "conv1".into());
    let batch: usize = args.next().map_or(Ok(8192), |s| s.parse())?;
    let arch = Arch::named(&name).ok_or("unknown architecture")?;
    let input = Shape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let m = measure_square_conv(&arch, input, 1, 1, batch, 1)?;
    for t in [&m.single, &m.batch] {
        println!(
            "{}: {} samples, prepare {:.2} s, encrypt {:.2} s, infer {:.2} s, decrypt {:.2} s, latency {:.2} s, {:.5} s/sample, exact {}",
            t.arch, t.samples, t.prepare_secs, t.encrypt_secs, t.infer_secs, t.decrypt_secs,
            t.latency_secs(), t.per_sample_secs(), t.correct
        );
        let steps: Vec<String> = t
            .steps
            .iter()
            .map(|(n, s)| format!("{n} {s:.2} s"))
            .collect();
        println!(
            "  squares at levels {:?}; {}",
            t.square_levels,
            steps.join(", ")
        );
        if t.crt_components > 1 {
            println!(
                "  CRT over {} plaintext moduli (the seconds are the runs' sums)",
                t.crt_components
            );
        }
    }
    println!("{}", m.batch.parameters);
    Ok(())
}
