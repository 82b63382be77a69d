//! IS, "Integer Sort" (NPB report RNR-94-007 section 2.2 and the IS specification; NPB 2/3
//! MPI version's algorithm).
//!
//! `N = 2^TOTAL_KEYS_LOG_2` keys in `[0, 2^MAX_KEY_LOG_2)`, each `MAX_KEY/4` times the sum of
//! four consecutive numbers of the NPB generator (seed 314159265, multiplier 5^13), i.e. the
//! average of four uniforms times the largest key. Rank `r` holds keys
//! `r N/p .. (r+1) N/p` of that one stream (its seed is found by skipping ahead
//! `4 r N/p` numbers), so the problem does not depend on the rank count `p` (a power of two).
//!
//! Each of the 10 timed iterations (after one untimed warm-up), as in the reference code:
//! 1. rank 0 changes two keys: `key[i] = i`, `key[i + 10] = MAX_KEY - i`;
//! 2. every rank counts its keys per bucket (`2^NUM_BUCKETS_LOG_2` buckets of equal key
//!    range) and packs them bucket by bucket; the values of the 5 test keys ride along in
//!    5 extra slots;
//! 3. `MPI_Allreduce` (sum) of the bucket sizes gives the global histogram, from which every
//!    rank computes the same assignment of contiguous bucket ranges to ranks (rank `j` takes
//!    buckets until the running total reaches `(j+1) N/p`);
//! 4. `MPI_Alltoall` exchanges the send counts, `MPI_Alltoallv` the keys;
//! 5. each rank ranks its keys by counting (a histogram over its key range and a prefix sum),
//!    and the rank that holds each test key checks the key's global rank against the
//!    published value, shifted by the iteration as the specification prescribes.
//!
//! After the timed loop the final keys are sorted locally from the ranks and the full
//! verification checks local order and, by a point-to-point message from each rank to the
//! next, that the largest key of rank `r` does not exceed the smallest of rank `r + 1`.
//! The run passes when all `5 * 10` partial checks and the `p` full checks pass.

use mpi::collective::SystemOperation;
use mpi::datatype::{Partition, PartitionMut};
use mpi::point_to_point::{Destination, Source};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::{pow46, randlc, wtime, Class, Outcome, A};

const MAX_ITERATIONS: i32 = 10;
const TEST_ARRAY_SIZE: usize = 5;
const SEED: f64 = 314_159_265.0;
const FULL_VERIFY_TAG: i32 = 1000;

/// Sizes and partial-verification data of a class.
struct Params {
    total_keys_log2: u32,
    max_key_log2: u32,
    num_buckets_log2: u32,
    test_index: [i64; TEST_ARRAY_SIZE],
    test_rank: [i64; TEST_ARRAY_SIZE],
}

fn params(class: Class) -> Params {
    let (t, m, b, test_index, test_rank) = match class {
        Class::S => (16, 11, 9, [48427, 17148, 23627, 62548, 4431], [0, 18, 346, 64917, 65463]),
        Class::W => (20, 16, 10, [357773, 934767, 875723, 898999, 404505], [1249, 11698, 1039987, 1043896, 1048018]),
        Class::A => (23, 19, 10, [2112377, 662041, 5336171, 3642833, 4250760], [104, 17523, 123928, 8288932, 8388264]),
        Class::B => (25, 21, 10, [41869, 812306, 5102857, 18232239, 26860214], [33422937, 10244, 59149, 33135281, 99]),
        Class::C => (
            27,
            23,
            10,
            [44172927, 72999161, 74326391, 129606274, 21736814],
            [61147, 882988, 266290, 133997595, 133525895],
        ),
    };
    Params { total_keys_log2: t, max_key_log2: m, num_buckets_log2: b, test_index, test_rank }
}

/// The expected rank of test key `i` at `iteration`: the published rank moves by one per
/// iteration as the two modified keys accumulate below or above it.
fn expected_rank(class: Class, base: i64, i: usize, iteration: i64) -> i64 {
    match class {
        Class::S | Class::C => {
            if i <= 2 {
                base + iteration
            } else {
                base - iteration
            }
        }
        Class::W => {
            if i < 2 {
                base + iteration - 2
            } else {
                base - iteration
            }
        }
        Class::A => {
            if i <= 2 {
                base + iteration - 1
            } else {
                base - (iteration - 1)
            }
        }
        Class::B => {
            if matches!(i, 1 | 2 | 4) {
                base + iteration
            } else {
                base - iteration
            }
        }
    }
}

/// One rank's state.
struct Sorter<'a> {
    world: &'a SimpleCommunicator,
    class: Class,
    p: Params,
    rank: usize,
    size: usize,
    num_keys: usize,
    key_array: Vec<i32>,
    /// Keys packed by bucket, to send.
    key_buff1: Vec<i32>,
    /// Keys received, all within this rank's bucket range.
    key_buff2: Vec<i32>,
    /// Cumulative key counts over this rank's key range (`counts[v - min_key]` = number of
    /// local keys `<= v`), from the last iteration.
    counts: Vec<i32>,
    min_key: i64,
    passed: i32,
}

