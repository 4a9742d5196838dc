//! Snapshot and restore of the whole evaluator state (series, windows, detector state,
//! alert lifecycles, watermark, buffered samples) as versioned bytes.
//!
//! A snapshot restores into an evaluator for any rule set: rules whose name and
//! definition are unchanged get their state back; new or changed rules start empty.
//! That is also how a hot reload keeps the state of untouched rules.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::buffer::Buffer;
use super::state::{KeyLabels, RuleState};
use super::{ceil_to, Evaluator, EvaluatorConfig, Stats, MAX_TS, SWEEP_MS, UNSTARTED};
use crate::rule::{RuleKind, RuleSet};
use crate::series::{Route, Routes, Sample, SnapEntry, REFUSED};

const MAGIC: &[u8; 4] = b"VGL\0";
/// Bumped whenever the snapshot layout changes.
pub const SNAPSHOT_VERSION: u32 = 5;

/// Why a snapshot could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not a Vigil snapshot.
    #[error("not a Vigil snapshot (bad magic bytes)")]
    BadMagic,
    /// Written by an incompatible version.
    #[error("snapshot version {found} is not supported (this build reads version {expected}); start without it")]
    Version {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// Truncated or corrupt.
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
}

/// The snapshot as read back. [`SnapRef`] writes the same layout from borrows.
#[derive(Deserialize)]
struct Snap {
    /// Kept for the layout; the config passed to `restore` wins.
    _config: EvaluatorConfig,
    watermark: i64,
    max_seen: i64,
    next_sweep: i64,
    pending: Vec<Sample>,
    stats: Stats,
    entries: Vec<SnapEntry>,
    free: Vec<u32>,
    rules: Vec<(String, u64, RuleState)>,
}

/// [`Snap`]'s layout, borrowing the evaluator's state instead of copying it (postcard
/// encodes a slice as a `Vec`, `&str` as a `String`, `&T` as `T`), so serialising
/// makes no copy of the state first.
#[derive(Serialize)]
struct SnapRef<'a> {
    config: &'a EvaluatorConfig,
    watermark: i64,
    max_seen: i64,
    next_sweep: i64,
    pending: &'a [Sample],
    stats: &'a Stats,
    entries: Vec<SnapEntry>,
    free: &'a [u32],
    rules: Vec<(&'a str, u64, &'a RuleState)>,
}

impl Evaluator {
    /// Serialises the whole state. Undrained events are not part of it.
    pub fn snapshot(&self) -> Vec<u8> {
        let snap = SnapRef {
            config: &self.config,
            watermark: self.watermark,
            max_seen: self.max_seen,
            next_sweep: self.next_sweep,
            pending: self.pending.live(),
            stats: &self.stats,
            entries: self.series.snapshot_entries(),
            free: &self.series.free,
            rules: self
                .rules
                .rules
                .iter()
                .zip(&self.states)
                .map(|(r, s)| (&*r.name, r.definition, s))
                .collect(),
        };
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        match postcard::to_extend(&snap, out) {
            Ok(v) => v,
            Err(e) => unreachable!("serialising plain data to a Vec cannot fail: {e}"),
        }
    }

