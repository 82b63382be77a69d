//! Context ids: the numbers that keep one communicator's messages apart from another's, and
//! how the members of a new communicator agree on one.
//!
//! Each process hands out ids upwards from the lowest it has not used. A new communicator's
//! members agree on the maximum of their proposals, which is free at each of them unless a
//! concurrent agreement of that process holds or took it: communicators may be created in
//! several threads at once (`MPI_THREAD_MULTIPLE`), or by `MPI_Comm_idup`s that overlap in any
//! order. [`Agreement`] is that protocol, with no I/O: it says which element-wise maximum over
//! the members to compute next and decides from the result. The blocking constructors drive it
//! with blocking allreduces ([`crate::construct::agree_ctx`]), `MPI_Comm_idup` with a chain of
//! nonblocking ones ([`crate::world::World::comm_idup_start`]).

use std::collections::BTreeSet;

use crate::comm::CTX_STRIDE;
use crate::error::{err, ErrorClass, MpiResult};

/// How many times an agreement may find its id taken by a concurrent one before it fails: a
/// retry draws new candidates, so rounds that keep clashing mean something is wrong.
pub const MAX_AGREEMENT_ROUNDS: u32 = 64;

/// The first context ids belong to `MPI_COMM_WORLD`, the next to `MPI_COMM_SELF`.
const FIRST_FREE_CTX: u32 = 2 * CTX_STRIDE;

/// This process's context ids.
#[derive(Debug)]
pub struct ContextIds {
    /// The lowest id this process has not used or reserved.
    next: u32,
    /// Agreements in flight here.
    in_flight: u32,
    /// Candidates agreed here and found free, each held for its agreement until every member
    /// has said whether it found it free too.
    held: BTreeSet<u32>,
    /// Ids taken while agreements were in flight: a candidate of one of them must not be one
    /// of these, although it is at or above this process's proposal.
    taken_in_flight: BTreeSet<u32>,
}

impl Default for ContextIds {
    fn default() -> Self {
        ContextIds { next: FIRST_FREE_CTX, in_flight: 0, held: BTreeSet::new(), taken_in_flight: BTreeSet::new() }
    }
}

impl ContextIds {
    /// This process's proposal for round `round` of an agreement: its next free id, reserved
    /// so that a concurrent agreement proposes another. A retry skips a few ids, chosen from
    /// the rank and the round, so that two agreements that clashed are unlikely to meet on the
    /// same maximum again.
    fn propose(&mut self, rank: u32, round: u32) -> MpiResult<u32> {
        let skip = if round == 0 {
            0
        } else {
            let mut x = u64::from(rank) << 32 | u64::from(round) ^ u64::from(self.next);
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            x ^= x >> 33;
            (x % 8) as u32
        };
        let mine = self.next.saturating_add(skip * CTX_STRIDE);
        if mine > u32::MAX - 2 * CTX_STRIDE {
            return err(ErrorClass::Intern, "context ids exhausted");
        }
        self.next = mine + CTX_STRIDE;
        Ok(mine)
    }

    /// Holds the agreed candidate `ctx`, unless a concurrent agreement holds it or took it
    /// meanwhile (false: taken here). Any id at or above this process's proposal is otherwise
    /// free, and the candidate is at least the proposal.
    fn hold(&mut self, ctx: u32) -> bool {
        !self.taken_in_flight.contains(&ctx) && self.held.insert(ctx)
    }

    /// Takes the held candidate `ctx` that every member found free.
    fn take(&mut self, ctx: u32) -> MpiResult<u32> {
        self.held.remove(&ctx);
        if ctx > u32::MAX - 2 * CTX_STRIDE {
            return err(ErrorClass::Intern, "context ids exhausted");
        }
        self.next = self.next.max(ctx + CTX_STRIDE);
        self.taken_in_flight.insert(ctx);
        Ok(ctx)
    }

    /// An agreement is over (agreed or failed); once none is in flight, the ids taken
    /// meanwhile need no more remembering.
    fn agreement_ends(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.taken_in_flight.clear();
        }
    }
}

/// One agreement on a context id, as seen by one member (`rank`, its world rank).
///
/// Each round, every member proposes its next free id and the maximum is the candidate; each
/// member then checks the candidate against the ids it holds for agreements in flight and the
/// ids it took while any was in flight, holds it if free, and a second maximum tells all
/// whether anyone found it taken. Then every member takes it, or every member lets it go and a
/// new round starts. In a program whose agreements never overlap the check never fails: two
/// small allreduces per communicator.
///
/// Every maximum is over two words, `[found taken, proposal]`: the driver computes the
/// element-wise maximum of what [`Agreement::start`] and [`Agreement::next`] return over every
/// member and hands it to [`Agreement::next`].
#[derive(Debug)]
pub struct Agreement {
    rank: u32,
    round: u32,
    phase: Phase,
    /// Counted out of the agreements in flight (it ends once, agreed or not).
    ended: bool,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// The maximum of the proposals is asked for.
    Proposed,
    /// The maximum of "found `candidate` taken" is asked for; `held`: this member holds it.
    Checking {
        candidate: u32,
        held: bool,
    },
    Over,
}

/// What an agreement asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The element-wise maximum of these words over every member.
    Max([u32; 2]),
    /// Every member agreed on this id, now taken here.
    Agreed(u32),
}

impl Agreement {
    /// Starts an agreement of member `rank`; returns it and the words of the first maximum.
    pub fn start(ids: &mut ContextIds, rank: u32) -> MpiResult<(Agreement, [u32; 2])> {
        ids.in_flight += 1;
        let mut a = Agreement { rank, round: 0, phase: Phase::Proposed, ended: false };
        match ids.propose(rank, 0) {
            Ok(mine) => Ok((a, [0, mine])),
            Err(e) => {
                a.abandon(ids);
                Err(e)
            }
        }
    }

