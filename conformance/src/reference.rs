//! The handler table of the recorded transcripts
//! (`conformance/transcripts/README.md`) registered on a real manager: what
//! the interop peer (`grid-conformance serve` / `call`) and the driver
//! tests serve. Test tooling: production code registers its own handlers.

use bytes::{BufMut, Bytes, BytesMut};
use grid_proto::driver::{
    Manager, Mss, NoPayload, RegisterError, RemoteError, Runtime, SingleHandler, StreamCall,
    StreamHandler,
};
use grid_proto::sim::{REF_MSS, REF_SUB, mss_reply};
use grid_proto::{Capacities, HandlerId};
use serde::{Deserialize, Serialize};

/// Handler 70 (upstream's `WriteAll` id; Go refuses ids of 80 and above):
/// a string map in, Go's `NoPayload` out.
pub const REF_NOPAYLOAD: SingleHandler<Mss, NoPayload> = SingleHandler::new(HandlerId::WRITE_ALL);

/// The remote error of [`REF_NOPAYLOAD`] for a map without `"k"`.
pub const MISSING_K: &str = "refpeer: missing k";

/// Handler 71 (upstream's `ListBuckets` id): a msgp struct in and out.
pub const REF_STRUCT: SingleHandler<RefStruct, RefStruct> =
    SingleHandler::new(HandlerId::LIST_BUCKETS);

/// Handler 72 (upstream's `RenameDataInline` id): a two-way stream of string
/// maps, one message in flight each way.
pub const REF_STREAM: StreamHandler<Mss, Mss, Mss> =
    StreamHandler::new(HandlerId::RENAME_DATA_INLINE)
        .with_in_capacity(1)
        .with_out_capacity(1);

/// The struct of handler 71, as msgp's generator encodes
/// `struct { Name string `msg:"n"`; Size int64 `msg:"s"`; Tags []string
/// `msg:"t"`; Data []byte `msg:"d"` }`: a map with the keys `n`, `s`, `t`,
/// `d` in that order. Unknown keys are skipped and missing ones keep the
/// default, as msgp does for a fresh value; a nil for any field is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefStruct {
    /// `n`.
    #[serde(rename = "n")]
    pub name: String,
    /// `s`.
    #[serde(rename = "s")]
    pub size: i64,
    /// `t`.
    #[serde(rename = "t")]
    pub tags: Vec<String>,
    /// `d`, a msgpack `bin` as Go's `[]byte`.
    #[serde(rename = "d", with = "serde_bytes")]
    pub data: Vec<u8>,
}

fn concat(parts: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.put_slice(p);
    }
    out.freeze()
}

/// Stream 78: for each incoming message `m`, respond `prefix ++ initial ++ m`;
/// end when the input ends.
async fn echo_stream(prefix: &'static [u8], call: StreamCall) -> Result<(), RemoteError> {
    let initial = call.payload.unwrap_or_default();
    let mut output = call.output;
    let Some(mut input) = call.input else {
        return Ok(());
    };
    while let Some(m) = input.recv().await {
        let m = m.map_err(|e| RemoteError(e.to_string()))?;
        output
            .send(concat(&[prefix, &initial, &m]))
            .await
            .map_err(|e| RemoteError(e.to_string()))?;
    }
    Ok(())
}

/// Stream 79: payload `u32be N ++ data` → N responses `u32be(i) ++ data`.
async fn count_stream(call: StreamCall) -> Result<(), RemoteError> {
    let p = call.payload.unwrap_or_default();
    if p.len() < 4 {
        return Err(RemoteError("refpeer: payload too short".into()));
    }
    let n = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
    let mut output = call.output;
    for i in 0..n {
        output
            .send(concat(&[&i.to_be_bytes(), &p[4..]]))
            .await
            .map_err(|e| RemoteError(e.to_string()))?;
    }
    Ok(())
}

