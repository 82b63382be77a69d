//! The application side of the simulation: each rank's random program, run one step at a
//! time through its engine, every completion checked against what was sent.

use super::*;

impl Sim {
    /// Rank `r`'s program: its sends and receives in global order, randomly interleaved, with
    /// the collectives (same order everywhere) at random places.
    pub(super) fn program(&mut self, r: u32) -> Vec<Op> {
        let sends: Vec<usize> = (0..self.msgs.len()).filter(|&i| self.msgs[i].src == r).collect();
        let recvs: Vec<usize> = (0..self.msgs.len()).filter(|&i| self.msgs[i].dst == r).collect();
        let (mut s, mut v) = (sends.into_iter().peekable(), recvs.into_iter().peekable());
        let mut ops = Vec::new();
        while s.peek().is_some() || v.peek().is_some() {
            let take_send = match (s.peek(), v.peek()) {
                (Some(_), Some(_)) => self.rng.chance(1, 2),
                (Some(_), None) => true,
                _ => false,
            };
            ops.push(if take_send { Op::Send(s.next().expect("peeked")) } else { Op::Recv(v.next().expect("peeked")) });
        }
        let mut at: Vec<usize> = (0..self.colls.len()).map(|_| self.rng.range(0, ops.len() as u64) as usize).collect();
        at.sort_unstable();
        for (c, pos) in at.into_iter().enumerate().rev() {
            ops.insert(pos, Op::Coll(c));
        }
        ops
    }

    /// Receive capacity for a wildcard receive at `dst` on `ctx`: the longest message it may get.
    pub(super) fn cap_for(&self, i: usize) -> usize {
        let m = &self.msgs[i];
        match m.ctx {
            CTX_EXACT => m.len,
            CTX_ANY_TAG => self
                .msgs
                .iter()
                .filter(|x| x.dst == m.dst && x.ctx == m.ctx && x.src == m.src)
                .map(|x| x.len)
                .max()
                .unwrap_or(0),
            CTX_ANY_SRC => self
                .msgs
                .iter()
                .filter(|x| x.dst == m.dst && x.ctx == m.ctx && x.tag == m.tag)
                .map(|x| x.len)
                .max()
                .unwrap_or(0),
            _ => self.msgs.iter().filter(|x| x.dst == m.dst && x.ctx == m.ctx).map(|x| x.len).max().unwrap_or(0),
        }
    }

    pub(super) fn app_step(&mut self, r: usize) -> bool {
        let now = self.now();
        {
            let rank = &self.ranks[r];
            if rank.app_error.is_some() || now < rank.slow_until_us || now < rank.computing_until_us {
                return false;
            }
        }
        // One round of `block_until`.
        let mut did = false;
        let res = self.ranks[r].engine.switch_step().and_then(|()| self.ranks[r].engine.progress());
        match res {
            Ok(w) => did |= w,
            Err(e) => {
                self.app_failed(r, e);
                return true;
            }
        }
        // Completions.
        let mut done: Vec<(Pend, Completion)> = Vec::new();
        {
            let rank = &mut self.ranks[r];
            let mut i = 0;
            while i < rank.outstanding.len() {
                let id = rank.outstanding[i].0;
                if rank.engine.core().is_complete(id) {
                    let c = rank.engine.take_completion(id).expect("complete");
                    let (_, pend) = rank.outstanding.swap_remove(i);
                    done.push((pend, c));
                } else {
                    i += 1;
                }
            }
        }
        for (pend, c) in done {
            did = true;
            self.check_completion(r as u32, pend, c);
        }
        if self.ranks[r].coll.is_some() {
            did |= self.coll_step(r);
            return did;
        }
        // Post the next few operations.
        for _ in 0..self.rng.range(1, 3) {
            let rank = &self.ranks[r];
            let Some(&op) = rank.ops.get(rank.next_op) else {
                break;
            };
            self.ranks[r].next_op += 1;
            did = true;
            let res = match op {
                Op::Send(i) => {
                    let m = &self.msgs[i];
                    let data = payload_of(m, i);
                    let (dst, ctx, tag, sync) = (m.dst as i32, m.ctx, m.tag, m.sync);
                    self.stats.messages += 1;
                    self.stats.bytes += m.len as u64;
                    self.ranks[r].engine.isend(dst, ctx, tag, SendData::Owned(data), sync).map(|id| (id, Pend::Send))
                }
                Op::Recv(i) => {
                    let m = &self.msgs[i];
                    let cap = self.cap_for(i);
                    let (source, tag, expect) = match m.ctx {
                        CTX_EXACT => (m.src as i32, m.tag, Some(i)),
                        CTX_ANY_SRC => (ANY_SOURCE, m.tag, None),
                        CTX_ANY_TAG => (m.src as i32, ANY_TAG, None),
                        _ => (ANY_SOURCE, ANY_TAG, None),
                    };
                    let ctx = m.ctx;
                    let rank = &mut self.ranks[r];
                    rank.post_pos += 1;
                    let pos = rank.post_pos;
                    rank.engine
                        .irecv(source, ctx, tag, RecvBuf::Owned(vec![0; cap]))
                        .map(|id| (id, Pend::Recv { ctx, expect, pos }))
                }
                Op::Coll(c) => {
                    self.ranks[r].coll =
                        Some(CollRun { idx: c, round: 0, send: None, recv: None, fwd: Vec::new(), acc: 0 });
                    if let Err(e) = self.coll_post(r) {
                        self.app_failed(r, e);
                    }
                    return true;
                }
            };
            match res {
                Ok(x) => self.ranks[r].outstanding.push(x),
                Err(e) => {
                    self.app_failed(r, e);
                    return true;
                }
            }
        }
        did
    }

