//! MPI matching (MPI-3.1 §3.5): a message is matched by `(ctx, source, tag)`, receives in
//! the order they were posted, messages in the order they arrived; and probes (§3.8).

use super::*;

pub(super) fn tag_matches(want: i32, got: i32) -> bool {
    want == ANY_TAG || want == got
}

pub(super) fn source_matches(want: i32, got: PeerId) -> bool {
    want == ANY_SOURCE || want as u32 == got
}

impl Core {
    /// Looks for a message that a receive with this envelope would match (MPI-3.1 §3.8.1).
    pub fn iprobe(&self, source: i32, ctx: u32, tag: i32) -> Option<ProbeInfo> {
        self.unexpected
            .iter()
            .find(|u| u.ctx == ctx && source_matches(source, u.src) && tag_matches(tag, u.tag))
            .map(|u| ProbeInfo { source: u.src as i32, tag: u.tag, len: u.len() })
    }

    /// Matched probe (`MPI_Improbe`, MPI-3.1 §3.8.2): removes the first message a receive with
    /// this envelope would match from the queue, so that no other receive can take it, and
    /// returns its handle for [`Core::mrecv`] together with its envelope.
    pub fn improbe(&mut self, source: i32, ctx: u32, tag: i32) -> Option<(u64, ProbeInfo)> {
        let i = self
            .unexpected
            .iter()
            .position(|u| u.ctx == ctx && source_matches(source, u.src) && tag_matches(tag, u.tag))?;
        let u = self.unexpected.remove(i).expect("index from position");
        if let UnexpectedKind::Eager { data, .. } = &u.kind {
            self.unexpected_bytes -= data.len();
        }
        let info = ProbeInfo { source: u.src as i32, tag: u.tag, len: u.len() };
        let id = self.alloc_message_id();
        self.probed.insert(id, u);
        Some((id, info))
    }

    /// Receives the message a matched probe took (`MPI_Imrecv`, §3.8.3).
    pub fn mrecv(&mut self, message: u64, buf: RecvBuf) -> MpiResult<ReqId> {
        let Some(u) = self.probed.remove(&message) else {
            return err(ErrorClass::Request, format!("message {message} does not exist or was already received"));
        };
        let req = RecvReq { buf: Some(buf), phase: RecvPhase::Posted, status: Status::default() };
        let id = self.requests.insert(Req::Recv(req));
        self.match_message(id, u)?;
        Ok(id)
    }

    /// Cancels a receive that has not matched yet (MPI-3.1 §3.8.4). Returns whether it was
    /// cancelled; a matched receive completes normally.
    pub fn cancel_recv(&mut self, id: ReqId) -> bool {
        let Some(pos) = self.posted.iter().position(|p| p.id == id) else { return false };
        self.posted.remove(pos);
        if let Some(Req::Recv(r)) = self.requests.get_mut(id) {
            r.phase = RecvPhase::Done;
            r.status.cancelled = true;
            true
        } else {
            false
        }
    }

    /// A message arrived: match it against the posted receives or keep it as unexpected.
    pub(super) fn arrive(&mut self, u: Unexpected) -> MpiResult<()> {
        let found = self
            .posted
            .iter()
            .position(|p| p.ctx == u.ctx && source_matches(p.source, u.src) && tag_matches(p.tag, u.tag));
        match found {
            Some(i) => {
                let p = self.posted.remove(i).expect("index from position");
                self.match_message(p.id, u)
            }
            None => {
                if let UnexpectedKind::Eager { data, .. } = &u.kind {
                    self.unexpected_bytes += data.len();
                    if self.unexpected_bytes > self.config.unexpected_limit_bytes {
                        return err(
                            ErrorClass::NoMem,
                            format!(
                                "{} bytes of unexpected messages exceed the limit of {} (raise KAWARIMI_UNEXPECTED_LIMIT_BYTES)",
                                self.unexpected_bytes, self.config.unexpected_limit_bytes
                            ),
                        );
                    }
                }
                self.unexpected.push_back(u);
                Ok(())
            }
        }
    }

