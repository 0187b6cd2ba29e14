//! The runtime's one way to take a mutex.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, going on if a thread panicked while holding it. Every critical section in the
/// runtime is a short insert, replace or take whose state is consistent whichever statement
/// a panic stops at, and the alternative, panicking in turn, would spread one bug to every
/// thread that touches the lock (a shard, a decode, the caller's API thread).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
