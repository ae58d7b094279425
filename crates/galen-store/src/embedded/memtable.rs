//! Points that are durable in the write-ahead log but not yet (fully) in a chunk row.
//!
//! The writer thread is the only mutator. Readers take a short read lock and copy out what they
//! need. Ordering rule that keeps reads complete: the writer commits a chunk row *before* it removes
//! the chunk's points from here, and readers look here *before* they query SQLite, so every point
//! is in at least one of the two places a reader looks. Readers merge and drop duplicate times.

use std::collections::HashMap;

/// A chunk never spans more than this (6 hours), so a range query only has to look this far back
/// for chunks that started before its `from`.
pub(crate) const MAX_SPAN_MICROS: i64 = 6 * 3600 * 1_000_000;

/// Unsealed points of one series, strictly increasing in time.
#[derive(Debug, Default)]
pub(crate) struct OpenChunk {
    pub(crate) points: Vec<(i64, f64)>,
    /// Changed since the last checkpoint persisted it.
    pub(crate) dirty: bool,
    /// `start_ts` of this chunk's row if a checkpoint wrote one. An out-of-order point can move
    /// the chunk's start earlier; the old row is then deleted when the new one is written.
    pub(crate) persisted_start: Option<i64>,
}

/// A sealed chunk waiting for its row.
#[derive(Debug)]
pub(crate) struct Sealed {
    pub(crate) series: i64,
    pub(crate) points: Vec<(i64, f64)>,
    pub(crate) persisted_start: Option<i64>,
}

/// Open chunks per series plus sealed chunks waiting for their row.
#[derive(Debug, Default)]
pub(crate) struct Memtable {
    pub(crate) open: HashMap<i64, OpenChunk>,
    pub(crate) sealing: Vec<Sealed>,
}

impl Memtable {
    /// Adds a point known not to be stored yet. Out-of-order points join the open chunk while it
    /// has room and its span stays within [`MAX_SPAN_MICROS`] (concurrent senders deliver slightly
    /// out of order all the time; sealing on each would shred series into tiny chunks). Otherwise
    /// the open chunk is sealed and a new one starts. Returns the newest time of a chunk sealed
    /// by this call.
    pub(crate) fn apply(
        &mut self,
        series: i64,
        time: i64,
        value: f64,
        chunk_points: usize,
    ) -> Option<i64> {
        let chunk = self.open.entry(series).or_default();
        chunk.dirty = true;
        let (Some(first), Some(last)) = (chunk.points.first(), chunk.points.last()) else {
            chunk.points.push((time, value));
            return None;
        };
        let (first, last) = (first.0, last.0);
        let fits = chunk.points.len() < chunk_points
            && last.max(time) - first.min(time) <= MAX_SPAN_MICROS;
        if fits && time > last {
            chunk.points.push((time, value));
            None
        } else if fits {
            let index = chunk
                .points
                .partition_point(|(existing, _)| *existing < time);
            chunk.points.insert(index, (time, value));
            None
        } else {
            let points = std::mem::replace(&mut chunk.points, vec![(time, value)]);
            let persisted_start = chunk.persisted_start.take();
            self.sealing.push(Sealed {
                series,
                points,
                persisted_start,
            });
            Some(last)
        }
    }

    /// Whether the memtable holds a point of `series` at `time`.
    pub(crate) fn contains(&self, series: i64, time: i64) -> bool {
        let holds = |points: &[(i64, f64)]| {
            points
                .binary_search_by_key(&time, |(existing, _)| *existing)
                .is_ok()
        };
        self.open
            .get(&series)
            .is_some_and(|chunk| holds(&chunk.points))
            || self
                .sealing
                .iter()
                .any(|sealed| sealed.series == series && holds(&sealed.points))
    }

