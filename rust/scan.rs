// SPDX-License-Identifier: Apache-2.0
//! Structural scan for the tokenizer (xml.rs): where the `<`, `>`, `"` and `'` bytes are.
//!
//! The body is read in 64-byte blocks (offsets relative to the start of the body). For each block
//! one bit mask per structural byte is computed with vector compares (SSE2, baseline on x86_64),
//! or with a portable scalar loop elsewhere; the tokenizer then walks the masks (`trailing_zeros`)
//! instead of calling `memchr` for every short distance between two markup bytes. Only the last
//! computed block is kept, so memory does not grow with the body. Both backends compute the same
//! masks (tested here and in the tokenizer's tests); `VMWATCH_XML_SCALAR=1` forces the scalar one
//! for every tokenizer (read once per process, for tests and comparisons).

use std::sync::OnceLock;

/// Block size in bytes (one bit per byte in a `u64`).
const BLOCK: usize = 64;

/// Which implementation computes the block masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Portable: one table load per byte.
    Scalar,
    /// 16-byte vector compares (x86_64 only, where SSE2 is always present).
    Sse2,
}

impl Backend {
    /// The fastest backend this CPU has, unless `VMWATCH_XML_SCALAR=1` is set.
    pub fn detect() -> Backend {
        static CHOSEN: OnceLock<Backend> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            if std::env::var_os("VMWATCH_XML_SCALAR").is_some_and(|v| v == "1") {
                return Backend::Scalar;
            }
            Backend::best()
        })
    }

    /// The fastest backend compiled for this target, whatever the environment says.
    pub fn best() -> Backend {
        if cfg!(target_arch = "x86_64") {
            Backend::Sse2
        } else {
            Backend::Scalar
        }
    }
}

/// Bit masks of one block: bit `i` is byte `base + i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Masks {
    pub lt: u64,
    pub gt: u64,
    pub quot: u64,
    pub apos: u64,
}

/// Class bits of the scalar backend.
const C_LT: u8 = 1;
const C_GT: u8 = 2;
const C_QUOT: u8 = 4;
const C_APOS: u8 = 8;

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'<' as usize] = C_LT;
    t[b'>' as usize] = C_GT;
    t[b'"' as usize] = C_QUOT;
    t[b'\'' as usize] = C_APOS;
    t
};

fn masks_scalar(block: &[u8]) -> Masks {
    let mut m = Masks {
        lt: 0,
        gt: 0,
        quot: 0,
        apos: 0,
    };
    for (i, &b) in block.iter().enumerate() {
        let c = CLASS[b as usize];
        if c != 0 {
            let bit = 1u64 << i;
            if c == C_LT {
                m.lt |= bit;
            } else if c == C_GT {
                m.gt |= bit;
            } else if c == C_QUOT {
                m.quot |= bit;
            } else {
                m.apos |= bit;
            }
        }
    }
    m
}

#[cfg(target_arch = "x86_64")]
fn masks_sse2(block: &[u8; BLOCK]) -> Masks {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    // SAFETY: SSE2 is part of the x86_64 baseline, so these intrinsics are always available; each
    // load reads 16 bytes at offset 0, 16, 32 or 48 of a 64-byte array (unaligned loads allowed).
    unsafe {
        let (lt, gt) = (_mm_set1_epi8(b'<' as i8), _mm_set1_epi8(b'>' as i8));
        let (quot, apos) = (_mm_set1_epi8(b'"' as i8), _mm_set1_epi8(b'\'' as i8));
        let mut m = Masks {
            lt: 0,
            gt: 0,
            quot: 0,
            apos: 0,
        };
        let p = block.as_ptr();
        for i in 0..4 {
            let v = _mm_loadu_si128(p.add(16 * i) as *const __m128i);
            let bits = |c| (_mm_movemask_epi8(_mm_cmpeq_epi8(v, c)) as u32 as u64) << (16 * i);
            m.lt |= bits(lt);
            m.gt |= bits(gt);
            m.quot |= bits(quot);
            m.apos |= bits(apos);
        }
        m
    }
}

