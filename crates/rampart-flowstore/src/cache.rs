//! A bytes-bounded LRU of decrypted segment files and decoded rollup parts,
//! so repeated dashboard queries neither re-read, re-decrypt nor re-decode.
//!
//! Entries are keyed by the fingerprint of the data key that decrypted them
//! as well as the blob key: a caller with another key (a wrong one, or after
//! the tenant's key was replaced) never gets plaintext it could not have
//! decrypted itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::rollup::RollupPart;

/// Which form of a file an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Form {
    /// The decrypted Parquet file.
    Plain,
    /// One decoded part of a rollup file.
    Part(u8),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    pub key_fp: [u8; 16],
    pub blob_key: Arc<str>,
    pub form: Form,
}

#[derive(Clone)]
pub(crate) enum Cached {
    Plain(Bytes),
    Part(Arc<RollupPart>),
}

impl Cached {
    fn size(&self) -> usize {
        match self {
            Cached::Plain(b) => b.len() + 64,
            Cached::Part(p) => p.approx_bytes(),
        }
    }
}

struct Entry {
    value: Cached,
    size: usize,
    tick: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<CacheKey, Entry>,
    /// tick → key, oldest first.
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
    used: usize,
}

pub(crate) struct Cache {
    cap: usize,
    inner: Mutex<Inner>,
}

impl Cache {
    pub fn new(cap: usize) -> Self {
        Cache {
            cap,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data: every
        // mutation below completes before the next can observe it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, k: &CacheKey) -> Option<Cached> {
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        let e = g.map.get_mut(k)?;
        let old = std::mem::replace(&mut e.tick, tick);
        let v = e.value.clone();
        g.order.remove(&old);
        g.order.insert(tick, k.clone());
        Some(v)
    }

    pub fn put(&self, k: CacheKey, value: Cached) {
        let size = value.size();
        if size > self.cap / 4 {
            // One huge file would evict everything for one use.
            return;
        }
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        if let Some(old) = g.map.remove(&k) {
            g.order.remove(&old.tick);
            g.used -= old.size;
        }
        while g.used + size > self.cap {
            let Some((_, oldest)) = g.order.pop_first() else {
                break;
            };
            if let Some(e) = g.map.remove(&oldest) {
                g.used -= e.size;
            }
        }
        g.used += size;
        g.order.insert(tick, k.clone());
        g.map.insert(k, Entry { value, size, tick });
    }

    /// Drops every form of `blob_key` (after compaction or retention removed
    /// the file).
    pub fn evict_blob(&self, blob_key: &str) {
        let mut g = self.lock();
        let gone: Vec<CacheKey> = g
            .map
            .keys()
            .filter(|k| &*k.blob_key == blob_key)
            .cloned()
            .collect();
        for k in gone {
            if let Some(e) = g.map.remove(&k) {
                g.order.remove(&e.tick);
                g.used -= e.size;
            }
        }
    }

    /// Drops everything decrypted with the key of this fingerprint (when a
    /// tenant's key is destroyed or rotated).
    pub fn evict_key(&self, key_fp: &[u8; 16]) {
        let mut g = self.lock();
        let gone: Vec<CacheKey> = g
            .map
            .keys()
            .filter(|k| &k.key_fp == key_fp)
            .cloned()
            .collect();
        for k in gone {
            if let Some(e) = g.map.remove(&k) {
                g.order.remove(&e.tick);
                g.used -= e.size;
            }
        }
    }

    #[cfg(test)]
    fn used(&self) -> usize {
        self.lock().used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey {
            key_fp: [1; 16],
            blob_key: format!("b{n}").into(),
            form: Form::Plain,
        }
    }

    #[test]
    fn evicts_least_recently_used_within_the_byte_bound() {
        let c = Cache::new(4 * 200);
        for n in 0..3 {
            c.put(key(n), Cached::Plain(Bytes::from(vec![0u8; 136])));
        }
        assert!(c.get(&key(0)).is_some());
        // b1 is now the least recently used.
        c.put(key(3), Cached::Plain(Bytes::from(vec![0u8; 136])));
        c.put(key(4), Cached::Plain(Bytes::from(vec![0u8; 136])));
        assert!(c.get(&key(1)).is_none());
        assert!(c.get(&key(0)).is_some());
        assert!(c.get(&key(4)).is_some());
        assert!(c.used() <= 800);
        c.evict_blob("b0");
        assert!(c.get(&key(0)).is_none());
        c.evict_key(&[1; 16]);
        assert_eq!(c.used(), 0);
        // Too large for the bound: not cached at all.
        c.put(key(9), Cached::Plain(Bytes::from(vec![0u8; 300])));
        assert!(c.get(&key(9)).is_none());
    }

    #[test]
    fn another_key_fingerprint_misses() {
        let c = Cache::new(1 << 20);
        c.put(key(1), Cached::Plain(Bytes::from_static(b"x")));
        let mut other = key(1);
        other.key_fp = [2; 16];
        assert!(c.get(&other).is_none());
    }
}
