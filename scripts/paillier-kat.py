#!/usr/bin/env python3
"""Known-answer vectors for gelunet-paillier from python-paillier 1.5 (`pip install phe==1.5.0`).

python-paillier uses the same construction (g = N + 1, Enc(m; r) = (1 + mN) r^N mod N^2),
so the same key and randomness must give the same ciphertext in both implementations.
The key is derived deterministically from a seeded PRNG, so the output is reproducible:

    python3 scripts/paillier-kat.py > paillier/tests/data/python-paillier-kat.json
"""
import json
import random

import phe
from phe import paillier
from phe.util import is_prime

assert phe.__version__ == "1.5.0", phe.__version__

rng = random.Random(20180713)  # IJCAI-18


def prime(bits):
    while True:
        c = rng.getrandbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if is_prime(c):
            return c


p, q = prime(1024), prime(1024)
while q == p:
    q = prime(1024)
pk = paillier.PaillierPublicKey(p * q)
sk = paillier.PaillierPrivateKey(pk, p, q)
n, n2 = pk.n, pk.nsquare

vectors = []
for i in range(8):
    m = rng.randrange(n) if i >= 2 else [0, n - 1][i]
    r = rng.randrange(1, n)
    c = pk.raw_encrypt(m, r_value=r)
    assert sk.raw_decrypt(c) == m
    vectors.append({"m": hex(m)[2:], "r": hex(r)[2:], "c": hex(c)[2:]})

ops = []
for i in range(4):
    a, b = vectors[2 * i], vectors[2 * i + 1]
    k = rng.randrange(-(2**31), 2**31)
    ca, cb = int(a["c"], 16), int(b["c"], 16)
    ea = paillier.EncryptedNumber(pk, ca, 0)
    eb = paillier.EncryptedNumber(pk, cb, 0)
    added = ea._raw_add(ca, cb)
    scaled = ea._raw_mul(k % n)
    assert sk.raw_decrypt(added) == (int(a["m"], 16) + int(b["m"], 16)) % n
    assert sk.raw_decrypt(scaled) == (int(a["m"], 16) * k) % n
    ops.append({"a": 2 * i, "b": 2 * i + 1, "k": k, "sum": hex(added)[2:], "scaled": hex(scaled)[2:]})

print(json.dumps({"generator": "python-paillier 1.5.0 (phe)", "p": hex(p)[2:], "q": hex(q)[2:],
                  "n": hex(n)[2:], "encryptions": vectors, "operations": ops}, indent=1))
