//! Subroute ids: the 32-byte trailer that addresses a handler on a
//! subroute such as a drive path (docs/protocol.md#subroute).

use std::fmt;

use sha2::{Digest, Sha256};

use crate::handler::HandlerId;

/// A subroute id as it travels on the wire: SHA-256 of the route string with
/// byte 0 replaced by the handler id and byte 1 by zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubrouteId(pub [u8; 32]);

impl SubrouteId {
    /// The id of `handler` on `route`. Nested routes are joined with `/`
    /// before hashing (see [`join_route`]).
    pub fn new(handler: HandlerId, route: &str) -> SubrouteId {
        let mut id: [u8; 32] = Sha256::digest(route.as_bytes()).into();
        id[0] = handler.0;
        id[1] = 0;
        SubrouteId(id)
    }

    /// The "zero" alias `[handler, 0 × 31]` that Go also registers for every
    /// subroute handler.
    pub fn zero(handler: HandlerId) -> SubrouteId {
        let mut id = [0u8; 32];
        id[0] = handler.0;
        SubrouteId(id)
    }

    /// The handler id stored in byte 0.
    pub fn handler(&self) -> HandlerId {
        HandlerId(self.0[0])
    }
}

/// Joins route segments with `/`, as Go does for nested subroutes.
pub fn join_route(base: &str, sub: &str) -> String {
    if base.is_empty() {
        sub.to_owned()
    } else {
        format!("{base}/{sub}")
    }
}

impl fmt::Debug for SubrouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubrouteId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for SubrouteId {
    /// Go's `%v` of the byte array, as used in "Invalid Handler for type: [9 0 145 …]".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{b}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data1_vector_from_appendix_c9() {
        let id = SubrouteId::new(HandlerId(9), "/data1");
        assert_eq!(
            format!("{id:?}"),
            "SubrouteId(090091a8ce3a016bbeb46a771da04c5c625fd36cd7cdccaa6f003d7ae2fadb1b)"
        );
        assert_eq!(id.handler(), HandlerId(9));
        let zero = SubrouteId::zero(HandlerId(9));
        assert_eq!(zero.0[0], 9);
        assert!(zero.0[1..].iter().all(|b| *b == 0));
        assert!(id.to_string().starts_with("[9 0 145 168 "));
    }

    #[test]
    fn nested_routes_join_with_slash() {
        assert_eq!(join_route("a", "b"), "a/b");
        assert_eq!(join_route("", "b"), "b");
    }
}
