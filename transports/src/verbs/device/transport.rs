//! The verbs transport: sends, RDMA reads and credit writes posted, completions polled; every
//! decision is its channels' ([`super::super::channel`]).

use super::*;

impl VerbsTransport {
    /// Sends and credit writes posted and not yet completed (on a reliable connection a send
    /// completes once the peer's device has acknowledged it).
    pub fn sends_in_flight(&self) -> u32 {
        self.res.peers.iter().map(|p| p.sq_used).sum()
    }

    /// Moves what the completion queue holds to `taken`.
    fn take_completions(&mut self) {
        let before = self.taken.len();
        if let Ok(mut poller) = self.res.cq.start_poll() {
            for wc in &mut poller {
                self.taken.push((wc.wr_id(), wc.status(), wc.byte_len()));
            }
        }
        if self.taken.len() > before {
            self.last_activity = Instant::now();
        }
    }

    /// Whether some peer has frames waiting that only credits can let go, or payloads it is
    /// reading: credits and read reports come back by RDMA write, which raises no completion
    /// event, so such a wait must look again soon.
    fn waiting_for_credits(&self) -> bool {
        self.res.peers.iter().any(|p| p.active && !p.down && (p.channel.queued_bytes() > 0 || !p.exposed.is_empty()))
    }

    /// Sleeps on the completion channel until the next completion or `timeout`.
    fn wait_for_event(&mut self, timeout: Duration) -> TransportResult<()> {
        // SAFETY: the queue is alive (it is in `self.res`); arming only asks the provider to
        // raise one event on the channel for the next completion.
        let cq = unsafe { self.res.cq.cq() };
        // SAFETY: as above; `cq` is a valid queue created with this channel.
        if unsafe { rdma_mummy_sys::ibv_req_notify_cq(cq.as_ptr(), 0) } != 0 {
            std::thread::sleep(timeout.min(SHORT_WAIT));
            return Ok(());
        }
        // A completion that came before the arming raised no event: look once more.
        self.take_completions();
        if !self.taken.is_empty() {
            return Ok(());
        }
        let fd = self.res.events.as_raw_fd();
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
        // SAFETY: one valid pollfd and timespec for the duration of the call; no signal mask.
        let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::Interrupted { Ok(()) } else { Err(io_error("poll", e)) };
        }
        if n > 0 {
            let mut ev_cq: *mut rdma_mummy_sys::ibv_cq = std::ptr::null_mut();
            let mut ev_ctx: *mut std::ffi::c_void = std::ptr::null_mut();
            // SAFETY: the channel is alive and non-blocking; the out-pointers are valid. Every
            // event taken is acknowledged at once (destroying the queue waits for that).
            unsafe {
                let channel = self.res.events.comp_channel();
                if rdma_mummy_sys::ibv_get_cq_event(channel.as_ptr(), &mut ev_cq, &mut ev_ctx) == 0 {
                    rdma_mummy_sys::ibv_ack_cq_events(ev_cq, 1);
                }
            }
        }
        Ok(())
    }

    /// Takes completions: arrived messages become frames, finished sends free their buffers.
    fn poll(&mut self, events: &mut Vec<Event>) -> TransportResult<()> {
        let slots = self.config.slots as usize;
        self.take_completions();
        let now = Instant::now();
        for (id, status, len) in std::mem::take(&mut self.taken) {
            let (kind, i, slot) = split_wr_id(id);
            let Some(p) = self.res.peers.get_mut(i) else { continue };
            p.last_progress = now;
            if status != WorkCompletionStatus::Success as u32 {
                if !p.down {
                    p.down = true;
                    let what = match kind {
                        WR_RECV => "receive",
                        WR_SEND => "send",
                        _ => "credit write",
                    };
                    let what = if kind == WR_READ { "read" } else { what };
                    let why = format!("{:?}", WorkCompletionStatus::from(status));
                    events.push(Event::LinkDown {
                        peer: p.peer,
                        reason: format!("verbs {what} failed: {why} (work request {id:#x}, {len} bytes)"),
                    });
                }
                continue;
            }
            match kind {
                WR_SEND => {
                    p.free_send.push(slot);
                    p.sq_used -= 1;
                }
                WR_CREDIT => {
                    p.sq_used -= 1;
                    p.credit_in_flight = false;
                }
                WR_RECV => {
                    let offset = (i * slots + slot) * self.config.slot_bytes;
                    let msg = self.res.recv_buf.slice(offset, len as usize);
                    let mut bad = None;
                    let (peer, ask) = (p.peer, self.ask_placement);
                    let (arrivals, next_token) = (&mut p.arrivals, &mut p.next_token);
                    let mut emit = |header: wire::Header, payload: Payload| {
                        if header.flags & FLAG_READ == 0 {
                            return arrivals.push_back(Arrival::Ready(header, payload));
                        }
                        match ReadDescriptor::decode(payload.as_slice()) {
                            Ok(from) => {
                                let header =
                                    wire::Header { flags: header.flags & !FLAG_READ, payload_len: from.len, ..header };
                                let token = *next_token;
                                *next_token += 1;
                                let target = if ask {
                                    events.push(Event::Incoming { peer, token, header });
                                    Target::Undecided
                                } else {
                                    Target::Own(vec![0; from.len as usize])
                                };
                                let r = Reading { mr: None, target, header, from, token, done: false };
                                arrivals.push_back(Arrival::Reading(r));
                            }
                            Err(e) => bad = Some(e),
                        }
                    };
                    let result = p.channel.on_message(msg, &mut emit).map_err(|e| e.to_string());
                    if let Some(e) = result.err().or(bad) {
                        p.down = true;
                        events.push(Event::LinkDown { peer: p.peer, reason: format!("bad verbs message: {e}") });
                        continue;
                    }
                    p.unposted.push(slot);
                }
                WR_READ => {
                    p.sq_used -= 1;
                    // Reads on one queue pair complete in the order they were posted.
                    let first = p.arrivals.iter_mut().find_map(|a| match a {
                        Arrival::Reading(r) if r.mr.is_some() && !r.done => Some(r),
                        _ => None,
                    });
                    if let Some(r) = first {
                        r.done = true;
                        r.mr = None;
                        p.channel.read_done();
                    }
                }
                _ => {}
            }
        }
        for p in &mut self.res.peers {
            while let Some(a) = p.arrivals.front() {
                if matches!(a, Arrival::Reading(r) if !r.done) {
                    break;
                }
                let (header, payload) = match p.arrivals.pop_front().expect("front exists") {
                    Arrival::Ready(h, v) => (h, v),
                    Arrival::Reading(Reading { header, target: Target::Own(buf), .. }) => (header, Payload::Owned(buf)),
                    Arrival::Reading(Reading { header, .. }) => {
                        (wire::Header { flags: header.flags | wire::FLAG_PLACED, ..header }, Payload::Empty)
                    }
                };
                events.push(Event::Frame { peer: p.peer, header, payload });
            }
        }
        Ok(())
    }

    /// Posts the reads of peer `i`'s payloads that wait for room on the send queue, each into
    /// its own buffer, registered for it.
    fn post_reads(&mut self, i: usize) -> TransportResult<()> {
        let sq_limit = self.config.send_queue_depth();
        let (cache, pd) = (&mut self.res.cache, &self.res.pd);
        let p = &mut self.res.peers[i];
        if p.down || !p.active {
            return Ok(());
        }
        for a in p.arrivals.iter_mut() {
            if p.sq_used >= sq_limit {
                break;
            }
            let Arrival::Reading(r) = a else { continue };
            if r.mr.is_some() || r.done {
                continue;
            }
            let (addr, len) = match &mut r.target {
                Target::Undecided => continue,
                Target::Own(buf) => (buf.as_mut_ptr() as usize, buf.len()),
                Target::User(at) => (at.ptr as usize, at.len),
            };
            // The device writes the buffer only where this read says, and the buffer stays put
            // until the read completes: an own buffer is handed on after it (or dropped with
            // the transport, after the queue pairs), and the runtime leaves the application's
            // receive buffer alone until the frame is delivered, which is after the read.
            let mr = registration(cache, pd, addr..addr + len, Access::LocalWrite)
                .map_err(|e| verbs_error(format!("registering a read buffer for rank {}", p.peer), e))?;
            let mut guard = p.qp.start_post_send();
            let wr = guard.construct_wr(wr_id(WR_READ, i, 0), WorkRequestFlags::Signaled);
            // SAFETY: the local buffer is registered (above) and untouched until the read
            // completes; the remote range is what the peer registered for this read.
            unsafe { wr.setup_read(r.from.rkey, r.from.addr).setup_sge(mr.lkey(), addr as u64, len as u32) };
            guard.post().map_err(|e| verbs_error(format!("posting a read from rank {}", p.peer), e))?;
            r.mr = Some(mr);
            p.sq_used += 1;
        }
        Ok(())
    }

    /// Posts what the channels have to send: messages while send buffers and credits last,
    /// then credit updates. A peer whose posting fails (its queue pair broke, its device is
    /// gone) is reported down; the others go on.
    fn post_sends(&mut self, events: &mut Vec<Event>) {
        let keepalive = self.last_activity.elapsed() >= KEEPALIVE_IDLE;
        if keepalive {
            self.last_activity = Instant::now();
        }
        for i in 0..self.res.peers.len() {
            if self.res.peers[i].down {
                continue;
            }
            if let Err(e) = self.post_peer(i, keepalive) {
                let p = &mut self.res.peers[i];
                p.down = true;
                let reason = match e {
                    TransportError::LinkDown { reason, .. } => reason,
                    other => other.to_string(),
                };
                events.push(Event::LinkDown { peer: p.peer, reason });
            }
        }
    }

    /// [`VerbsTransport::post_sends`] for peer `i`.
    fn post_peer(&mut self, i: usize, keepalive: bool) -> TransportResult<()> {
        let (slots, slot_bytes) = (self.config.slots as usize, self.config.slot_bytes);
        let send_lkey = self.res.send_mr.lkey();
        self.res.repost(&self.config, i)?;
        let word = CreditWord {
            reposted: self.res.credit_buf.read_word(CREDIT_WORD_LEN * i),
            reads_done: self.res.credit_buf.read_word(CREDIT_WORD_LEN * i + 4),
        };
        self.post_reads(i)?;
        let p = &mut self.res.peers[i];
        if p.down || !p.active {
            return Ok(());
        }
        if p.sq_used == 0 {
            p.last_progress = Instant::now();
        } else if p.last_progress.elapsed() > self.config.stall_after {
            let reason = format!(
                "rank {}'s device completed none of {} posted work requests for {:?}",
                p.peer, p.sq_used, self.config.stall_after
            );
            return Err(TransportError::LinkDown { peer: p.peer, reason });
        }
        let read = p
            .channel
            .on_credit_word(word)
            .map_err(|e| TransportError::LinkDown { peer: p.peer, reason: format!("bad credit word: {e}") })?;
        for _ in 0..read {
            let e = p.exposed.pop_front().expect("the channel counts what is exposed");
            p.exposed_bytes -= e.payload.len();
        }
        let sq_limit = self.config.send_queue_depth();
        if p.sq_used < sq_limit && !p.credit_in_flight {
            let idle = keepalive && p.sq_used == 0;
            let word = p.channel.credit_update().or_else(|| idle.then(|| p.channel.last_credit_word()));
            if let (Some(word), Some((addr, rkey))) = (word, p.remote_credit) {
                let dst = self.res.credit_src.slice_mut(CREDIT_WORD_LEN * i, CREDIT_WORD_LEN);
                dst[..4].copy_from_slice(&word.reposted.to_le_bytes());
                dst[4..].copy_from_slice(&word.reads_done.to_le_bytes());
                let src = self.res.credit_src.addr(CREDIT_WORD_LEN * i);
                let lkey = self.res.credit_src_mr.lkey();
                let p = &mut self.res.peers[i];
                let mut guard = p.qp.start_post_send();
                let wr = guard.construct_wr(wr_id(WR_CREDIT, i, 0), WorkRequestFlags::Signaled);
                // SAFETY: the source word is registered and not written again until this
                // write completes (`credit_in_flight`).
                unsafe { wr.setup_write(rkey, addr).setup_sge(lkey, src, CREDIT_WORD_LEN as u32) };
                guard.post().map_err(|e| verbs_error(format!("writing credits to rank {}", p.peer), e))?;
                p.sq_used += 1;
                p.credit_in_flight = true;
            }
        }
        // Messages wait while finished reads are not yet reported: the runtime answers the
        // frame of a payload it read with a confirmation that lets the peer complete the send
        // and reuse its buffer, so the peer must learn first that the read is done (it lets go
        // of the payload and its registration then). On one queue pair the credit write lands
        // in the peer's memory before a later send arrives there.
        let p = &mut self.res.peers[i];
        while p.sq_used < sq_limit && !p.channel.reads_unreported() {
            let Some(&slot) = p.free_send.last() else { break };
            let offset = (i * slots + slot) * slot_bytes;
            let Some(n) = p.channel.fill_message(self.res.send_buf.slice_mut(offset, slot_bytes)) else { break };
            p.free_send.pop();
            let addr = self.res.send_buf.addr(offset);
            let mut guard = p.qp.start_post_send();
            let wr = guard.construct_wr(wr_id(WR_SEND, i, slot), WorkRequestFlags::Signaled).setup_send();
            // SAFETY: the send buffer is registered and not written again until this send
            // completes (it is off the free list until then).
            unsafe { wr.setup_sge(send_lkey, addr, n as u32) };
            guard.post().map_err(|e| verbs_error(format!("posting a send to rank {}", p.peer), e))?;
            p.sq_used += 1;
        }
        Ok(())
    }
}

