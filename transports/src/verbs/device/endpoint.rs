//! Opening a device and connecting its queue pairs (see the module doc of [`super`]).

use super::*;

impl VerbsEndpoint {
    /// Opens `port`'s device and prepares a queue pair for each of `peers`.
    pub fn open(port: &VerbsPort, me: PeerId, peers: &[PeerId], config: VerbsConfig) -> TransportResult<VerbsEndpoint> {
        let list = DeviceList::new().map_err(|e| verbs_error("verbs device list".into(), e))?;
        let device = list
            .iter()
            .find(|d| d.name() == port.device)
            .ok_or_else(|| verbs_error(format!("verbs device {}", port.device), "no longer present"))?;
        let context = device.open().map_err(|e| verbs_error(format!("opening {}", port.device), e))?;
        drop(list);
        let pd = context.alloc_pd().map_err(|e| verbs_error("protection domain".into(), e))?;
        let n = peers.len();
        let slots = config.slots as usize;
        let per_peer = slots * config.slot_bytes;
        let events = CompletionChannel::new(&context).map_err(|e| verbs_error("completion channel".into(), e))?;
        events.set_nonblocking(true).map_err(|e| io_error("completion channel", e))?;
        // Room for a completion of every request that can be outstanding at once: each
        // queue pair's receive and send queues full. A queue that overflows loses
        // completions, and the requests behind them would never be seen to finish.
        let (max_send_wr, max_recv_wr) = (config.send_queue_depth(), config.recv_queue_depth());
        let cq = context
            .create_cq_builder()
            .setup_cqe(n as u32 * (max_send_wr + max_recv_wr) + 16)
            .setup_comp_channel(&events, 0)
            .build()
            .map_err(|e| verbs_error("completion queue".into(), e))?;
        let recv_buf = DeviceBuffer::new(per_peer * n)?;
        let send_buf = DeviceBuffer::new(per_peer * n)?;
        let credit_buf = DeviceBuffer::new(CREDIT_WORD_LEN * n)?;
        let credit_src = DeviceBuffer::new(CREDIT_WORD_LEN * n)?;
        let local = AccessFlags::LocalWrite;
        // SAFETY: each buffer outlives its registration (field order of `Resources`).
        let (recv_mr, send_mr, credit_mr, credit_src_mr) = unsafe {
            (
                pd.reg_mr(recv_buf.addr(0) as usize, recv_buf.len, local),
                pd.reg_mr(send_buf.addr(0) as usize, send_buf.len, local),
                pd.reg_mr(credit_buf.addr(0) as usize, credit_buf.len, local | AccessFlags::RemoteWrite),
                pd.reg_mr(credit_src.addr(0) as usize, credit_src.len, local),
            )
        };
        let reg = |r: Result<Arc<MemoryRegion>, _>| r.map_err(|e| verbs_error("memory registration".into(), e));
        let (recv_mr, send_mr, credit_mr, credit_src_mr) =
            (reg(recv_mr)?, reg(send_mr)?, reg(credit_mr)?, reg(credit_src_mr)?);
        let mut qps = Vec::with_capacity(n);
        for &peer in peers {
            let cq_handle = GenericCompletionQueue::from(Arc::clone(&cq));
            let mut qp = pd
                .create_qp_builder()
                .setup_max_inline_data(16)
                .setup_send_cq(cq_handle.clone())
                .setup_recv_cq(cq_handle)
                .setup_max_send_wr(max_send_wr)
                .setup_max_recv_wr(max_recv_wr)
                .build_ex()
                .map_err(|e| verbs_error(format!("queue pair for rank {peer}"), e))?;
            let mut attr = QueuePairAttribute::new();
            attr.setup_state(QueuePairState::Init)
                .setup_pkey_index(0)
                .setup_port(port.port)
                .setup_access_flags(AccessFlags::LocalWrite | AccessFlags::RemoteWrite | AccessFlags::RemoteRead);
            qp.modify(&attr).map_err(|e| verbs_error(format!("queue pair for rank {peer} to INIT"), e))?;
            qps.push(PeerQp {
                peer,
                qp,
                channel: Channel::new(peer, config.slots, config.slot_bytes, config.queue_limit_bytes),
                free_send: (0..slots).rev().collect(),
                sq_used: 0,
                last_progress: Instant::now(),
                remote_credit: None,
                down: false,
                credit_in_flight: false,
                unposted: Vec::new(),
                active: false,
                exposed: VecDeque::new(),
                exposed_bytes: 0,
                arrivals: VecDeque::new(),
                next_token: 0,
            });
        }
        let index = peers.iter().enumerate().map(|(i, &p)| (p, i)).collect();
        let mut res = Resources {
            peers: qps,
            cq,
            events,
            recv_mr,
            send_mr,
            credit_mr,
            credit_src_mr,
            cache: RegCache::new(
                &memory::PROCESS_LOG,
                config.cache_max_entries,
                cache_max_bytes(&config),
                memory::page_size(),
            ),
            recv_buf,
            send_buf,
            credit_buf,
            credit_src,
            pd,
            _context: context,
        };
        for (i, peer) in peers.iter().enumerate() {
            for slot in 0..slots {
                if !res.post_recv(&config, i, slot)? {
                    return Err(verbs_error(format!("posting receive buffers for rank {peer}"), "queue full"));
                }
            }
        }
        // Different on every open, so a stale packet of an earlier connection never fits.
        let psn = (std::process::id().wrapping_mul(2_654_435_761) ^ me.wrapping_mul(40_503)) & 0xff_ffff;
        Ok(VerbsEndpoint { res, port: port.clone(), config, index, psn })
    }