    pub(super) fn coll_rounds(&self, c: usize) -> u32 {
        let n = self.p.n;
        match self.colls[c] {
            CollKind::Barrier => ceil_log2(n),
            CollKind::Ring { .. } => n - 1,
        }
    }

    /// Posts the current round of rank `r`'s collective.
    pub(super) fn coll_post(&mut self, r: usize) -> MpiResult<()> {
        let n = self.p.n;
        let me = r as u32;
        let run = self.ranks[r].coll.as_ref().expect("in a collective");
        let (c, k) = (run.idx, run.round);
        let tag = (c as i32) * 128 + k as i32;
        let (to, from, data, cap) = match self.colls[c] {
            CollKind::Barrier => {
                let d = (1u32 << k) % n;
                ((me + d) % n, (me + n - d) % n, Vec::new(), 0)
            }
            CollKind::Ring { len } => {
                let data = if k == 0 { block_of(c, me, len) } else { run.fwd.clone() };
                ((me + 1) % n, (me + n - 1) % n, data, len)
            }
        };
        let engine = &mut self.ranks[r].engine;
        let recv = engine.irecv(from as i32, COLL_CTX, tag, RecvBuf::Owned(vec![0; cap]))?;
        let send = engine.isend(to as i32, COLL_CTX, tag, SendData::Owned(data), false)?;
        let run = self.ranks[r].coll.as_mut().expect("in a collective");
        run.send = Some(send);
        run.recv = Some(recv);
        Ok(())
    }

    pub(super) fn coll_step(&mut self, r: usize) -> bool {
        let n = self.p.n;
        let me = r as u32;
        let rank = &mut self.ranks[r];
        let run = rank.coll.as_mut().expect("in a collective");
        let engine = &mut rank.engine;
        let mut did = false;
        if let Some(id) = run.send.filter(|&id| engine.core().is_complete(id)) {
            engine.take_completion(id);
            run.send = None;
            did = true;
        }
        let mut got = None;
        if let Some(id) = run.recv.filter(|&id| engine.core().is_complete(id)) {
            got = engine.take_completion(id);
            run.recv = None;
            did = true;
        }
        let (c, k) = (run.idx, run.round);
        if let Some(comp) = got {
            let tag = (c as i32) * 128 + k as i32;
            let RecvBuf::Owned(buf) = comp.recv_buf.expect("buffer") else { unreachable!() };
            match self.colls[c] {
                CollKind::Barrier => {
                    let d = (1u32 << k) % n;
                    let from = (me + n - d) % n;
                    if comp.status.source != from as i32 || comp.status.tag != tag || comp.status.len != 0 {
                        let s = comp.status;
                        self.fail(&format!("rank {me} barrier {c} round {k}: got {s:?}, expected from {from}"));
                    }
                }
                CollKind::Ring { len } => {
                    let block = (me + 2 * n - k - 1) % n;
                    let want = block_of(c, block, len);
                    if buf[..comp.status.len] != want[..] || comp.status.error.is_some() {
                        self.fail(&format!(
                            "rank {me} ring {c} round {k}: block {block} corrupted ({:?})",
                            comp.status
                        ));
                    }
                    let run = self.ranks[r].coll.as_mut().expect("in a collective");
                    run.acc = run.acc.wrapping_add(fnv(0, &buf));
                    run.fwd = buf;
                }
            }
        }
        let run = self.ranks[r].coll.as_mut().expect("in a collective");
        if run.send.is_some() || run.recv.is_some() {
            return did;
        }
        run.round += 1;
        if run.round < self.coll_rounds(c) {
            if let Err(e) = self.coll_post(r) {
                self.app_failed(r, e);
            }
            return true;
        }
        // Done: the allreduce of checksums must be the sum over every rank's block.
        let run = self.ranks[r].coll.take().expect("in a collective");
        if let CollKind::Ring { len } = self.colls[c] {
            let want = (0..n).fold(0u64, |a, b| a.wrapping_add(fnv(0, &block_of(c, b, len))));
            let got = run.acc.wrapping_add(fnv(0, &block_of(c, me, len)));
            if got != want {
                self.fail(&format!("rank {me} ring allreduce {c}: checksum {got:#x}, expected {want:#x}"));
            }
        }
        self.stats.collectives += 1;
        self.note(0xC011, (c as u64) << 8 | me as u64);
        true
    }