    /// Matches eager frame `header` from `peer`, which its transport still holds, to a posted
    /// receive with room for all of it: the frame arrives now, as [`Core::handle_frame`]
    /// would take it next (the checks here are that function's, and a frame it would refuse
    /// is left to it), and its payload goes straight into the receive's buffer. The
    /// transport then delivers the frame flagged [`FLAG_PLACED`], without its bytes, before
    /// any later frame of the peer's. `None` (the frame comes with its bytes, and is matched
    /// on arrival) for a frame no posted receive matches or one that would be truncated.
    pub(super) fn eager_placement(&mut self, peer: PeerId, header: &Header) -> Option<Placement> {
        let len = header.payload_len as usize;
        let chan = self.channels.get(peer as usize)?;
        let next = header.seq == chan.next_recv_seq && header.flags & FLAG_REPLAY == 0;
        if peer == self.me || header.src != peer || header.epoch != self.epoch || !next || chan.gap || len == 0 {
            return None;
        }
        if chan.placing.is_some() {
            return None;
        }
        let i = self
            .posted
            .iter()
            .position(|p| p.ctx == header.ctx && source_matches(p.source, peer) && tag_matches(p.tag, header.tag))?;
        let id = self.posted[i].id;
        let Some(Req::Recv(r)) = self.requests.get_mut(id) else { return None };
        let buf = r.buf.as_mut()?;
        if buf.capacity() < len {
            return None;
        }
        let ptr = buf.as_mut_slice().as_mut_ptr();
        r.phase = RecvPhase::Placing;
        self.posted.remove(i);
        self.channels[peer as usize].placing = Some((id, header.seq));
        Some(Placement { ptr, len })
    }

    /// The eager frame [`Core::eager_placement`] matched has come, its payload in the
    /// receive's buffer, or (`bytes`) with its payload after all: the link died while the
    /// transport placed it, and a repair sent it again. The receive completes.
    pub(super) fn take_placed_eager(&mut self, peer: PeerId, header: &Header, bytes: Option<&[u8]>) -> MpiResult<()> {
        let Some((id, seq)) = self.channels[peer as usize].placing.take() else {
            return err(ErrorClass::Intern, format!("rank {peer}'s frame {header} says it was placed, in no receive"));
        };
        if seq != header.seq {
            return err(
                ErrorClass::Intern,
                format!("rank {peer}'s frame {header} came instead of frame {seq}, which was being placed"),
            );
        }
        let r = match self.requests.get_mut(id) {
            Some(Req::Recv(r)) if matches!(r.phase, RecvPhase::Placing) => r,
            _ => {
                return err(
                    ErrorClass::Intern,
                    format!("the receive rank {peer}'s frame {header} was placed in is gone"),
                )
            }
        };
        let len = header.payload_len as usize;
        if let Some(bytes) = bytes {
            match r.buf.as_mut().map(|b| b.as_mut_slice()) {
                Some(buf) if buf.len() >= len && bytes.len() == len => buf[..len].copy_from_slice(bytes),
                _ => {
                    return err(
                        ErrorClass::Intern,
                        format!("rank {peer}'s frame {header}, sent again, does not fit the receive it was placed in"),
                    )
                }
            }
        }
        r.status.source = peer as i32;
        r.status.tag = header.tag;
        r.status.len = len;
        r.phase = RecvPhase::Done;
        if header.kind == FrameKind::EagerSync {
            let h = Header { msg_id: header.msg_id, ..Header::new(FrameKind::SyncAck) };
            self.emit(peer, h, Payload::Empty)?;
        }
        Ok(())
    }

    /// Binds message `u` to the receive `id`.
    pub(super) fn match_message(&mut self, id: ReqId, u: Unexpected) -> MpiResult<()> {
        let Some(Req::Recv(r)) = self.requests.get_mut(id) else {
            return err(ErrorClass::Intern, format!("receive {id} vanished while matching"));
        };
        r.status.source = u.src as i32;
        r.status.tag = u.tag;
        match u.kind {
            UnexpectedKind::Eager { data, sync_msg_id } => {
                let buf = r.buf.as_mut().expect("posted receive holds its buffer");
                let cap = buf.capacity();
                let dlen = data.len();
                let n = dlen.min(cap);
                match buf {
                    // Same size staging buffer: take the message's bytes, no copy.
                    RecvBuf::Owned(v) if v.len() == dlen && matches!(data, Payload::Owned(_)) => *v = data.into_vec(),
                    _ => buf.as_mut_slice()[..n].copy_from_slice(&data.as_slice()[..n]),
                }
                r.status.len = n;
                if dlen > cap {
                    r.status.error = Some(ErrorClass::Truncate);
                }
                r.phase = RecvPhase::Done;
                if let Some(msg_id) = sync_msg_id {
                    let h = Header { msg_id, ..Header::new(FrameKind::SyncAck) };
                    self.emit(u.src, h, Payload::Empty)?;
                }
            }
            UnexpectedKind::Rts { msg_id, total } => {
                r.phase = RecvPhase::Receiving { total, received: 0 };
                let cap = r.buf.as_ref().map_or(0, RecvBuf::capacity);
                r.status.len = total.min(cap);
                if total > cap {
                    r.status.error = Some(ErrorClass::Truncate);
                }
                if total == 0 {
                    r.phase = RecvPhase::Done;
                }
                let h = Header { msg_id, arg: id, ..Header::new(FrameKind::Cts) };
                self.emit(u.src, h, Payload::Empty)?;
            }
        }
        self.deliver_loopback()
    }
}