/// The typed handlers 70–72 of the transcripts' table.
fn register_typed_handlers<R: Runtime>(manager: &Manager<R>) -> Result<(), RegisterError> {
    REF_NOPAYLOAD.register(manager, |_ctx, req| async move {
        if req.contains_key("k") {
            Ok(NoPayload)
        } else {
            Err(RemoteError::new(MISSING_K))
        }
    })?;
    REF_STRUCT.register(manager, |_ctx, mut req| async move {
        req.size += 1;
        req.tags.push("go".into());
        Ok(req)
    })?;
    REF_STREAM.register(manager, |_ctx, payload, mut input, mut output| async move {
        let mut k = 0u64;
        while let Some(m) = input.recv().await {
            let mut answer = payload.clone();
            answer.extend(m?);
            answer.insert("i".into(), k.to_string());
            output.send(&answer).await?;
            k += 1;
        }
        Ok(())
    })
}

/// Registers every handler of the transcripts' table on `manager`. Their
/// stream capacities come with the registration, so the same manager can
/// also call these handlers on a peer.
pub fn register_reference_handlers<R: Runtime>(manager: &Manager<R>) -> Result<(), RegisterError> {
    manager.register_single(HandlerId::TEST, |p| async move { Ok(p) })?;
    manager.register_single(HandlerId::TEST2, |p| async move {
        Err(RemoteError(String::from_utf8_lossy(&p).into_owned()))
    })?;
    manager.register_stream(HandlerId::TEST, Capacities::DEFAULT, |c| {
        echo_stream(b"", c)
    })?;
    manager.register_stream(
        HandlerId::TEST2,
        Capacities {
            in_capacity: 0,
            out_capacity: 1,
        },
        count_stream,
    )?;
    manager.register_single_subroute(HandlerId::TEST, REF_SUB, |p| async move {
        Ok(concat(&[b"sub:", &p]))
    })?;
    manager.register_stream_subroute(HandlerId::TEST, REF_SUB, Capacities::DEFAULT, |c| {
        echo_stream(b"sub:", c)
    })?;
    manager.register_single_subroute(HandlerId::TEST2, REF_MSS, |p| async move {
        mss_reply(&p).map_err(RemoteError)
    })?;
    register_typed_handlers(manager)
}

#[cfg(test)]
mod tests {
    use super::*;
    use grid_proto::driver::GridMessage;

    /// The request of the `typed-struct` scenario, as Go encodes it.
    const GO_REQUEST: &[u8] = &[
        0x84, 0xa1, 0x6e, 0xa3, 0x6f, 0x62, 0x6a, 0xa1, 0x73, 0x29, 0xa1, 0x74, 0x92, 0xa1, 0x61,
        0xa1, 0x62, 0xa1, 0x64, 0xc4, 0x03, 0x01, 0x02, 0x03,
    ];

    fn request() -> RefStruct {
        RefStruct {
            name: "obj".into(),
            size: 41,
            tags: vec!["a".into(), "b".into()],
            data: vec![1, 2, 3],
        }
    }

    #[test]
    fn the_struct_encodes_as_msgp_does() {
        assert_eq!(&request().encode().unwrap()[..], GO_REQUEST);
        assert_eq!(RefStruct::decode(GO_REQUEST).unwrap(), request());
        // Go's nil slices: an empty array and an empty bin.
        let empty = RefStruct::default().encode().unwrap();
        assert_eq!(&empty[..], b"\x84\xa1n\xa0\xa1s\x00\xa1t\x90\xa1d\xc4\x00");
    }

    #[test]
    fn the_struct_skips_unknown_keys_keeps_missing_ones_and_refuses_nil() {
        // {"x": [1, {"y": 2}], "s": 7}
        let got = RefStruct::decode(b"\x82\xa1x\x92\x01\x81\xa1y\x02\xa1s\x07").unwrap();
        assert_eq!(
            got,
            RefStruct {
                size: 7,
                ..RefStruct::default()
            }
        );
        for nil in [
            &b"\x81\xa1n\xc0"[..],
            b"\x81\xa1s\xc0",
            b"\x81\xa1t\xc0",
            b"\x81\xa1d\xc0",
        ] {
            assert!(RefStruct::decode(nil).is_err(), "{nil:02x?}");
        }
    }
}