    pub(super) fn check_completion(&mut self, me: u32, pend: Pend, c: Completion) {
        let Pend::Recv { ctx, expect, pos } = pend else {
            return;
        };
        let s = c.status;
        let RecvBuf::Owned(buf) = c.recv_buf.expect("receive buffer") else { unreachable!() };
        if s.error.is_some() || s.cancelled {
            self.fail(&format!("rank {me}: receive on ctx {ctx} completed with {s:?}"));
        }
        let i = match (ctx, expect) {
            (_, Some(i)) => i,
            (CTX_ANY_ALL | CTX_ANY_TAG, None) => match self.by_tag.get(&(s.source as u32, s.tag)) {
                Some(&i) => i,
                None => self
                    .fail(&format!("rank {me}: message from {} tag {} on ctx {ctx} was never sent", s.source, s.tag)),
            },
            _ => {
                if s.len < 8 {
                    self.fail(&format!("rank {me}: ctx {ctx} message of {} bytes cannot carry its index", s.len));
                }
                let i = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")) as usize;
                if i >= self.msgs.len() {
                    self.fail(&format!("rank {me}: corrupted message index {i}"));
                }
                i
            }
        };
        let m = self.msgs[i].clone();
        if m.dst != me || m.ctx != ctx || m.src as i32 != s.source || m.tag != s.tag || m.len != s.len {
            self.fail(&format!("rank {me}: receive on ctx {ctx} got {s:?}, which does not fit message {i} {m:?}"));
        }
        if buf[..s.len] != payload_of(&m, i)[..] {
            self.fail(&format!("rank {me}: payload of message {i} {m:?} corrupted"));
        }
        if std::mem::replace(&mut self.delivered[i], true) {
            self.fail(&format!("rank {me}: message {i} {m:?} delivered twice"));
        }
        // Non-overtaking: among receives of the same envelope class, post order = send order.
        let key_tag = if ctx == CTX_ANY_ALL || ctx == CTX_ANY_TAG { -1 } else { m.tag };
        let map = self.order.entry((me, ctx, m.src, key_tag)).or_default();
        let before = map.range(..pos).next_back().map(|(_, &j)| j);
        let after = map.range(pos + 1..).next().map(|(_, &j)| j);
        map.insert(pos, i);
        if before.is_some_and(|j| j > i) || after.is_some_and(|j| j < i) {
            self.fail(&format!(
                "rank {me}: message {i} from {} overtook another (neighbours {before:?}, {after:?})",
                m.src
            ));
        }
        self.note(0xDE11, i as u64);
    }

    pub(super) fn app_failed(&mut self, r: usize, e: MpiError) {
        if self.ranks[r].app_error.is_none() {
            self.note(0xFA11, r as u64);
        }
        self.ranks[r].app_error = Some(e.to_string());
        self.engine_failed(r, "the application", &e);
    }

    /// Every fault but the fatal one is survivable: an engine error is a violation, except at
    /// the rank the fatal fault hit, which must fail naming the peer it lost.
    pub(super) fn engine_failed(&mut self, r: usize, who: &str, e: &MpiError) {
        match self.phase {
            Phase::Failing { rank, peer } | Phase::Lost { rank, peer } if rank as usize == r => {
                if !e.to_string().contains(&format!("lost rank {peer}:")) {
                    self.fail(&format!(
                        "rank {r} lost its control thread, then its link to rank {peer}; it must fail naming \
                         that peer, but {who} got: {e}"
                    ));
                }
            }
            _ => {
                let epoch = self.ranks[r].engine.core().epoch();
                self.fail(&format!("rank {r} (epoch {epoch}): {who} got an error, which no fault here allows: {e}"));
            }
        }
    }
}
