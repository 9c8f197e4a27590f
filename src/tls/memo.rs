//! A bounded memory of results by SHA-256 fingerprint, shared by the handshake's caches
//! (parsed leaf certificates, verified chains). Written on misses only, so a lock around a
//! map fits better than a snapshot; at the cap it starts over rather than tracking age.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

pub type Fingerprint = [u8; 32];

pub struct FingerprintMemo<V> {
    entries: Mutex<HashMap<Fingerprint, V>>,
    cap: usize,
}

impl<V: Clone> FingerprintMemo<V> {
    pub fn new(cap: usize) -> Self {
        FingerprintMemo {
            entries: Mutex::new(HashMap::new()),
            cap,
        }
    }

    pub fn get(&self, key: &Fingerprint) -> Option<V> {
        self.lock().get(key).cloned()
    }

    pub fn remember(&self, key: Fingerprint, value: V) {
        let mut entries = self.lock();
        if entries.len() >= self.cap {
            entries.clear();
        }
        entries.insert(key, value);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Fingerprint, V>> {
        // a panic elsewhere cannot leave a map half-written; keep serving it
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}
