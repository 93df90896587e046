//! Where received frames live while their messages are in use.
//!
//! Received messages are slices of their frame (no copy per message), so a
//! frame's memory stays allocated until the application has dropped every
//! message in it. Left in the WebSocket's read buffer, that pins the buffer:
//! tungstenite then allocates a fresh one for the next read, and once the
//! old ones are freed, glibc hands their pages back to the kernel and
//! faults new ones in for the next. With many messages in flight (a wide
//! stream window, many streams) that churn costs a fifth to a third of the
//! throughput: `grid-bench --workload stream-out --window 1024`, grid-tokio,
//! two paired runs, went from 0.81–0.82 to 1.02–1.04 M msg/s with this
//! buffer (and to 0.98–1.01 M without it but with glibc's trimming turned
//! off through `GLIBC_TUNABLES`).
//!
//! So each frame is copied once, out of the read buffer (which stays free
//! for the next read), into a slab from a small pool that the connection
//! keeps: a slab whose messages are all gone is reused as it is, with its
//! pages still mapped. Frames too big for a slab keep the read buffer's
//! memory, as before.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

/// Bytes per slab: two of the largest merged frames (31 744 bytes).
pub(crate) const SLAB: usize = 64 * 1024;

/// Frames above this size are kept where the WebSocket read them.
const LARGEST_COPIED: usize = SLAB / 2;

/// Most slabs kept waiting for their messages to go (8 MiB of them): enough
/// for every message of a busy connection's streams to be in flight at once
/// (64 streams with the default window of 64 hold about 4 MiB of 1 KiB
/// messages).
const MAX_RETIRED: usize = 128;

/// Retired slabs looked at before a fresh one is allocated.
const LOOKS: usize = 4;

/// How often the pool gives back what it did not use.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// The slabs of one connection.
#[derive(Debug, Default)]
pub(crate) struct RecvBuffer {
    /// The slab frames are copied into now.
    current: Option<BytesMut>,
    /// Full slabs, oldest first: their messages may still be in use.
    retired: VecDeque<BytesMut>,
    /// Slabs started since the last trim.
    started: usize,
    /// Frames copied since the last trim.
    copied: usize,
    next_trim: Option<Instant>,
}

impl RecvBuffer {
    /// `frame`, moved into a slab (see the module docs).
    pub(crate) fn keep(&mut self, frame: Bytes) -> Bytes {
        if frame.len() > LARGEST_COPIED {
            return frame;
        }
        self.copied += 1;
        let slab = match self.current.take() {
            Some(slab) if slab.capacity() >= frame.len() => slab,
            full => {
                self.started += 1;
                if let Some(full) = full {
                    self.retire(full);
                }
                self.reusable()
                    .unwrap_or_else(|| BytesMut::with_capacity(SLAB))
            }
        };
        let slab = self.current.insert(slab);
        slab.extend_from_slice(&frame);
        slab.split().freeze()
    }

    /// Every [`TRIM_EVERY`], keeps only as many retired slabs as were
    /// started since the last trim, and no slab at all if no frame came: a
    /// connection that went quiet gives its burst's memory back. Call it
    /// at every wake-up; it is a comparison when nothing is due.
    pub(crate) fn tick(&mut self, now: Instant) {
        match self.next_trim {
            Some(at) if now < at => {}
            Some(_) => {
                self.retired.truncate(self.started);
                if self.copied == 0 {
                    self.current = None;
                }
                self.started = 0;
                self.copied = 0;
                self.next_trim = Some(now + TRIM_EVERY);
            }
            None => self.next_trim = Some(now + TRIM_EVERY),
        }
    }

    fn retire(&mut self, slab: BytesMut) {
        if self.retired.len() >= MAX_RETIRED {
            // Forgotten, not freed: its messages free it when they go.
            self.retired.pop_front();
        }
        self.retired.push_back(slab);
    }