/// Finds structural bytes at or after an offset, one cached block at a time.
pub struct Scanner<'a> {
    buf: &'a [u8],
    backend: Backend,
    /// Offset of the cached block (`usize::MAX`: none yet).
    base: usize,
    masks: Masks,
}

impl<'a> Scanner<'a> {
    pub fn new(buf: &'a [u8], backend: Backend) -> Self {
        Scanner {
            buf,
            backend: if backend == Backend::Sse2 && !cfg!(target_arch = "x86_64") {
                Backend::Scalar
            } else {
                backend
            },
            base: usize::MAX,
            masks: Masks {
                lt: 0,
                gt: 0,
                quot: 0,
                apos: 0,
            },
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The masks of the block starting at `base` (a multiple of 64 below the length).
    #[inline]
    fn block(&mut self, base: usize) -> Masks {
        if self.base != base {
            self.masks = compute(self.buf, base, self.backend);
            self.base = base;
        }
        self.masks
    }

    /// The first offset at or after `from` whose byte is selected by `sel`.
    #[inline]
    pub fn find(&mut self, from: usize, sel: impl Fn(&Masks) -> u64) -> Option<usize> {
        let len = self.buf.len();
        if from >= len {
            return None;
        }
        let mut base = from & !(BLOCK - 1);
        let mut m = sel(&self.block(base)) & (!0u64 << (from - base));
        loop {
            if m != 0 {
                // the padding of a short last block matches nothing: a hit is inside the body
                return Some(base + m.trailing_zeros() as usize);
            }
            base += BLOCK;
            if base >= len {
                return None;
            }
            m = sel(&self.block(base));
        }
    }
}

/// The first offset at or after `from` whose byte can not continue an element name: ASCII
/// whitespace, `/`, `>`, `<`, `"`, `'`, `=` or `&` (the classes of xml.rs), or `buf.len()`.
/// `a == b` without a call into `memcmp`, for the short byte strings the decoder compares (names,
/// a start tag's attribute bytes): two to four overlapping loads cover the whole length. Longer
/// strings go to `memcmp`.
#[inline]
pub fn eq_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let w16 = |s: &[u8], at: usize| u128::from_le_bytes(s[at..at + 16].try_into().unwrap());
    let w8 = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap());
    let w4 = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap());
    match n {
        33..=64 => {
            w16(a, 0) == w16(b, 0)
                && w16(a, 16) == w16(b, 16)
                && w16(a, n - 32) == w16(b, n - 32)
                && w16(a, n - 16) == w16(b, n - 16)
        }
        17..=32 => w16(a, 0) == w16(b, 0) && w16(a, n - 16) == w16(b, n - 16),
        8..=16 => w8(a, 0) == w8(b, 0) && w8(a, n - 8) == w8(b, n - 8),
        4..=7 => w4(a, 0) == w4(b, 0) && w4(a, n - 4) == w4(b, n - 4),
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

#[inline]
pub fn name_end(buf: &[u8], from: usize, backend: Backend) -> usize {
    let mut i = from;
    #[cfg(target_arch = "x86_64")]
    if backend == Backend::Sse2 {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_set1_epi8,
        };
        // every stop byte is at most '>' (0x3E): one compare finds the candidates (stops, and the
        // digits, '-', '.' and ':' of a name), the table tells them apart
        while i + 16 <= buf.len() {
            // SAFETY: SSE2 is part of the x86_64 baseline; the load reads buf[i..i + 16], in bounds
            // by the loop condition (unaligned loads allowed).
            let mut m = unsafe {
                let v = _mm_loadu_si128(buf.as_ptr().add(i) as *const __m128i);
                _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(b'>' as i8)), v)) as u32
            };
            while m != 0 {
                let at = i + m.trailing_zeros() as usize;
                if NAME_STOP[buf[at] as usize] {
                    return at;
                }
                m &= m - 1;
            }
            i += 16;
        }
    }
    let _ = backend;
    while i < buf.len() && !NAME_STOP[buf[i] as usize] {
        i += 1;
    }
    i
}

