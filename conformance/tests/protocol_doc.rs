//! Checks every byte example of `docs/protocol.md` against the real code.
//!
//! The document's examples sit in fenced blocks opened with
//! ```` ```grid-example name=<name> ````; the format of their bodies is
//! described at the top of the document ("How to read the examples"). Each
//! kind is checked against `grid-proto`'s public API: frames are decoded
//! (and re-encoded where canonical), control payloads decoded and
//! re-encoded, subroute ids and hashes recomputed, the dial and CRC rules
//! evaluated, the MinIO token issued and validated, the HTTP upgrade run
//! through the acceptor's check, the handshake checks run, and exchanges
//! played against a live sans-IO `Connection` on a virtual clock.
//!
//! A second test flips every byte of every canonical frame example and
//! requires the check to fail, so an example that does not pin its bytes
//! down cannot slip in. Further tests check that every op, flag and trailer
//! has an example, and that every `protocol.md#anchor` the code refers to
//! exists.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use grid_proto::driver::{BoxFuture, BoxSocket, Manager, MinioAuth, Options, Runtime, tungstenite};
use grid_proto::handshake::{check_connect, rejection_frame};
use grid_proto::{
    CallId, Capacities, Config, ConnectRequest, ConnectResponse, Connection, DecodeError, Event,
    Flags, FrameBuilder, FrameDecoder, HandlerId, IncomingId, InstanceId, Message, MuxConnectError,
    Op, OpenStream, PingPayload, PongPayload, Request, SubrouteId, Timestamp, crc, crc_enabled,
    should_dial,
};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------
// Reading the document

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read_doc() -> String {
    let path = repo_root().join("docs/protocol.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One `grid-example` block: its name and its `key: value` lines, in order.
#[derive(Debug, Clone)]
struct Example {
    name: String,
    /// Line of the opening fence (1-based), for messages.
    line: usize,
    fields: Vec<(String, String)>,
}

impl Example {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn need(&self, key: &str) -> Result<&str, String> {
        self.get(key).ok_or_else(|| format!("missing `{key}:`"))
    }

    fn kind(&self) -> &str {
        self.get("kind").unwrap_or("")
    }
}

/// Every example of the document. A body line `key: value` starts a field;
/// a line that begins with whitespace continues the previous field's value.
fn examples(doc: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut current: Option<Example> = None;
    for (i, line) in doc.lines().enumerate() {
        if let Some(ex) = current.as_mut() {
            if line.trim_start().starts_with("```") {
                out.push(current.take().expect("inside a block"));
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                match ex.fields.last_mut() {
                    Some((_, v)) => {
                        v.push('\n');
                        v.push_str(line.trim());
                    }
                    None => ex.fields.push(("?".into(), line.trim().into())),
                }
            } else {
                let (k, v) = line.split_once(':').unwrap_or((line, ""));
                ex.fields.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        } else if let Some(info) = line.strip_prefix("```grid-example") {
            let name = info
                .split_whitespace()
                .find_map(|w| w.strip_prefix("name="))
                .unwrap_or("")
                .to_owned();
            current = Some(Example {
                name,
                line: i + 1,
                fields: Vec::new(),
            });
        }
    }
    assert!(current.is_none(), "unterminated grid-example block");
    out
}

// ---------------------------------------------------------------------------
// Small parsers

/// Bytes from hex digits; spaces and newlines are ignored.
fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(&clean).map_err(|e| format!("bad hex {clean:.40}...: {e}"))
}

fn spaced_hex(b: &[u8]) -> String {
    b.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits `key=value` tokens; a value may be a double-quoted string with
/// `\"`, `\\` and `\n` escapes. A token without `=` gets an empty key.
fn tokens(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        let mut value = String::new();
        let mut in_value = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            if !in_value && c == '=' {
                in_value = true;
            } else if in_value && c == '"' && value.is_empty() {
                value.push('"');
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated string in {s}")),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some(e) => value.push(e),
                            None => return Err(format!("bad escape in {s}")),
                        },
                        Some(c) => value.push(c),
                    }
                }
                value.push('"');
            } else if in_value {
                value.push(c);
            } else {
                key.push(c);
            }
        }
        if in_value {
            out.push((key, value));
        } else {
            out.push((String::new(), key));
        }
    }
}

/// A value written `"text"` without its quotes.
fn unquote(v: &str) -> Result<String, String> {
    v.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .map(str::to_owned)
        .ok_or_else(|| format!("expected a quoted string, got {v}"))
}

fn lookup<'a>(toks: &'a [(String, String)], key: &str) -> Option<&'a str> {
    toks.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn need<'a>(toks: &'a [(String, String)], key: &str) -> Result<&'a str, String> {
    lookup(toks, key).ok_or_else(|| format!("missing `{key}=`"))
}

fn only_keys(toks: &[(String, String)], allowed: &[&str]) -> Result<(), String> {
    for (k, v) in toks {
        if !allowed.contains(&k.as_str()) {
            return Err(format!("unknown field `{k}={v}`"));
        }
    }
    Ok(())
}

fn parse_u64(v: &str) -> Result<u64, String> {
    if let Some(h) = v.strip_prefix("0x") {
        u64::from_str_radix(h, 16).map_err(|e| format!("{v}: {e}"))
    } else {
        v.replace('_', "").parse().map_err(|e| format!("{v}: {e}"))
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" | "yes" => Ok(true),
        "false" | "no" => Ok(false),
        _ => Err(format!("expected true/false, got {v}")),
    }
}

/// `<secs>.<9 digits>` (Unix seconds, may be negative) or `zero` (Go's zero
/// time).
fn parse_time(v: &str) -> Result<Timestamp, String> {
    if v == "zero" {
        return Ok(Timestamp::GO_ZERO);
    }
    let (s, n) = v.split_once('.').ok_or_else(|| format!("bad time {v}"))?;
    if n.len() != 9 {
        return Err(format!("time {v}: write nanoseconds as 9 digits"));
    }
    Ok(Timestamp {
        secs: s.parse().map_err(|e| format!("{v}: {e}"))?,
        nanos: n.parse().map_err(|e| format!("{v}: {e}"))?,
    })
}

