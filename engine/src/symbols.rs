//! A symbol table for label names and values (as Prometheus' TSDB index keeps them):
//! each distinct string is stored once, in an arena of fixed-size chunks, and a series'
//! label set is stored as the sequence of its strings' symbol ids (LEB128 varints,
//! `name value name value …`, in the order of the names).
//!
//! Symbols are reference-counted: a series holds one reference per string of its set,
//! and a symbol whose last reference goes is freed (its id reused, its bytes counted as
//! garbage until the arena is compacted). The ids of live symbols never change, so two
//! sets are equal exactly when their id sequences are.

use hashbrown::HashTable;

use crate::labels;
use crate::paged::Paged;

const CHUNK_BITS: u32 = 16;
/// Bytes per arena chunk; a longer string gets a chunk of its own.
const CHUNK: usize = 1 << CHUNK_BITS;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Chunk index << 16 | offset in the chunk; the string is stored there as
    /// `varint(len) bytes`.
    loc: u32,
    /// References; 0 when the slot is free.
    refs: u32,
}

/// Byte strings stored as `varint(len) bytes` in chunks of [`CHUNK`] bytes (a longer
/// one gets a chunk of its own), found by a `u32` location; freed ones are garbage
/// until the owner compacts the arena.
#[derive(Debug, Clone, Default)]
pub(crate) struct Arena {
    chunks: Vec<Vec<u8>>,
    /// Bytes of freed strings.
    garbage: usize,
    /// Bytes stored (live and garbage).
    used: usize,
}

impl Arena {
    /// The string at `loc`.
    #[inline]
    pub(crate) fn get(&self, loc: u32) -> &[u8] {
        bytes_in(&self.chunks, loc)
    }

    /// Stores `s`; returns its location.
    pub(crate) fn store(&mut self, s: &[u8]) -> u32 {
        self.used += varint_len(s.len() as u32) + s.len();
        store_in(&mut self.chunks, s)
    }

    /// Counts the string at `loc` as garbage (the caller no longer refers to it).
    pub(crate) fn free(&mut self, loc: u32) {
        let n = self.get(loc).len();
        self.garbage += varint_len(n as u32) + n;
    }

    /// Whether enough is garbage to compact.
    pub(crate) fn wants_compaction(&self) -> bool {
        self.garbage > CHUNK && self.garbage * 2 > self.used
    }

    /// Rewrites the arena with the strings at `locs` only (every live location),
    /// updating them.
    pub(crate) fn compact<'a>(&mut self, locs: impl Iterator<Item = &'a mut u32>) {
        let mut chunks = Vec::new();
        for loc in locs {
            *loc = store_in(&mut chunks, self.get(*loc));
        }
        self.chunks = chunks;
        self.used -= self.garbage;
        self.garbage = 0;
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.chunks.iter().map(Vec::capacity).sum::<usize>()
    }
}

/// Interned strings with reference counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Symbols {
    arena: Arena,
    slots: Paged<Slot>,
    free: Vec<u32>,
    index: HashTable<u32>,
}

fn hash(s: &[u8]) -> u64 {
    labels::fast_hash(s)
}

fn put_varint(out: &mut Vec<u8>, mut n: u32) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads a varint from the front of `buf`.
fn take_varint(buf: &mut &[u8]) -> Option<u32> {
    let mut n = 0u32;
    let mut shift = 0;
    loop {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        if shift > 28 {
            return None;
        }
        n |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(n);
        }
        shift += 7;
    }
}

/// The ids of a symbol-encoded set, in order.
pub(crate) fn ids(mut buf: &[u8]) -> impl Iterator<Item = u32> + '_ {
    std::iter::from_fn(move || take_varint(&mut buf))
}

impl Symbols {
    fn bytes_at(&self, loc: u32) -> &[u8] {
        self.arena.get(loc)
    }

    /// The string of live symbol `id`.
    pub(crate) fn get(&self, id: u32) -> &str {
        let bytes = self.bytes_at(self.slots[id as usize].loc);
        // Only ever stored from &str.
        std::str::from_utf8(bytes).unwrap_or("")
    }

