//! The few msgpack primitives the wire format needs.
//!
//! Written by hand rather than through `rmp`: the envelope is on the hot path
//! and payloads must come out as zero-copy [`Bytes`] slices of the received
//! frame, and decoding must accept exactly what Go's msgp accepts (every
//! integer width, `bin` or `str` map keys, skipping unknown values).

use bytes::{BufMut, Bytes};

use crate::error::DecodeError;

/// A cursor over a range of one received buffer. Slices it hands out share
/// the buffer; positions are offsets into the whole buffer.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
}

/// How deep [`Reader::skip_value`] follows nested arrays and maps before it
/// gives up, so a hostile payload cannot exhaust the stack.
const MAX_SKIP_DEPTH: u32 = 64;

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a Bytes) -> Self {
        Reader {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    /// A reader of `buf[range]` (`range` must lie within `buf`).
    pub(crate) fn within(buf: &'a Bytes, range: std::ops::Range<usize>) -> Self {
        let end = range.end.min(buf.len());
        Reader {
            buf,
            pos: range.start.min(end),
            end,
        }
    }

    /// The offset of the next byte in the whole buffer.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                field,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn take_bytes(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                field,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    fn peek(&self, field: &'static str) -> Result<u8, DecodeError> {
        self.buf[..self.end]
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Truncated {
                field,
                needed: 1,
                available: 0,
            })
    }

    fn be_u64(&mut self, n: usize, field: &'static str) -> Result<u64, DecodeError> {
        let s = self.take(n, field)?;
        Ok(s.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// Any msgpack integer (signed or unsigned, any width) whose value is
    /// within `0..=max`, as Go's msgp accepts for unsigned fields.
    pub(crate) fn uint(&mut self, max: u64, field: &'static str) -> Result<u64, DecodeError> {
        let marker = self.byte(field)?;
        let value: i128 = match marker {
            0x00..=0x7f => i128::from(marker),
            0xe0..=0xff => i128::from(marker as i8),
            0xcc => i128::from(self.be_u64(1, field)?),
            0xcd => i128::from(self.be_u64(2, field)?),
            0xce => i128::from(self.be_u64(4, field)?),
            0xcf => i128::from(self.be_u64(8, field)?),
            0xd0 => i128::from(self.be_u64(1, field)? as u8 as i8),
            0xd1 => i128::from(self.be_u64(2, field)? as u16 as i16),
            0xd2 => i128::from(self.be_u64(4, field)? as u32 as i32),
            0xd3 => i128::from(self.be_u64(8, field)? as i64),
            other => {
                return Err(DecodeError::WrongType {
                    field,
                    marker: other,
                });
            }
        };
        if value < 0 || value > i128::from(max) {
            return Err(DecodeError::OutOfRange { field, value });
        }
        Ok(value as u64)
    }

    /// An array header; returns the element count.
    pub(crate) fn array_len(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let marker = self.byte(field)?;
        match marker {
            0x90..=0x9f => Ok(u32::from(marker & 0x0f)),
            0xdc => Ok(self.be_u64(2, field)? as u32),
            0xdd => Ok(self.be_u64(4, field)? as u32),
            other => Err(DecodeError::WrongType {
                field,
                marker: other,
            }),
        }
    }

    /// A map header; returns the entry count.
    pub(crate) fn map_len(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let marker = self.byte(field)?;
        match marker {
            0x80..=0x8f => Ok(u32::from(marker & 0x0f)),
            0xde => Ok(self.be_u64(2, field)? as u32),
            0xdf => Ok(self.be_u64(4, field)? as u32),
            other => Err(DecodeError::WrongType {
                field,
                marker: other,
            }),
        }
    }

    /// A `bin` value (`bin8/16/32` only: Go rejects `nil` and `str` here).
    pub(crate) fn bin(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.bin_len(field)?;
        self.take_bytes(len, field)
    }

    /// Where the next `bin` value's bytes lie in the buffer, without slicing
    /// it (merged entries are decoded in place).
    pub(crate) fn bin_range(
        &mut self,
        field: &'static str,
    ) -> Result<std::ops::Range<usize>, DecodeError> {
        let len = self.bin_len(field)?;
        let start = self.pos;
        self.take(len, field)?;
        Ok(start..start + len)
    }

    fn bin_len(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let marker = self.byte(field)?;
        let len = match marker {
            0xc4 => self.be_u64(1, field)?,
            0xc5 => self.be_u64(2, field)?,
            0xc6 => self.be_u64(4, field)?,
            other => {
                return Err(DecodeError::WrongType {
                    field,
                    marker: other,
                });
            }
        };
        Ok(len as usize)
    }

    /// The raw bytes of a `str` or `bin` value (msgp accepts either for map
    /// keys and strings).
    pub(crate) fn str_or_bin(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let marker = self.peek(field)?;
        let len = match marker {
            0xa0..=0xbf => {
                self.pos += 1;
                u64::from(marker & 0x1f)
            }
            0xd9 | 0xc4 => {
                self.pos += 1;
                self.be_u64(1, field)?
            }
            0xda | 0xc5 => {
                self.pos += 1;
                self.be_u64(2, field)?
            }
            0xdb | 0xc6 => {
                self.pos += 1;
                self.be_u64(4, field)?
            }
            other => {
                return Err(DecodeError::WrongType {
                    field,
                    marker: other,
                });
            }
        };
        self.take_bytes(len as usize, field)
    }

    /// A string (`str` or `bin`). Go's msgp does not check UTF-8, so
    /// neither does this: invalid sequences become U+FFFD rather than an
    /// error that would drop the connection.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let raw = self.str_or_bin(field)?;
        Ok(String::from_utf8_lossy(&raw).into_owned())
    }

    /// A string that may also be `nil` (Go's `*string`-like fields).
    pub(crate) fn opt_string(
        &mut self,
        field: &'static str,
    ) -> Result<Option<String>, DecodeError> {
        if self.peek(field)? == 0xc0 {
            self.pos += 1;
            return Ok(None);
        }
        self.string(field).map(Some)
    }

    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.byte(field)? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            other => Err(DecodeError::WrongType {
                field,
                marker: other,
            }),
        }
    }

    /// An extension value: returns its type and data.
    pub(crate) fn ext(&mut self, field: &'static str) -> Result<(i8, &'a [u8]), DecodeError> {
        let marker = self.byte(field)?;
        let len = match marker {
            0xd4 => 1,
            0xd5 => 2,
            0xd6 => 4,
            0xd7 => 8,
            0xd8 => 16,
            0xc7 => self.be_u64(1, field)? as usize,
            0xc8 => self.be_u64(2, field)? as usize,
            0xc9 => self.be_u64(4, field)? as usize,
            other => {
                return Err(DecodeError::WrongType {
                    field,
                    marker: other,
                });
            }
        };
        let ty = self.byte(field)? as i8;
        Ok((ty, self.take(len, field)?))
    }

    /// Skips one value of any type (unknown map entries).
    pub(crate) fn skip_value(&mut self, field: &'static str) -> Result<(), DecodeError> {
        self.skip_nested(field, 0)
    }

    fn skip_nested(&mut self, field: &'static str, depth: u32) -> Result<(), DecodeError> {
        if depth > MAX_SKIP_DEPTH {
            return Err(DecodeError::TooDeep { field });
        }
        let marker = self.peek(field)?;
        let (skip, children): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0),
            0x80..=0x8f => (1, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (1, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (1 + u64::from(marker & 0x1f), 0),
            0xcc | 0xd0 => (2, 0),
            0xcd | 0xd1 => (3, 0),
            0xce | 0xd2 | 0xca => (5, 0),
            0xcf | 0xd3 | 0xcb => (9, 0),
            0xd4 => (3, 0),
            0xd5 => (4, 0),
            0xd6 => (6, 0),
            0xd7 => (10, 0),
            0xd8 => (18, 0),
            0xc4 | 0xc5 | 0xc6 | 0xd9 | 0xda | 0xdb => {
                self.str_or_bin(field)?;
                return Ok(());
            }
            0xc7..=0xc9 => {
                self.ext(field)?;
                return Ok(());
            }
            0xdc | 0xdd => {
                let n = self.array_len(field)?;
                return self.skip_n(u64::from(n), field, depth);
            }
            0xde | 0xdf => {
                let n = self.map_len(field)?;
                return self.skip_n(2 * u64::from(n), field, depth);
            }
            other => {
                return Err(DecodeError::WrongType {
                    field,
                    marker: other,
                });
            }
        };
        self.take(skip as usize, field)?;
        self.skip_n(children, field, depth)
    }

    fn skip_n(&mut self, n: u64, field: &'static str, depth: u32) -> Result<(), DecodeError> {
        for _ in 0..n {
            self.skip_nested(field, depth + 1)?;
        }
        Ok(())
    }
}

