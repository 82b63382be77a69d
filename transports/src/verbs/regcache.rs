//! A bounded cache of memory registrations, so that a buffer sent or received again and again
//! (a halo, a solver's vector) is registered once, not at every message.
//!
//! Only memory [`super::memory`] calls stable is kept: its pages change only through a call
//! that is logged, and the cache drops whatever overlaps a logged range before it answers
//! again. Everything else is registered for one use, as without a cache. Registrations are
//! whole pages, so a buffer that moves a little within the same pages is found again.
//!
//! Bounds: at most `max_entries` registrations and `max_bytes` of pinned memory are kept; the
//! least recently used go first. An entry dropped while a payload still uses it lives on in
//! that payload's reference and is deregistered when the payload is done. The cache is the
//! transport's and goes with it, so a detach leaves no registration behind.

use std::ops::Range;

use super::memory::{Changes, GivenBack, GivenBackLog};

/// What a registration allows. One entry per kind: a send buffer is registered for the peer
/// to read (not writable, so a constant buffer can be sent), a receive buffer for the device
/// to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    RemoteRead,
    LocalWrite,
}

/// Counts for `ctl status` and the finalize report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Registrations made (kept or for one use).
    pub made: u64,
    /// Uses answered by a kept registration.
    pub reused: u64,
    /// Kept registrations dropped because their memory was given back.
    pub given_back: u64,
    /// Kept registrations dropped to stay within the bounds.
    pub evicted: u64,
}

struct Entry<R> {
    pages: Range<usize>,
    access: Access,
    last_use: u64,
    reg: R,
}

pub struct RegCache<R> {
    entries: Vec<Entry<R>>,
    given_back: GivenBack,
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
    page: usize,
    clock: u64,
    pub stats: CacheStats,
}

impl<R: Clone> RegCache<R> {
    pub fn new(log: &'static GivenBackLog, max_entries: usize, max_bytes: usize, page: usize) -> RegCache<R> {
        RegCache {
            entries: Vec::new(),
            given_back: GivenBack::new(log),
            max_entries,
            max_bytes,
            bytes: 0,
            page,
            clock: 0,
            stats: CacheStats::default(),
        }
    }

    /// A registration covering `range` with `access`: a kept one, or one made by
    /// `register(pages)` (the whole pages around `range`), kept if `stable` says the memory
    /// may be. Memory that is not stable is never answered from the kept ones. A failed registration is retried once after dropping every kept one (it may
    /// have failed for want of lockable memory).
    pub fn get<E>(
        &mut self,
        range: Range<usize>,
        access: Access,
        stable: bool,
        mut register: impl FnMut(Range<usize>) -> Result<R, E>,
    ) -> Result<R, E> {
        self.drop_given_back();
        self.clock += 1;
        let pages = range.start & !(self.page - 1)..range.end.next_multiple_of(self.page);
        // Memory not stable now (in a hole, or while libc gives memory back) is not answered
        // from what is kept either.
        let hit = self
            .entries
            .iter_mut()
            .find(|e| stable && e.access == access && e.pages.start <= pages.start && pages.end <= e.pages.end);
        if let Some(e) = hit {
            e.last_use = self.clock;
            self.stats.reused += 1;
            return Ok(e.reg.clone());
        }
        let len = pages.len();
        let keep = stable && len <= self.max_bytes && self.max_entries > 0;
        if keep {
            self.make_room(len);
        }
        let reg = match register(pages.clone()) {
            Ok(reg) => reg,
            Err(_) if !self.entries.is_empty() => {
                self.stats.evicted += self.entries.len() as u64;
                self.entries.clear();
                self.bytes = 0;
                register(pages.clone())?
            }
            Err(e) => return Err(e),
        };
        self.stats.made += 1;
        if keep {
            self.bytes += len;
            self.entries.push(Entry { pages, access, last_use: self.clock, reg: reg.clone() });
        }
        Ok(reg)
    }

