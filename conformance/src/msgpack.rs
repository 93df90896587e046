//! Just enough msgpack to compare application payloads whose map order
//! varies between runs: Go's msgp writes a Go `map` in its (random)
//! iteration order, so `{"a":1,"b":2}` and `{"b":2,"a":1}` are the same value.

/// A decoded msgpack value with maps in a canonical (sorted) order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Value {
    Nil,
    Bool(bool),
    /// Any integer, as i128 so every msgpack integer fits.
    Int(i128),
    /// A float's bits (compared bitwise).
    Float(u64),
    Str(Vec<u8>),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    /// Entries sorted by key (then value).
    Map(Vec<(Value, Value)>),
    Ext(i8, Vec<u8>),
}

/// Decodes `buf` as exactly one msgpack value; `None` if it is not one.
pub(crate) fn decode(buf: &[u8]) -> Option<Value> {
    let mut r = Reader { buf, pos: 0 };
    let v = r.value(0)?;
    (r.pos == buf.len()).then_some(v)
}

/// Whether two payloads are the same msgpack map up to entry order (only
/// maps are reordered: any other value must match byte for byte).
pub(crate) fn same_map(a: &[u8], b: &[u8]) -> bool {
    match (decode(a), decode(b)) {
        (Some(x @ Value::Map(_)), Some(y @ Value::Map(_))) => x == y,
        _ => false,
    }
}

/// Deeper nesting is not a payload we compare.
const MAX_DEPTH: usize = 64;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn uint(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    }

    fn bytes(&mut self, n: u64) -> Option<Vec<u8>> {
        Some(self.take(usize::try_from(n).ok()?)?.to_vec())
    }

    fn array(&mut self, n: u64, depth: usize) -> Option<Value> {
        let mut items = Vec::new();
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Some(Value::Array(items))
    }

    fn map(&mut self, n: u64, depth: usize) -> Option<Value> {
        let mut entries = Vec::new();
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let v = self.value(depth + 1)?;
            entries.push((k, v));
        }
        entries.sort();
        Some(Value::Map(entries))
    }

    fn ext(&mut self, len: u64) -> Option<Value> {
        let ty = self.take(1)?[0] as i8;
        Some(Value::Ext(ty, self.bytes(len)?))
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        let m = self.take(1)?[0];
        Some(match m {
            0x00..=0x7f => Value::Int(i128::from(m)),
            0x80..=0x8f => return self.map(u64::from(m & 0x0f), depth),
            0x90..=0x9f => return self.array(u64::from(m & 0x0f), depth),
            0xa0..=0xbf => Value::Str(self.bytes(u64::from(m & 0x1f))?),
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 => {
                let n = self.uint(1)?;
                Value::Bin(self.bytes(n)?)
            }
            0xc5 => {
                let n = self.uint(2)?;
                Value::Bin(self.bytes(n)?)
            }
            0xc6 => {
                let n = self.uint(4)?;
                Value::Bin(self.bytes(n)?)
            }
            0xc7 => {
                let n = self.uint(1)?;
                return self.ext(n);
            }
            0xc8 => {
                let n = self.uint(2)?;
                return self.ext(n);
            }
            0xc9 => {
                let n = self.uint(4)?;
                return self.ext(n);
            }
            0xca => Value::Float(self.uint(4)?),
            0xcb => Value::Float(self.uint(8)?),
            0xcc => Value::Int(i128::from(self.uint(1)?)),
            0xcd => Value::Int(i128::from(self.uint(2)?)),
            0xce => Value::Int(i128::from(self.uint(4)?)),
            0xcf => Value::Int(i128::from(self.uint(8)?)),
            0xd0 => Value::Int(i128::from(self.uint(1)? as u8 as i8)),
            0xd1 => Value::Int(i128::from(self.uint(2)? as u16 as i16)),
            0xd2 => Value::Int(i128::from(self.uint(4)? as u32 as i32)),
            0xd3 => Value::Int(i128::from(self.uint(8)? as i64)),
            0xd4 => return self.ext(1),
            0xd5 => return self.ext(2),
            0xd6 => return self.ext(4),
            0xd7 => return self.ext(8),
            0xd8 => return self.ext(16),
            0xd9 => {
                let n = self.uint(1)?;
                Value::Str(self.bytes(n)?)
            }
            0xda => {
                let n = self.uint(2)?;
                Value::Str(self.bytes(n)?)
            }
            0xdb => {
                let n = self.uint(4)?;
                Value::Str(self.bytes(n)?)
            }
            0xdc => {
                let n = self.uint(2)?;
                return self.array(n, depth);
            }
            0xdd => {
                let n = self.uint(4)?;
                return self.array(n, depth);
            }
            0xde => {
                let n = self.uint(2)?;
                return self.map(n, depth);
            }
            0xdf => {
                let n = self.uint(4)?;
                return self.map(n, depth);
            }
            0xe0..=0xff => Value::Int(i128::from(m as i8)),
            0xc1 => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_compare_regardless_of_order() {
        // {"a":"1","b":"2"} vs {"b":"2","a":"1"}
        let ab = [0x82, 0xa1, b'a', 0xa1, b'1', 0xa1, b'b', 0xa1, b'2'];
        let ba = [0x82, 0xa1, b'b', 0xa1, b'2', 0xa1, b'a', 0xa1, b'1'];
        assert!(same_map(&ab, &ba));
        let other = [0x82, 0xa1, b'b', 0xa1, b'3', 0xa1, b'a', 0xa1, b'1'];
        assert!(!same_map(&ab, &other));
        // Not a map, or trailing bytes: never "the same map".
        assert!(!same_map(b"Hello", b"Hello"));
        let mut trailing = ab.to_vec();
        trailing.push(0);
        assert!(!same_map(&ab, &trailing));
    }

    #[test]
    fn decodes_scalars_and_rejects_truncation() {
        assert_eq!(decode(&[0xd0, 0xff]), Some(Value::Int(-1)));
        assert_eq!(decode(&[0xcd, 0xea, 0x60]), Some(Value::Int(60000)));
        assert_eq!(decode(&[0xc4, 0x02, 1]), None);
        assert_eq!(decode(&[0xc1]), None);
    }
}
