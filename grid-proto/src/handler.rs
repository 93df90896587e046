//! Handler ids (docs/protocol.md#appendix-handlers).

use std::fmt;

/// Identifies a handler on the remote node. Valid ids are 1..=79; 78 and 79
/// are the test handlers. The numbers never change meaning.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HandlerId(pub u8);

/// Go's handler names, indexed by id (used in its "Invalid Handler for type"
/// error texts).
const NAMES: [&str; 80] = [
    "handlerInvalid",
    "LockLock",
    "LockRLock",
    "LockUnlock",
    "LockRUnlock",
    "LockRefresh",
    "LockForceUnlock",
    "WalkDir",
    "StatVol",
    "DiskInfo",
    "NSScanner",
    "ReadXL",
    "ReadVersion",
    "DeleteFile",
    "DeleteVersion",
    "UpdateMetadata",
    "WriteMetadata",
    "CheckParts",
    "RenameData",
    "RenameFile",
    "ReadAll",
    "ServerVerify",
    "Trace",
    "Listen",
    "DeleteBucketMetadata",
    "LoadBucketMetadata",
    "ReloadSiteReplicationConfig",
    "ReloadPoolMeta",
    "StopRebalance",
    "LoadRebalanceMeta",
    "LoadTransitionTierConfig",
    "DeletePolicy",
    "LoadPolicy",
    "LoadPolicyMapping",
    "DeleteServiceAccount",
    "LoadServiceAccount",
    "DeleteUser",
    "LoadUser",
    "LoadGroup",
    "HealBucket",
    "MakeBucket",
    "HeadBucket",
    "DeleteBucket",
    "GetMetrics",
    "GetResourceMetrics",
    "GetMemInfo",
    "GetProcInfo",
    "GetOSInfo",
    "GetPartitions",
    "GetNetInfo",
    "GetCPUs",
    "ServerInfo",
    "GetSysConfig",
    "GetSysServices",
    "GetSysErrors",
    "GetAllBucketStats",
    "GetBucketStats",
    "GetSRMetrics",
    "GetPeerMetrics",
    "GetMetacacheListing",
    "UpdateMetacacheListing",
    "GetPeerBucketMetrics",
    "StorageInfo",
    "ConsoleLog",
    "ListDir",
    "GetLocks",
    "BackgroundHealStatus",
    "GetLastDayTierStats",
    "SignalService",
    "GetBandwidth",
    "WriteAll",
    "ListBuckets",
    "RenameDataInline",
    "RenameData2",
    "CheckParts2",
    "RenamePart",
    "ClearUploadID",
    "CheckParts3",
    "handlerTest",
    "handlerTest2",
];

impl HandlerId {
    /// The first test handler (78).
    pub const TEST: HandlerId = HandlerId(78);
    /// The second test handler (79).
    pub const TEST2: HandlerId = HandlerId(79);
    /// One past the last valid id; Go refuses it and everything above.
    pub const END: HandlerId = HandlerId(80);

    /// Whether Go accepts this id (1..=79).
    pub const fn is_valid(self) -> bool {
        self.0 >= 1 && self.0 < Self::END.0
    }

    /// Go's name for the handler, or `None` for an id outside 0..=79.
    pub fn name(self) -> Option<&'static str> {
        NAMES.get(usize::from(self.0)).copied()
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
