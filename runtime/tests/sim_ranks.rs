//! Several ranks, each a real `World` with its own engine, in threads over the in-memory sim
//! fabric: point-to-point semantics and every collective, checked against values computed
//! independently.

use std::thread;

use kawarimi_runtime::coll::{self, Reducer};
use kawarimi_runtime::construct;
use kawarimi_runtime::core::{CoreConfig, RecvBuf, SendData, ANY_SOURCE, ANY_TAG};
use kawarimi_runtime::error::{ErrorClass, MpiResult};
use kawarimi_runtime::launch::ProcInfo;
use kawarimi_runtime::world::{World, UNDEFINED_COLOR};
use kawarimi_transports::sim::sim_fabric;
use kawarimi_transports::Transport;

fn run_ranks(n: u32, config: CoreConfig, body: fn(&mut World)) {
    let handles: Vec<_> = sim_fabric(n)
        .into_iter()
        .enumerate()
        .map(|(r, t)| {
            let config = config.clone();
            thread::spawn(move || {
                let proc = ProcInfo { rank: r as u32, size: n, local_rank: r as u32, local_size: n, launcher: "test" };
                let transport: Box<dyn Transport> = Box::new(t);
                let mut w = World::new(proc, Some(transport), config).unwrap();
                body(&mut w);
                w.engine.finalize().unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().expect("rank thread panicked");
    }
}

/// Integer sum over little-endian i64 elements.
struct SumI64;
impl Reducer for SumI64 {
    fn reduce(&self, input: &[u8], inout: &mut [u8]) -> MpiResult<()> {
        for (i, o) in input.chunks_exact(8).zip(inout.chunks_exact_mut(8)) {
            let v =
                i64::from_le_bytes(i.try_into().unwrap()).wrapping_add(i64::from_le_bytes((&*o).try_into().unwrap()));
            o.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }
    fn commutative(&self) -> bool {
        true
    }
}

/// `SumI64` that lets a collective cut its buffers into blocks of whole elements (as the
/// shim's reducers do), so that large allreduces take the reduce-scatter/allgather path.
struct SumI64Blocks;
impl Reducer for SumI64Blocks {
    fn reduce(&self, input: &[u8], inout: &mut [u8]) -> MpiResult<()> {
        assert!(input.len().is_multiple_of(8) && input.len() == inout.len(), "blocks of whole elements");
        SumI64.reduce(input, inout)
    }
    fn commutative(&self) -> bool {
        true
    }
    fn elem_bytes(&self) -> usize {
        8
    }
}

/// A non-commutative op: concatenation of rank lists kept in fixed-size slots; the result
/// records the order in which operands were combined.
struct Concat;
impl Reducer for Concat {
    fn reduce(&self, input: &[u8], inout: &mut [u8]) -> MpiResult<()> {
        // Each buffer: [len u8][ranks u8 × 15]. Result = input followed by inout.
        let (li, lo) = (input[0] as usize, inout[0] as usize);
        let mut out = [0u8; 16];
        out[0] = (li + lo) as u8;
        out[1..1 + li].copy_from_slice(&input[1..1 + li]);
        out[1 + li..1 + li + lo].copy_from_slice(&inout[1..1 + lo]);
        inout.copy_from_slice(&out);
        Ok(())
    }
    fn commutative(&self) -> bool {
        false
    }
}

fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn p2p_body(w: &mut World) {
    let comm = w.world.clone();
    let (me, n) = (comm.rank, comm.size());
    // Every rank sends 50 tagged messages of growing size (eager and rendezvous) to rank 0,
    // which receives them all with wildcards and checks per-sender order.
    if me != 0 {
        let mut ids = Vec::new();
        for i in 0..50u32 {
            let len = (i as usize * 4099) % 200_000;
            let data: Vec<u8> = (0..len).map(|b| (b as u32 ^ i ^ me as u32) as u8).collect();
            ids.push(w.engine.isend(0, comm.ctx, i as i32, SendData::Owned(data), i % 7 == 0).unwrap());
        }
        for id in ids {
            w.engine.wait(id).unwrap();
            w.engine.take_completion(id).unwrap();
        }
    } else {
        let mut next = vec![0u32; n as usize];
        for _ in 0..50 * (n - 1) {
            let id = w.engine.irecv(ANY_SOURCE, comm.ctx, ANY_TAG, RecvBuf::Owned(vec![0; 200_000])).unwrap();
            w.engine.wait(id).unwrap();
            let c = w.engine.take_completion(id).unwrap();
            let src = c.status.source as usize;
            let i = c.status.tag as u32;
            assert_eq!(i, next[src], "non-overtaking violated for sender {src}");
            next[src] += 1;
            let len = (i as usize * 4099) % 200_000;
            assert_eq!(c.status.len, len);
            let RecvBuf::Owned(buf) = c.recv_buf.unwrap() else { panic!("owned buffer") };
            assert!((0..len).all(|b| buf[b] == (b as u32 ^ i ^ src as u32) as u8), "payload from {src} tag {i}");
        }
        assert!(next[1..].iter().all(|&c| c == 50));
    }
    // Rank 0's wildcard receives would rightly match the next phase's message from a sender
    // that has finished its 50 while others have not: the phases are kept apart.
    coll::barrier(&mut w.engine, &comm).unwrap();
    // Truncation is reported, and the rest of the message is still consumed.
    if n >= 2 {
        if me == 1 {
            let id = w.engine.isend(0, comm.ctx, 99, SendData::Owned(vec![7; 300_000]), false).unwrap();
            w.engine.wait(id).unwrap();
            w.engine.take_completion(id);
        } else if me == 0 {
            let id = w.engine.irecv(1, comm.ctx, 99, RecvBuf::Owned(vec![0; 1000])).unwrap();
            w.engine.wait(id).unwrap();
            let c = w.engine.take_completion(id).unwrap();
            assert_eq!(c.status.error, Some(ErrorClass::Truncate));
            assert_eq!(c.status.len, 1000);
        }
    }
    coll::barrier(&mut w.engine, &comm).unwrap();
}

fn coll_body(w: &mut World) {
    let comm = w.world.clone();
    let (me, n) = (comm.rank, comm.size());
    for root in 0..n {
        // Bcast, small and large.
        for len in [1usize, 1000, 3 << 20] {
            let mut buf =
                if me == root { (0..len).map(|i| (i % 251) as u8 ^ root as u8).collect() } else { vec![0; len] };
            construct::bcast(w, &comm, root, &mut buf).unwrap();
            assert!(buf.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8 ^ root as u8));
        }
        // Reduce (commutative and not).
        let mine = i64s(&[me as i64, 1, -(me as i64) * 3]);
        let mut out = vec![0u8; mine.len()];
        coll::reduce(&mut w.engine, &comm, root, &mine, (me == root).then_some(&mut out[..]), &SumI64).unwrap();
        if me == root {
            let s = (n * (n - 1) / 2) as i64;
            assert_eq!(out, i64s(&[s, n as i64, -3 * s]));
        }
        let mut slot = [0u8; 16];
        slot[0] = 1;
        slot[1] = me as u8;
        let mut out = [0u8; 16];
        coll::reduce(&mut w.engine, &comm, root, &slot, (me == root).then_some(&mut out[..]), &Concat).unwrap();
        if me == root {
            assert_eq!(out[0] as i32, n);
            assert!((0..n as usize).all(|i| out[1 + i] == i as u8), "rank order kept: {out:?}");
        }
    }
    // Allreduce with both ops.
    let mut buf = i64s(&[me as i64 + 1; 1000]);
    coll::allreduce(&mut w.engine, &comm, &mut buf, &SumI64).unwrap();
    assert_eq!(buf, i64s(&[(n * (n + 1) / 2) as i64; 1000]));
    // Large enough for reduce-scatter and allgather, with element counts that do not divide
    // evenly into the blocks: every element summed once from every rank.
    for elems in [8192usize, 8192 + 5, 100_003] {
        let mut buf: Vec<u8> = (0..elems).flat_map(|i| (i as i64 * 1000 + me as i64).to_le_bytes()).collect();
        coll::allreduce(&mut w.engine, &comm, &mut buf, &SumI64Blocks).unwrap();
        let want: Vec<u8> =
            (0..elems).flat_map(|i| (i as i64 * 1000 * n as i64 + (n * (n - 1) / 2) as i64).to_le_bytes()).collect();
        assert!(buf == want, "large allreduce of {elems} elements at {n} ranks");
    }
    let mut slot = [0u8; 16];
    slot[0] = 1;
    slot[1] = me as u8;
    coll::allreduce(&mut w.engine, &comm, &mut slot, &Concat).unwrap();
    assert_eq!(slot[0] as i32, n);
    assert!((0..n as usize).all(|i| slot[1 + i] == i as u8), "allreduce order: {slot:?}");
    // Scan / Exscan (non-commutative).
    let mut s = [0u8; 16];
    s[0] = 1;
    s[1] = me as u8;
    coll::scan(&mut w.engine, &comm, &mut s, &Concat, false).unwrap();
    assert_eq!(s[0] as i32, me + 1);
    let mut x = [0u8; 16];
    x[0] = 1;
    x[1] = me as u8;
    coll::scan(&mut w.engine, &comm, &mut x, &Concat, true).unwrap();
    if me > 0 {
        assert_eq!(x[0] as i32, me);
        assert!((0..me as usize).all(|i| x[1 + i] == i as u8));
    } else {
        // Undefined by the standard, and left alone.
        assert_eq!((x[0], x[1]), (1, 0), "Exscan wrote rank 0's buffer");
    }
    // Gatherv / Scatterv / Allgatherv / Alltoallv with uneven lengths.
    let lens: Vec<usize> = (0..n as usize).map(|r| r * 10 + 1).collect();
    let mine = vec![me as u8; lens[me as usize]];
    let got = coll::gatherv(&mut w.engine, &comm, n - 1, &mine, &lens).unwrap();
    if me == n - 1 {
        assert!(got.iter().enumerate().all(|(r, p)| *p == vec![r as u8; lens[r]]));
    }
    let pieces = if me == 0 { (0..n as usize).map(|r| vec![r as u8 + 100; lens[r]]).collect() } else { Vec::new() };
    let p = coll::scatterv(&mut w.engine, &comm, 0, pieces, lens[me as usize]).unwrap();
    assert_eq!(p, vec![me as u8 + 100; lens[me as usize]]);
    let all = construct::allgather(w, &comm, &mine, &lens).unwrap();
    assert!(all.iter().enumerate().all(|(r, p)| *p == vec![r as u8; lens[r]]));
    let send: Vec<Vec<u8>> = (0..n).map(|d| vec![(me * 16 + d) as u8; (me + d) as usize * 1000]).collect();
    let recv_lens: Vec<usize> = (0..n).map(|s| (s + me) as usize * 1000).collect();
    let got = construct::alltoall(w, &comm, send, &recv_lens).unwrap();
    assert!(got.iter().enumerate().all(|(s, p)| *p == vec![(s as i32 * 16 + me) as u8; recv_lens[s]]));
}

fn comm_body(w: &mut World) {
    let world = w.world.clone();
    let (me, n) = (world.rank, world.size());
    // Split into odd/even with reversed keys; the new communicator's ranks are reversed.
    let half = construct::comm_split(w, &world, me % 2, -me).unwrap().unwrap();
    let members: Vec<i32> = (0..n).filter(|r| r % 2 == me % 2).rev().collect();
    assert_eq!(half.size() as usize, members.len());
    assert_eq!(half.rank, members.iter().position(|&r| r == me).unwrap() as i32);
    let mut buf = i64s(&[me as i64]);
    coll::allreduce(&mut w.engine, &half, &mut buf, &SumI64).unwrap();
    assert_eq!(buf, i64s(&[members.iter().map(|&r| r as i64).sum()]));
    let none = construct::comm_split(w, &world, if me == 0 { UNDEFINED_COLOR } else { 1 }, 0).unwrap();
    assert_eq!(none.is_none(), me == 0);
    let dup = construct::comm_dup(w, &world).unwrap();
    assert_ne!(dup.ctx, world.ctx);
    assert_ne!(dup.ctx, half.ctx);
    // A message on the dup does not match a receive on the parent.
    if me == 0 {
        let a = w.engine.isend(1, dup.ctx, 5, SendData::Owned(vec![1]), false).unwrap();
        let b = w.engine.isend(1, world.ctx, 5, SendData::Owned(vec![2]), false).unwrap();
        w.engine.wait(a).unwrap();
        w.engine.wait(b).unwrap();
    } else if me == 1 {
        let id = w.engine.irecv(0, world.ctx, 5, RecvBuf::Owned(vec![0])).unwrap();
        w.engine.wait(id).unwrap();
        let RecvBuf::Owned(v) = w.engine.take_completion(id).unwrap().recv_buf.unwrap() else { panic!() };
        assert_eq!(v, vec![2]);
        let id = w.engine.irecv(0, dup.ctx, 5, RecvBuf::Owned(vec![0])).unwrap();
        w.engine.wait(id).unwrap();
        let RecvBuf::Owned(v) = w.engine.take_completion(id).unwrap().recv_buf.unwrap() else { panic!() };
        assert_eq!(v, vec![1]);
    }
    coll::barrier(&mut w.engine, &world).unwrap();
}

#[test]
fn p2p_wildcards_order_and_truncation() {
    for n in [2, 3, 4] {
        run_ranks(n, CoreConfig::default(), p2p_body);
    }
}

#[test]
fn p2p_with_tiny_eager_limit_and_chunks() {
    let config = CoreConfig { eager_limit_bytes: 16, chunk_bytes: 1000, ..CoreConfig::default() };
    run_ranks(3, config, p2p_body);
}

#[test]
fn collectives_at_every_size() {
    for n in [1, 2, 3, 4, 5, 7, 8] {
        run_ranks(n, CoreConfig::default(), coll_body);
    }
}

#[test]
fn communicators_split_dup_and_isolation() {
    for n in [2, 3, 4, 6] {
        run_ranks(n, CoreConfig::default(), comm_body);
    }
}

/// A rank's state shared by its threads, as the shim's lock shares it at
/// `MPI_THREAD_MULTIPLE`: each update locks it, and a collective is polled with the lock let go
/// between tries.
struct SharedSteps(std::sync::Arc<std::sync::Mutex<World>>);

impl construct::Steps for SharedSteps {
    fn update(&mut self, f: &mut dyn FnMut(&mut World) -> MpiResult<()>) -> MpiResult<()> {
        f(&mut self.0.lock().unwrap())
    }

    fn run(&mut self, s: kawarimi_runtime::sched::Schedule<'static>) -> MpiResult<Vec<Vec<u8>>> {
        let id = self.0.lock().unwrap().engine.start_schedule_as(s, false)?;
        loop {
            if let Some(bufs) = self.0.lock().unwrap().engine.try_finish_schedule(id)? {
                return Ok(bufs);
            }
            thread::yield_now();
        }
    }
}

/// Several threads of every rank create communicators at once, each thread over its own
/// parent, the threads of different ranks starting in different orders: every communicator
/// gets the same context at all its members, and no rank gives two communicators one context
/// (the agreement's second round finds and retries the candidates that concurrent agreements
/// met on; without it, this fails).
#[test]
fn concurrent_constructors_in_threads_agree_on_distinct_contexts() {
    const THREADS: usize = 3;
    const ROUNDS: usize = 40;
    let n = 3u32;
    let made: Vec<Vec<(usize, usize, u32)>> = sim_fabric(n)
        .into_iter()
        .enumerate()
        .map(|(r, t)| {
            thread::spawn(move || {
                let proc = ProcInfo { rank: r as u32, size: n, local_rank: r as u32, local_size: n, launcher: "test" };
                let transport: Box<dyn Transport> = Box::new(t);
                let mut w = World::new(proc, Some(transport), CoreConfig::default()).unwrap();
                let world = w.world.clone();
                let parents: Vec<_> = (0..THREADS).map(|_| construct::comm_dup(&mut w, &world).unwrap()).collect();
                let shared = std::sync::Arc::new(std::sync::Mutex::new(w));
                let threads: Vec<_> = parents
                    .into_iter()
                    .enumerate()
                    .map(|(i, parent)| {
                        let mut st = SharedSteps(shared.clone());
                        thread::spawn(move || {
                            // Rank r's thread i starts later the further it is from i == r.
                            thread::sleep(std::time::Duration::from_millis(
                                ((i + THREADS - r % THREADS) % THREADS) as u64 * 5,
                            ));
                            let mut got = Vec::new();
                            for k in 0..ROUNDS {
                                let c = if k % 2 == 0 {
                                    construct::comm_dup(&mut st, &parent).unwrap()
                                } else {
                                    construct::comm_split(&mut st, &parent, 0, -parent.rank).unwrap().unwrap()
                                };
                                got.push((i, k, c.ctx));
                            }
                            got
                        })
                    })
                    .collect();
                let got: Vec<_> = threads.into_iter().flat_map(|h| h.join().expect("constructor thread")).collect();
                let mut w = std::sync::Arc::try_unwrap(shared).ok().expect("threads ended").into_inner().unwrap();
                w.engine.finalize().unwrap();
                got
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("rank thread panicked"))
        .collect();
    for (r, mine) in made.iter().enumerate() {
        let mut ctxs: Vec<u32> = mine.iter().map(|&(_, _, c)| c).collect();
        ctxs.sort_unstable();
        let before = ctxs.len();
        ctxs.dedup();
        assert_eq!(ctxs.len(), before, "rank {r} gave two communicators one context: {mine:?}");
        let mut sorted = mine.clone();
        sorted.sort_unstable();
        let mut first = made[0].clone();
        first.sort_unstable();
        assert_eq!(sorted, first, "rank {r} and rank 0 disagree on a communicator's context");
    }
}
