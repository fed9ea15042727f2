#!/usr/bin/env python3
"""The python-paillier 1.5 (phe, with gmpy2) figures that gelunet-paillier is compared with.

Single thread, 2048-bit keys, on whatever machine runs it:

    pip install phe==1.5.0 gmpy2
    python3 scripts/bench-python-paillier.py [--seconds 2] [--json]

Reports operations per second for: encrypt (public key, textbook r^N), decrypt (CRT),
ciphertext x 24-bit int, ciphertext x 32-bit signed int, a 128-term encrypted dot product with signed 32-bit
weights and with their absolute values.
"""
import argparse
import json
import random
import time

import phe
from phe import paillier
from phe.util import HAVE_GMP


def rate(fn, seconds):
    fn()
    start = time.perf_counter()
    n = 0
    while n < 2 or time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = random.Random(1)
    pk, sk = paillier.generate_paillier_keypair(n_length=args.key_bits)
    m = rng.randrange(2**60)
    c = pk.encrypt(m)
    k24 = rng.randrange(2**23, 2**24)
    k32 = -rng.randrange(2**30, 2**31)
    xs = [pk.encrypt(rng.randrange(2**24)) for _ in range(128)]
    ws = [rng.randrange(-2**31, 2**31) for _ in range(128)]
    us = [abs(w) for w in ws]

    def dot(weights):
        acc = xs[0] * weights[0]
        for x, w in zip(xs[1:], weights[1:]):
            acc = acc + x * w
        return acc

    out = {
        "library": f"python-paillier {phe.__version__}",
        "gmpy2": HAVE_GMP,
        "key_bits": args.key_bits,
        "encrypt": rate(lambda: pk.raw_encrypt(m), args.seconds),
        "decrypt": rate(lambda: sk.raw_decrypt(c.ciphertext(be_secure=False)), args.seconds),
        "scalar_mul_24": rate(lambda: c * k24, args.seconds),
        "scalar_mul_32": rate(lambda: c * k32, args.seconds),
        # Signed 32-bit weights, as a network has (negative ones cost an inversion each).
        "dot_128": rate(lambda: dot(ws), args.seconds),
        # The same magnitudes, all non-negative: python-paillier's best case.
        "dot_128_unsigned": rate(lambda: dot(us), args.seconds),
    }
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for k, v in out.items():
            print(f"{k:<16} {v:.1f}" if isinstance(v, float) else f"{k:<16} {v}")


if __name__ == "__main__":
    main()