    /// This rank's address for `peer`'s queue pair.
    pub fn address_for(&self, peer: PeerId) -> Option<QpAddress> {
        let &i = self.index.get(&peer)?;
        Some(QpAddress {
            lid: self.port.lid,
            gid: self.port.gid.gid.octets(),
            qpn: self.res.peers[i].qp.qp_number(),
            psn: self.psn,
            credit_addr: self.res.credit_buf.addr(CREDIT_WORD_LEN * i),
            credit_rkey: self.res.credit_mr.rkey(),
        })
    }

    /// Connects the queue pair of every peer in `remote` to that peer's (ready to receive,
    /// then to send); the others stay unused.
    pub fn connect(mut self, remote: &BTreeMap<PeerId, QpAddress>) -> TransportResult<VerbsTransport> {
        let mut slow_routes = Vec::new();
        for p in &mut self.res.peers {
            let Some(r) = remote.get(&p.peer) else { continue };
            let mut av = AddressHandleAttribute::new();
            av.setup_dest_lid(r.lid).setup_port(self.port.port).setup_service_level(0);
            if self.port.fabric == Fabric::Ethernet || r.lid == 0 {
                av.setup_grh_src_gid_index(self.port.gid.index as u8)
                    .setup_grh_dest_gid(&Gid::from(std::net::Ipv6Addr::from(r.gid)))
                    .setup_grh_hop_limit(64);
            }
            let mut attr = QueuePairAttribute::new();
            attr.setup_state(QueuePairState::ReadyToReceive)
                .setup_path_mtu(Mtu::Mtu1024)
                .setup_dest_qp_num(r.qpn)
                .setup_rq_psn(r.psn)
                .setup_max_dest_read_atomic(4)
                .setup_min_rnr_timer(12)
                .setup_address_vector(&av);
            let (attempts, took) = ready_to_receive(&mut p.qp, &attr, p.peer)?;
            if attempts > 1 {
                slow_routes.push(SlowRoute { peer: p.peer, attempts, took });
            }
            let mut attr = QueuePairAttribute::new();
            attr.setup_state(QueuePairState::ReadyToSend)
                .setup_sq_psn(self.psn)
                .setup_timeout(self.config.ack_timeout_exponent())
                .setup_retry_cnt(7)
                .setup_rnr_retry(7)
                .setup_max_read_atomic(4);
            p.qp.modify(&attr).map_err(|e| verbs_error(format!("queue pair for rank {} to RTS", p.peer), e))?;
            p.remote_credit = Some((r.credit_addr, r.credit_rkey));
            p.active = true;
        }
        let mut index = self.index;
        index.retain(|peer, _| remote.contains_key(peer));
        Ok(VerbsTransport {
            res: self.res,
            config: self.config,
            index,
            taken: Vec::new(),
            ask_placement: false,
            last_activity: Instant::now(),
            slow_routes,
        })
    }
}

/// How long a queue pair may take to find its peer's Ethernet address (RoCE) before the
/// connect fails. The kernel resolves the peer's address during the move to RTR and gives up
/// after 1 s; with a cold neighbour table on a busy host (an ARP request to a guest that is
/// starting its ranks, under emulation) one attempt can miss that, although the next finds the
/// reply the first one asked for.
const ROUTE_RESOLVE_LIMIT: Duration = Duration::from_secs(10);

/// Moves `qp` to ready-to-receive, trying again while the kernel times out resolving the
/// route to `peer` (a failed modify leaves the queue pair as it was), within
/// [`ROUTE_RESOLVE_LIMIT`]. Returns how many attempts it took and how long.
fn ready_to_receive(
    qp: &mut ExtendedQueuePair,
    attr: &QueuePairAttribute,
    peer: PeerId,
) -> TransportResult<(u32, Duration)> {
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match qp.modify(attr) {
            Ok(()) => return Ok((attempts, started.elapsed())),
            Err(e)
                if matches!(e.0, ModifyQueuePairErrorKind::ResolveRouteTimedout { .. })
                    && started.elapsed() < ROUTE_RESOLVE_LIMIT =>
            {
                // The kernel's attempt blocks for its own timeout; this pause only bounds the
                // loop should a device report the timeout at once.
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(verbs_error(
                    format!(
                        "queue pair for rank {peer} to RTR ({attempts} attempts in {:.1} s)",
                        started.elapsed().as_secs_f64()
                    ),
                    e,
                ))
            }
        }
    }
}
