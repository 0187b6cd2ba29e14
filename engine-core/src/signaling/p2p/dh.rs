//! The Diffie-Hellman key exchange of a 1:1 call (telegram-signaling.md §4.2-§4.4; the spec is
//! core.telegram.org/api/end-to-end/video-calls "Key Generation" and
//! core.telegram.org/mtproto/security_guidelines).
//!
//! ```text
//! caller (A)                               callee (B)
//! DhConfig::validate -> DhParams           DhConfig::validate -> DhParams
//! CallerExchange::new: g_a, g_a_hash  -->  (phoneCallRequested.g_a_hash)
//!                                          CalleeExchange::new(g_a_hash): g_b
//! (phoneCallAccepted.g_b)             <--
//! CallerExchange::complete(g_b)
//!   -> CallKey, key_fingerprint       -->  (phoneCall.g_a_or_b, key_fingerprint)
//!                                          CalleeExchange::complete(g_a, fingerprint) -> CallKey
//! ```
//!
//! Checks, each with its own [`P2pError`]: `p` is 2048 bits, prime and safe (`(p-1)/2` prime);
//! `g` is in 2..=7 and a quadratic residue mod `p` (the `p mod 4g` conditions); every `g_a`/`g_b`,
//! generated or received, lies in `[2^1984, p - 2^1984]`; `SHA256(g_a)` equals the committed
//! `g_a_hash`; the received `key_fingerprint` equals the computed one.
//!
//! Big-number work uses `crypto-bigint`'s constant-time Montgomery exponentiation, so the secret
//! exponents do not leak through timing. Primality is checked with Miller-Rabin whose bases come
//! from a caller-supplied seed; Telegram's well-known prime ([`TELEGRAM_DH_PRIME`]) skips that
//! (about 1 s of CPU otherwise), and a validated [`DhParams`] can be kept for as long as the
//! server's `dhConfig.version` does not change.

use std::fmt;

use aws_lc_rs::digest;
use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Encoding, U2048};

use super::emoji;
use super::{P2pError, PublicValue};

/// Size of `p`, `g_a`, `g_b`, the secret exponents and the shared key, in bytes.
pub const DH_BYTES: usize = 256;

/// Miller-Rabin rounds run on each of `p` and `(p-1)/2` when `p` is not the well-known prime.
///
/// The security guidelines accept 15 rounds (error below 10^-9 for random input); bases are
/// drawn from the caller's seed, so a server cannot prepare a composite that passes them, and
/// 32 rounds bound even a worst-case composite's chance to 4^-32.
pub const MILLER_RABIN_ROUNDS: u32 = 32;

/// The 2048-bit safe prime Telegram's servers hand out in `messages.dhConfig`, as embedded by
/// Telegram Desktop (`MTP::IsPrimeAndGood`, Telegram/SourceFiles/mtproto/mtproto_dh_utils.cpp).
///
/// Validation recognizes it and skips the Miller-Rabin tests. The generator conditions are still
/// checked: with this prime only `g` = 3, 4 and 7 are quadratic residues (`p mod 8 = 3`,
/// `p mod 5 = 3`, `p mod 24 = 11`).
pub const TELEGRAM_DH_PRIME: [u8; DH_BYTES] = [
    0xC7, 0x1C, 0xAE, 0xB9, 0xC6, 0xB1, 0xC9, 0x04, 0x8E, 0x6C, 0x52, 0x2F, 0x70, 0xF1, 0x3F, 0x73,
    0x98, 0x0D, 0x40, 0x23, 0x8E, 0x3E, 0x21, 0xC1, 0x49, 0x34, 0xD0, 0x37, 0x56, 0x3D, 0x93, 0x0F,
    0x48, 0x19, 0x8A, 0x0A, 0xA7, 0xC1, 0x40, 0x58, 0x22, 0x94, 0x93, 0xD2, 0x25, 0x30, 0xF4, 0xDB,
    0xFA, 0x33, 0x6F, 0x6E, 0x0A, 0xC9, 0x25, 0x13, 0x95, 0x43, 0xAE, 0xD4, 0x4C, 0xCE, 0x7C, 0x37,
    0x20, 0xFD, 0x51, 0xF6, 0x94, 0x58, 0x70, 0x5A, 0xC6, 0x8C, 0xD4, 0xFE, 0x6B, 0x6B, 0x13, 0xAB,
    0xDC, 0x97, 0x46, 0x51, 0x29, 0x69, 0x32, 0x84, 0x54, 0xF1, 0x8F, 0xAF, 0x8C, 0x59, 0x5F, 0x64,
    0x24, 0x77, 0xFE, 0x96, 0xBB, 0x2A, 0x94, 0x1D, 0x5B, 0xCD, 0x1D, 0x4A, 0xC8, 0xCC, 0x49, 0x88,
    0x07, 0x08, 0xFA, 0x9B, 0x37, 0x8E, 0x3C, 0x4F, 0x3A, 0x90, 0x60, 0xBE, 0xE6, 0x7C, 0xF9, 0xA4,
    0xA4, 0xA6, 0x95, 0x81, 0x10, 0x51, 0x90, 0x7E, 0x16, 0x27, 0x53, 0xB5, 0x6B, 0x0F, 0x6B, 0x41,
    0x0D, 0xBA, 0x74, 0xD8, 0xA8, 0x4B, 0x2A, 0x14, 0xB3, 0x14, 0x4E, 0x0E, 0xF1, 0x28, 0x47, 0x54,
    0xFD, 0x17, 0xED, 0x95, 0x0D, 0x59, 0x65, 0xB4, 0xB9, 0xDD, 0x46, 0x58, 0x2D, 0xB1, 0x17, 0x8D,
    0x16, 0x9C, 0x6B, 0xC4, 0x65, 0xB0, 0xD6, 0xFF, 0x9C, 0xA3, 0x92, 0x8F, 0xEF, 0x5B, 0x9A, 0xE4,
    0xE4, 0x18, 0xFC, 0x15, 0xE8, 0x3E, 0xBE, 0xA0, 0xF8, 0x7F, 0xA9, 0xFF, 0x5E, 0xED, 0x70, 0x05,
    0x0D, 0xED, 0x28, 0x49, 0xF4, 0x7B, 0xF9, 0x59, 0xD9, 0x56, 0x85, 0x0C, 0xE9, 0x29, 0x85, 0x1F,
    0x0D, 0x81, 0x15, 0xF6, 0x35, 0xB1, 0x05, 0xEE, 0x2E, 0x4E, 0x15, 0xD0, 0x4B, 0x24, 0x54, 0xBF,
    0x6F, 0x4F, 0xAD, 0xF0, 0x34, 0xB1, 0x04, 0x03, 0x11, 0x9C, 0xD8, 0xE3, 0xB9, 0x2F, 0xCC, 0x5B,
];