    /// Registrations kept now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops the least recently used entries until one of `len` bytes fits.
    fn make_room(&mut self, len: usize) {
        while !self.entries.is_empty() && (self.entries.len() >= self.max_entries || self.bytes + len > self.max_bytes)
        {
            let oldest = (0..self.entries.len()).min_by_key(|&i| self.entries[i].last_use).expect("not empty");
            let e = self.entries.swap_remove(oldest);
            self.bytes -= e.pages.len();
            self.stats.evicted += 1;
        }
    }

    /// Drops every entry that overlaps memory given back since the last look.
    fn drop_given_back(&mut self) {
        let before = self.entries.len();
        match self.given_back.take() {
            Changes::None => return,
            Changes::All => self.entries.clear(),
            Changes::Ranges(ranges) => {
                self.entries.retain(|e| !ranges.iter().any(|r| r.start < e.pages.end && e.pages.start < r.end))
            }
        }
        self.stats.given_back += (before - self.entries.len()) as u64;
        self.bytes = self.entries.iter().map(|e| e.pages.len()).sum();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    const PAGE: usize = 4096;

    /// A registration that counts how many exist (a kept one is deregistered when the last
    /// reference to it goes, like an `Arc<MemoryRegion>`).
    #[derive(Clone)]
    struct FakeReg {
        pages: Range<usize>,
        _alive: Rc<Tracked>,
    }
    struct Tracked(Rc<Cell<i64>>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.set(self.0.get() - 1);
        }
    }

    struct Fixture {
        log: &'static GivenBackLog,
        live: Rc<Cell<i64>>,
        cache: RegCache<FakeReg>,
    }

    fn fixture(max_entries: usize, max_bytes: usize) -> Fixture {
        let log: &'static GivenBackLog = Box::leak(Box::new(GivenBackLog::new()));
        Fixture { log, live: Rc::new(Cell::new(0)), cache: RegCache::new(log, max_entries, max_bytes, PAGE) }
    }

    impl Fixture {
        fn get(&mut self, range: Range<usize>, access: Access) -> FakeReg {
            let live = self.live.clone();
            let register = |pages: Range<usize>| -> Result<FakeReg, ()> {
                live.set(live.get() + 1);
                Ok(FakeReg { pages, _alive: Rc::new(Tracked(live.clone())) })
            };
            self.cache.get(range, access, true, register).expect("registers")
        }
    }

    #[test]
    fn a_buffer_used_again_is_registered_once_and_by_whole_pages() {
        let mut f = fixture(8, 1 << 30);
        let r = f.get(0x10_0010..0x10_2000, Access::RemoteRead);
        assert_eq!(r.pages, 0x10_0000..0x10_2000);
        let again = f.get(0x10_0100..0x10_1f00, Access::RemoteRead);
        assert_eq!(again.pages, r.pages, "found inside the same pages");
        assert_eq!((f.cache.stats.made, f.cache.stats.reused), (1, 1));
        f.get(0x10_0100..0x10_1f00, Access::LocalWrite);
        assert_eq!(f.cache.stats.made, 2, "another kind of access is another registration");
        f.get(0x10_0000..0x10_3000, Access::RemoteRead);
        assert_eq!(f.cache.stats.made, 3, "a range past the kept one");
    }

    #[test]
    fn memory_given_back_is_never_answered_from_the_cache() {
        let mut f = fixture(8, 1 << 30);
        f.get(0x20_0000..0x20_4000, Access::RemoteRead);
        f.get(0x30_0000..0x30_4000, Access::RemoteRead);
        drop(f.get(0x40_0000..0x40_1000, Access::LocalWrite));
        f.log.note(0x20_3000..0x20_3001);
        f.log.note(0x40_0fff..0x40_2000);
        f.get(0x20_0000..0x20_1000, Access::RemoteRead);
        assert_eq!(f.cache.stats.made, 4, "registered anew, not found: a page of it was given back");
        assert_eq!(f.cache.stats.given_back, 2);
        f.get(0x30_0000..0x30_4000, Access::RemoteRead);
        assert_eq!(f.cache.stats.reused, 1, "an untouched neighbour stays");
        assert_eq!(f.live.get(), 2, "dropped entries are deregistered once nothing uses them");
        f.log.note(0..usize::MAX);
        f.get(0x30_0000..0x30_4000, Access::RemoteRead);
        assert_eq!((f.cache.stats.made, f.cache.len()), (5, 1), "malloc's settings changed: everything went");
    }

