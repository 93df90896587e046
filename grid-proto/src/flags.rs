//! Flag bits of a message (docs/protocol.md#envelope-flags).

use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign};

/// The `Flags` byte of a message. Unused bits are kept as received (Go
/// ignores them) so a decoded message re-encodes to the same bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// No flags.
    pub const NONE: Flags = Flags(0);
    /// A 4-byte xxh3 checksum follows the message.
    pub const CRC: Flags = Flags(0x01);
    /// Last message of its direction for this mux.
    pub const EOF: Flags = Flags(0x02);
    /// "Stateless" stream; Go rejects it and never sends it.
    pub const STATELESS: Flags = Flags(0x04);
    /// The payload is an error text.
    pub const PAYLOAD_IS_ERR: Flags = Flags(0x08);
    /// The payload is present but empty.
    pub const PAYLOAD_IS_ZERO: Flags = Flags(0x10);
    /// A 32-byte subroute id follows the envelope.
    pub const SUBROUTE: Flags = Flags(0x20);

    /// Flags from the raw byte, unknown bits included.
    pub const fn from_bits(bits: u8) -> Flags {
        Flags(bits)
    }

    /// The raw byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets or clears the bits of `other`.
    pub fn set(&mut self, other: Flags, on: bool) {
        if on {
            self.0 |= other.0;
        } else {
            self.0 &= !other.0;
        }
    }

    /// `self` without the bits of `other`.
    #[must_use]
    pub const fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Flags {
    type Output = Flags;
    fn bitand(self, rhs: Flags) -> Flags {
        Flags(self.0 & rhs.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(Flags, &str); 6] = [
            (Flags::CRC, "CRC"),
            (Flags::EOF, "EOF"),
            (Flags::STATELESS, "STATELESS"),
            (Flags::PAYLOAD_IS_ERR, "ERR"),
            (Flags::PAYLOAD_IS_ZERO, "ZERO"),
            (Flags::SUBROUTE, "SUB"),
        ];
        let mut first = true;
        f.write_str("[")?;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        let unknown = self.0 & 0xc0;
        if unknown != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "0x{unknown:02x}")?;
        }
        f.write_str("]")
    }
}
