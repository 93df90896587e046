//! Subroute ids: the 32-byte trailer that addresses a handler on a
//! subroute such as a drive path (docs/protocol.md#subroute).

use std::fmt;
use std::sync::Arc;

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

/// A subroute as an application names it: by its route string (a drive
/// path such as `/data1`), or by its 32-byte wire id when only the hash is
/// known (a capture carries nothing else). Every API that takes a subroute,
/// raw or typed, takes `impl Into<Subroute>`, so `"/data1"`, a `String` and a
/// [`SubrouteId`] all work.
///
/// ```
/// use grid_proto::{HandlerId, Subroute, SubrouteId};
///
/// let named = Subroute::from("/data1");
/// assert_eq!(named.name(), Some("/data1"));
/// assert_eq!(named.id(HandlerId::DISK_INFO), SubrouteId::new(HandlerId::DISK_INFO, "/data1"));
/// let raw = Subroute::from(SubrouteId::zero(HandlerId::DISK_INFO));
/// assert_eq!(raw.name(), None);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Subroute {
    /// A route string; its wire id depends on the handler
    /// ([`SubrouteId::new`]).
    Named(Arc<str>),
    /// A wire id, sent as is whatever the handler.
    Id(SubrouteId),
}

impl Subroute {
    /// The wire id of `handler` on this subroute.
    pub fn id(&self, handler: HandlerId) -> SubrouteId {
        match self {
            Subroute::Named(route) => SubrouteId::new(handler, route),
            Subroute::Id(id) => *id,
        }
    }

    /// The route string, if the subroute was named by one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Subroute::Named(route) => Some(route),
            Subroute::Id(_) => None,
        }
    }

    /// The route string as shared, if the subroute was named by one (the
    /// driver hands it to its traces without copying).
    #[cfg(feature = "driver")]
    pub(crate) fn shared_name(&self) -> Option<&Arc<str>> {
        match self {
            Subroute::Named(route) => Some(route),
            Subroute::Id(_) => None,
        }
    }

    /// `sub` nested under this subroute, as Go nests them: two route
    /// strings join with `/`; a wire id replaces whatever it is nested
    /// under, and nothing can be nested under a wire id (the hash of the
    /// joined route is unknown), so `sub` then stands alone.
    pub fn join(&self, sub: Subroute) -> Subroute {
        match (self, sub) {
            (Subroute::Named(base), Subroute::Named(sub)) => {
                Subroute::Named(Arc::from(join_route(base, &sub)))
            }
            (_, sub) => sub,
        }
    }
}

impl From<&str> for Subroute {
    fn from(route: &str) -> Self {
        Subroute::Named(Arc::from(route))
    }
}

impl From<&String> for Subroute {
    fn from(route: &String) -> Self {
        Subroute::Named(Arc::from(route.as_str()))
    }
}

impl From<String> for Subroute {
    fn from(route: String) -> Self {
        Subroute::Named(Arc::from(route))
    }
}

impl From<Arc<str>> for Subroute {
    fn from(route: Arc<str>) -> Self {
        Subroute::Named(route)
    }
}

impl From<SubrouteId> for Subroute {
    fn from(id: SubrouteId) -> Self {
        Subroute::Id(id)
    }
}

impl fmt::Debug for Subroute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subroute::Named(route) => write!(f, "Subroute({route:?})"),
            Subroute::Id(id) => write!(f, "Subroute({id:?})"),
        }
    }
}

impl fmt::Display for Subroute {
    /// The route string, or the wire id as Go prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subroute::Named(route) => f.write_str(route),
            Subroute::Id(id) => id.fmt(f),
        }
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

    #[test]
    fn subroutes_from_names_and_ids() {
        let h = HandlerId(9);
        let named = Subroute::from(String::from("/data1"));
        assert_eq!(named.id(h), SubrouteId::new(h, "/data1"));
        assert_eq!(named.to_string(), "/data1");
        let nested = Subroute::from("a").join("b".into());
        assert_eq!(nested, Subroute::from("a/b"));
        let raw = Subroute::from(SubrouteId::zero(h));
        // A wire id is sent as is, whatever the handler.
        assert_eq!(raw.id(HandlerId(10)), SubrouteId::zero(h));
        assert_eq!(named.join(raw.clone()), raw);
        assert_eq!(raw.join("x".into()), Subroute::from("x"));
    }
}