fn parse_uuid(v: &str) -> Result<InstanceId, String> {
    let b = parse_hex(&v.replace('-', ""))?;
    let arr: [u8; 16] = b
        .try_into()
        .map_err(|_| format!("instance id {v} is not 16 bytes"))?;
    Ok(InstanceId(arr))
}

/// `10s`, `500ms`, `1h`.
fn parse_duration(v: &str) -> Result<Duration, String> {
    let (num, unit) = v
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| v.split_at(i))
        .ok_or_else(|| format!("duration {v} needs a unit"))?;
    let n: u64 = num.parse().map_err(|e| format!("{v}: {e}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("unknown unit in {v}")),
    }
}

fn parse_op(v: &str) -> Result<Op, String> {
    Op::ALL
        .iter()
        .copied()
        .find(|op| op.name() == v)
        .ok_or_else(|| format!("unknown op {v}"))
}

fn parse_flags(v: &str) -> Result<u8, String> {
    if v == "-" {
        return Ok(0);
    }
    let mut bits = 0u8;
    for name in v.split('|') {
        bits |= match name {
            "CRC" => Flags::CRC.bits(),
            "EOF" => Flags::EOF.bits(),
            "STATELESS" => Flags::STATELESS.bits(),
            "ERR" => Flags::PAYLOAD_IS_ERR.bits(),
            "ZERO" => Flags::PAYLOAD_IS_ZERO.bits(),
            "SUB" => Flags::SUBROUTE.bits(),
            other => u8::try_from(parse_u64(other)?)
                .map_err(|_| format!("flag value {other} is not a byte"))?,
        };
    }
    Ok(bits)
}

/// What an example says a payload is.
#[derive(Debug, Clone, PartialEq)]
enum PayloadSpec {
    Absent,
    Empty,
    Bytes(Vec<u8>),
    /// Checked by the control-payload line that follows the message.
    Control,
}

fn parse_payload(v: &str) -> Result<PayloadSpec, String> {
    match v {
        "absent" => Ok(PayloadSpec::Absent),
        "empty" => Ok(PayloadSpec::Empty),
        "control" => Ok(PayloadSpec::Control),
        _ => {
            if let Some(h) = v.strip_prefix("hex:") {
                Ok(PayloadSpec::Bytes(parse_hex(h)?))
            } else {
                Ok(PayloadSpec::Bytes(unquote(v)?.into_bytes()))
            }
        }
    }
}

/// The payload to hand to a command: `absent` is `None`.
fn command_payload(v: Option<&str>) -> Result<Option<Bytes>, String> {
    match v.map(parse_payload).transpose()? {
        None | Some(PayloadSpec::Absent) => Ok(None),
        Some(PayloadSpec::Empty) => Ok(Some(Bytes::new())),
        Some(PayloadSpec::Bytes(b)) => Ok(Some(Bytes::from(b))),
        Some(PayloadSpec::Control) => Err("`control` is not a command payload".into()),
    }
}

/// A subroute field: `"route"` (hashed with `handler`), `zero`, `hex:...`.
fn parse_sub(v: &str, handler: u8) -> Result<SubrouteId, String> {
    if v == "zero" {
        return Ok(SubrouteId::zero(HandlerId(handler)));
    }
    if let Some(h) = v.strip_prefix("hex:") {
        let arr: [u8; 32] = parse_hex(h)?
            .try_into()
            .map_err(|_| "a subroute id is 32 bytes".to_owned())?;
        return Ok(SubrouteId(arr));
    }
    Ok(SubrouteId::new(HandlerId(handler), &unquote(v)?))
}

// ---------------------------------------------------------------------------
// Messages and control payloads

/// The expected fields of one message, from a `message:` line.
#[derive(Debug)]
struct MessageSpec {
    op: Op,
    mux: u64,
    seq: u32,
    deadline: u32,
    handler: u8,
    flags: u8,
    payload: PayloadSpec,
    sub: Option<SubrouteId>,
    /// Control-payload lines (`connect:`, `pong:`...) that follow it.
    controls: Vec<(String, String)>,
}

fn parse_message(line: &str) -> Result<MessageSpec, String> {
    let toks = tokens(line)?;
    only_keys(
        &toks,
        &[
            "op", "mux", "seq", "deadline", "handler", "flags", "payload", "sub",
        ],
    )?;
    let handler = lookup(&toks, "handler").map_or(Ok(0), parse_u64)?;
    let handler = u8::try_from(handler).map_err(|_| "handler is a byte".to_owned())?;
    Ok(MessageSpec {
        op: parse_op(need(&toks, "op")?)?,
        mux: parse_u64(need(&toks, "mux")?)?,
        seq: u32::try_from(parse_u64(need(&toks, "seq")?)?).map_err(|e| e.to_string())?,
        deadline: u32::try_from(lookup(&toks, "deadline").map_or(Ok(0), parse_u64)?)
            .map_err(|e| e.to_string())?,
        handler,
        flags: parse_flags(need(&toks, "flags")?)?,
        payload: parse_payload(need(&toks, "payload")?)?,
        sub: lookup(&toks, "sub")
            .map(|v| parse_sub(v, handler))
            .transpose()?,
        controls: Vec::new(),
    })
}

const CONTROL_KEYS: [&str; 5] = [
    "connect",
    "connect-response",
    "mux-connect-error",
    "ping",
    "pong",
];