/// `messages.dhConfig` as received: `g:int p:bytes version:int random:bytes`.
///
/// `version` is left out: the caller uses it as the cache key for the validated [`DhParams`]
/// (the spec asks to re-check only when it changes). `random` is the server's contribution to the
/// secret exponent; it changes with every `messages.getDhConfig` call, including those answered
/// with `dhConfigNotModified`.
#[derive(Clone, PartialEq, Eq)]
pub struct DhConfig {
    /// The generator, as the TL `int` the server sent.
    pub g: i32,
    /// The prime, big-endian.
    pub p: Vec<u8>,
    /// The server's 256 random bytes, XORed into the local secret exponent.
    pub random: Vec<u8>,
}

impl fmt::Debug for DhConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhConfig")
            .field("g", &self.g)
            .field("p_len", &self.p.len())
            .field("random_len", &self.random.len())
            .finish()
    }
}

impl DhConfig {
    /// Validates `g` and `p` (see [`DhParams::new`]); `seed` picks the Miller-Rabin bases and
    /// should be fresh randomness.
    ///
    /// # Errors
    /// The first failed check, as [`DhParams::new`] reports it.
    pub fn validate(&self, seed: u64) -> Result<DhParams, P2pError> {
        DhParams::new(self.g, &self.p, seed)
    }
}

/// A `g` and `p` that passed every check of the spec; the only way to start an exchange.
#[derive(Clone)]
pub struct DhParams {
    g: u32,
    p: U2048,
    p_bytes: [u8; DH_BYTES],
    modulus: DynResidueParams<{ U2048::LIMBS }>,
}

impl fmt::Debug for DhParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhParams")
            .field("g", &self.g)
            .field("telegram_prime", &(self.p_bytes == TELEGRAM_DH_PRIME))
            .finish_non_exhaustive()
    }
}

impl DhParams {
    /// Checks `g` and `p` as core.telegram.org/mtproto/security_guidelines demands, in this
    /// order (cheapest first):
    ///
    /// 1. `p` is 256 bytes with the top bit set (`2^2047 < p < 2^2048`), else
    ///    [`P2pError::PrimeWrongSize`];
    /// 2. `g` is in 2..=7, else [`P2pError::GeneratorOutOfRange`];
    /// 3. `g` is a quadratic residue mod `p`: `p mod 8 = 7` for g=2, `p mod 3 = 2` for g=3,
    ///    nothing for g=4, `p mod 5` in {1,4} for g=5, `p mod 24` in {19,23} for g=6, `p mod 7`
    ///    in {3,5,6} for g=7, else [`P2pError::GeneratorNotResidue`];
    /// 4. unless `p` is [`TELEGRAM_DH_PRIME`]: `p` is prime ([`P2pError::PrimeNotPrime`]) and
    ///    `(p-1)/2` is prime ([`P2pError::PrimeNotSafe`]), by trial division and
    ///    [`MILLER_RABIN_ROUNDS`] Miller-Rabin rounds each, bases derived from `seed`.
    ///
    /// # Errors
    /// The first check that fails, as listed.
    pub fn new(g: i32, p: &[u8], seed: u64) -> Result<Self, P2pError> {
        let p_bytes: [u8; DH_BYTES] = match <[u8; DH_BYTES]>::try_from(p) {
            Ok(bytes) if bytes[0] & 0x80 != 0 => bytes,
            _ => {
                return Err(P2pError::PrimeWrongSize {
                    len: p.len(),
                    bits: bit_length(p),
                });
            }
        };
        let Ok(g @ 2..=7) = u32::try_from(g) else {
            return Err(P2pError::GeneratorOutOfRange { g });
        };
        check_generator(g, &p_bytes)?;
        let p_int = U2048::from_be_slice(&p_bytes);
        if p_bytes != TELEGRAM_DH_PRIME {
            if !is_probable_prime(&p_int, seed, 0) {
                return Err(P2pError::PrimeNotPrime);
            }
            let q = p_int.shr_vartime(1);
            if !is_probable_prime(&q, seed, 1) {
                return Err(P2pError::PrimeNotSafe);
            }
        }
        // A 2048-bit prime is odd, so the Montgomery parameters exist.
        let modulus = montgomery_params(&p_int).ok_or(P2pError::PrimeNotPrime)?;
        Ok(Self {
            g,
            p: p_int,
            p_bytes,
            modulus,
        })
    }

    /// The validated generator (2..=7).
    pub fn g(&self) -> u32 {
        self.g
    }