    /// The id of `s`, if interned.
    pub(crate) fn lookup(&self, s: &str) -> Option<u32> {
        self.index
            .find(hash(s.as_bytes()), |&id| {
                self.bytes_at(self.slots[id as usize].loc) == s.as_bytes()
            })
            .copied()
    }

    /// The id of `s` with one more reference, interning it if new.
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        if let Some(id) = self.lookup(s) {
            self.slots[id as usize].refs += 1;
            return id;
        }
        let loc = self.arena.store(s.as_bytes());
        let slot = Slot { loc, refs: 1 };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let (arena, slots) = (&self.arena, &self.slots);
        self.index.insert_unique(hash(s.as_bytes()), id, |&i| {
            hash(arena.get(slots[i as usize].loc))
        });
        id
    }

    /// Adds a reference to live symbol `id`.
    pub(crate) fn acquire(&mut self, id: u32) {
        self.slots[id as usize].refs += 1;
    }

    /// Drops a reference to live symbol `id`, freeing it with the last.
    pub(crate) fn release(&mut self, id: u32) {
        let slot = &mut self.slots[id as usize];
        slot.refs -= 1;
        if slot.refs > 0 {
            return;
        }
        let loc = slot.loc;
        let h = hash(self.bytes_at(loc));
        self.arena.free(loc);
        if let Ok(e) = self.index.find_entry(h, |&i| i == id) {
            e.remove();
        }
        self.free.push(id);
        if self.arena.wants_compaction() {
            // Ids are kept; only the live strings' locations change.
            self.arena.compact(
                self.slots
                    .iter_mut()
                    .filter(|s| s.refs > 0)
                    .map(|s| &mut s.loc),
            );
        }
    }

    /// Number of live symbols.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Encodes a string-encoded label set (see [`labels`]) as symbol ids into `out`
    /// (cleared first), taking a reference to each. None if `buf` is malformed.
    pub(crate) fn encode_acquire(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Option<()> {
        out.clear();
        let mut rest = buf;
        let mut taken = Vec::new();
        while !rest.is_empty() {
            let mut it = labels::pairs(rest);
            let Some((k, v)) = it.next() else {
                for id in taken {
                    self.release(id);
                }
                return None;
            };
            rest = it.rest();
            for s in [k, v] {
                let id = self.intern(s);
                taken.push(id);
                put_varint(out, id);
            }
        }
        Some(())
    }

    /// Encodes a string-encoded set as symbol ids without interning anything: false if
    /// one of its strings is not a symbol (so no series has this set).
    pub(crate) fn encode_lookup(&self, buf: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        for (k, v) in labels::pairs(buf) {
            for s in [k, v] {
                match self.lookup(s) {
                    Some(id) => put_varint(out, id),
                    None => return false,
                }
            }
        }
        true
    }

    /// Takes one more reference to every symbol of an encoded set.
    pub(crate) fn acquire_set(&mut self, set: &[u8]) {
        for id in ids(set) {
            self.acquire(id);
        }
    }

    /// Drops the references of an encoded set.
    pub(crate) fn release_set(&mut self, set: &[u8]) {
        for id in ids(set) {
            self.release(id);
        }
    }

    /// The `(name, value)` pairs of a symbol-encoded set.
    pub(crate) fn pairs<'a>(&'a self, set: &'a [u8]) -> impl Iterator<Item = (&'a str, &'a str)> {
        let mut it = ids(set);
        std::iter::from_fn(move || {
            let k = it.next()?;
            let v = it.next()?;
            Some((self.get(k), self.get(v)))
        })
    }

    /// Writes the string encoding of a symbol-encoded set to `out` (cleared first),
    /// without `__name__` when `skip_name`.
    pub(crate) fn decode(&self, set: &[u8], skip_name: bool, out: &mut Vec<u8>) {
        labels::encode_sorted(
            self.pairs(set)
                .filter(|(k, _)| !(skip_name && *k == labels::METRIC_NAME)),
            out,
        );
    }

    /// [`Symbols::decode`] of a whole set: the same bytes, copied string by string
    /// without turning them into `&str` (the snapshot's path, once per series).
    pub(crate) fn decode_all(&self, set: &[u8], out: &mut Vec<u8>) {
        out.clear();
        for id in ids(set) {
            labels::put_bytes(out, self.bytes_at(self.slots[id as usize].loc));
        }
    }

    /// Heap bytes held (arena, slots, free list, index).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.arena.heap_bytes()
            + self.slots.heap_bytes()
            + self.free.capacity() * 4
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
    }
}