/// The first offset at or after `from` whose byte ends an attribute name (`=` or ASCII
/// whitespace), or `buf.len()`.
#[inline]
pub fn key_end(buf: &[u8], from: usize, backend: Backend) -> usize {
    stop_at(buf, from, KEY_STOPS, &KEY_STOP, backend)
}

const NAME_STOPS: [u8; 11] = *b" \t\r\n/><\"'=&";
const KEY_STOPS: [u8; 5] = *b" \t\r\n=";

const fn table<const N: usize>(stops: [u8; N]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut k = 0;
    while k < N {
        t[stops[k] as usize] = true;
        k += 1;
    }
    t
}

static NAME_STOP: [bool; 256] = table(NAME_STOPS);
static KEY_STOP: [bool; 256] = table(KEY_STOPS);

/// The first offset at or after `from` (at most `buf.len()`) whose byte is `c`, or `buf.len()`:
/// as `memchr`, inlined
/// (the distances here, attribute values, are too short to pay for a call).
#[inline]
pub fn find_byte(buf: &[u8], from: usize, c: u8, backend: Backend) -> usize {
    let mut i = from;
    #[cfg(target_arch = "x86_64")]
    if backend == Backend::Sse2 {
        use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
        while i + 16 <= buf.len() {
            // SAFETY: SSE2 is part of the x86_64 baseline; the load reads buf[i..i + 16], in bounds
            // by the loop condition (unaligned loads allowed).
            let m = unsafe {
                let v = _mm_loadu_si128(buf.as_ptr().add(i) as *const __m128i);
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8))) as u32
            };
            if m != 0 {
                return i + m.trailing_zeros() as usize;
            }
            i += 16;
        }
    }
    let _ = backend;
    i + buf[i..].iter().position(|&b| b == c).unwrap_or(buf.len() - i)
}

/// The first offset at or after `from` whose byte is one of `stops` (`table` is the same set).
#[inline]
fn stop_at<const N: usize>(buf: &[u8], from: usize, stops: [u8; N], table: &[bool; 256], backend: Backend) -> usize {
    let mut i = from;
    #[cfg(target_arch = "x86_64")]
    if backend == Backend::Sse2 {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        };
        while i + 16 <= buf.len() {
            // SAFETY: SSE2 is part of the x86_64 baseline; the load reads buf[i..i + 16], in bounds
            // by the loop condition (unaligned loads allowed).
            let m = unsafe {
                let v = _mm_loadu_si128(buf.as_ptr().add(i) as *const __m128i);
                let mut any = _mm_cmpeq_epi8(v, _mm_set1_epi8(stops[0] as i8));
                for &c in &stops[1..] {
                    any = _mm_or_si128(any, _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8)));
                }
                _mm_movemask_epi8(any) as u32
            };
            if m != 0 {
                return i + m.trailing_zeros() as usize;
            }
            i += 16;
        }
    }
    let _ = (backend, stops);
    while i < buf.len() && !table[buf[i] as usize] {
        i += 1;
    }
    i
}