    /// The validated prime, 256 bytes big-endian.
    pub fn p(&self) -> &[u8; DH_BYTES] {
        &self.p_bytes
    }

    /// `base^exp mod p`, constant time in `exp`.
    fn pow(&self, base: &U2048, exp: &U2048) -> U2048 {
        DynResidue::new(base, self.modulus).pow(exp).retrieve()
    }

    /// `g^secret mod p` and the range check on it.
    fn public_value(&self, secret: &U2048, value: PublicValue) -> Result<U2048, P2pError> {
        let x = self.pow(&U2048::from_u32(self.g), secret);
        if in_safe_range(&x, &self.p) {
            Ok(x)
        } else {
            Err(P2pError::OwnValueOutOfRange { value })
        }
    }

    /// Parses a received `g_a`/`g_b` and range-checks it.
    fn received_value(&self, bytes: &[u8], value: PublicValue) -> Result<U2048, P2pError> {
        let x = parse_public(bytes).ok_or(P2pError::ValueOutOfRange { value })?;
        if in_safe_range(&x, &self.p) {
            Ok(x)
        } else {
            Err(P2pError::ValueOutOfRange { value })
        }
    }
}

/// The `p mod 4g` conditions under which `g` is a quadratic residue mod a safe prime `p`.
fn check_generator(g: u32, p: &[u8; DH_BYTES]) -> Result<(), P2pError> {
    let (modulus, allowed): (u32, &[u32]) = match g {
        2 => (8, &[7]),
        3 => (3, &[2]),
        5 => (5, &[1, 4]),
        6 => (24, &[19, 23]),
        7 => (7, &[3, 5, 6]),
        // g = 4 = 2^2 is always a square.
        _ => return Ok(()),
    };
    let residue = mod_small(p, modulus);
    if allowed.contains(&residue) {
        Ok(())
    } else {
        Err(P2pError::GeneratorNotResidue {
            g,
            modulus,
            residue,
        })
    }
}

/// `2^1984 <= x <= p - 2^1984` (security guidelines; implies `1 < x < p-1`).
///
/// tdesktop and ntgcalls (`IsGoodModExpFirst`) test bit lengths instead, which admits values
/// down to 2^1983; this is the spec's bound.
fn in_safe_range(x: &U2048, p: &U2048) -> bool {
    let bound = U2048::ONE.shl_vartime(2048 - 64);
    // p >= 2^2047 > 2 * 2^1984, so p - bound does not wrap.
    *x >= bound && *x <= p.wrapping_sub(&bound)
}

/// A big-endian number of any length whose value fits in 2048 bits (leading zeros allowed).
fn parse_public(bytes: &[u8]) -> Option<U2048> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let digits = bytes.get(start..)?;
    if digits.len() > DH_BYTES {
        return None;
    }
    let mut padded = [0u8; DH_BYTES];
    padded
        .get_mut(DH_BYTES - digits.len()..)?
        .copy_from_slice(digits);
    Some(U2048::from_be_slice(&padded))
}

/// Number of significant bits of a big-endian byte string.
fn bit_length(bytes: &[u8]) -> usize {
    match bytes.iter().position(|&b| b != 0) {
        Some(i) => (bytes.len() - i) * 8 - bytes[i].leading_zeros() as usize,
        None => 0,
    }
}

/// A big-endian number modulo a small one.
fn mod_small(bytes: &[u8], m: u32) -> u32 {
    let m = u64::from(m);
    let r = bytes
        .iter()
        .fold(0u64, |r, &b| (r * 256 + u64::from(b)) % m);
    // r < m <= u32::MAX.
    u32::try_from(r).unwrap_or(0)
}

/// Odd primes below 2000, for trial division before Miller-Rabin.
fn small_primes() -> impl Iterator<Item = u32> {
    (3u32..2000).step_by(2).filter(|&n| {
        (3..)
            .step_by(2)
            .take_while(|d| d * d <= n)
            .all(|d| n % d != 0)
    })
}

/// Probable-prime test for a number of at least 1000 bits: trial division by the primes below
/// 2000, then [`MILLER_RABIN_ROUNDS`] Miller-Rabin rounds with bases derived from `seed` and
/// `label` (so `p` and `(p-1)/2` get different bases).
fn is_probable_prime(n: &U2048, seed: u64, label: u8) -> bool {
    let bytes = n.to_be_bytes();
    if bytes[DH_BYTES - 1] & 1 == 0 || bit_length(&bytes) < 1000 {
        return false;
    }
    if small_primes().any(|f| mod_small(&bytes, f) == 0) {
        return false;
    }
    let Some(params) = montgomery_params(n) else {
        return false;
    };
    let n_minus_1 = n.wrapping_sub(&U2048::ONE);
    let s = n_minus_1.trailing_zeros();
    let d = n_minus_1.shr_vartime(s);
    (0..MILLER_RABIN_ROUNDS).all(|round| {
        let base = miller_rabin_base(seed, label, round);
        let mut x = DynResidue::new(&base, params).pow(&d);
        let mut value = x.retrieve();
        if value == U2048::ONE || value == n_minus_1 {
            return true;
        }
        for _ in 1..s {
            x = x.square();
            value = x.retrieve();
            if value == n_minus_1 {
                return true;
            }
            if value == U2048::ONE {
                return false;
            }
        }
        false
    })
}

/// Montgomery parameters for an odd modulus (`DynResidueParams::new` panics on an even one).
fn montgomery_params(n: &U2048) -> Option<DynResidueParams<{ U2048::LIMBS }>> {
    (n.to_be_bytes()[DH_BYTES - 1] & 1 == 1).then(|| DynResidueParams::new(n))
}