/// Decodes `payload` as the control payload `key` and compares it with the
/// fields of `line`; with `canonical`, re-encoding must give the same bytes.
fn check_control(key: &str, line: &str, payload: &Bytes, canonical: bool) -> Result<(), String> {
    let toks = tokens(line)?;
    let reencoded = match key {
        "connect" => {
            only_keys(&toks, &["id", "host", "time", "token"])?;
            let want = ConnectRequest {
                id: parse_uuid(need(&toks, "id")?)?,
                host: unquote(need(&toks, "host")?)?,
                time: parse_time(need(&toks, "time")?)?,
                token: unquote(need(&toks, "token")?)?,
            };
            let got = ConnectRequest::decode(payload).map_err(|e| format!("connect: {e}"))?;
            if got != want {
                return Err(format!("connect payload: got {got:?}, want {want:?}"));
            }
            want.to_bytes()
        }
        "connect-response" => {
            only_keys(&toks, &["id", "accepted", "reason"])?;
            let want = ConnectResponse {
                id: parse_uuid(need(&toks, "id")?)?,
                accepted: parse_bool(need(&toks, "accepted")?)?,
                rejected_reason: unquote(need(&toks, "reason")?)?,
            };
            let got =
                ConnectResponse::decode(payload).map_err(|e| format!("connect-response: {e}"))?;
            if got != want {
                return Err(format!("connect-response: got {got:?}, want {want:?}"));
            }
            want.to_bytes()
        }
        "mux-connect-error" => {
            only_keys(&toks, &["error"])?;
            let want = MuxConnectError {
                error: unquote(need(&toks, "error")?)?,
            };
            let got =
                MuxConnectError::decode(payload).map_err(|e| format!("mux-connect-error: {e}"))?;
            if got != want {
                return Err(format!("mux-connect-error: got {got:?}, want {want:?}"));
            }
            want.to_bytes()
        }
        "ping" => {
            only_keys(&toks, &["t"])?;
            let want = PingPayload {
                t: parse_time(need(&toks, "t")?)?,
            };
            let got = PingPayload::decode(payload).map_err(|e| format!("ping: {e}"))?;
            if got != want {
                return Err(format!("ping payload: got {got:?}, want {want:?}"));
            }
            want.to_bytes()
        }
        "pong" => {
            only_keys(&toks, &["nf", "e", "t"])?;
            let e = need(&toks, "e")?;
            let want = PongPayload {
                not_found: parse_bool(need(&toks, "nf")?)?,
                error: if e == "nil" { None } else { Some(unquote(e)?) },
                t: parse_time(need(&toks, "t")?)?,
            };
            let got = PongPayload::decode(payload).map_err(|e| format!("pong: {e}"))?;
            if got != want {
                return Err(format!("pong payload: got {got:?}, want {want:?}"));
            }
            want.to_bytes()
        }
        other => return Err(format!("unknown control payload `{other}`")),
    };
    if canonical && reencoded != *payload {
        return Err(format!(
            "{key} payload re-encodes to {}, recorded {}",
            spaced_hex(&reencoded),
            spaced_hex(payload)
        ));
    }
    Ok(())
}

fn flag_names(bits: u8) -> String {
    format!("{:?}", Flags::from_bits(bits))
}

fn check_message(got: &Message, want: &MessageSpec, canonical: bool) -> Result<(), String> {
    let mut wire_flags = got.flags;
    wire_flags.set(Flags::SUBROUTE, got.subroute.is_some());
    let mut diffs = Vec::new();
    if got.op != want.op {
        diffs.push(format!("op {} != {}", got.op, want.op));
    }
    if got.mux_id != want.mux {
        diffs.push(format!("mux {} != {}", got.mux_id, want.mux));
    }
    if got.seq != want.seq {
        diffs.push(format!("seq {} != {}", got.seq, want.seq));
    }
    if got.deadline_ms != want.deadline {
        diffs.push(format!("deadline {} != {}", got.deadline_ms, want.deadline));
    }
    if got.handler.0 != want.handler {
        diffs.push(format!("handler {} != {}", got.handler.0, want.handler));
    }
    if wire_flags.bits() != want.flags {
        diffs.push(format!(
            "flags {} != {}",
            flag_names(wire_flags.bits()),
            flag_names(want.flags)
        ));
    }
    if got.subroute != want.sub {
        diffs.push(format!("sub {:?} != {:?}", got.subroute, want.sub));
    }
    let payload_ok = match &want.payload {
        PayloadSpec::Absent => got.payload().is_none(),
        PayloadSpec::Empty => got.payload().is_some_and(Bytes::is_empty),
        PayloadSpec::Bytes(b) => got.payload().is_some_and(|p| p[..] == b[..]),
        PayloadSpec::Control => {
            if want.controls.is_empty() {
                diffs.push("payload=control needs a control-payload line".into());
            }
            true
        }
    };
    if !payload_ok {
        diffs.push(format!(
            "payload {:?} != {:?}",
            got.payload().map(|p| spaced_hex(p)),
            want.payload
        ));
    }
    for (key, line) in &want.controls {
        if let Err(e) = check_control(key, line, &got.payload, canonical) {
            diffs.push(e);
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!("{:?}: {}", got.op, diffs.join("; ")))
    }
}

/// The `message:` / `message#N:` lines of an example with the control lines
/// that follow each, indexed from 1.
fn message_specs(ex: &Example) -> Result<Vec<(usize, MessageSpec)>, String> {
    let mut out: Vec<(usize, MessageSpec)> = Vec::new();
    for (k, v) in &ex.fields {
        let index = if k == "message" {
            Some(out.last().map_or(1, |(i, _)| i + 1))
        } else if let Some(n) = k.strip_prefix("message#") {
            Some(n.parse::<usize>().map_err(|e| format!("{k}: {e}"))?)
        } else {
            None
        };
        if let Some(i) = index {
            out.push((i, parse_message(v)?));
        } else if CONTROL_KEYS.contains(&k.as_str()) {
            let (_, last) = out
                .last_mut()
                .ok_or_else(|| format!("`{k}:` must follow a message line"))?;
            last.controls.push((k.clone(), v.clone()));
        }
    }
    Ok(out)
}

fn is_canonical(ex: &Example) -> Result<bool, String> {
    ex.get("canonical").map_or(Ok(true), parse_bool)
}

