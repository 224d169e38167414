//! The one wasmtime [`Engine`] of a runtime, and the ticker thread that drives its epoch.
//!
//! Every call into a plugin runs under an epoch deadline: the ticker bumps the engine's epoch
//! every `RuntimeConfig::epoch_tick`, and a store traps once the epoch passes the deadline
//! set before the call. This costs a few percent of guest speed, far less than fuel metering.

use std::thread;
use std::time::Duration;

use wasmtime::{Config, Engine, EngineWeak};

use super::error::RuntimeError;

/// Builds the engine every plugin of a runtime is compiled for and runs in; a plugin call may
/// use at most `max_wasm_stack` bytes of native stack.
pub(crate) fn new_engine(max_wasm_stack: usize) -> Result<Engine, RuntimeError> {
    let mut wasmtime = Config::new();
    wasmtime
        .epoch_interruption(true)
        .max_wasm_stack(max_wasm_stack)
        .wasm_component_model(true);
    Engine::new(&wasmtime).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

/// Starts the thread that increments `engine`'s epoch every `tick`. It holds only a weak
/// reference, and stops once the last clone of the engine is dropped.
pub(crate) fn start_ticker(engine: &Engine, tick: Duration) -> Result<(), RuntimeError> {
    let weak: EngineWeak = engine.weak();
    thread::Builder::new()
        .name("eshost-epoch".into())
        .spawn(move || {
            loop {
                thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(drop)
        .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch ticker thread: {e}")))
}

/// The number of epoch ticks to allow for a call limited to `limit`: never less than the
/// limit, at most one tick more (the call may start anywhere inside a tick).
pub(crate) fn deadline_ticks(limit: Duration, tick: Duration) -> u64 {
    let tick_ns = tick.as_nanos().max(1);
    let ticks = limit.as_nanos().div_ceil(tick_ns);
    u64::try_from(ticks)
        .unwrap_or(u64::MAX / 2)
        .saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_never_shorter_than_the_limit() {
        let tick = Duration::from_millis(10);
        assert_eq!(deadline_ticks(Duration::from_millis(100), tick), 11);
        assert_eq!(deadline_ticks(Duration::from_millis(101), tick), 12);
        assert_eq!(deadline_ticks(Duration::ZERO, tick), 1);
    }
}