/// A Miller-Rabin base in `[2, 2^2040)`, below any number tested (`(p-1)/2 >= 2^2046`):
/// SHA-256 of (seed, label, round, block) for 8 blocks, top byte cleared.
fn miller_rabin_base(seed: u64, label: u8, round: u32) -> U2048 {
    let mut bytes = [0u8; DH_BYTES];
    for (block, chunk) in (0u8..).zip(bytes.chunks_mut(32)) {
        chunk.copy_from_slice(&sha256(&[
            b"ringcast-dh-miller-rabin",
            &seed.to_le_bytes(),
            &[label, block],
            &round.to_le_bytes(),
        ]));
    }
    bytes[0] = 0;
    let base = U2048::from_be_slice(&bytes);
    let two = U2048::from_u32(2);
    if base < two { two } else { base }
}

/// The secret exponent: own randomness XOR the server's `random`, both 256 bytes.
fn secret_exponent(own_random: &[u8], server_random: &[u8]) -> Result<U2048, P2pError> {
    for input in [own_random, server_random] {
        if input.len() != DH_BYTES {
            return Err(P2pError::RandomWrongSize { len: input.len() });
        }
    }
    let mut bytes = [0u8; DH_BYTES];
    for ((out, a), b) in bytes.iter_mut().zip(own_random).zip(server_random) {
        *out = a ^ b;
    }
    let secret = U2048::from_be_slice(&bytes);
    // The spec asks for 1 < a < p-1. An a >= p-1 is used as-is, as tdesktop and ntgcalls do
    // (g^a = g^(a mod (p-1)); rejecting it would fail ~22% of draws with Telegram's prime).
    if secret <= U2048::ONE {
        return Err(P2pError::SecretOutOfRange);
    }
    Ok(secret)
}

/// SHA-256 of the concatenation of `parts`.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `key_fingerprint`: the lower 64 bits of `SHA1(key)`, i.e. bytes 12..20 of the digest read
/// as a little-endian `long` (tdesktop `ComputeFingerprint`, Telegram/SourceFiles/calls/
/// calls_call.cpp; ntgcalls `AuthKey::Fingerprint`).
pub fn key_fingerprint(key: &[u8; DH_BYTES]) -> i64 {
    let hash = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut low = [0u8; 8];
    if let Some(bytes) = hash.as_ref().get(12..20) {
        low.copy_from_slice(bytes);
    }
    i64::from_le_bytes(low)
}

/// Compares two byte strings in time independent of where they differ.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The caller's side of the exchange: holds the secret `a` until `g_b` arrives.
#[derive(Clone)]
pub struct CallerExchange {
    params: DhParams,
    a: U2048,
    g_a: [u8; DH_BYTES],
}

impl fmt::Debug for CallerExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerExchange")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl CallerExchange {
    /// Draws `a = own_random XOR server_random` and computes `g_a = g^a mod p`.
    ///
    /// `own_random` must be 256 bytes from a CSPRNG, `server_random` the `random` of the same
    /// `messages.dhConfig` answer.
    ///
    /// # Errors
    /// [`P2pError::RandomWrongSize`]; [`P2pError::SecretOutOfRange`] or
    /// [`P2pError::OwnValueOutOfRange`] (retry with fresh `own_random`).
    pub fn new(
        params: &DhParams,
        server_random: &[u8],
        own_random: &[u8],
    ) -> Result<Self, P2pError> {
        let a = secret_exponent(own_random, server_random)?;
        let g_a = params.public_value(&a, PublicValue::GA)?;
        Ok(Self {
            params: params.clone(),
            a,
            g_a: g_a.to_be_bytes(),
        })
    }

    /// `g_a`, 256 bytes big-endian (left-padded): goes into `phone.confirmCall`.
    pub fn g_a(&self) -> &[u8; DH_BYTES] {
        &self.g_a
    }

    /// `SHA256(g_a)` over exactly the bytes [`Self::g_a`] returns: goes into `phone.requestCall`.
    pub fn g_a_hash(&self) -> [u8; 32] {
        sha256(&[&self.g_a])
    }

    /// Checks the callee's `g_b` (from `phoneCallAccepted`) and derives the key; its
    /// [`CallKey::fingerprint`] goes into `phone.confirmCall` with [`Self::g_a`].
    ///
    /// # Errors
    /// [`P2pError::ValueOutOfRange`] (`g_b`).
    pub fn complete(self, g_b: &[u8]) -> Result<CallKey, P2pError> {
        let g_b = self.params.received_value(g_b, PublicValue::GB)?;
        let key = self.params.pow(&g_b, &self.a).to_be_bytes();
        Ok(CallKey::from_parts(key, &self.g_a))
    }
}

/// The callee's side of the exchange: holds `b` and the committed `g_a_hash` until `g_a`
/// arrives.
#[derive(Clone)]
pub struct CalleeExchange {
    params: DhParams,
    b: U2048,
    g_b: [u8; DH_BYTES],
    g_a_hash: [u8; 32],
}

