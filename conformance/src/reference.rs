//! The handler table of the recorded transcripts
//! (`conformance/transcripts/README.md`) registered on a real manager: what
//! the interop peer (`grid-conformance serve` / `call`) and the driver
//! tests serve. Test tooling: production code registers its own handlers.

use bytes::{BufMut, Bytes, BytesMut};
use grid_proto::driver::{Manager, RegisterError, RemoteError, Runtime, StreamCall};
use grid_proto::sim::{REF_MSS, REF_SUB, mss_reply};
use grid_proto::{Capacities, HandlerId};

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
    Ok(())
}