    /// The oldest retired slab whose messages are all gone, if one of the
    /// first few is; the others move to the back of the queue.
    fn reusable(&mut self) -> Option<BytesMut> {
        for _ in 0..LOOKS.min(self.retired.len()) {
            let mut slab = self.retired.pop_front()?;
            if slab.try_reclaim(SLAB) {
                return Some(slab);
            }
            self.retired.push_back(slab);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    #[test]
    fn frames_are_copied_intact_and_packed_into_one_slab() {
        let mut rb = RecvBuffer::default();
        let a = rb.keep(frame(1000, 1));
        let b = rb.keep(frame(2000, 2));
        assert_eq!(&a[..], &[1; 1000][..]);
        assert_eq!(&b[..], &[2; 2000][..]);
        assert_eq!(b.as_ptr() as usize, a.as_ptr() as usize + 1000);
        assert_eq!(rb.retired.len(), 0);
    }

    #[test]
    fn frames_too_big_for_a_slab_are_not_copied() {
        let mut rb = RecvBuffer::default();
        let big = frame(LARGEST_COPIED + 1, 7);
        let kept = rb.keep(big.clone());
        assert_eq!(kept.as_ptr(), big.as_ptr());
        assert!(rb.current.is_none());
    }

    #[test]
    fn a_slab_is_reused_once_its_messages_are_gone_and_not_before() {
        let mut rb = RecvBuffer::default();
        let first = rb.keep(frame(LARGEST_COPIED, 1));
        let slab1 = first.as_ptr() as usize;
        let held = first.slice(10..20);
        drop(first);
        // Fill the first slab, then spill into a second: the first is
        // still held by `held`, so the second is a new allocation.
        let fill = rb.keep(frame(LARGEST_COPIED, 2));
        let second = rb.keep(frame(LARGEST_COPIED, 3));
        let in_slab1 = |b: &Bytes| (slab1..slab1 + SLAB).contains(&(b.as_ptr() as usize));
        assert!(!in_slab1(&second));
        assert_eq!(
            &held[..],
            &[1; 10][..],
            "a held message is never overwritten"
        );
        drop((fill, held));
        // The next slab to start finds the first one free and reuses it.
        let _fill_second = rb.keep(frame(LARGEST_COPIED, 4));
        let third = rb.keep(frame(LARGEST_COPIED, 5));
        assert_eq!(third.as_ptr() as usize, slab1);
        assert_eq!(&third[..], &[5; LARGEST_COPIED][..]);
        assert_eq!(&second[..], &[3; LARGEST_COPIED][..]);
    }

    #[test]
    fn quiet_connections_give_their_slabs_back() {
        let mut rb = RecvBuffer::default();
        let t0 = Instant::now();
        rb.tick(t0);
        let held: Vec<Bytes> = (0..8).map(|i| rb.keep(frame(LARGEST_COPIED, i))).collect();
        assert_eq!(rb.retired.len(), 3, "8 half-slab frames fill 4 slabs");
        drop(held);
        // A trim keeps what the last period started (4 slabs: 3 retired)...
        rb.tick(t0 + TRIM_EVERY);
        assert_eq!(rb.retired.len(), 3);
        assert!(rb.current.is_some());
        // ...and the next, with no frame at all, gives everything back.
        rb.tick(t0 + 2 * TRIM_EVERY);
        assert_eq!(rb.retired.len(), 0);
        assert!(rb.current.is_none());
        // Not due: nothing changes.
        let _ = rb.keep(frame(10, 0));
        rb.tick(t0 + 2 * TRIM_EVERY + Duration::from_secs(1));
        assert!(rb.current.is_some());
    }

    #[test]
    fn held_memory_is_bounded() {
        let mut rb = RecvBuffer::default();
        let held: Vec<Bytes> = (0..(2 * MAX_RETIRED + 10))
            .map(|_| rb.keep(frame(LARGEST_COPIED, 9)))
            .collect();
        assert_eq!(rb.retired.len(), MAX_RETIRED);
        assert!(held.iter().all(|m| m.iter().all(|&b| b == 9)));
    }
}
