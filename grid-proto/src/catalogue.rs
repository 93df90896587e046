//! MinIO's handler catalogue: every id of Go's handler enum with its name
//! and, for the streaming handlers, the capacities MinIO registers them with
//! (docs/protocol.md#appendix-handlers, docs/protocol.md#appendix-capacities).
//!
//! The one table of handler facts: [`HandlerId::name`], the named constants
//! such as [`HandlerId::DISK_INFO`] and
//! [`CapacityTable::default`](crate::CapacityTable) all read it. A node that
//! serves or calls MinIO's handlers uses the constants by name:
//!
//! ```
//! use grid_proto::{Capacities, HandlerId};
//!
//! assert_eq!(HandlerId::DISK_INFO, HandlerId(9));
//! assert_eq!(HandlerId::DISK_INFO.name(), Some("DiskInfo"));
//! // Streaming handlers carry MinIO's capacities (they are not on the wire).
//! assert_eq!(
//!     HandlerId::LISTEN.stream_capacities(),
//!     Some(Capacities { in_capacity: 0, out_capacity: 100 })
//! );
//! assert_eq!(HandlerId::DISK_INFO.stream_capacities(), None);
//! ```

use crate::capacities::Capacities;
use crate::handler::HandlerId;

/// What the catalogue knows about one handler id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerInfo {
    /// The id.
    pub id: HandlerId,
    /// Go's name for it, as its error texts print it ("Invalid Handler for
    /// type: DiskInfo").
    pub name: &'static str,
    /// MinIO registers it as a streaming handler with these capacities;
    /// `None` for single-request handlers (and the unused ids).
    pub stream: Option<Capacities>,
}

const fn single(id: u8, name: &'static str) -> HandlerInfo {
    HandlerInfo {
        id: HandlerId(id),
        name,
        stream: None,
    }
}

/// MinIO's streams all take no input (`InCapacity` 0).
const fn stream(id: u8, name: &'static str, out_capacity: u32) -> HandlerInfo {
    HandlerInfo {
        id: HandlerId(id),
        name,
        stream: Some(Capacities {
            in_capacity: 0,
            out_capacity,
        }),
    }
}

/// Defines the named constants and the table from one list, so a name can
/// never disagree with its id.
macro_rules! catalogue {
    ($( $id:literal $konst:ident $name:literal $kind:ident $( ($out:literal) )? ;)*) => {
        impl HandlerId {
            $(
                #[doc = concat!("MinIO's `", $name, "` (", stringify!($id), ").")]
                pub const $konst: HandlerId = HandlerId($id);
            )*
        }

        /// Every id of Go's handler enum (0..=79), indexed by id: 0 is
        /// Go's invalid id, 78 and 79 its test handlers.
        pub const CATALOGUE: [HandlerInfo; 80] = [
            single(0, "handlerInvalid"),
            $( catalogue!(@info $id $name $kind $( ($out) )?), )*
        ];
    };
    (@info $id:literal $name:literal single) => { single($id, $name) };
    (@info $id:literal $name:literal stream ($out:literal)) => { stream($id, $name, $out) };
}

