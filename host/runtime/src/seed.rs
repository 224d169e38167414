//! Randomness a plugin draws, reseeded before every call from what the call is about.
//!
//! A worker's instance serves many aggregates, one after another. With one generator per
//! instance, what an aggregate drew would depend on every call the instance served before
//! (other aggregates, other commands), so no replay could reproduce it. Reseeding per call
//! from the aggregate and its place in history (see [`call_seed`]) makes a draw depend only
//! on that. What it cannot reach: a guest that caches randomness itself (Rust std's
//! `HashMap` keys, drawn once per instance) — for those, the worker can give every aggregate
//! an instance of its own (`instance_per_aggregate`).

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use rand::rngs::StdRng;
use rand::{SeedableRng, TryRng};

/// The seed of every instance's random generators: randomness is reproducible by design.
pub(crate) const RANDOM_SEED: u64 = 0x6573_686f_7374_2131; // "eshost!1"

/// A generator the host reseeds between calls while WASI holds a clone of it.
#[derive(Clone)]
pub(crate) struct CallRng {
    inner: Arc<Mutex<StdRng>>,
    /// Mixed into every seed, so that the secure and insecure generators differ.
    salt: u64,
}

impl CallRng {
    pub(crate) fn new(salt: u64) -> CallRng {
        CallRng {
            inner: Arc::new(Mutex::new(StdRng::seed_from_u64(RANDOM_SEED ^ salt))),
            salt,
        }
    }

    /// Starts the sequence a call with `seed` draws from.
    pub(crate) fn reseed(&self, seed: u64) {
        let fresh = StdRng::seed_from_u64(RANDOM_SEED ^ self.salt ^ seed);
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    fn with<R>(&self, draw: impl FnOnce(&mut StdRng) -> R) -> R {
        draw(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl TryRng for CallRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.with(|rng| rng.try_next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.with(|rng| rng.try_next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.with(|rng| rng.try_fill_bytes(dst))
    }
}

/// The seed of a call, from what identifies it: for an aggregate its id and the stream
/// version it starts at (or the command), for a projection the position of its batch. FNV-1a,
/// with a separator so that ("ab", "c") and ("a", "bc") differ.
pub(crate) fn call_seed(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn a_call_draws_what_its_seed_says_whatever_ran_before() {
        let mut rng = CallRng::new(1);
        rng.reseed(call_seed(&[b"account-1", &7u64.to_le_bytes()]));
        let first = rng.next_u64();
        // Another aggregate's call in between, drawing more.
        rng.reseed(call_seed(&[b"account-2", &3u64.to_le_bytes()]));
        let other = rng.next_u64();
        let _ = rng.next_u64();
        rng.reseed(call_seed(&[b"account-1", &7u64.to_le_bytes()]));
        assert_eq!(rng.next_u64(), first);
        assert_ne!(other, first);
        // The salt separates the generators of one instance.
        let mut salted = CallRng::new(2);
        salted.reseed(call_seed(&[b"account-1", &7u64.to_le_bytes()]));
        assert_ne!(salted.next_u64(), first);
    }

    #[test]
    fn parts_are_separated() {
        assert_ne!(call_seed(&[b"ab", b"c"]), call_seed(&[b"a", b"bc"]));
    }
}