impl<'a> Sorter<'a> {
    fn new(world: &'a SimpleCommunicator, class: Class) -> Sorter<'a> {
        let p = params(class);
        let rank = world.rank() as usize;
        let size = world.size() as usize;
        let num_keys = (1usize << p.total_keys_log2) / size;
        // Skip ahead to this rank's part of the stream: 4 numbers per key.
        let mut seed = SEED;
        randlc(&mut seed, pow46(A, 4 * (rank * num_keys) as u64));
        let k = f64::from((1i32 << p.max_key_log2) / 4);
        let key_array = (0..num_keys)
            .map(|_| {
                let x = randlc(&mut seed, A) + randlc(&mut seed, A) + randlc(&mut seed, A) + randlc(&mut seed, A);
                (k * x) as i32
            })
            .collect();
        Sorter {
            world,
            class,
            p,
            rank,
            size,
            num_keys,
            key_array,
            key_buff1: vec![0; num_keys],
            key_buff2: Vec::new(),
            counts: Vec::new(),
            min_key: 0,
            passed: 0,
        }
    }

    /// One ranking iteration (the benchmark's `rank` procedure).
    fn rank_keys(&mut self, iteration: i32) {
        let nb = 1usize << self.p.num_buckets_log2;
        let shift = self.p.max_key_log2 - self.p.num_buckets_log2;
        let max_key = 1i32 << self.p.max_key_log2;
        if self.rank == 0 {
            self.key_array[iteration as usize] = iteration;
            self.key_array[(iteration + MAX_ITERATIONS) as usize] = max_key - iteration;
        }

        // Local bucket sizes, with the test keys' values in the 5 slots after them.
        let mut bucket_size = vec![0i32; nb + TEST_ARRAY_SIZE];
        for (i, &idx) in self.p.test_index.iter().enumerate() {
            let idx = idx as usize;
            if idx / self.num_keys == self.rank {
                bucket_size[nb + i] = self.key_array[idx % self.num_keys];
            }
        }
        for &key in &self.key_array {
            bucket_size[(key >> shift) as usize] += 1;
        }
        // Pack the keys bucket by bucket.
        let mut bucket_ptr = vec![0usize; nb];
        for b in 1..nb {
            bucket_ptr[b] = bucket_ptr[b - 1] + bucket_size[b - 1] as usize;
        }
        for &key in &self.key_array {
            let b = (key >> shift) as usize;
            self.key_buff1[bucket_ptr[b]] = key;
            bucket_ptr[b] += 1;
        }

        // Global histogram (and the test keys' values).
        let mut totals = vec![0i32; nb + TEST_ARRAY_SIZE];
        self.world.all_reduce_into(&bucket_size[..], &mut totals[..], SystemOperation::sum());

        // Assign contiguous bucket ranges to ranks; every rank computes the same answer.
        let mut send_count = vec![0i32; self.size];
        let mut send_displ = vec![0i32; self.size];
        let mut first_bucket = vec![0i64; self.size];
        let mut last_bucket = vec![0i64; self.size];
        let mut global_acc = 0i64;
        let mut local_acc = 0i32;
        let mut j = 0usize;
        for b in 0..nb {
            global_acc += i64::from(totals[b]);
            local_acc += bucket_size[b];
            if j < self.size && global_acc >= (j as i64 + 1) * self.num_keys as i64 {
                send_count[j] = local_acc;
                if j != 0 {
                    send_displ[j] = send_displ[j - 1] + send_count[j - 1];
                    first_bucket[j] = last_bucket[j - 1] + 1;
                }
                last_bucket[j] = b as i64;
                j += 1;
                local_acc = 0;
            }
        }
        // Ranks left without buckets get an empty range.
        for r in j..self.size {
            send_count[r] = 0;
            send_displ[r] = if r == 0 { 0 } else { send_displ[r - 1] + send_count[r - 1] };
            first_bucket[r] = 1;
            last_bucket[r] = 0;
        }

        // Exchange counts, then keys.
        let mut recv_count = vec![0i32; self.size];
        self.world.all_to_all_into(&send_count[..], &mut recv_count[..]);
        let mut recv_displ = vec![0i32; self.size];
        for r in 1..self.size {
            recv_displ[r] = recv_displ[r - 1] + recv_count[r - 1];
        }
        let received: usize = recv_count.iter().map(|&c| c as usize).sum();
        self.key_buff2.resize(received, 0);
        {
            let send = Partition::new(&self.key_buff1[..], &send_count[..], &send_displ[..]);
            let mut recv = PartitionMut::new(&mut self.key_buff2[..], &recv_count[..], &recv_displ[..]);
            self.world.all_to_all_varcount_into(&send, &mut recv);
        }

        // Rank the local keys by counting over this rank's key range.
        let min_key = first_bucket[self.rank] << shift;
        let max_key_here = ((last_bucket[self.rank] + 1) << shift) - 1;
        let range = (max_key_here - min_key + 1).max(0) as usize;
        self.counts.clear();
        self.counts.resize(range, 0);
        for &key in &self.key_buff2 {
            self.counts[(i64::from(key) - min_key) as usize] += 1;
        }
        for v in 1..range {
            self.counts[v] += self.counts[v - 1];
        }
        self.min_key = min_key;
        // Keys held by lower ranks.
        let lesser: i64 =
            (0..self.rank).flat_map(|r| first_bucket[r]..=last_bucket[r]).map(|b| i64::from(totals[b as usize])).sum();

        // Partial verification: the rank whose range holds a test key checks its rank.
        for i in 0..TEST_ARRAY_SIZE {
            let k = i64::from(totals[nb + i]);
            if min_key <= k && k <= max_key_here {
                let below = if k > min_key { i64::from(self.counts[(k - 1 - min_key) as usize]) } else { 0 };
                let key_rank = below + lesser;
                let want = expected_rank(self.class, self.p.test_rank[i], i, i64::from(iteration));
                if key_rank == want {
                    self.passed += 1;
                } else {
                    eprintln!(
                        "IS partial verification failed: iteration {iteration}, rank {}, test key {i}: rank {key_rank}, expected {want}",
                        self.rank
                    );
                }
            }
        }
    }

    /// Sorts the last iteration's keys and checks the order locally and across neighbours.
    fn full_verify(&mut self) {
        let n = self.key_buff2.len();
        let mut sorted = vec![0i32; n];
        let mut ptr = self.counts.clone();
        for &key in &self.key_buff2 {
            let slot = &mut ptr[(i64::from(key) - self.min_key) as usize];
            *slot -= 1;
            sorted[*slot as usize] = key;
        }
        let my_last = sorted.last().copied().unwrap_or(0);
        let mut from_left = i32::MIN;
        mpi::request::scope(|scope| {
            let recv = (self.rank > 0).then(|| {
                self.world.process_at_rank(self.rank as i32 - 1).immediate_receive_into_with_tag(
                    scope,
                    &mut from_left,
                    FULL_VERIFY_TAG,
                )
            });
            if self.rank + 1 < self.size {
                self.world.process_at_rank(self.rank as i32 + 1).send_with_tag(&my_last, FULL_VERIFY_TAG);
            }
            if let Some(r) = recv {
                r.wait();
            }
        });
        let mut out_of_order = 0usize;
        if self.rank > 0 && n > 0 && from_left > sorted[0] {
            out_of_order += 1;
        }
        out_of_order += sorted.windows(2).filter(|w| w[0] > w[1]).count();
        if out_of_order == 0 {
            self.passed += 1;
        } else {
            eprintln!("IS full verification: rank {}: {out_of_order} keys out of order", self.rank);
        }
    }
}

/// Runs IS on `world` (a power-of-two number of ranks).
pub fn run(world: &SimpleCommunicator, class: Class) -> Result<Outcome, String> {
    let size = world.size() as usize;
    let p = params(class);
    if !size.is_power_of_two() {
        return Err(format!("IS needs a power-of-two number of ranks, not {size}"));
    }
    if size > 1usize << p.num_buckets_log2 {
        return Err(format!("IS class {} runs on at most {} ranks", class.letter(), 1usize << p.num_buckets_log2));
    }
    let total_keys = 1usize << p.total_keys_log2;
    let max_key = 1usize << p.max_key_log2;
    let buckets = 1usize << p.num_buckets_log2;

    let mut s = Sorter::new(world, class);
    // One untimed iteration, as in the reference code.
    s.rank_keys(1);
    s.passed = 0;

    world.barrier();
    let t0 = wtime();
    for iteration in 1..=MAX_ITERATIONS {
        s.rank_keys(iteration);
    }
    let elapsed = wtime() - t0;
    let mut time_s = 0.0;
    world.all_reduce_into(&elapsed, &mut time_s, SystemOperation::max());

    s.full_verify();
    let mut passed = 0i32;
    world.all_reduce_into(&s.passed, &mut passed, SystemOperation::sum());
    let want = 5 * MAX_ITERATIONS + size as i32;
    let verified = passed == want;
    let mops = f64::from(MAX_ITERATIONS) * total_keys as f64 / time_s / 1.0e6;
    let details = vec![
        format!("Class {}: {total_keys} keys, max key {max_key}, {buckets} buckets, {size} ranks", class.letter()),
        format!("Iterations: {MAX_ITERATIONS}"),
        format!("Verification checks passed: {passed} of {want}"),
    ];
    Ok(Outcome { verified, time_s, mops, details })
}