catalogue! {
    1 LOCK_LOCK "LockLock" single;
    2 LOCK_R_LOCK "LockRLock" single;
    3 LOCK_UNLOCK "LockUnlock" single;
    4 LOCK_R_UNLOCK "LockRUnlock" single;
    5 LOCK_REFRESH "LockRefresh" single;
    6 LOCK_FORCE_UNLOCK "LockForceUnlock" single;
    7 WALK_DIR "WalkDir" stream(1);
    8 STAT_VOL "StatVol" single;
    9 DISK_INFO "DiskInfo" single;
    10 NS_SCANNER "NSScanner" stream(1);
    11 READ_XL "ReadXL" single;
    12 READ_VERSION "ReadVersion" single;
    13 DELETE_FILE "DeleteFile" single;
    14 DELETE_VERSION "DeleteVersion" single;
    15 UPDATE_METADATA "UpdateMetadata" single;
    16 WRITE_METADATA "WriteMetadata" single;
    17 CHECK_PARTS "CheckParts" single;
    18 RENAME_DATA "RenameData" single;
    19 RENAME_FILE "RenameFile" single;
    20 READ_ALL "ReadAll" single;
    21 SERVER_VERIFY "ServerVerify" single;
    22 TRACE "Trace" stream(100000);
    23 LISTEN "Listen" stream(100);
    24 DELETE_BUCKET_METADATA "DeleteBucketMetadata" single;
    25 LOAD_BUCKET_METADATA "LoadBucketMetadata" single;
    26 RELOAD_SITE_REPLICATION_CONFIG "ReloadSiteReplicationConfig" single;
    27 RELOAD_POOL_META "ReloadPoolMeta" single;
    28 STOP_REBALANCE "StopRebalance" single;
    29 LOAD_REBALANCE_META "LoadRebalanceMeta" single;
    30 LOAD_TRANSITION_TIER_CONFIG "LoadTransitionTierConfig" single;
    31 DELETE_POLICY "DeletePolicy" single;
    32 LOAD_POLICY "LoadPolicy" single;
    33 LOAD_POLICY_MAPPING "LoadPolicyMapping" single;
    34 DELETE_SERVICE_ACCOUNT "DeleteServiceAccount" single;
    35 LOAD_SERVICE_ACCOUNT "LoadServiceAccount" single;
    36 DELETE_USER "DeleteUser" single;
    37 LOAD_USER "LoadUser" single;
    38 LOAD_GROUP "LoadGroup" single;
    39 HEAL_BUCKET "HealBucket" single;
    40 MAKE_BUCKET "MakeBucket" single;
    41 HEAD_BUCKET "HeadBucket" single;
    42 DELETE_BUCKET "DeleteBucket" single;
    43 GET_METRICS "GetMetrics" single;
    44 GET_RESOURCE_METRICS "GetResourceMetrics" single;
    45 GET_MEM_INFO "GetMemInfo" single;
    46 GET_PROC_INFO "GetProcInfo" single;
    47 GET_OS_INFO "GetOSInfo" single;
    48 GET_PARTITIONS "GetPartitions" single;
    49 GET_NET_INFO "GetNetInfo" single;
    50 GET_CPUS "GetCPUs" single;
    51 SERVER_INFO "ServerInfo" single;
    52 GET_SYS_CONFIG "GetSysConfig" single;
    53 GET_SYS_SERVICES "GetSysServices" single;
    54 GET_SYS_ERRORS "GetSysErrors" single;
    55 GET_ALL_BUCKET_STATS "GetAllBucketStats" single;
    56 GET_BUCKET_STATS "GetBucketStats" single;
    57 GET_SR_METRICS "GetSRMetrics" single;
    58 GET_PEER_METRICS "GetPeerMetrics" single;
    59 GET_METACACHE_LISTING "GetMetacacheListing" single;
    60 UPDATE_METACACHE_LISTING "UpdateMetacacheListing" single;
    61 GET_PEER_BUCKET_METRICS "GetPeerBucketMetrics" single;
    62 STORAGE_INFO "StorageInfo" single;
    63 CONSOLE_LOG "ConsoleLog" stream(100);
    64 LIST_DIR "ListDir" stream(1);
    65 GET_LOCKS "GetLocks" single;
    66 BACKGROUND_HEAL_STATUS "BackgroundHealStatus" single;
    67 GET_LAST_DAY_TIER_STATS "GetLastDayTierStats" single;
    68 SIGNAL_SERVICE "SignalService" single;
    69 GET_BANDWIDTH "GetBandwidth" single;
    70 WRITE_ALL "WriteAll" single;
    71 LIST_BUCKETS "ListBuckets" single;
    72 RENAME_DATA_INLINE "RenameDataInline" single;
    73 RENAME_DATA2 "RenameData2" single;
    74 CHECK_PARTS2 "CheckParts2" single;
    75 RENAME_PART "RenamePart" single;
    76 CLEAR_UPLOAD_ID "ClearUploadID" single;
    77 CHECK_PARTS3 "CheckParts3" stream(1);
    78 TEST "handlerTest" single;
    79 TEST2 "handlerTest2" single;
}

impl HandlerId {
    /// The catalogue's entry for this id, or `None` for an id outside 0..=79.
    pub const fn info(self) -> Option<&'static HandlerInfo> {
        if (self.0 as usize) < CATALOGUE.len() {
            Some(&CATALOGUE[self.0 as usize])
        } else {
            None
        }
    }

    /// The capacities MinIO registers this streaming handler with; `None`
    /// for single-request handlers and ids outside the catalogue.
    pub const fn stream_capacities(self) -> Option<Capacities> {
        match self.info() {
            Some(info) => info.stream,
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_sits_at_its_own_index() {
        for (i, info) in CATALOGUE.iter().enumerate() {
            assert_eq!(usize::from(info.id.0), i, "{}", info.name);
        }
    }

    #[test]
    fn names_follow_appendix_a() {
        assert_eq!(HandlerId::LOCK_LOCK.name(), Some("LockLock"));
        assert_eq!(HandlerId::MAKE_BUCKET, HandlerId(40));
        assert_eq!(HandlerId::GET_CPUS.name(), Some("GetCPUs"));
        assert_eq!(HandlerId::WRITE_ALL, HandlerId(70));
        assert_eq!(
            HandlerId::RENAME_DATA_INLINE.name(),
            Some("RenameDataInline")
        );
        assert_eq!(HandlerId::CHECK_PARTS3, HandlerId(77));
        assert_eq!(HandlerId::TEST2.name(), Some("handlerTest2"));
        assert_eq!(HandlerId(0).name(), Some("handlerInvalid"));
        assert!(HandlerId(80).info().is_none());
    }

    #[test]
    fn streams_follow_appendix_b() {
        let streams: Vec<(u8, u32)> = CATALOGUE
            .iter()
            .filter_map(|i| i.stream.map(|c| (i.id.0, c.out_capacity)))
            .collect();
        assert_eq!(
            streams,
            [
                (7, 1),
                (10, 1),
                (22, 100_000),
                (23, 100),
                (63, 100),
                (64, 1),
                (77, 1)
            ]
        );
        assert!(
            CATALOGUE
                .iter()
                .filter_map(|i| i.stream)
                .all(|c| c.in_capacity == 0)
        );
    }
}