    /// Copies the points of `series` with `from <= time < to` (unsorted across chunks).
    pub(crate) fn collect(&self, series: i64, from: i64, to: i64, out: &mut Vec<(i64, f64)>) {
        let in_range = |points: &Vec<(i64, f64)>, out: &mut Vec<(i64, f64)>| {
            let start = points.partition_point(|(time, _)| *time < from);
            let end = points.partition_point(|(time, _)| *time < to);
            out.extend_from_slice(&points[start..end.max(start)]);
        };
        if let Some(chunk) = self.open.get(&series) {
            in_range(&chunk.points, out);
        }
        for sealed in &self.sealing {
            if sealed.series == series {
                in_range(&sealed.points, out);
            }
        }
    }

    /// The newest point of `series` held here.
    pub(crate) fn newest(&self, series: i64) -> Option<(i64, f64)> {
        let open = self
            .open
            .get(&series)
            .and_then(|chunk| chunk.points.last().copied());
        let sealing = self
            .sealing
            .iter()
            .filter(|sealed| sealed.series == series)
            .filter_map(|sealed| sealed.points.last().copied());
        open.into_iter()
            .chain(sealing)
            .max_by_key(|(time, _)| *time)
    }

    /// The oldest time of `series` held in memory.
    pub(crate) fn oldest(&self, series: i64) -> Option<i64> {
        let open = self
            .open
            .get(&series)
            .and_then(|chunk| chunk.points.first().map(|(time, _)| *time));
        let sealing = self
            .sealing
            .iter()
            .filter(|sealed| sealed.series == series)
            .filter_map(|sealed| sealed.points.first().map(|(time, _)| *time));
        open.into_iter().chain(sealing).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_when_full_or_out_of_order() {
        let mut memtable = Memtable::default();
        for second in 0..5 {
            memtable.apply(1, second * 1_000_000, second as f64, 3);
        }
        assert_eq!(memtable.sealing.len(), 1);
        assert_eq!(memtable.sealing[0].points.len(), 3);
        assert_eq!(memtable.open[&1].points.len(), 2);
        // Out of order but inside the open chunk: inserted in place.
        memtable.apply(1, 3_500_000, 9.0, 10);
        let times = |memtable: &Memtable| {
            memtable.open[&1]
                .points
                .iter()
                .map(|p| p.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(times(&memtable), vec![3_000_000, 3_500_000, 4_000_000]);
        // Older than the open chunk but within its span: joins it at the front.
        assert_eq!(memtable.apply(1, 500_000, 7.0, 10), None);
        assert_eq!(
            times(&memtable),
            vec![500_000, 3_000_000, 3_500_000, 4_000_000]
        );
        // Too far back for the span: the open chunk is sealed, a new one starts.
        assert_eq!(
            memtable.apply(1, 4_000_000 - MAX_SPAN_MICROS - 1, 7.0, 10),
            Some(4_000_000)
        );
        assert_eq!(memtable.sealing.len(), 2);
        assert!(memtable.contains(1, 3_500_000));
        assert!(memtable.contains(1, 500_000));
        assert!(memtable.contains(1, 4_000_000 - MAX_SPAN_MICROS - 1));
        assert!(!memtable.contains(1, 600_000));
        assert_eq!(memtable.newest(1), Some((4_000_000, 4.0)));
        let mut collected = Vec::new();
        memtable.collect(1, 0, 3_000_000, &mut collected);
        collected.sort_by_key(|p| p.0);
        assert_eq!(
            collected.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![0, 500_000, 1_000_000, 2_000_000]
        );
    }

    #[test]
    fn span_is_bounded() {
        let mut memtable = Memtable::default();
        memtable.apply(1, 0, 1.0, 100);
        memtable.apply(1, MAX_SPAN_MICROS, 1.0, 100);
        assert!(memtable.sealing.is_empty());
        memtable.apply(1, MAX_SPAN_MICROS + 1, 1.0, 100);
        assert_eq!(memtable.sealing.len(), 1);
        memtable.apply(2, 10, 1.0, 100);
        memtable.apply(2, 10 - MAX_SPAN_MICROS - 1, 1.0, 100);
        assert_eq!(
            memtable.sealing.len(),
            2,
            "a point too far before the start seals too"
        );
    }
}