impl fmt::Debug for CalleeExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CalleeExchange")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl CalleeExchange {
    /// Stores the caller's commitment `g_a_hash` (from `phoneCallRequested`), draws
    /// `b = own_random XOR server_random` and computes `g_b = g^b mod p`.
    ///
    /// # Errors
    /// [`P2pError::GaHashWrongSize`], [`P2pError::RandomWrongSize`];
    /// [`P2pError::SecretOutOfRange`] or [`P2pError::OwnValueOutOfRange`] (retry with fresh
    /// `own_random`).
    pub fn new(
        params: &DhParams,
        g_a_hash: &[u8],
        server_random: &[u8],
        own_random: &[u8],
    ) -> Result<Self, P2pError> {
        let g_a_hash = <[u8; 32]>::try_from(g_a_hash).map_err(|_| P2pError::GaHashWrongSize {
            len: g_a_hash.len(),
        })?;
        let b = secret_exponent(own_random, server_random)?;
        let g_b = params.public_value(&b, PublicValue::GB)?;
        Ok(Self {
            params: params.clone(),
            b,
            g_b: g_b.to_be_bytes(),
            g_a_hash,
        })
    }

    /// `g_b`, 256 bytes big-endian (left-padded): goes into `phone.acceptCall`.
    pub fn g_b(&self) -> &[u8; DH_BYTES] {
        &self.g_b
    }

    /// Checks the caller's `g_a` and `key_fingerprint` (from `phoneCall`) and derives the key.
    ///
    /// `g_a` is hashed exactly as received: tdesktop and ntgcalls send it in minimal length
    /// (OpenSSL `BN_bn2bin`), i.e. 255 bytes or fewer about once in 200 calls, and hash those
    /// bytes; re-padding before hashing would fail those calls.
    ///
    /// # Errors
    /// In this order: [`P2pError::GaHashMismatch`], [`P2pError::ValueOutOfRange`] (`g_a`),
    /// [`P2pError::FingerprintMismatch`].
    pub fn complete(self, g_a: &[u8], key_fingerprint: i64) -> Result<CallKey, P2pError> {
        if !ct_eq(&sha256(&[g_a]), &self.g_a_hash) {
            return Err(P2pError::GaHashMismatch);
        }
        let g_a_int = self.params.received_value(g_a, PublicValue::GA)?;
        let key = self.params.pow(&g_a_int, &self.b).to_be_bytes();
        let call_key = CallKey::from_parts(key, g_a);
        call_key.check_fingerprint(key_fingerprint)?;
        Ok(call_key)
    }
}

/// The shared 256-byte key of a call, with the caller's `g_a` (for the emoji) and its
/// fingerprint. Its `Debug` output shows the fingerprint only.
#[derive(Clone, PartialEq, Eq)]
pub struct CallKey {
    key: [u8; DH_BYTES],
    g_a: Vec<u8>,
    fingerprint: i64,
}

impl fmt::Debug for CallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl CallKey {
    /// A key from its bytes (big-endian, left-padded to 256) and the caller's `g_a` exactly as
    /// it went over the wire. For test vectors and keys negotiated elsewhere.
    pub fn from_parts(key: [u8; DH_BYTES], g_a: &[u8]) -> Self {
        let fingerprint = key_fingerprint(&key);
        Self {
            key,
            g_a: g_a.to_vec(),
            fingerprint,
        }
    }

    /// The key bytes, for [`super::EncryptedChannel::new`].
    pub fn as_bytes(&self) -> &[u8; DH_BYTES] {
        &self.key
    }

    /// `key_fingerprint` ([`key_fingerprint`]), as sent in `phone.confirmCall`.
    pub fn fingerprint(&self) -> i64 {
        self.fingerprint
    }

    /// Compares a received `key_fingerprint` with this key's.
    ///
    /// # Errors
    /// [`P2pError::FingerprintMismatch`].
    pub fn check_fingerprint(&self, received: i64) -> Result<(), P2pError> {
        if received == self.fingerprint {
            Ok(())
        } else {
            Err(P2pError::FingerprintMismatch {
                received,
                computed: self.fingerprint,
            })
        }
    }

    /// Indices into [`emoji::EMOJI_TABLE`] of the four verification emojis.
    pub fn emoji_indices(&self) -> [usize; 4] {
        emoji::emoji_indices(&self.key, &self.g_a)
    }

