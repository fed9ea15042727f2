//! `t ← t + a·b` over limbs with the x86-64 `MULX`/`ADCX`/`ADOX` instructions (BMI2 and
//! ADX, Intel 2013+, AMD Zen+): the kernel of [`crate::monty`]'s schoolbook products,
//! squarings and Montgomery reductions.
//!
//! Each limb product `a_i·b = (hi_i, lo_i)` (MULX, which sets no flags) is added to the
//! running sum on two independent carry chains: `lo_i + hi_{i−1}` on the carry flag
//! (ADCX) and `+ t_i` on the overflow flag (ADOX), so consecutive limbs do not wait for
//! each other's carries (Intel, "New Instructions Supporting Large Integer Arithmetic on
//! Intel Architecture Processors", 2012; GMP's `mpn_addmul_1` for Broadwell and later
//! does the same). The loop is unrolled four times and steps with `LEA` and `JRCXZ`,
//! which leave both flags alone.
//!
//! Whether the CPU has BMI2 and ADX is detected once at run time ([`available`]); without
//! them, on another architecture, or with `GELUNET_PORTABLE_ARITH` set, [`crate::monty`]
//! uses its portable loop; both give the same limbs. The
//! property tests of [`crate::monty`] compare both against plain `%` reduction.
//!
//! Variable-time in the lengths only (no data-dependent branch or address).
#![allow(unsafe_code)]

use std::sync::OnceLock;

/// Whether this CPU has BMI2 and ADX (detected once), and the environment variable
/// [`PORTABLE_ENV`] is not set.
pub(crate) fn available() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        std::env::var_os(PORTABLE_ENV).is_none()
            && std::arch::is_x86_feature_detected!("bmi2")
            && std::arch::is_x86_feature_detected!("adx")
    })
}

/// Set (to any value) to use the portable loop even where MULX/ADX exist, for comparing
/// the two on one machine (`GELUNET_PORTABLE_ARITH=1 gelunet bench paillier`); read once.
pub(crate) const PORTABLE_ENV: &str = "GELUNET_PORTABLE_ARITH";

/// `t[..a.len()] ← t[..a.len()] + a·b`, returning the carry limb (`t.len() ≥ a.len()`;
/// the caller checks [`available`]).
///
/// # Panics
/// Never: a `t` shorter than `a` is refused by an assertion before any memory is touched
/// (callers always pass equal lengths).
#[inline]
pub(crate) fn addmul_1(t: &mut [u64], a: &[u64], b: u64) -> u64 {
    assert!(t.len() >= a.len(), "addmul_1: t shorter than a");
    assert!(available(), "addmul_1: no BMI2/ADX");
    let head = a.len() % 4;
    let blocks = a.len() / 4;
    let carry: u64;
    // SAFETY: the asm reads `a[0..a.len()]` and reads and writes `t[0..a.len()]`, both in
    // bounds (asserted above), through the pointers in rsi and rdi, which it advances by
    // exactly `a.len()` limbs in total (`head` single steps, then `blocks` steps of four).
    // It uses only the registers declared below, no stack, and the CPU supports MULX,
    // ADCX and ADOX (asserted above).
    unsafe {
        std::arch::asm!(
            "xor r8d, r8d",     // carry limb = 0; clears CF and OF
            "xor r11d, r11d",   // a zero for the final carries
            // head: a.len() % 4 single limbs
            "2:",
            "jrcxz 3f",
            "mulx r9, r10, [rsi]",
            "adcx r10, r8",
            "adox r10, [rdi]",
            "mov [rdi], r10",
            "mov r8, r9",
            "lea rsi, [rsi + 8]",
            "lea rdi, [rdi + 8]",
            "lea rcx, [rcx - 1]",
            "jmp 2b",
            "3:",
            "mov rcx, rax",
            // blocks of four limbs
            "4:",
            "jrcxz 5f",
            "mulx r9, r10, [rsi]",
            "adcx r10, r8",
            "adox r10, [rdi]",
            "mov [rdi], r10",
            "mulx r8, r10, [rsi + 8]",
            "adcx r10, r9",
            "adox r10, [rdi + 8]",
            "mov [rdi + 8], r10",
            "mulx r9, r10, [rsi + 16]",
            "adcx r10, r8",
            "adox r10, [rdi + 16]",
            "mov [rdi + 16], r10",
            "mulx r8, r10, [rsi + 24]",
            "adcx r10, r9",
            "adox r10, [rdi + 24]",
            "mov [rdi + 24], r10",
            "lea rsi, [rsi + 32]",
            "lea rdi, [rdi + 32]",
            "lea rcx, [rcx - 1]",
            "jmp 4b",
            "5:",
            // The top limb: hi + CF + OF never overflows (t + a·b < 2^{64(len+1)}).
            "adcx r8, r11",
            "adox r8, r11",
            inout("rsi") a.as_ptr() => _,
            inout("rdi") t.as_mut_ptr() => _,
            inout("rcx") head => _,
            inout("rax") blocks => _,
            in("rdx") b,
            out("r8") carry,
            out("r9") _,
            out("r10") _,
            out("r11") _,
            options(nostack),
        );
    }
    carry
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    /// The kernel equals the portable `u128` loop for every length 0–70 (all four head
    /// lengths, all-ones limbs included), on the limbs and the carry.
    #[test]
    fn matches_the_portable_loop() {
        if !super::available() {
            return; // nothing to compare on this CPU
        }
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        for len in 0..=70 {
            for trial in 0..20 {
                let (a, t, b): (Vec<u64>, Vec<u64>, u64) = if trial == 0 {
                    (vec![u64::MAX; len], vec![u64::MAX; len], u64::MAX)
                } else {
                    (
                        (0..len).map(|_| rng.gen()).collect(),
                        (0..len).map(|_| rng.gen()).collect(),
                        rng.gen(),
                    )
                };
                let mut want = t.clone();
                let c = crate::monty::addmul_1_portable(&mut want, &a, b);
                let mut got = t.clone();
                let carry = super::addmul_1(&mut got, &a, b);
                assert_eq!((got, carry), (want, c), "len {len}, trial {trial}");
            }
        }
    }
}