impl Transport for VerbsTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Verbs
    }

    fn send(&mut self, peer: PeerId, header: &wire::Header, payload: Payload) -> TransportResult<()> {
        let &i = self.index.get(&peer).ok_or(TransportError::NoRoute { peer })?;
        let p = &mut self.res.peers[i];
        if p.down {
            return Err(TransportError::LinkDown { peer, reason: "verbs queue pair failed".into() });
        }
        // A large payload stays where it is (the runtime's memory or, `Static`, the
        // application's) and the peer reads it; smaller ones, those past the bound on
        // registrations, and memory that cannot be registered go through the buffers.
        let readable = payload.len() >= self.config.read_min_bytes
            && p.exposed.len() < self.config.max_exposed
            && payload.stays_put();
        let bytes = payload.as_slice();
        let (addr, len) = (bytes.as_ptr() as usize, bytes.len());
        // The payload is kept in `exposed`, unmoved (owned bytes live on the heap, a `Static`
        // buffer by its promise) and unchanged, until the peer says it has read it. Remote
        // read only: the memory may be read-only (a send from a constant), which a writable
        // registration would refuse.
        let registered =
            readable.then(|| registration(&mut self.res.cache, &self.res.pd, addr..addr + len, Access::RemoteRead));
        let p = &mut self.res.peers[i];
        let Some(Ok(mr)) = registered else {
            if !p.channel.queue_frame(header, payload) {
                return Err(TransportError::QueueFull { peer, limit: self.config.queue_limit_bytes });
            }
            return Ok(());
        };
        let from = ReadDescriptor { addr: addr as u64, rkey: mr.rkey(), len: len as u32 };
        let described =
            wire::Header { flags: header.flags | FLAG_READ, payload_len: ReadDescriptor::LEN as u32, ..*header };
        if !p.channel.queue_frame(&described, Payload::Owned(from.encode())) {
            return Err(TransportError::QueueFull { peer, limit: self.config.queue_limit_bytes });
        }
        p.channel.payload_exposed();
        p.exposed_bytes += len;
        p.exposed.push_back(Exposed { _mr: mr, payload });
        Ok(())
    }

    fn progress(&mut self, events: &mut Vec<Event>) -> TransportResult<()> {
        self.poll(events)?;
        self.post_sends(events);
        Ok(())
    }

    fn ask_placement(&mut self) {
        self.ask_placement = true;
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.res.cache.stats;
        vec![
            ("registrations made", s.made),
            ("reused", s.reused),
            ("dropped when their memory was given back", s.given_back),
            ("evicted", s.evicted),
        ]
    }

    fn place(&mut self, peer: PeerId, token: u64, at: Option<Placement>) -> TransportResult<()> {
        let &i = self.index.get(&peer).ok_or(TransportError::NoRoute { peer })?;
        let reading = self.res.peers[i].arrivals.iter_mut().find_map(|a| match a {
            Arrival::Reading(r) if r.token == token && matches!(r.target, Target::Undecided) => Some(r),
            _ => None,
        });
        let Some(r) = reading else {
            return Err(verbs_error(format!("placing payload {token} from rank {peer}"), "no such read waits"));
        };
        r.target = match at {
            Some(at) if at.len == r.from.len as usize => Target::User(at),
            Some(at) => {
                return Err(verbs_error(
                    format!("placing payload {token} from rank {peer}"),
                    format!("{} bytes offered for {}", at.len, r.from.len),
                ))
            }
            None => Target::Own(vec![0; r.from.len as usize]),
        };
        Ok(())
    }

    /// Sleeps on the completion channel (at most `LONGEST_WAIT`, so that a switch command
    /// that wakes only the TCP transport is seen soon), or briefly while frames wait for
    /// credits, which arrive without an event.
    fn wait(&mut self, timeout: Duration) -> TransportResult<()> {
        if !self.taken.is_empty() {
            return Ok(());
        }
        if self.waiting_for_credits() {
            std::thread::sleep(timeout.min(SHORT_WAIT));
            return Ok(());
        }
        self.wait_for_event(timeout.min(LONGEST_WAIT))
    }

    /// Frame bytes not yet sent, payloads the peers have not finished reading, and (as one
    /// byte) a report of finished reads not yet in the peer's memory: the peer waits for it
    /// before it may let go of its payloads, so a drain must not end without it.
    fn queued_bytes(&self) -> usize {
        let unreported = |p: &PeerQp| usize::from(p.channel.reads_unreported() || p.credit_in_flight);
        // A peer whose link is down takes nothing more: what it holds is lost with the link
        // (the runtime keeps its own copy of every frame until the peer confirms it).
        let live = self.res.peers.iter().filter(|p| !p.down);
        live.map(|p| p.channel.queued_bytes() + p.exposed_bytes + unreported(p)).sum()
    }
}