    /// The four verification emojis both users compare.
    pub fn emoji(&self) -> [&'static str; 4] {
        emoji::emoji_fingerprint(&self.key, &self.g_a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3526 group 14 (2048-bit MODP): a safe prime, p mod 8 = 7 (g = 2 allowed).
    const RFC3526_PRIME: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD\
        EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED\
        EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F\
        83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B\
        E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510\
        15728E5A8AACAA68FFFFFFFFFFFFFFFF";

    /// A 2048-bit prime whose (p-1)/2 is divisible by 5 (found with sympy).
    const PRIME_Q_SMALL_FACTOR: &str = "98f135d25f557203301850c5a38fd547923a736994e3bf911a61dbe22e44158bae97ba94d0eda82f8f6d05584ef8aa38\
        922766581e27a1c08a6a63ec24ede6a46b4cb2424a23d5962217beaddbc496cb8e81973e0becd7b03898d190f9ebdacc\
        0cb1e29c658cda1495e60af593bd04cf0fd630f1f29d0da9953f48f1a09f76b5a170b33839263059f28c105d1fb17c23\
        90c192cfd3ac94af0f21ddb66cad4a268d116ece1738f7d93d9c172411e20b8f6b0d549b6f03675a1600a35a099950d8\
        36f675cc81e74ef5e8e25d940ed904759531985d5d9dc9f81818e811892f902bd23f0824128b2f330c5c7fd0a6a3a450\
        6513270e269e0d37f2a74de452e6bc93";

    /// A 2048-bit prime whose (p-1)/2 is composite without factors below 2000 (Miller-Rabin must catch it).
    const PRIME_Q_COMPOSITE: &str = "eedd2e8559961cc253e6fe2bde83c8c4f83bc0f75b2175c5f8554cd44f5ffc171cf11290ed69224a1601177d9fa5d6f0\
        73fbc23a44ba7a964e186e4e8a55c437d8f0942da4f425e63fefc093b80addbaaebb66cb4410d131006f3308fc747b8f\
        8f41e49c67e722ac95f4327fd3be7ea88a40e18698e05c8156333509172097fa417105a84cdfb99f818799de40e0a0eb\
        a343b1d0ad9d3244e7803a57b954f83b0b43a3f6a0e315e40f3a8a1af94ee169c15009f6c4e28e9d5fae52093295a051\
        56590c0e2ee5c2ab2a79d0a70c0cad6c5c4f835e7f8ccca258bf9dc2c182f1934f3289cda1e9a13a458251864e98dcbc\
        0f246572e6c8e51846fa24213cf4102f";

    /// An odd 2048-bit composite with a small factor.
    const COMPOSITE_SMALL_FACTOR: &str = "98f135d25f557203301850c5a38fd547923a736994e3bf911a61dbe22e44158bae97ba94d0eda82f8f6d05584ef8aa38\
        922766581e27a1c08a6a63ec24ede6a46b4cb2424a23d5962217beaddbc496cb8e81973e0becd7b03898d190f9ebdacc\
        0cb1e29c658cda1495e60af593bd04cf0fd630f1f29d0da9953f48f1a09f76b5a170b33839263059f28c105d1fb17c23\
        90c192cfd3ac94af0f21ddb66cad4a268d116ece1738f7d93d9c172411e20b8f6b0d549b6f03675a1600a35a099950d8\
        36f675cc81e74ef5e8e25d940ed904759531985d5d9dc9f81818e811892f902bd23f0824128b2f330c5c7fd0a6a3a450\
        6513270e269e0d37f2a74de452e6bc95";

    /// The product of two 1024-bit primes: no small factors, only Miller-Rabin finds it.
    const COMPOSITE_TWO_PRIMES: &str = "abe12e1d26bcc5ebde5157f44b30b6ff4bb186bf2113ee3c3bc94f68cf724638c1969da8652b815ff707dc480f5a8cea\
        802cb6ce4c0a4844fc4655fd675d1fb72fbe6c281651395cf09057cfa4426c82209d77127ad9156f51f7c61b23984a91\
        7cf24d2369fa646cb953b3bb725d008c66df1426df1fc6cbf4f1777bcbcd24433bfdd3aa1d3e19a3fe9137266f6a22ca\
        904fe71bfa3b431d547b2cb7dd16e053acac91e08d3add4a160cce400a6271ba0a17b7935555bd5bd5ac61c4f99d124d\
        dc9efe7e6f419617119d31515ae72ae9dc7499b6aef0470584335b11154e697f08d23ad4b92845d2c59b49308b329845\
        dc5cc2ae7448bcd6a2316955efd87d07";

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Deterministic stand-in for CSPRNG output.
    fn random(seed: u64) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..DH_BYTES).map(|_| rng.u8(..)).collect()
    }

    fn telegram(g: i32) -> DhParams {
        DhParams::new(g, &TELEGRAM_DH_PRIME, 1).unwrap()
    }

    fn to_bytes(x: &U2048) -> Vec<u8> {
        x.to_be_bytes().to_vec()
    }

    /// A full exchange; returns (caller key, callee key).
    fn exchange(params: &DhParams, seed: u64) -> (CallKey, CallKey) {
        let server = random(seed);
        let caller = CallerExchange::new(params, &server, &random(seed + 1)).unwrap();
        let callee =
            CalleeExchange::new(params, &caller.g_a_hash(), &server, &random(seed + 2)).unwrap();
        let g_a = *caller.g_a();
        let caller_key = caller.complete(callee.g_b()).unwrap();
        let callee_key = callee.complete(&g_a, caller_key.fingerprint()).unwrap();
        (caller_key, callee_key)
    }

    #[test]
    fn telegram_prime_is_a_safe_prime_for_g_3_4_7_only() {
        for g in [3, 4, 7] {
            assert_eq!(telegram(g).g(), g as u32);
        }
        // p mod 8 = 3, p mod 5 = 3, p mod 24 = 11: 2, 5 and 6 are non-residues.
        let expect = [(2, 8, 3), (5, 5, 3), (6, 24, 11)];
        for (g, modulus, residue) in expect {
            assert_eq!(
                DhParams::new(g, &TELEGRAM_DH_PRIME, 1).unwrap_err(),
                P2pError::GeneratorNotResidue {
                    g: g as u32,
                    modulus,
                    residue
                }
            );
        }
    }

    #[test]
    fn telegram_prime_passes_the_full_check_too() {
        // The shortcut must agree with the real test.
        let p = U2048::from_be_slice(&TELEGRAM_DH_PRIME);
        assert!(is_probable_prime(&p, 7, 0));
        assert!(is_probable_prime(&p.shr_vartime(1), 7, 1));
    }

    #[test]
    fn generator_outside_2_to_7_is_refused() {
        for g in [i32::MIN, -1, 0, 1, 8, 256, i32::MAX] {
            assert_eq!(
                DhParams::new(g, &TELEGRAM_DH_PRIME, 1).unwrap_err(),
                P2pError::GeneratorOutOfRange { g }
            );
        }
    }

