//! A pool of precomputed obfuscators filled by a background thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::keys::{Obfuscator, PublicKey};

/// Obfuscators `h_N^α` computed ahead of time by one background thread, so that an
/// encryption on the critical path is one multiplication ([`PublicKey::encrypt_with_obfuscator`]).
///
/// The thread keeps up to `capacity` obfuscators ready and stops when the pool is dropped.
/// [`ObfuscatorPool::take`] never blocks: when the pool is empty it computes one inline.
/// Same security assumption as [`PublicKey::obfuscator`].
pub struct ObfuscatorPool {
    key: PublicKey,
    rx: Receiver<Obfuscator>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
    inline_rng: ChaCha20Rng,
}

impl std::fmt::Debug for ObfuscatorPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObfuscatorPool")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ObfuscatorPool {
    /// Starts the background thread for `key` with room for `capacity` obfuscators. The
    /// thread's randomness is a ChaCha20 stream seeded from the operating system.
    pub fn new(key: &PublicKey, capacity: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel(capacity.max(1));
        let worker_key = key.clone();
        let worker_stop = Arc::clone(&stop);
        let worker = std::thread::Builder::new()
            .name("paillier-obfuscators".into())
            .spawn(move || {
                let mut rng = ChaCha20Rng::from_entropy();
                worker_key.precompute();
                while !worker_stop.load(Ordering::Relaxed) {
                    if tx.send(worker_key.obfuscator(&mut rng)).is_err() {
                        break;
                    }
                }
            })
            .ok();
        Self {
            key: key.clone(),
            rx,
            stop,
            worker,
            inline_rng: ChaCha20Rng::from_entropy(),
        }
    }

    /// The next obfuscator: a precomputed one if ready, else one computed now.
    pub fn take(&mut self) -> Obfuscator {
        match self.rx.try_recv() {
            Ok(o) => o,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                self.key.obfuscator(&mut self.inline_rng)
            }
        }
    }
}

impl Drop for ObfuscatorPool {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock a sender waiting on a full channel.
        while self.rx.try_recv().is_ok() {}
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
