#!/usr/bin/env python3
"""How gelunet's training defaults were chosen: `gelunet train --plaintext` (the plaintext
fixed-point reference; the same model as the encrypted run, in seconds) over a grid of
learning rate and epochs, with the default batch size (the largest the session bound and
the packing allow) and the default network (one hidden layer of 12 sigmoid units), on the
tuning seeds 101-110, never on the reported seeds 1-5.

Usage:
    cargo build --release -p gelunet-cli
    python3 scripts/tune-defaults.py --gelunet target/release/gelunet [--data-dir DIR] \
        [--out tune] [--jobs 2]

Per built-in dataset it prints the mean test accuracy of every grid point and the best
one (ties: fewer epochs, then the smaller learning rate). For `csv:` datasets it reads
Iris, Pima and kr-vs-kp as CSV files (`csv:iris/iris.data`, ...: the generic loader, so
kr-vs-kp's text columns are one-hot encoded) and picks the one setting with the best
accuracy averaged over the three. Epoch counts are capped where an encrypted run would
take too long (Iris: 8 epochs, about 25 s with 2048-bit keys).
"""
import argparse
import concurrent.futures
import itertools
import json
import os
import statistics
import subprocess
import sys

SEEDS = list(range(101, 111))
LRS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
GRIDS = {
    # dataset: epochs tried
    "iris": [2, 4, 6, 8],
    "pima": [1, 2, 4, 6, 8],
    "kr-vs-kp": [1, 2, 4, 6, 8],
}
CSV_FILES = ["iris/iris.data", "pima-diabetes/pima-indians-diabetes.data",
             "kr-vs-kp/kr-vs-kp.data"]
CSV_EPOCHS = [2, 4, 6, 8]
# MNIST: full set, 1 epoch (the encrypted run's practical limit), a small grid and three
# tuning seeds (one plaintext run is about 45 s of CPU).
MNIST_LRS = [0.01, 0.02, 0.05, 0.1]
MNIST_SEEDS = SEEDS[:3]


def run(a, dataset, lr, epochs, seed):
    tag = f"{dataset.replace('/', '_').replace(':', '_')}-lr{lr}-e{epochs}-s{seed}"
    path = os.path.join(a.out, tag + ".json")
    if not os.path.exists(path):
        cmd = [a.gelunet, "train", "--plaintext", "--dataset", dataset, "--lr", str(lr),
               "--epochs", str(epochs), "--seed", str(seed), "--quiet", "--report", path]
        if a.data_dir:
            cmd += ["--data-dir", a.data_dir]
        subprocess.run(cmd, check=True)
    with open(path) as f:
        return json.load(f)["test_accuracy"]


def grid(a, pool, datasets, epochs_list):
    """Mean test accuracy over SEEDS per (dataset, lr, epochs)."""
    keys = [(d, lr, e) for d in datasets for lr in LRS for e in epochs_list]
    futs = {(d, lr, e, s): pool.submit(run, a, d, lr, e, s) for (d, lr, e) in keys for s in SEEDS}
    return {(d, lr, e): statistics.mean(futs[(d, lr, e, s)].result() for s in SEEDS)
            for (d, lr, e) in keys}


def best(scores):
    """The best (lr, epochs) of {(lr, epochs): score}; ties: fewer epochs, smaller lr."""
    return max(scores, key=lambda k: (round(scores[k], 6), -k[1], -k[0]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gelunet", default="target/release/gelunet")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="tune")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--mnist", action="store_true",
                    help="also MNIST: 1 epoch, --lr in MNIST_LRS, seeds 101-103")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
        for ds, epochs in GRIDS.items():
            s = grid(a, pool, [ds], epochs)
            table = {(lr, e): s[(ds, lr, e)] for lr in LRS for e in epochs}
            print(f"## {ds} (mean test accuracy, seeds {SEEDS[0]}-{SEEDS[-1]})")
            print("lr \\ epochs | " + " | ".join(str(e) for e in epochs))
            for lr in LRS:
                print(f"{lr} | " + " | ".join(f"{table[(lr, e)]:.3f}" for e in epochs))
            lr, e = best(table)
            print(f"best: --lr {lr} --epochs {e}: {table[(lr, e)]:.4f}\n", flush=True)
        if a.mnist:
            for lr in MNIST_LRS:
                accs = [run(a, "mnist", lr, 1, seed) for seed in MNIST_SEEDS]
                print(f"mnist --lr {lr} --epochs 1: {statistics.mean(accs):.4f}", flush=True)
        csvs = [f"csv:{f}" for f in CSV_FILES]
        s = grid(a, pool, csvs, CSV_EPOCHS)
        table = {(lr, e): statistics.mean(s[(d, lr, e)] for d in csvs)
                 for lr in LRS for e in CSV_EPOCHS}
        print("## csv: mean over " + ", ".join(csvs))
        print("lr \\ epochs | " + " | ".join(str(e) for e in CSV_EPOCHS))
        for lr in LRS:
            print(f"{lr} | " + " | ".join(f"{table[(lr, e)]:.3f}" for e in CSV_EPOCHS))
        lr, e = best(table)
        per = ", ".join(f"{d} {s[(d, lr, e)]:.3f}" for d in csvs)
        print(f"best: --lr {lr} --epochs {e}: {table[(lr, e)]:.4f} ({per})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