    #[test]
    fn generator_residue_conditions_follow_the_spec() {
        // RFC 3526: p mod 8 = 7, mod 3 = 2, mod 5 = 4, mod 24 = 23, mod 7 = 5: every g passes.
        let p = unhex(RFC3526_PRIME);
        for g in 2..=7 {
            check_generator(g, &p.clone().try_into().unwrap()).unwrap();
        }
        // PRIME_Q_SMALL_FACTOR: mod 8 = 3, mod 3 = 2, mod 5 = 1, mod 24 = 11, mod 7 = 4.
        let p: [u8; DH_BYTES] = unhex(PRIME_Q_SMALL_FACTOR).try_into().unwrap();
        assert!(check_generator(2, &p).is_err());
        assert!(check_generator(3, &p).is_ok());
        assert!(check_generator(4, &p).is_ok());
        assert!(check_generator(5, &p).is_ok());
        assert!(check_generator(6, &p).is_err());
        assert_eq!(
            check_generator(7, &p).unwrap_err(),
            P2pError::GeneratorNotResidue {
                g: 7,
                modulus: 7,
                residue: 4
            }
        );
    }

    #[test]
    fn prime_of_the_wrong_size_is_refused() {
        let short = &TELEGRAM_DH_PRIME[1..];
        assert_eq!(
            DhParams::new(3, short, 1).unwrap_err(),
            P2pError::PrimeWrongSize {
                len: 255,
                bits: 2037
            }
        );
        let mut long = vec![0u8];
        long.extend_from_slice(&TELEGRAM_DH_PRIME);
        assert_eq!(
            DhParams::new(3, &long, 1).unwrap_err(),
            P2pError::PrimeWrongSize {
                len: 257,
                bits: 2048
            }
        );
        let mut top_clear = TELEGRAM_DH_PRIME;
        top_clear[0] &= 0x7F;
        assert_eq!(
            DhParams::new(3, &top_clear, 1).unwrap_err(),
            P2pError::PrimeWrongSize {
                len: 256,
                bits: 2047
            }
        );
        assert_eq!(
            DhParams::new(3, &[], 1).unwrap_err(),
            P2pError::PrimeWrongSize { len: 0, bits: 0 }
        );
    }

    #[test]
    fn composite_p_is_refused() {
        for p in [COMPOSITE_SMALL_FACTOR, COMPOSITE_TWO_PRIMES] {
            assert_eq!(
                DhParams::new(4, &unhex(p), 1).unwrap_err(),
                P2pError::PrimeNotPrime
            );
        }
        let mut even = TELEGRAM_DH_PRIME;
        even[DH_BYTES - 1] ^= 1;
        assert_eq!(
            DhParams::new(4, &even, 1).unwrap_err(),
            P2pError::PrimeNotPrime
        );
    }

    #[test]
    fn prime_that_is_not_safe_is_refused() {
        for p in [PRIME_Q_SMALL_FACTOR, PRIME_Q_COMPOSITE] {
            assert_eq!(
                DhParams::new(4, &unhex(p), 1).unwrap_err(),
                P2pError::PrimeNotSafe
            );
        }
    }

    #[test]
    fn other_safe_prime_passes_the_full_check_and_works() {
        let start = std::time::Instant::now();
        let params = DhConfig {
            g: 2,
            p: unhex(RFC3526_PRIME),
            random: random(0),
        }
        .validate(42)
        .unwrap();
        eprintln!("full safe-prime check: {:?}", start.elapsed());
        let (a, b) = exchange(&params, 100);
        assert_eq!(a, b);
    }

    #[test]
    fn both_sides_derive_the_same_key_fingerprint_and_emoji() {
        for g in [3, 4, 7] {
            let (caller, callee) = exchange(&telegram(g), u64::from(g as u32) * 10);
            assert_eq!(caller.as_bytes(), callee.as_bytes());
            assert_eq!(caller.fingerprint(), callee.fingerprint());
            assert_eq!(caller.emoji(), callee.emoji());
            assert_eq!(caller.fingerprint(), key_fingerprint(caller.as_bytes()));
        }
        let (one, _) = exchange(&telegram(3), 1000);
        let (other, _) = exchange(&telegram(3), 2000);
        assert_ne!(one.as_bytes(), other.as_bytes());
    }

    #[test]
    fn out_of_range_g_b_is_refused() {
        let params = telegram(3);
        let p = U2048::from_be_slice(&TELEGRAM_DH_PRIME);
        let bound = U2048::ONE.shl_vartime(1984);
        let bad = [
            to_bytes(&U2048::ZERO),
            to_bytes(&U2048::ONE),
            to_bytes(&U2048::from_u32(2)),
            to_bytes(&bound.wrapping_sub(&U2048::ONE)),
            to_bytes(&p.wrapping_sub(&bound).wrapping_add(&U2048::ONE)),
            to_bytes(&p.wrapping_sub(&U2048::ONE)),
            to_bytes(&p),
            to_bytes(&U2048::MAX),
            vec![1u8; 257],
            vec![],
        ];
        for g_b in bad {
            let caller = CallerExchange::new(&params, &random(1), &random(2)).unwrap();
            assert_eq!(
                caller.complete(&g_b).unwrap_err(),
                P2pError::ValueOutOfRange {
                    value: PublicValue::GB
                },
                "{g_b:02x?}"
            );
        }
        // The bounds themselves are allowed, with or without leading zeros.
        for good in [bound, p.wrapping_sub(&bound)] {
            let caller = CallerExchange::new(&params, &random(1), &random(2)).unwrap();
            let mut wire = vec![0u8; 3];
            wire.extend(to_bytes(&good));
            caller.complete(&wire).unwrap();
        }
    }

    #[test]
    fn out_of_range_g_a_is_refused_after_its_hash_matched() {
        let params = telegram(4);
        for g_a in [to_bytes(&U2048::ONE), TELEGRAM_DH_PRIME.to_vec()] {
            let g_a_hash = sha256(&[&g_a]);
            let callee = CalleeExchange::new(&params, &g_a_hash, &random(1), &random(2)).unwrap();
            assert_eq!(
                callee.complete(&g_a, 0).unwrap_err(),
                P2pError::ValueOutOfRange {
                    value: PublicValue::GA
                }
            );
        }
    }