/// Writes the smallest unsigned form of `v`, as Go's msgp does.
pub(crate) fn write_uint(out: &mut impl BufMut, v: u64) {
    if v < 0x80 {
        out.put_u8(v as u8);
    } else if v <= 0xff {
        out.put_u8(0xcc);
        out.put_u8(v as u8);
    } else if v <= 0xffff {
        out.put_u8(0xcd);
        out.put_u16(v as u16);
    } else if v <= 0xffff_ffff {
        out.put_u8(0xce);
        out.put_u32(v as u32);
    } else {
        out.put_u8(0xcf);
        out.put_u64(v);
    }
}

/// Encoded size of [`write_uint`].
pub(crate) fn uint_len(v: u64) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Writes a `bin` header for `len` bytes (`bin8` even for length 0, like Go).
pub(crate) fn write_bin_header(out: &mut impl BufMut, len: usize) {
    if len <= 0xff {
        out.put_u8(0xc4);
        out.put_u8(len as u8);
    } else if len <= 0xffff {
        out.put_u8(0xc5);
        out.put_u16(len as u16);
    } else {
        out.put_u8(0xc6);
        out.put_u32(len as u32);
    }
}

/// Encoded size of a `bin` header for `len` bytes.
pub(crate) fn bin_header_len(len: usize) -> usize {
    if len <= 0xff {
        2
    } else if len <= 0xffff {
        3
    } else {
        5
    }
}