    /// Restores a snapshot into an evaluator for `rules` (see the module docs). The
    /// lateness of `config` wins over the snapshot's.
    pub fn restore(
        rules: Arc<RuleSet>,
        config: EvaluatorConfig,
        bytes: &[u8],
    ) -> Result<Self, SnapshotError> {
        let body = bytes.strip_prefix(MAGIC).ok_or(SnapshotError::BadMagic)?;
        let (ver, body) = body
            .split_first_chunk::<4>()
            .ok_or_else(|| SnapshotError::Corrupt("truncated header".into()))?;
        let found = u32::from_le_bytes(*ver);
        if found != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version {
                found,
                expected: SNAPSHOT_VERSION,
            });
        }
        let snap: Snap =
            postcard::from_bytes(body).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        let mut ev = Evaluator::new(Arc::clone(&rules), config);
        ev.watermark = snap.watermark;
        ev.max_seen = snap.max_seen;
        ev.next_sweep = snap.next_sweep;
        ev.pending = Buffer::from_vec(snap.pending);
        ev.stats = snap.stats;
        let n = snap.entries.len();
        let free_ok = {
            let mut seen = vec![false; n];
            snap.free.iter().all(|&id| {
                let ok = snap
                    .entries
                    .get(id as usize)
                    .is_some_and(|e| !e.live && !seen[id as usize]);
                if ok {
                    seen[id as usize] = true;
                }
                ok
            })
        };
        if !free_ok {
            return Err(SnapshotError::Corrupt("bad free series list".into()));
        }
        ev.series
            .restore(snap.entries, snap.free)
            .ok_or_else(|| SnapshotError::Corrupt("bad series labels".into()))?;
        let mut carried = vec![false; rules.rules.len()];
        for (name, definition, mut st) in snap.rules {
            if let Some(i) = rules
                .rules
                .iter()
                .position(|r| *r.name == *name && r.definition == definition)
            {
                st.set_mode(&rules.rules[i]);
                st.keys.reindex(&ev.series);
                ev.states[i] = st;
                carried[i] = true;
            }
        }
        // Check indices before trusting them: a corrupt snapshot must not panic later.
        for (st, rule) in ev.states.iter().zip(&rules.rules) {
            let per = rule.detector.as_ref().map_or(0, |d| d.window_slots());
            if !st.windows.fits(per, st.keys.slots()) {
                return Err(SnapshotError::Corrupt(
                    "detector windows do not fit their rule".into(),
                ));
            }
            for (_, key) in st.keys.iter() {
                if rule
                    .detector
                    .as_ref()
                    .is_some_and(|d| !d.accepts(&key.detector))
                {
                    return Err(SnapshotError::Corrupt(
                        "a detector state does not fit its rule".into(),
                    ));
                }
                if let KeyLabels::Series(id) = key.labels {
                    if !ev.series.entries.get(id as usize).is_some_and(|e| e.live) {
                        return Err(SnapshotError::Corrupt(
                            "a state refers to a missing series".into(),
                        ));
                    }
                }
            }
            if st.one_to_one && st.inputs.live() > 0 {
                return Err(SnapshotError::Corrupt(
                    "input slots in a one-to-one rule".into(),
                ));
            }
            for (_, input) in st.inputs.iter() {
                let series_ok = ev
                    .series
                    .entries
                    .get(input.series as usize)
                    .is_some_and(|e| e.live);
                let key_ok = st.keys.contains(input.key());
                if !series_ok || !key_ok {
                    return Err(SnapshotError::Corrupt(
                        "input refers to a missing series or state".into(),
                    ));
                }
            }
        }
        let live = |id: u32| ev.series.entries.get(id as usize).is_some_and(|e| e.live);
        if ev.pending.live().iter().any(|s| !live(s.series)) {
            return Err(SnapshotError::Corrupt(
                "a buffered sample refers to a missing series".into(),
            ));
        }
        let in_range = |t: i64, step: i64| {
            t == UNSTARTED
                || (-step..=MAX_TS.saturating_add(step).saturating_add(SWEEP_MS)).contains(&t)
        };
        if !in_range(ev.watermark, 1)
            || !in_range(ev.max_seen, 1)
            || !in_range(ev.next_sweep, SWEEP_MS)
            || ev
                .states
                .iter()
                .zip(&rules.rules)
                .any(|(s, r)| !in_range(s.next_step, r.interval_ms))
        {
            return Err(SnapshotError::Corrupt("a time is out of range".into()));
        }
        if ev.next_sweep != UNSTARTED
            && ev.states.iter().zip(&rules.rules).any(|(s, r)| {
                s.next_step != UNSTARTED
                    && s.next_step < ev.watermark.saturating_sub(r.interval_ms + SWEEP_MS)
            })
        {
            return Err(SnapshotError::Corrupt(
                "a step time lies behind the watermark".into(),
            ));
        }
        // Series interned but not yet seen by a sweep: as if interned just now.
        ev.series.fresh = ev
            .series
            .entries
            .iter()
            .any(|e| e.live && e.last_ts() == UNSTARTED && e.idle_since() == UNSTARTED);
        let sweep_before_routing = ev.next_sweep;
        // Routes: carried rules keep their inputs; other rules route live series afresh.
        let mut routes: Vec<Vec<Route>> = vec![Vec::new(); ev.series.entries.len()];
        for (i, st) in ev.states.iter().enumerate() {
            for (slot, input) in st.inputs.iter() {
                routes[input.series as usize].push(Route {
                    rule: i as u32,
                    input: slot,
                });
            }
            if st.one_to_one {
                // The route of a series leads to its state.
                for (k, key) in st.keys.iter() {
                    if let KeyLabels::Series(id) = key.labels {
                        routes[id as usize].push(Route {
                            rule: i as u32,
                            input: k,
                        });
                    }
                }
            }
        }
        for (id, series_routes) in routes.iter_mut().enumerate() {
            if !ev.series.entries[id].live || !ev.series.entries[id].routed {
                continue;
            }
            let mut labels = Vec::new();
            ev.series.write_labels(id as u32, false, &mut labels);
            for (i, rule) in rules.rules.iter().enumerate() {
                let Some(sel) = &rule.selector else { continue };
                let have = series_routes.iter().any(|r| r.rule as usize == i);
                if !have && sel.matches(&labels) {
                    let born = ev.series.entries[id].last_ts();
                    let input =
                        if carried[i] && ev.states[i].keys.live() >= rule.max_series as usize {
                            REFUSED
                        } else {
                            ev.add_input(i, id as u32, born)
                        };
                    series_routes.push(Route {
                        rule: i as u32,
                        input,
                    });
                }
            }
            series_routes.sort_by_key(|r| r.rule);
            ev.series.entries[id].routes = Routes::from_vec(std::mem::take(series_routes));
        }
        if ev.next_sweep < sweep_before_routing {
            // New states of absent rules brought the sweep back, at most to the first
            // one not run yet.
            ev.next_sweep = ev.next_sweep.max(ceil_to(ev.watermark, SWEEP_MS));
        }
        if ev.next_sweep != UNSTARTED {
            let w = ev.watermark;
            for (st, rule) in ev.states.iter_mut().zip(&rules.rules) {
                if rule.kind != RuleKind::Direct && st.next_step == UNSTARTED {
                    st.next_step = w.div_euclid(rule.interval_ms) * rule.interval_ms;
                }
            }
            ev.recompute_next_due();
        }
        Ok(ev)
    }
}