    /// Takes the maximum the last decision asked for and decides what comes next. An error
    /// ends the agreement (every member meets it in the same round, as they see the same
    /// maxima).
    pub fn next(&mut self, ids: &mut ContextIds, max: [u32; 2]) -> MpiResult<Decision> {
        let decided = self.decide(ids, max);
        if !matches!(decided, Ok(Decision::Max(_))) {
            self.abandon(ids);
        }
        decided
    }

    fn decide(&mut self, ids: &mut ContextIds, [taken_anywhere, candidate]: [u32; 2]) -> MpiResult<Decision> {
        match self.phase {
            Phase::Proposed => {
                let held = ids.hold(candidate);
                self.phase = Phase::Checking { candidate, held };
                Ok(Decision::Max([u32::from(!held), 0]))
            }
            Phase::Checking { candidate, held } => {
                if taken_anywhere == 0 {
                    self.phase = Phase::Over;
                    return ids.take(candidate).map(Decision::Agreed);
                }
                if held {
                    ids.held.remove(&candidate);
                }
                self.round += 1;
                if self.round == MAX_AGREEMENT_ROUNDS {
                    self.phase = Phase::Over;
                    return err(
                        ErrorClass::Intern,
                        format!(
                            "no context id agreed in {MAX_AGREEMENT_ROUNDS} rounds: each candidate was taken by a \
                             concurrent communicator creation"
                        ),
                    );
                }
                self.phase = Phase::Proposed;
                Ok(Decision::Max([0, ids.propose(self.rank, self.round)?]))
            }
            Phase::Over => err(ErrorClass::Intern, "a context agreement went on after it ended"),
        }
    }

    /// Ends the agreement without an id (a maximum could not be computed): lets go of what it
    /// holds. Agreed or abandoned, it counts as over once.
    pub fn abandon(&mut self, ids: &mut ContextIds) {
        if let Phase::Checking { candidate, held: true } = self.phase {
            ids.held.remove(&candidate);
        }
        self.phase = Phase::Over;
        if !std::mem::replace(&mut self.ended, true) {
            ids.agreement_ends();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The element-wise maximum over the members' words.
    fn max_of(words: &[[u32; 2]]) -> [u32; 2] {
        words.iter().fold([0, 0], |m, w| [m[0].max(w[0]), m[1].max(w[1])])
    }

    /// One round of agreement `name` at both members, from what they asked the maximum of:
    /// the words of the next maximum (into `words`), or the id both agreed on.
    fn round(name: &str, at: [&mut Agreement; 2], ids: &mut [ContextIds; 2], words: &mut [[u32; 2]; 2]) -> Option<u32> {
        let m = max_of(words);
        let [a0, a1] = at;
        let [i0, i1] = ids;
        match (a0.next(i0, m).unwrap(), a1.next(i1, m).unwrap()) {
            (Decision::Max(a), Decision::Max(b)) => {
                *words = [a, b];
                None
            }
            (Decision::Agreed(a), Decision::Agreed(b)) if a == b => Some(a),
            other => panic!("members of {name} disagree: {other:?}"),
        }
    }

    /// Two members run two agreements each, over the same pair, in opposite orders (one
    /// process's first agreement is the other's second): the two agreements end with two
    /// different ids that both members took, however the rounds interleave.
    #[test]
    fn overlapping_agreements_in_opposite_orders_end_distinct() {
        let mut ids = [ContextIds::default(), ContextIds::default()];
        // Agreement X is member 0's first and member 1's second; Y the other way round.
        let (mut x0, wx0) = Agreement::start(&mut ids[0], 0).unwrap();
        let (mut y0, wy0) = Agreement::start(&mut ids[0], 0).unwrap();
        let (mut y1, wy1) = Agreement::start(&mut ids[1], 1).unwrap();
        let (mut x1, wx1) = Agreement::start(&mut ids[1], 1).unwrap();
        let (mut wx, mut wy) = ([wx0, wx1], [wy0, wy1]);
        let (mut got_x, mut got_y) = (None, None);
        // Each member decides X first, then Y, in every round.
        for _ in 0..4 * MAX_AGREEMENT_ROUNDS {
            if got_x.is_none() {
                got_x = round("X", [&mut x0, &mut x1], &mut ids, &mut wx);
            }
            if got_y.is_none() {
                got_y = round("Y", [&mut y0, &mut y1], &mut ids, &mut wy);
            }
        }
        let (x, y) = (got_x.expect("X agreed"), got_y.expect("Y agreed"));
        assert_ne!(x, y, "two communicators of one process share a context id");
        for i in ids {
            assert!(i.held.is_empty() && i.taken_in_flight.is_empty() && i.in_flight == 0, "{i:?}");
            assert!(i.next > x.max(y));
        }
    }

    /// An agreement that cannot finish lets go of what it holds, and a later one starts clean.
    #[test]
    fn an_abandoned_agreement_lets_go() {
        let mut ids = ContextIds::default();
        let (mut a, w) = Agreement::start(&mut ids, 0).unwrap();
        assert_eq!(a.next(&mut ids, w).unwrap(), Decision::Max([0, 0]), "free here");
        assert_eq!(ids.held.len(), 1);
        a.abandon(&mut ids);
        a.abandon(&mut ids);
        assert!(ids.held.is_empty() && ids.in_flight == 0);
        let (mut b, w) = Agreement::start(&mut ids, 0).unwrap();
        let Decision::Max(check) = b.next(&mut ids, w).unwrap() else { panic!("a check comes next") };
        assert!(matches!(b.next(&mut ids, check).unwrap(), Decision::Agreed(_)));
        assert_eq!(ids.in_flight, 0);
    }
}
