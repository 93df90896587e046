//! The handlers the loopback tests serve: an echo and a counting stream,
//! registered by the tests themselves (nothing is registered by default).

use bytes::{Bytes, BytesMut};
use grid_proto::driver::{Manager, RegisterError, RemoteError, Runtime, StreamCall};
use grid_proto::{Capacities, HandlerId};

/// Single: echo. Stream (in 1, out 1): each message comes back behind the
/// initial payload.
pub const ECHO: HandlerId = HandlerId::TEST;
/// Single: fails with the payload as error text. Stream (in 0, out 1): the
/// payload `u32be N ++ data` gives N messages `u32be(i) ++ data`.
pub const FAIL_OR_COUNT: HandlerId = HandlerId::TEST2;

fn remote(e: impl ToString) -> RemoteError {
    RemoteError(e.to_string())
}

fn concat(a: &[u8], b: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(a.len() + b.len());
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out.freeze()
}

async fn echo_stream(call: StreamCall) -> Result<(), RemoteError> {
    let prefix = call.payload.unwrap_or_default();
    let mut output = call.output;
    let Some(mut input) = call.input else {
        return Ok(());
    };
    while let Some(message) = input.recv().await {
        output
            .send(concat(&prefix, &message.map_err(remote)?))
            .await
            .map_err(remote)?;
    }
    Ok(())
}

async fn count_stream(call: StreamCall) -> Result<(), RemoteError> {
    let payload = call.payload.unwrap_or_default();
    let Some((n, data)) = payload.split_first_chunk::<4>() else {
        return Err(RemoteError("payload too short".into()));
    };
    let mut output = call.output;
    for i in 0..u32::from_be_bytes(*n) {
        output
            .send(concat(&i.to_be_bytes(), data))
            .await
            .map_err(remote)?;
    }
    Ok(())
}

/// Registers [`ECHO`] and [`FAIL_OR_COUNT`], single and stream, on `m`.
pub fn register<R: Runtime>(m: &Manager<R>) -> Result<(), RegisterError> {
    m.register_single(ECHO, |p: Bytes| async move { Ok(p) })?;
    m.register_single(FAIL_OR_COUNT, |p: Bytes| async move {
        Err(RemoteError(String::from_utf8_lossy(&p).into_owned()))
    })?;
    m.register_stream(ECHO, Capacities::DEFAULT, echo_stream)?;
    let one_way = Capacities {
        in_capacity: 0,
        out_capacity: 1,
    };
    m.register_stream(FAIL_OR_COUNT, one_way, count_stream)
}