/// The variant name of a decode error (`CrcMismatch`, `WrongType`, ...).
fn variant(e: &DecodeError) -> String {
    let dbg = format!("{e:?}");
    dbg.split([' ', '{', '(']).next().unwrap_or("").to_owned()
}

// ---------------------------------------------------------------------------
// The kinds of example

fn check_frame(ex: &Example) -> Result<(), String> {
    let frame = Bytes::from(parse_hex(ex.need("hex")?)?);
    check_frame_bytes(ex, &frame)
}

fn check_frame_bytes(ex: &Example, frame: &Bytes) -> Result<(), String> {
    let canonical = is_canonical(ex)?;
    let specs = message_specs(ex)?;
    let want_error = ex.get("error");
    let max = ex
        .get("max-size")
        .map_or(Ok(usize::MAX), |v| parse_u64(v).map(|n| n as usize))?;
    let decoder = match FrameDecoder::new(frame.clone(), max) {
        Ok(d) => d,
        Err(e) => {
            return match want_error {
                Some(w) if w == variant(&e) => check_fatal(ex, &e),
                _ => Err(format!("frame refused: {e}")),
            };
        }
    };
    let merged = decoder.is_merged();
    let mut decoded = Vec::new();
    let mut error = None;
    for item in decoder {
        match item {
            Ok(m) => decoded.push(m),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    match (want_error, &error) {
        (None, None) => {}
        (Some(w), Some(e)) if w == variant(e) => check_fatal(ex, e)?,
        (w, e) => return Err(format!("decode error: expected {w:?}, got {e:?}")),
    }
    let want_merged = match ex.get("container") {
        Some("merged") => true,
        Some("single") | None => false,
        Some(other) => return Err(format!("container: {other}?")),
    };
    if merged != want_merged {
        return Err(format!(
            "merged container: got {merged}, want {want_merged}"
        ));
    }
    if let Some(count) = ex.get("count") {
        let count = parse_u64(count)? as usize;
        if decoded.len() != count {
            return Err(format!("{} messages, want {count}", decoded.len()));
        }
    } else if error.is_none() && decoded.len() != specs.len() {
        return Err(format!(
            "{} messages decoded, {} described",
            decoded.len(),
            specs.len()
        ));
    }
    for (i, spec) in &specs {
        let got = decoded
            .get(i - 1)
            .ok_or_else(|| format!("no message #{i}"))?;
        check_message(got, spec, canonical).map_err(|e| format!("message #{i}: {e}"))?;
    }
    if let Some(v) = ex.get("crc") {
        let want = u32::try_from(parse_u64(v)?).map_err(|e| e.to_string())?;
        let n = frame.len();
        if n < 4 || frame[n - 4..] != want.to_le_bytes() || crc(&frame[..n - 4]) != want {
            return Err(format!(
                "crc: trailer {:02x?}, computed 0x{:08x}, stated 0x{want:08x}",
                &frame[n.saturating_sub(4)..],
                crc(&frame[..n.saturating_sub(4)])
            ));
        }
    }
    if canonical && error.is_none() {
        let again = if merged {
            let mut b = FrameBuilder::new();
            for m in &decoded {
                b.push(m);
            }
            b.finish().unwrap_or_default()
        } else {
            decoded.first().map(Message::to_bytes).unwrap_or_default()
        };
        if again != *frame {
            return Err(format!(
                "re-encodes to {}\n  example has {}",
                spaced_hex(&again),
                spaced_hex(frame)
            ));
        }
    }
    Ok(())
}

fn check_fatal(ex: &Example, e: &DecodeError) -> Result<(), String> {
    let want = parse_bool(ex.need("fatal")?)?;
    if e.is_fatal() != want {
        return Err(format!("{e}: fatal is {}, want {want}", e.is_fatal()));
    }
    Ok(())
}

fn check_payload(ex: &Example) -> Result<(), String> {
    let payload = Bytes::from(parse_hex(ex.need("hex")?)?);
    let canonical = is_canonical(ex)?;
    let mut checked = 0;
    for (k, v) in &ex.fields {
        if CONTROL_KEYS.contains(&k.as_str()) {
            check_control(k, v, &payload, canonical)?;
            checked += 1;
        }
    }
    if let Some(w) = ex.get("error") {
        let err = match ex.need("as")? {
            "connect" => ConnectRequest::decode(&payload).err(),
            "connect-response" => ConnectResponse::decode(&payload).err(),
            "mux-connect-error" => MuxConnectError::decode(&payload).err(),
            "ping" => PingPayload::decode(&payload).err(),
            "pong" => PongPayload::decode(&payload).err(),
            other => return Err(format!("as: {other}?")),
        };
        match err {
            Some(e) if variant(&e) == w => checked += 1,
            other => return Err(format!("expected {w}, got {other:?}")),
        }
    }
    if checked == 0 {
        return Err("nothing to check".into());
    }
    Ok(())
}

fn check_subroute(ex: &Example) -> Result<(), String> {
    let handler = u8::try_from(parse_u64(ex.need("handler")?)?).map_err(|e| e.to_string())?;
    let want = parse_hex(ex.need("id")?)?;
    let got = match ex.need("route")? {
        "zero" => SubrouteId::zero(HandlerId(handler)),
        r => {
            let route = unquote(r)?;
            if let Some(h) = ex.get("sha256") {
                let digest = Sha256::digest(route.as_bytes());
                if digest[..] != parse_hex(h)?[..] {
                    return Err(format!("sha256 is {}", spaced_hex(&digest)));
                }
            }
            SubrouteId::new(HandlerId(handler), &route)
        }
    };
    if got.0[..] != want[..] {
        return Err(format!("id is {}", spaced_hex(&got.0)));
    }
    Ok(())
}

fn check_hash(ex: &Example) -> Result<(), String> {
    let input = unquote(ex.need("input")?)?;
    let want = parse_u64(ex.need("xxh3")?)?;
    let got = xxhash_rust::xxh3::xxh3_64(input.as_bytes());
    if got != want {
        return Err(format!("xxh3 is 0x{got:016x}"));
    }
    let want_crc = u32::try_from(parse_u64(ex.need("crc")?)?).map_err(|e| e.to_string())?;
    if crc(input.as_bytes()) != want_crc {
        return Err(format!("crc is 0x{:08x}", crc(input.as_bytes())));
    }
    Ok(())
}

fn check_dial(ex: &Example) -> Result<(), String> {
    let a = ex.need("a")?;
    let b = ex.need("b")?;
    for (key, input) in [
        ("xxh3(a+b)", format!("{a}{b}")),
        ("xxh3(b+a)", format!("{b}{a}")),
    ] {
        if let Some(v) = ex.get(key) {
            let got = xxhash_rust::xxh3::xxh3_64(input.as_bytes());
            if got != parse_u64(v)? {
                return Err(format!("{key} is 0x{got:016x}"));
            }
        }
    }
    let (dials_a, dials_b) = (should_dial(a, b), should_dial(b, a));
    let want_a = match ex.need("dialer")? {
        "a" => true,
        "b" => false,
        other => return Err(format!("dialer: {other}?")),
    };
    if dials_a != want_a || dials_b == want_a {
        return Err(format!("a dials: {dials_a}, b dials: {dials_b}"));
    }
    if let Some(v) = ex.get("crc") {
        let want = match v {
            "on" => true,
            "off" => false,
            other => return Err(format!("crc: {other}?")),
        };
        if crc_enabled(a, b) != want || crc_enabled(b, a) != want {
            return Err(format!("crc_enabled is {}", crc_enabled(a, b)));
        }
    }
    Ok(())
}

fn unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn check_token(ex: &Example) -> Result<(), String> {
    let auth = MinioAuth::new(ex.need("access-key")?, ex.need("secret-key")?);
    let now = unix(parse_u64(ex.need("now")?)?);
    let token: String = ex.need("token")?.split_whitespace().collect();
    let issued = auth.token(now);
    if issued != token {
        return Err(format!("issued token is {issued}"));
    }
    auth.validate(&token, now)
        .map_err(|e| format!("own token refused: {e}"))?;
    if let Some(claims) = ex.get("claims") {
        use base64::Engine as _;
        let part = token.split('.').nth(1).unwrap_or("");
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| e.to_string())?;
        if json != claims.as_bytes() {
            return Err(format!("claims are {}", String::from_utf8_lossy(&json)));
        }
    }
    if MinioAuth::new(ex.need("access-key")?, "another secret")
        .validate(&token, now)
        .is_ok()
    {
        return Err("token validates with the wrong secret".into());
    }
    Ok(())
}

/// A runtime for a manager that is never started: only its wall clock is
/// used (by the HTTP upgrade check).
#[derive(Clone)]
struct FrozenClock(SystemTime);

impl Runtime for FrozenClock {
    type Socket = BoxSocket;
    type Sleep = std::future::Pending<()>;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> SystemTime {
        self.0
    }

    fn spawn<F>(&self, _task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
    }

    fn sleep_until(&self, _at: Instant) -> Self::Sleep {
        std::future::pending()
    }

    fn dial(
        &self,
        _request: tungstenite::handshake::client::Request,
        _config: tungstenite::protocol::WebSocketConfig,
    ) -> BoxFuture<Result<Self::Socket, tungstenite::Error>> {
        Box::pin(async { Err(tungstenite::Error::ConnectionClosed) })
    }
}

fn check_upgrade(ex: &Example) -> Result<(), String> {
    let dialer = ex.need("dialer")?;
    let acceptor = ex.need("acceptor")?;
    let route = ex.need("route")?;
    let url = grid_proto::driver::ws_url(acceptor, route).ok_or("no url")?;
    if url != ex.need("url")? {
        return Err(format!("url is {url}"));
    }
    let text = ex.need("request")?;
    let mut lines = text.lines();
    let start = lines.next().unwrap_or("");
    let mut parts = start.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut builder = tungstenite::http::Request::builder()
        .method(method)
        .uri(path);
    let mut time_header = None;
    for line in lines {
        let (k, v) = line.split_once(':').ok_or("header without colon")?;
        if k.eq_ignore_ascii_case("X-Minio-Time") {
            time_header = Some(v.trim().to_owned());
        }
        builder = builder.header(k.trim(), v.trim());
    }
    let request = builder.body(()).map_err(|e| e.to_string())?;
    let ns: i64 = time_header
        .ok_or("no X-Minio-Time")?
        .parse()
        .map_err(|_| "X-Minio-Time is not a number")?;
    let time = Timestamp::from_unix_nanos(ns);
    if time != parse_time(ex.need("time")?)? {
        return Err(format!("X-Minio-Time is {time:?}"));
    }
    let wall = UNIX_EPOCH
        + Duration::from_secs(time.secs as u64)
        + Duration::from_nanos(u64::from(time.nanos));
    let token = ex.need("token")?.to_owned();
    let manager = |skew: Duration| {
        let token = token.clone();
        let options = Options {
            route: route.to_owned(),
            validate_token: std::sync::Arc::new(move |t: &str| {
                if t == token {
                    Ok(())
                } else {
                    Err("wrong token".into())
                }
            }),
            seed: Some(1),
            ..Options::default()
        };
        Manager::new(
            FrozenClock(wall + skew),
            acceptor,
            &[acceptor, dialer],
            options,
        )
        .map_err(|e| e.to_string())
    };
    // The recorded request passes the acceptor's checks...
    manager(Duration::from_secs(1))?
        .check_upgrade(&request)
        .map_err(|e| format!("refused: {e}"))?;
    // ...but not with the clocks 16 minutes apart...
    if manager(Duration::from_secs(16 * 60))?
        .check_upgrade(&request)
        .is_ok()
    {
        return Err("accepted with a 16 minute skew".into());
    }
    // ...nor without its bearer token.
    let mut stripped = request;
    stripped.headers_mut().remove("Authorization");
    match manager(Duration::ZERO)?.check_upgrade(&stripped) {
        Err(e) if e.status() == 403 => {}
        other => return Err(format!("without a token: {other:?}")),
    }
    Ok(())
}

fn check_accept(ex: &Example) -> Result<(), String> {
    let local = ex.need("local")?;
    let peers: Vec<&str> = ex.need("peers")?.split_whitespace().collect();
    let wall = parse_time(ex.need("wall")?)?;
    let valid = ex.need("valid-token")?;
    let instance = parse_uuid(ex.need("instance")?)?;
    let connect = Bytes::from(parse_hex(ex.need("connect")?)?);
    let want_response = parse_hex(ex.need("response")?)?;
    let result = check_connect(
        &connect,
        local,
        wall,
        |h| peers.contains(&h),
        |t| {
            if t == valid {
                Ok(())
            } else {
                Err("invalid token".into())
            }
        },
    );
    let response = match (ex.need("result")?, result) {
        ("accept", Ok(req)) => {
            let now = Instant::now();
            let mut conn =
                Connection::new(Config::new(local, req.host.clone()), instance, now, wall);
            conn.accept_handshake(now, wall, &req);
            conn.poll_transmit().ok_or("no response sent")?
        }
        (r, Err(e)) if r.starts_with("reject") => {
            let text = unquote(r.trim_start_matches("reject").trim())?;
            if e.to_string() != text {
                return Err(format!("rejected with \"{e}\""));
            }
            rejection_frame(instance, &e)
        }
        (r, other) => return Err(format!("result {r}, got {other:?}")),
    };
    if response[..] != want_response[..] {
        return Err(format!("response is {}", spaced_hex(&response)));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Exchanges: a connected core fed frames and commands on a virtual clock

/// The instance ids and the wall clock every exchange starts from.
const LOCAL_ID: &str = "00112233-4455-6677-8899-aabbccddeeff";
const PEER_ID: &str = "ffeeddcc-bbaa-9988-7766-554433221100";
const START: &str = "1704164645.006007008";

struct Exchange {
    conn: Connection,
    now: Instant,
    sent: VecDeque<Bytes>,
    events: Vec<Event>,
    call: Option<CallId>,
    incoming: Option<IncomingId>,
}

impl Exchange {
    fn new(ex: &Example) -> Result<Exchange, String> {
        let local = ex.get("local").unwrap_or("http://127.0.0.1:19002");
        let remote = ex.get("remote").unwrap_or("http://127.0.0.1:19001");
        let mut config = Config::new(local, remote);
        config.seed = 1;
        config.settings.fix_q2 = match ex.get("q2") {
            None | Some("fixed") => true,
            Some("go") => false,
            Some(other) => return Err(format!("q2: {other}?")),
        };
        if let Some(v) = ex.get("ping-interval") {
            config.settings.ping_interval = parse_duration(v)?;
            config.settings.pong_timeout = config.settings.ping_interval * 2;
        }
        let now = Instant::now();
        let wall = parse_time(START)?;
        let (local_id, peer_id) = (parse_uuid(LOCAL_ID)?, parse_uuid(PEER_ID)?);
        let mut conn = Connection::new(config, local_id, now, wall);
        if conn.is_dialer() {
            conn.start_handshake(now, wall, "debug");
            let mut answer = Message::new(Op::ConnectResponse, 0);
            answer.payload = ConnectResponse {
                id: peer_id,
                accepted: true,
                rejected_reason: String::new(),
            }
            .to_bytes();
            conn.handle_frame(now, answer.to_bytes());
        } else {
            let req = ConnectRequest {
                id: peer_id,
                host: remote.to_owned(),
                time: wall,
                token: "debug".into(),
            };
            conn.accept_handshake(now, wall, &req);
        }
        while conn.poll_transmit().is_some() {}
        let mut connected = false;
        while let Some(e) = conn.poll_event() {
            connected |= matches!(e, Event::Connected { .. });
        }
        if !connected {
            return Err("the handshake did not connect".into());
        }
        Ok(Exchange {
            conn,
            now,
            sent: VecDeque::new(),
            events: Vec::new(),
            call: None,
            incoming: None,
        })
    }

    fn drain(&mut self) {
        while let Some(f) = self.conn.poll_transmit() {
            self.sent.push_back(f);
        }
        while let Some(e) = self.conn.poll_event() {
            if let Event::IncomingRequest { id, .. } | Event::IncomingStream { id, .. } = &e {
                self.incoming = Some(*id);
            }
            self.events.push(e);
        }
    }

    fn wait(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(at) = self.conn.poll_timeout() {
            if at > target {
                break;
            }
            self.now = self.now.max(at);
            self.conn.handle_timeout(self.now);
            self.drain();
        }
        self.now = target;
        self.conn.handle_timeout(self.now);
        self.drain();
    }

    fn call(&self) -> Result<CallId, String> {
        self.call.ok_or_else(|| "no call made yet".into())
    }

    fn incoming(&self) -> Result<IncomingId, String> {
        self.incoming.ok_or_else(|| "no incoming call yet".into())
    }

    fn app(&mut self, line: &str) -> Result<(), String> {
        let toks = tokens(line)?;
        let (verb, args) = match toks.split_first() {
            Some(((k, v), rest)) if k.is_empty() => (v.as_str(), rest),
            _ => return Err(format!("app: what? {line}")),
        };
        let now = self.now;
        let handler = || -> Result<HandlerId, String> {
            let h = parse_u64(need(args, "handler")?)?;
            Ok(HandlerId(u8::try_from(h).map_err(|e| e.to_string())?))
        };
        let sub = |h: HandlerId| lookup(args, "sub").map(|v| parse_sub(v, h.0)).transpose();
        let deadline = || -> Result<Option<Instant>, String> {
            lookup(args, "deadline")
                .map(|v| parse_duration(v).map(|d| now + d))
                .transpose()
        };
        let caps = || -> Result<Capacities, String> {
            Ok(Capacities {
                in_capacity: parse_u64(need(args, "in")?)? as u32,
                out_capacity: parse_u64(need(args, "out")?)? as u32,
            })
        };
        let payload = || command_payload(lookup(args, "payload"));
        let c = &mut self.conn;
        match verb {
            "request" => {
                let h = handler()?;
                let p = payload()?.unwrap_or_default();
                let id = c
                    .request(
                        now,
                        Request {
                            handler: h,
                            subroute: sub(h)?,
                            payload: p,
                            deadline: deadline()?,
                        },
                    )
                    .map_err(|e| e.to_string())?;
                self.call = Some(id);
            }
            "open" => {
                let h = handler()?;
                let id = c
                    .open_stream(
                        now,
                        OpenStream {
                            handler: h,
                            subroute: sub(h)?,
                            payload: payload()?,
                            deadline: deadline()?,
                            capacities: Some(caps()?),
                        },
                    )
                    .map_err(|e| e.to_string())?;
                self.call = Some(id);
            }
            "stream-send" => {
                let id = self.call()?;
                let p = payload()?.unwrap_or_default();
                self.conn.call(id).send(p).map_err(|e| e.to_string())?;
            }
            "stream-close" => {
                let id = self.call()?;
                self.conn.call(id).close().map_err(|e| e.to_string())?;
            }
            "consumed" => {
                let id = self.call()?;
                self.conn.call(id).consumed();
            }
            "cancel" => {
                let id = self.call()?;
                if !self.conn.call(id).cancel() {
                    return Err("cancel: call not live".into());
                }
            }
            "respond" => {
                let id = self.incoming()?;
                let result = match lookup(args, "error") {
                    Some(e) => Err(unquote(e)?),
                    None => Ok(payload()?),
                };
                if !self.conn.incoming(id).respond(result) {
                    return Err("respond: request not live".into());
                }
            }
            "reject-unknown" => {
                let id = self.incoming()?;
                if !self.conn.incoming(id).reject_unknown_handler() {
                    return Err("reject-unknown: not live".into());
                }
            }
            "accept" => {
                let id = self.incoming()?;
                let caps = caps()?;
                if !self.conn.incoming(id).accept(now, caps) {
                    return Err("accept: not live".into());
                }
            }
            "send" => {
                let id = self.incoming()?;
                let p = payload()?.unwrap_or_default();
                self.conn.incoming(id).send(p).map_err(|e| e.to_string())?;
            }
            "finish" => {
                let id = self.incoming()?;
                let result = match lookup(args, "error") {
                    Some(e) => Err(unquote(e)?),
                    None => Ok(()),
                };
                if !self.conn.incoming(id).finish(result) {
                    return Err("finish: not live".into());
                }
            }
            "incoming-consumed" => {
                let id = self.incoming()?;
                self.conn.incoming(id).consumed();
            }
            other => return Err(format!("unknown app command {other}")),
        }
        Ok(())
    }
}

/// The messages of the last frame an exchange sent or received, for the
/// `is:` lines that describe them.
#[derive(Default)]
struct Described {
    messages: Vec<Message>,
    /// Why the frame did not decode (fed on purpose, or a typo).
    broken: Option<String>,
    next: usize,
}

impl Described {
    /// Starts describing `frame`; the previous frame, if described at all,
    /// must have been described completely.
    fn start(&mut self, frame: &Bytes) -> Result<(), String> {
        self.finish()?;
        let decoded = FrameDecoder::new(frame.clone(), usize::MAX)
            .and_then(|d| d.collect::<Result<Vec<_>, _>>());
        (self.messages, self.broken) = match decoded {
            Ok(m) => (m, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        self.next = 0;
        Ok(())
    }

    fn check(&mut self, line: &str, controls: Vec<(String, String)>) -> Result<(), String> {
        if let Some(e) = &self.broken {
            return Err(format!("the frame does not decode: {e}"));
        }
        let mut spec = parse_message(line)?;
        spec.controls = controls;
        let got = self
            .messages
            .get(self.next)
            .ok_or("`is:` describes more messages than the frame holds")?;
        check_message(got, &spec, true)?;
        self.next += 1;
        Ok(())
    }

    fn finish(&self) -> Result<(), String> {
        if self.next != 0 && self.next != self.messages.len() {
            return Err(format!(
                "frame holds {} messages, {} described",
                self.messages.len(),
                self.next
            ));
        }
        Ok(())
    }
}

fn check_exchange(ex: &Example) -> Result<(), String> {
    let mut x = Exchange::new(ex)?;
    let mut described = Described::default();
    for (step, (key, value)) in ex.fields.iter().enumerate() {
        let fail = |e: String| format!("step {} ({key}: {value:.60}): {e}", step + 1);
        // The control lines after an `is:` belong to it.
        let controls: Vec<(String, String)> = ex.fields[step + 1..]
            .iter()
            .take_while(|(k, _)| CONTROL_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        match key.as_str() {
            "recv" => {
                let frame = Bytes::from(parse_hex(value).map_err(fail)?);
                described.start(&frame).map_err(fail)?;
                x.conn.handle_frame(x.now, frame);
                x.drain();
            }
            "send" => {
                if value == "nothing" {
                    if let Some(f) = x.sent.front() {
                        return Err(fail(format!("sent {}", spaced_hex(f))));
                    }
                    continue;
                }
                let want = parse_hex(value).map_err(fail)?;
                let got = x
                    .sent
                    .pop_front()
                    .ok_or_else(|| fail("nothing was sent".into()))?;
                if got[..] != want[..] {
                    return Err(fail(format!("sent {}", spaced_hex(&got))));
                }
                described.start(&got).map_err(fail)?;
            }
            "is" => described.check(value, controls).map_err(fail)?,
            k if CONTROL_KEYS.contains(&k) => {
                let after_is = ex.fields[..step]
                    .iter()
                    .rev()
                    .find(|(k, _)| !CONTROL_KEYS.contains(&k.as_str()))
                    .is_some_and(|(k, _)| k == "is");
                if !after_is {
                    return Err(fail("a control line must follow an `is:` line".into()));
                }
            }
            "app" => {
                x.app(value).map_err(fail)?;
                x.drain();
            }
            "wait" => x.wait(parse_duration(value).map_err(fail)?),
            "event" => {
                // Events are matched in order: this one and those before it
                // are used up.
                let hit = x
                    .events
                    .iter()
                    .position(|e| format!("{e:?}").contains(value.as_str()));
                match hit {
                    Some(i) => drop(x.events.drain(..=i)),
                    None => return Err(fail(format!("events were {:?}", x.events))),
                }
            }
            "kind" | "local" | "remote" | "q2" | "ping-interval" | "source" | "note" => {}
            other => return Err(fail(format!("unknown step `{other}`"))),
        }
    }
    described.finish()?;
    if let Some(f) = x.sent.front() {
        return Err(format!(
            "a frame the example does not list: {}",
            spaced_hex(f)
        ));
    }
    Ok(())
}

fn check(ex: &Example) -> Result<(), String> {
    match ex.kind() {
        "frame" => check_frame(ex),
        "payload" => check_payload(ex),
        "subroute" => check_subroute(ex),
        "hash" => check_hash(ex),
        "dial" => check_dial(ex),
        "token" => check_token(ex),
        "upgrade" => check_upgrade(ex),
        "accept" => check_accept(ex),
        "exchange" => check_exchange(ex),
        other => Err(format!("unknown kind `{other}`")),
    }
}

// ---------------------------------------------------------------------------
// The tests

#[test]
fn every_example_holds() {
    let doc = read_doc();
    let all = examples(&doc);
    let mut failures = String::new();
    let mut names = std::collections::HashSet::new();
    for ex in &all {
        if ex.name.is_empty() || !names.insert(ex.name.clone()) {
            let _ = writeln!(
                failures,
                "line {}: missing or duplicate name `{}`",
                ex.line, ex.name
            );
        }
        if let Err(e) = check(ex) {
            let _ = writeln!(failures, "{} (line {}): {e}", ex.name, ex.line);
        }
    }
    assert!(
        failures.is_empty(),
        "docs/protocol.md examples that do not hold:\n{failures}"
    );
    assert!(all.len() >= 30, "only {} examples", all.len());
}

/// Flipping any one byte of a canonical frame example must make its check
/// fail: every byte is pinned down by the decoded fields or the re-encoding.
#[test]
fn every_byte_of_a_frame_example_matters() {
    let doc = read_doc();
    let mut loose = String::new();
    let mut flipped = 0;
    for ex in examples(&doc) {
        if ex.kind() != "frame" || ex.get("error").is_some() || !is_canonical(&ex).unwrap() {
            continue;
        }
        let frame = parse_hex(ex.get("hex").unwrap()).unwrap();
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x01;
            flipped += 1;
            if check_frame_bytes(&ex, &Bytes::from(bad)).is_ok() {
                let _ = writeln!(loose, "{}: byte {i} can change unnoticed", ex.name);
            }
        }
    }
    assert!(loose.is_empty(), "{loose}");
    assert!(flipped > 1000, "only {flipped} bytes flipped");
}

/// Every op, every flag, both trailers and the merged container appear in
/// at least one decoded frame example.
#[test]
fn examples_cover_the_envelope() {
    let doc = read_doc();
    let mut ops = std::collections::HashSet::new();
    let mut flags = 0u8;
    let mut merged = false;
    for ex in examples(&doc) {
        if ex.kind() != "frame" {
            continue;
        }
        merged |= ex.get("container") == Some("merged");
        for (_, spec) in message_specs(&ex).unwrap() {
            ops.insert(spec.op as u8);
            flags |= spec.flags;
        }
    }
    let missing: Vec<&str> = Op::ALL
        .iter()
        .filter(|op| !ops.contains(&(**op as u8)))
        .map(|op| op.name())
        .collect();
    assert!(
        missing.is_empty(),
        "ops without a frame example: {missing:?}"
    );
    assert_eq!(
        flags & 0x3f,
        0x3f,
        "flags without an example: {:?}",
        Flags::from_bits(!flags & 0x3f)
    );
    assert!(merged, "no merged frame example");
}

/// Every quirk label Q1..Q22 has its anchor, and every
/// `protocol.md#anchor` written in the code, tests or README exists.
#[test]
fn references_point_into_the_document() {
    let doc = read_doc();
    let anchors: std::collections::HashSet<String> = doc
        .match_indices("<a id=\"")
        .map(|(i, m)| {
            let rest = &doc[i + m.len()..];
            rest[..rest.find('"').unwrap_or(0)].to_owned()
        })
        .collect();
    for q in 1..=22 {
        let prefix = format!("quirk-q{q}-");
        assert!(
            anchors.iter().any(|a| a.starts_with(&prefix)),
            "no anchor for quirk Q{q}"
        );
    }
    let mut files = vec![repo_root().join("README.md")];
    for dir in [
        "grid-proto",
        "grid-tokio",
        "grid-smol",
        "conformance",
        "docs",
    ] {
        collect_files(&repo_root().join(dir), &mut files);
    }
    let mut broken = String::new();
    for file in files {
        // This file talks about anchors in general.
        if file.ends_with("tests/protocol_doc.rs") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (i, _) in text.match_indices("protocol.md#") {
            let rest = &text[i + "protocol.md#".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(rest.len());
            let anchor = &rest[..end];
            if !anchors.contains(anchor) {
                let _ = writeln!(broken, "{}: #{anchor}", file.display());
            }
        }
        // Links inside the document itself.
        if file.ends_with("docs/protocol.md") {
            for (i, _) in text.match_indices("](#") {
                let rest = &text[i + 3..];
                let anchor = &rest[..rest.find(')').unwrap_or(0)];
                if !anchors.contains(anchor) {
                    let _ = writeln!(broken, "docs/protocol.md: (#{anchor})");
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "references to missing anchors:\n{broken}"
    );
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "target" || name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, out);
        } else if name.ends_with(".rs") || name.ends_with(".md") {
            out.push(path);
        }
    }
}