/// Masks of the block at `base`; a short last block is padded with zeros (which match nothing).
pub fn compute(buf: &[u8], base: usize, backend: Backend) -> Masks {
    let rest = &buf[base..];
    let mut tmp = [0u8; BLOCK];
    let block: &[u8; BLOCK] = match rest.first_chunk::<BLOCK>() {
        Some(b) => b,
        None => {
            tmp[..rest.len()].copy_from_slice(rest);
            &tmp
        }
    };
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Sse2 => masks_sse2(block),
        _ => masks_scalar(block),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_comparison_agrees_with_slices() {
        let names: Vec<Vec<u8>> = (0..100)
            .map(|n| (0..n).map(|i| b'a' + (i % 26) as u8).collect())
            .collect();
        for a in &names {
            for b in &names {
                assert_eq!(eq_bytes(a, b), a == b);
            }
            // one byte differs, at every position
            for i in 0..a.len() {
                let mut c = a.clone();
                c[i] ^= 1;
                assert!(!eq_bytes(a, &c), "{a:?} vs {c:?}");
            }
        }
    }

    fn naive(buf: &[u8], from: usize, c: u8) -> Option<usize> {
        buf.iter().skip(from).position(|&b| b == c).map(|i| from + i)
    }

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn backends_agree_with_a_naive_search() {
        let alphabet = b"<>\"'a =&/\xc3\xa9";
        let mut seed = 7u64;
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 300] {
            for _ in 0..20 {
                let buf: Vec<u8> = (0..len)
                    .map(|_| alphabet[lcg(&mut seed) as usize % alphabet.len()])
                    .collect();
                for base in (0..len).step_by(BLOCK) {
                    assert_eq!(
                        compute(&buf, base, Backend::Scalar),
                        compute(&buf, base, Backend::best())
                    );
                }
                for backend in [Backend::Scalar, Backend::best()] {
                    let mut s = Scanner::new(&buf, backend);
                    for from in 0..=len + 1 {
                        assert_eq!(s.find(from, |m| m.lt), naive(&buf, from, b'<'), "{backend:?} {from}");
                        assert_eq!(s.find(from, |m| m.gt), naive(&buf, from, b'>'));
                        assert_eq!(s.find(from, |m| m.quot), naive(&buf, from, b'"'));
                        assert_eq!(s.find(from, |m| m.apos), naive(&buf, from, b'\''));
                    }
                }
            }
        }
    }

    #[test]
    fn name_and_key_ends_backends_agree() {
        let alphabet = b"ab:_-.09\xc3\xa9 \t\r\n/><\"'=&\x0b\x0c?@";
        let mut seed = 11u64;
        for len in 0..80usize {
            for _ in 0..50 {
                // mostly name bytes, so that runs are long enough to cross 16-byte chunks
                let buf: Vec<u8> = (0..len)
                    .map(|_| {
                        let r = lcg(&mut seed) as usize;
                        alphabet[if r % 8 == 0 { r / 8 % alphabet.len() } else { r / 8 % 8 }]
                    })
                    .collect();
                for from in 0..=len {
                    let want = (from..len).find(|&i| NAME_STOPS.contains(&buf[i])).unwrap_or(len);
                    assert_eq!(name_end(&buf, from, Backend::Scalar), want);
                    assert_eq!(name_end(&buf, from, Backend::best()), want, "{buf:?} {from}");
                    let want = (from..len).find(|&i| buf[i] == b'=').unwrap_or(len);
                    assert_eq!(find_byte(&buf, from, b'=', Backend::Scalar), want);
                    assert_eq!(find_byte(&buf, from, b'=', Backend::best()), want);
                    let want = (from..len).find(|&i| KEY_STOPS.contains(&buf[i])).unwrap_or(len);
                    assert_eq!(key_end(&buf, from, Backend::Scalar), want);
                    assert_eq!(key_end(&buf, from, Backend::best()), want, "{buf:?} {from}");
                }
            }
        }
    }

    #[test]
    fn high_bytes_are_not_structural() {
        // 0xBC | 0x80 etc.: a signed compare must not confuse bytes >= 0x80 with '<' (0x3C)
        let buf: Vec<u8> = (0..=255u8).collect();
        let m = compute(&buf, 0, Backend::best());
        assert_eq!(
            m.lt.count_ones() + m.gt.count_ones() + m.quot.count_ones() + m.apos.count_ones(),
            4
        );
        assert_eq!(compute(&buf, 0, Backend::Scalar), m);
        for base in [64, 128, 192] {
            let m = compute(&buf, base, Backend::best());
            assert_eq!((m.lt, m.gt, m.quot, m.apos), (0, 0, 0, 0));
        }
    }
}