/// Stores `s` in `chunks` and returns its location.
fn store_in(chunks: &mut Vec<Vec<u8>>, s: &[u8]) -> u32 {
    let mut head = Vec::with_capacity(5);
    put_varint(&mut head, s.len() as u32);
    let need = head.len() + s.len();
    let fits = chunks
        .last()
        .is_some_and(|c| c.capacity() >= CHUNK && c.len() + need <= CHUNK);
    if !fits {
        chunks.push(Vec::with_capacity(need.max(CHUNK)));
    }
    let idx = chunks.len() - 1;
    let chunk = &mut chunks[idx];
    let at = chunk.len();
    chunk.extend_from_slice(&head);
    chunk.extend_from_slice(s);
    if need > CHUNK {
        // A chunk of its own: no other string goes there.
        chunk.shrink_to_fit();
    }
    (idx as u32) << CHUNK_BITS | at as u32
}

fn bytes_in(chunks: &[Vec<u8>], loc: u32) -> &[u8] {
    let chunk = &chunks[(loc >> CHUNK_BITS) as usize];
    let mut at = &chunk[(loc as usize) & (CHUNK - 1)..];
    let len = take_varint(&mut at).unwrap_or(0) as usize;
    &at[..len]
}

fn varint_len(n: u32) -> usize {
    (32 - (n | 1).leading_zeros()).div_ceil(7) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_refcounts_and_compaction() {
        let mut s = Symbols::default();
        let big = "y".repeat(CHUNK + 10);
        let mut out = Vec::new();
        let mut sets = Vec::new();
        for i in 0..20_000 {
            let l: labels::Labels = [
                ("__name__".to_string(), "m".to_string()),
                ("pod".to_string(), format!("pod-{i}-{}", "x".repeat(i % 50))),
                (
                    "z".to_string(),
                    if i == 7 { big.clone() } else { "v".into() },
                ),
            ]
            .into_iter()
            .collect();
            let enc = labels::encode(&l);
            s.encode_acquire(&enc, &mut out).unwrap();
            let mut back = Vec::new();
            s.decode(&out, false, &mut back);
            assert_eq!(back, &*enc);
            s.decode_all(&out, &mut back);
            assert_eq!(back, &*enc);
            assert!(s.encode_lookup(&enc, &mut back));
            assert_eq!(back, out);
            sets.push((enc, out.clone()));
        }
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        // Free most of them: the arena is compacted, the rest still decode.
        for (_, set) in sets.drain(..15_000) {
            s.release_set(&set);
        }
        assert!(s.arena.garbage * 2 <= s.arena.used.max(2 * CHUNK));
        for (enc, set) in &sets {
            let mut back = Vec::new();
            s.decode(set, false, &mut back);
            assert_eq!(&back, &**enc);
            s.decode_all(set, &mut back);
            assert_eq!(&back, &**enc);
        }
        for (_, set) in sets.drain(..) {
            s.release_set(&set);
        }
        assert_eq!(s.len(), 0);
        assert!(!s.encode_lookup(&labels::encode(&Default::default()), &mut out) || out.is_empty());
    }

    #[test]
    fn malformed_sets_take_no_reference() {
        let mut s = Symbols::default();
        let mut out = Vec::new();
        assert!(s.encode_acquire(&[3, b'a', b'b'], &mut out).is_none());
        assert_eq!(s.len(), 0);
    }
}
