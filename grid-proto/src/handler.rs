//! Handler ids (docs/protocol.md#appendix-handlers); what is known about
//! each id is in the catalogue (`catalogue.rs`).

use std::fmt;

/// Identifies a handler on the remote node. Valid ids are 1..=79; 78 and 79
/// are the test handlers. The numbers never change meaning.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HandlerId(pub u8);

/// The named ids of MinIO's handlers (`HandlerId::DISK_INFO`, ...,
/// `HandlerId::TEST` and `HandlerId::TEST2` for the two test handlers) are
/// defined with the catalogue (`catalogue.rs`).
impl HandlerId {
    /// One past the last valid id; Go refuses it and everything above.
    pub const END: HandlerId = HandlerId(80);

    /// Whether Go accepts this id (1..=79).
    pub const fn is_valid(self) -> bool {
        self.0 >= 1 && self.0 < Self::END.0
    }

    /// Go's name for the handler, or `None` for an id outside 0..=79.
    pub const fn name(self) -> Option<&'static str> {
        match self.info() {
            Some(info) => Some(info.name),
            None => None,
        }
    }
}

impl fmt::Debug for HandlerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "HandlerId({}: {n})", self.0),
            None => write!(f, "HandlerId({})", self.0),
        }
    }
}

impl fmt::Display for HandlerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "HandlerID({})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_appendix_a() {
        assert_eq!(HandlerId(9).name(), Some("DiskInfo"));
        assert_eq!(HandlerId(1).name(), Some("LockLock"));
        assert_eq!(HandlerId(40).name(), Some("MakeBucket"));
        assert_eq!(HandlerId(60).name(), Some("UpdateMetacacheListing"));
        assert_eq!(HandlerId(77).name(), Some("CheckParts3"));
        assert_eq!(HandlerId(78).name(), Some("handlerTest"));
        assert_eq!(HandlerId(80).name(), None);
        assert!(!HandlerId(0).is_valid());
        assert!(HandlerId(79).is_valid());
        assert!(!HandlerId(80).is_valid());
    }
}
