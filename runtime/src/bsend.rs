//! The accounting of buffered sends (MPI-3.1 §3.6).
//!
//! `MPI_Buffer_attach` gives a buffer whose size bounds the buffered messages in flight: each
//! holds its packed size plus `MPI_BSEND_OVERHEAD` until its transfer ends, and a send that
//! does not fit fails with `MPI_ERR_BUFFER`. kawarimi copies a buffered message into memory of
//! its own, so it never writes the application's buffer: only the size counts. The sends are
//! ordinary requests of the engine; this keeps which of them hold how much.

use crate::core::ReqId;
use crate::engine::Engine;
use crate::error::{ErrorClass, MpiError, MpiResult};

/// The attached buffer and the buffered sends that hold parts of it.
#[derive(Debug)]
pub struct BsendBuffer {
    /// Where the application's buffer is, to give back at detach (never read or written).
    addr: usize,
    size: usize,
    used: usize,
    /// Buffered sends in flight: their request and the bytes they hold.
    pending: Vec<(ReqId, usize)>,
}

impl BsendBuffer {
    /// The buffer `MPI_Buffer_attach` gave: `size` bytes at `addr`.
    pub fn new(addr: usize, size: usize) -> BsendBuffer {
        BsendBuffer { addr, size, used: 0, pending: Vec::new() }
    }

    /// Bytes held by sends in flight.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Reserves `need` bytes for a buffered send, after giving back what finished transfers
    /// held; `MPI_ERR_BUFFER` naming the free space when it does not fit.
    pub fn reserve(&mut self, engine: &mut Engine, need: usize) -> MpiResult<()> {
        self.reap(engine)?;
        let free = self.size - self.used;
        if need > free {
            return Err(MpiError::new(
                ErrorClass::Buffer,
                format!("attached buffer of {} bytes has {free} free, the message needs {need}", self.size),
            ));
        }
        self.used += need;
        Ok(())
    }

    /// Records that send `id` holds `bytes` reserved with [`BsendBuffer::reserve`] until it
    /// completes.
    pub fn hold(&mut self, id: ReqId, bytes: usize) {
        debug_assert!(bytes <= self.used, "a send holds only what was reserved");
        self.pending.push((id, bytes));
    }

    /// Gives back the space of the sends whose transfer has ended.
    pub fn reap(&mut self, engine: &mut Engine) -> MpiResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ids: Vec<ReqId> = self.pending.iter().map(|&(id, _)| id).collect();
        let done = engine.reap(&ids)?;
        let mut released = 0;
        let mut k = 0;
        self.pending.retain(|&(_, bytes)| {
            let finished = done[k];
            k += 1;
            if finished {
                released += bytes;
            }
            !finished
        });
        self.used -= released;
        Ok(())
    }

    /// `MPI_Buffer_detach`: blocks until every buffered send has been transmitted, then gives
    /// the buffer back as `(addr, size)`.
    pub fn detach(mut self, engine: &mut Engine) -> MpiResult<(usize, usize)> {
        for (id, _) in std::mem::take(&mut self.pending) {
            engine.wait(id)?;
            engine.take_completion(id);
        }
        Ok((self.addr, self.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Core, CoreConfig, RecvBuf, SendData};

    /// A job of one rank: its sends to itself need no transport.
    fn engine() -> Engine {
        Engine::new(Core::new(0, 1, CoreConfig::default()), None)
    }

    #[test]
    fn a_send_that_does_not_fit_is_refused_naming_the_free_space() {
        let mut e = engine();
        let mut b = BsendBuffer::new(0x1000, 100);
        b.reserve(&mut e, 60).unwrap();
        let err = b.reserve(&mut e, 50).unwrap_err();
        assert_eq!(err.class, ErrorClass::Buffer);
        assert!(err.detail.contains("100 bytes has 40 free, the message needs 50"), "{err}");
        b.reserve(&mut e, 40).unwrap();
        assert_eq!(b.used(), 100);
    }

    #[test]
    fn space_comes_back_when_the_transfer_ends_and_not_before() {
        let mut e = engine();
        let mut b = BsendBuffer::new(0x1000, 100);
        b.reserve(&mut e, 80).unwrap();
        // A synchronous send to itself completes only once a receive matches it.
        let id = e.isend(0, 7, 1, SendData::Owned(vec![1; 16]), true).unwrap();
        b.hold(id, 80);
        b.reap(&mut e).unwrap();
        assert_eq!(b.used(), 80, "still in flight");
        assert!(b.reserve(&mut e, 30).is_err());
        let r = e.irecv(0, 7, 1, RecvBuf::Owned(vec![0; 16])).unwrap();
        e.wait(r).unwrap();
        b.reserve(&mut e, 30).unwrap();
        assert_eq!(b.used(), 30, "the finished send's 80 bytes came back");
    }

    #[test]
    fn detach_waits_for_every_buffered_send_and_gives_the_buffer_back() {
        let mut e = engine();
        let mut b = BsendBuffer::new(0x2000, 64);
        b.reserve(&mut e, 20).unwrap();
        let id = e.isend(0, 7, 2, SendData::Owned(vec![2; 4]), false).unwrap();
        b.hold(id, 20);
        let r = e.irecv(0, 7, 2, RecvBuf::Owned(vec![0; 4])).unwrap();
        assert_eq!(b.detach(&mut e).unwrap(), (0x2000, 64));
        e.wait(r).unwrap();
        assert!(e.take_completion(id).is_none(), "detach took the send's completion");
    }
}
