//! A stable, dependency-free 64-bit content digest (FNV-1a).
//!
//! Used for per-plan content hashes, feed body hashes and ETags. It is stable
//! across processes, machines and versions (replicas must agree on it), and
//! it is not a cryptographic hash: nothing here defends against a provider
//! crafting collisions, which could at worst make planbox skip an update.
//! This module must not depend on anything else in the crate.

use std::io::{self, Write};

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// Streaming FNV-1a 64.
#[derive(Clone, Debug)]
pub struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(OFFSET)
    }
}

impl Digest {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
        self.0 = h;
    }

    /// Feeds a field followed by a separator byte that cannot occur in XML
    /// text, so that ("ab","c") and ("a","bc") differ.
    pub fn field(&mut self, bytes: &[u8]) {
        self.update(bytes);
        self.update(&[0x1f]);
    }

    pub fn finish(&self) -> u64 {
        self.0
    }

    /// The digest as 16 lowercase hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

impl Write for Digest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One-shot digest of a byte slice.
pub fn digest(bytes: &[u8]) -> u64 {
    let mut d = Digest::new();
    d.update(bytes);
    d.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_published_fnv1a64_vectors() {
        assert_eq!(digest(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(digest(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(digest(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn streaming_equals_one_shot_and_fields_are_delimited() {
        let mut d = Digest::new();
        d.update(b"foo");
        d.update(b"bar");
        assert_eq!(d.finish(), digest(b"foobar"));
        let (mut a, mut b) = (Digest::new(), Digest::new());
        a.field(b"ab");
        a.field(b"c");
        b.field(b"a");
        b.field(b"bc");
        assert_ne!(a.finish(), b.finish());
    }
}