    #[test]
    fn the_bounds_hold_and_the_least_recently_used_goes_first() {
        let mut f = fixture(3, 10 * PAGE);
        f.get(0x1000..0x2000, Access::RemoteRead);
        f.get(0x5000..0x6000, Access::RemoteRead);
        f.get(0x9000..0xa000, Access::RemoteRead);
        f.get(0x1000..0x2000, Access::RemoteRead);
        f.get(0xd000..0xe000, Access::RemoteRead);
        assert_eq!(f.cache.len(), 3);
        f.get(0x1000..0x2000, Access::RemoteRead);
        assert_eq!(f.cache.stats.reused, 2, "the one used last stayed");
        f.get(0x5000..0x6000, Access::RemoteRead);
        assert_eq!(f.cache.stats.made, 5, "the oldest went");
        f.get(0x10_0000..0x10_9000, Access::RemoteRead);
        assert!(
            f.cache.bytes <= 10 * PAGE && f.cache.len() <= 3,
            "{} bytes in {} entries",
            f.cache.bytes,
            f.cache.len()
        );
        assert_eq!(f.live.get(), f.cache.len() as i64, "nothing outside the cache holds one");
        let huge = f.get(0x100_0000..0x100_0000 + 11 * PAGE, Access::RemoteRead);
        assert!(f.cache.bytes <= 10 * PAGE, "larger than the bound: used once, not kept");
        drop(huge);
        assert_eq!(f.live.get(), f.cache.len() as i64);
    }

    #[test]
    fn unstable_memory_is_registered_for_one_use() {
        let mut f = fixture(8, 1 << 30);
        let live = f.live.clone();
        for _ in 0..3 {
            let reg = f.cache.get(0x1000..0x2000, Access::RemoteRead, false, |pages| -> Result<FakeReg, ()> {
                live.set(live.get() + 1);
                Ok(FakeReg { pages, _alive: Rc::new(Tracked(live.clone())) })
            });
            drop(reg);
        }
        assert_eq!((f.cache.stats.made, f.cache.stats.reused, f.live.get()), (3, 0, 0));
        f.get(0x1000..0x2000, Access::RemoteRead);
        let reg = f.cache.get(0x1000..0x2000, Access::RemoteRead, false, |pages| -> Result<FakeReg, ()> {
            live.set(live.get() + 1);
            Ok(FakeReg { pages, _alive: Rc::new(Tracked(live.clone())) })
        });
        drop(reg);
        assert_eq!((f.cache.stats.made, f.cache.stats.reused), (5, 0), "a kept one is not used for unstable memory");
    }

    #[test]
    fn a_failed_registration_is_tried_again_without_the_kept_ones() {
        let mut f = fixture(8, 1 << 30);
        f.get(0x1000..0x2000, Access::RemoteRead);
        f.get(0x3000..0x4000, Access::RemoteRead);
        let mut calls = 0;
        let live = f.live.clone();
        let got = f.cache.get(0x8000..0x9000, Access::RemoteRead, true, |pages| {
            calls += 1;
            if calls == 1 {
                return Err("cannot lock more memory");
            }
            live.set(live.get() + 1);
            Ok(FakeReg { pages, _alive: Rc::new(Tracked(live.clone())) })
        });
        assert!(got.is_ok());
        assert_eq!((calls, f.cache.len(), f.cache.stats.evicted), (2, 1, 2));
        let fails = f.cache.get(0xa000..0xb000, Access::RemoteRead, true, |_| Err::<FakeReg, _>("no"));
        assert!(fails.is_err(), "a second failure is the caller's");
    }
}
