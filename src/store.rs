//! The event store: rows bounded by age and by count, shared by the pipeline (writer) and the
//! table plugins (readers).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A stored row and its event id.
#[derive(Debug)]
pub struct Entry<R> {
    pub eid: u64,
    pub time: u64,
    pub row: R,
}

#[derive(Debug, Default)]
pub struct StoreCounters {
    pub inserted: AtomicU64,
    pub evicted_by_age: AtomicU64,
    pub evicted_by_count: AtomicU64,
}

#[derive(Debug)]
struct Inner<R> {
    rows: VecDeque<Arc<Entry<R>>>,
    next_eid: u64,
}

#[derive(Debug)]
pub struct Store<R> {
    inner: Mutex<Inner<R>>,
    max_rows: usize,
    max_age_secs: u64,
    pub counters: StoreCounters,
}

impl<R> Store<R> {
    pub fn new(max_rows: usize, max_age_secs: u64) -> Self {
        Store {
            inner: Mutex::new(Inner {
                rows: VecDeque::new(),
                next_eid: 1,
            }),
            max_rows: max_rows.max(1),
            max_age_secs,
            counters: StoreCounters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<R>> {
        // A panic while holding the lock leaves the deque consistent (push/pop only).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expire(&self, inner: &mut Inner<R>, now: u64) {
        let oldest = now.saturating_sub(self.max_age_secs);
        while inner.rows.front().is_some_and(|e| e.time < oldest) {
            inner.rows.pop_front();
            self.counters.evicted_by_age.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Add a row with its event time (UNIX seconds); `now` drives age eviction.
    pub fn push(&self, time: u64, row: R, now: u64) {
        self.push_batch([(time, row)], now);
    }

    /// Add rows (event time, row) under one lock.
    pub fn push_batch(&self, rows: impl IntoIterator<Item = (u64, R)>, now: u64) {
        let mut inner = self.lock();
        for (time, row) in rows {
            let eid = inner.next_eid;
            inner.next_eid += 1;
            inner.rows.push_back(Arc::new(Entry { eid, time, row }));
            self.counters.inserted.fetch_add(1, Ordering::Relaxed);
        }
        while inner.rows.len() > self.max_rows {
            inner.rows.pop_front();
            self.counters
                .evicted_by_count
                .fetch_add(1, Ordering::Relaxed);
        }
        self.expire(&mut inner, now);
    }

    /// The rows that pass `keep`, oldest first. The lock is held only to clone handles.
    pub fn select(&self, now: u64, mut keep: impl FnMut(&Entry<R>) -> bool) -> Vec<Arc<Entry<R>>> {
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        inner.rows.iter().filter(|e| keep(e)).cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_count() {
        let s = Store::new(3, 3600);
        for i in 0..5u64 {
            s.push(100 + i, i, 100);
        }
        let rows = s.select(100, |_| true);
        assert_eq!(
            rows.iter().map(|e| e.row).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(
            rows.iter().map(|e| e.eid).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(s.counters.evicted_by_count.load(Ordering::Relaxed), 2);
        assert_eq!(s.counters.inserted.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn bounded_by_age() {
        let s = Store::new(100, 10);
        s.push(100, "old", 100);
        s.push(105, "mid", 105);
        s.push(111, "new", 111);
        // at 111, rows older than 101 are gone
        assert_eq!(s.len(), 2);
        let rows = s.select(120, |_| true);
        assert_eq!(rows.iter().map(|e| e.row).collect::<Vec<_>>(), vec!["new"]);
        assert_eq!(s.counters.evicted_by_age.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn select_filters_and_keeps_order() {
        let s = Store::new(10, 3600);
        for i in 0..6u64 {
            s.push(100 + i, i, 100);
        }
        let odd = s.select(100, |e| e.row % 2 == 1);
        assert_eq!(odd.iter().map(|e| e.row).collect::<Vec<_>>(), vec![1, 3, 5]);
        assert!(!s.is_empty());
    }
}