pub(crate) fn write_bin(out: &mut impl BufMut, data: &[u8]) {
    write_bin_header(out, data.len());
    out.put_slice(data);
}

/// Writes a `str` value in msgp's smallest form.
pub(crate) fn write_str(out: &mut impl BufMut, s: &str) {
    let len = s.len();
    if len < 32 {
        out.put_u8(0xa0 | len as u8);
    } else if len <= 0xff {
        out.put_u8(0xd9);
        out.put_u8(len as u8);
    } else if len <= 0xffff {
        out.put_u8(0xda);
        out.put_u16(len as u16);
    } else {
        out.put_u8(0xdb);
        out.put_u32(len as u32);
    }
    out.put_slice(s.as_bytes());
}

pub(crate) fn write_map_len(out: &mut impl BufMut, n: u32) {
    if n < 16 {
        out.put_u8(0x80 | n as u8);
    } else if n <= 0xffff {
        out.put_u8(0xde);
        out.put_u16(n as u16);
    } else {
        out.put_u8(0xdf);
        out.put_u32(n);
    }
}

pub(crate) fn write_bool(out: &mut impl BufMut, b: bool) {
    out.put_u8(if b { 0xc3 } else { 0xc2 });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_uint(bytes: &[u8]) -> Result<u64, DecodeError> {
        let b = Bytes::copy_from_slice(bytes);
        Reader::new(&b).uint(u64::MAX, "x")
    }

    #[test]
    fn uint_accepts_every_width() {
        assert_eq!(read_uint(&[0x05]).unwrap(), 5);
        assert_eq!(read_uint(&[0xcc, 0x05]).unwrap(), 5);
        assert_eq!(read_uint(&[0xcd, 0, 5]).unwrap(), 5);
        assert_eq!(read_uint(&[0xce, 0, 0, 0, 5]).unwrap(), 5);
        assert_eq!(read_uint(&[0xcf, 0, 0, 0, 0, 0, 0, 0, 5]).unwrap(), 5);
        assert_eq!(read_uint(&[0xd0, 5]).unwrap(), 5);
        assert_eq!(read_uint(&[0xd1, 0, 5]).unwrap(), 5);
        assert_eq!(read_uint(&[0xd2, 0, 0, 0, 5]).unwrap(), 5);
        assert_eq!(read_uint(&[0xd3, 0, 0, 0, 0, 0, 0, 0, 5]).unwrap(), 5);
        assert_eq!(
            read_uint(&[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap(),
            u64::MAX
        );
    }

    #[test]
    fn uint_rejects_negative_and_wrong_types() {
        assert!(matches!(
            read_uint(&[0xff]),
            Err(DecodeError::OutOfRange { .. })
        ));
        assert!(matches!(
            read_uint(&[0xd0, 0x80]),
            Err(DecodeError::OutOfRange { .. })
        ));
        assert!(matches!(
            read_uint(&[0xc0]),
            Err(DecodeError::WrongType { marker: 0xc0, .. })
        ));
        assert!(matches!(
            read_uint(&[0xcd, 0]),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn smallest_uint_form_round_trips() {
        for v in [
            0,
            1,
            127,
            128,
            255,
            256,
            65535,
            65536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_uint(&mut out, v);
            assert_eq!(out.len(), uint_len(v), "{v}");
            assert_eq!(read_uint(&out).unwrap(), v);
        }
    }

    #[test]
    fn skip_value_bounds_nesting() {
        let deep = Bytes::from(vec![0x91; 1000]);
        assert!(matches!(
            Reader::new(&deep).skip_value("x"),
            Err(DecodeError::TooDeep { .. })
        ));
        let nested = Bytes::from_static(&[
            0x82, 0xa1, b'a', 0x91, 0xc0, 0xc4, 0x01, 0x00, 0xc7, 0x01, 0x05, 0x00, 0x07,
        ]);
        let mut r = Reader::new(&nested);
        r.skip_value("x").unwrap();
        assert_eq!(r.remaining(), 1);
    }
}