    #[test]
    fn wrong_g_a_hash_is_refused() {
        let params = telegram(3);
        let server = random(5);
        let caller = CallerExchange::new(&params, &server, &random(6)).unwrap();
        let mut hash = caller.g_a_hash();
        hash[31] ^= 1;
        let callee = CalleeExchange::new(&params, &hash, &server, &random(7)).unwrap();
        let g_a = *caller.g_a();
        let key = caller.complete(callee.g_b()).unwrap();
        assert_eq!(
            callee.complete(&g_a, key.fingerprint()).unwrap_err(),
            P2pError::GaHashMismatch
        );
        for len in [0, 31, 33, 256] {
            assert_eq!(
                CalleeExchange::new(&params, &vec![0; len], &server, &random(7)).unwrap_err(),
                P2pError::GaHashWrongSize { len }
            );
        }
    }

    #[test]
    fn g_a_is_hashed_exactly_as_received() {
        // A g_a sent with an extra leading zero (or, from tdesktop, without its leading zero
        // byte) must match the hash of exactly those bytes, and the emoji use them too.
        let params = telegram(3);
        let server = random(8);
        let caller = CallerExchange::new(&params, &server, &random(9)).unwrap();
        let mut wire = vec![0u8];
        wire.extend_from_slice(caller.g_a());
        let callee = CalleeExchange::new(&params, &sha256(&[&wire]), &server, &random(10)).unwrap();
        let caller_key = caller.complete(callee.g_b()).unwrap();
        let callee_key = callee.complete(&wire, caller_key.fingerprint()).unwrap();
        assert_eq!(caller_key.as_bytes(), callee_key.as_bytes());
        assert_eq!(
            callee_key.emoji(),
            CallKey::from_parts(*caller_key.as_bytes(), &wire).emoji()
        );
    }

    #[test]
    fn fingerprint_mismatch_is_refused() {
        let params = telegram(7);
        let server = random(11);
        let caller = CallerExchange::new(&params, &server, &random(12)).unwrap();
        let callee =
            CalleeExchange::new(&params, &caller.g_a_hash(), &server, &random(13)).unwrap();
        let g_a = *caller.g_a();
        let key = caller.complete(callee.g_b()).unwrap();
        let wrong = key.fingerprint() ^ 1;
        assert_eq!(
            callee.complete(&g_a, wrong).unwrap_err(),
            P2pError::FingerprintMismatch {
                received: wrong,
                computed: key.fingerprint()
            }
        );
        assert!(key.check_fingerprint(wrong).is_err());
        assert!(key.check_fingerprint(key.fingerprint()).is_ok());
    }

    #[test]
    fn bad_randomness_is_refused() {
        let params = telegram(4);
        for len in [0, 255, 257] {
            assert_eq!(
                CallerExchange::new(&params, &random(1), &vec![7; len]).unwrap_err(),
                P2pError::RandomWrongSize { len }
            );
            assert_eq!(
                CallerExchange::new(&params, &vec![7; len], &random(1)).unwrap_err(),
                P2pError::RandomWrongSize { len }
            );
        }
        // own XOR server = 0 or 1.
        let server = random(3);
        assert_eq!(
            CallerExchange::new(&params, &server, &server).unwrap_err(),
            P2pError::SecretOutOfRange
        );
        let mut one = server.clone();
        one[DH_BYTES - 1] ^= 1;
        assert_eq!(
            CalleeExchange::new(&params, &[0; 32], &server, &one).unwrap_err(),
            P2pError::SecretOutOfRange
        );
        // a = 2, g = 4: g_a = 16, far below 2^1984; the caller must draw again.
        let mut two = server.clone();
        two[DH_BYTES - 1] ^= 2;
        assert_eq!(
            CallerExchange::new(&params, &server, &two).unwrap_err(),
            P2pError::OwnValueOutOfRange {
                value: PublicValue::GA
            }
        );
    }

    /// telegram-signaling.md §5 (computed from the formulas; the formulas match tdesktop's
    /// `ComputeFingerprint` and `ComputeEmojiFingerprint`).
    #[test]
    fn published_fingerprint_and_emoji_vectors() {
        let key: [u8; DH_BYTES] = std::array::from_fn(|i| i as u8);
        let g_a: Vec<u8> = (0..DH_BYTES).map(|i| 255 - i as u8).collect();
        let sha1 = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &key);
        assert_eq!(
            sha1.as_ref(),
            unhex("4916d6bdb7f78e6803698cab32d1586ea457dfc8").as_slice()
        );
        assert_eq!(key_fingerprint(&key), -3_972_359_982_579_920_590);
        assert_eq!(
            emoji::fingerprint_hash(&key, &g_a).to_vec(),
            unhex("1c7454fdb5783a77693d566de1ea54b3f3ba558f48aae8f782c199c84e355143")
        );
        let call_key = CallKey::from_parts(key, &g_a);
        assert_eq!(call_key.emoji_indices(), [122, 225, 65, 23]);
        assert_eq!(call_key.emoji(), ["🌵", "🍴", "👞", "🙀"]);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let (key, _) = exchange(&telegram(3), 77);
        let shown = format!("{key:?}");
        assert!(shown.contains("fingerprint"));
        assert!(!shown.contains("key:"));
        let caller = CallerExchange::new(&telegram(3), &random(1), &random(2)).unwrap();
        assert_eq!(
            format!("{caller:?}"),
            "CallerExchange { params: DhParams { g: 3, telegram_prime: true, .. }, .. }"
        );
    }
}
