//! The sandbox every plugin instance runs in: a WASI with no capabilities, a virtual clock,
//! seeded randomness, captured and bounded stdout/stderr, and per-call limits.
//!
//! - No preopened directories, no environment, no arguments, stdin closed; TCP, UDP and name
//!   lookup are denied. WASI is linked in full (languages such as Python import all of it),
//!   so a plugin that tries any of this gets an error value, not a missing import.
//! - The wall clock reads a fixed instant: the command's `issued-at` during `handle`, the Unix
//!   epoch otherwise. The monotonic clock never advances, and sleeping returns at once, so a
//!   plugin can neither observe nor wait for real time.
//! - Random bytes come from generators reseeded before every call from what the call is
//!   about (`seed`), so a draw never depends on what the instance ran before. The
//!   `insecure-seed` (which languages use for hash-map keys, once per instance) is a constant.
//! - stdout and stderr go to the host log (target `eshost::plugin`), at most
//!   [`Limits::log_bytes`] per call; the rest is dropped and counted.
//! - Each instance has a memory limit, each call a time limit (epoch deadline) and an output
//!   limit. The stack depth is bounded by the engine (`RuntimeConfig::max_wasm_stack`).
//! - The one host interface a guest may call, the projection's `read-model`, is served here
//!   (`HostState::read_model_get`, ...) for every WIT version: a version module only adapts
//!   its generated trait to these calls. A fault in them is a [`HostFault`]: it traps the
//!   guest and is reported as what it is, not as a plugin bug.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use std::{io, pin::Pin};

use bytes::Bytes;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use super::read_model::{ReadModel, ReadModelError};
use super::seed::{CallRng, RANDOM_SEED};

/// Limits applied to every plugin instance and call. The defaults are safe for production;
/// tighten them per plugin in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall time one call may take, including instantiation. Default 1 s.
    pub time: Duration,
    /// The most linear memory one instance may grow to, in bytes. Default 128 MiB.
    pub memory_bytes: usize,
    /// The most data one call may return (state JSON, a snapshot, new events, a query
    /// answer), in bytes. Default 16 MiB.
    pub output_bytes: usize,
    /// The most stdout + stderr one call may write to the host log, in bytes; the rest is
    /// dropped. Default 64 KiB.
    pub log_bytes: usize,
    /// The most entries one read-model `scan` may return, whatever limit the plugin asks for.
    /// Default 10,000.
    pub scan_entries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time: Duration::from_secs(1),
            memory_bytes: 128 * 1024 * 1024,
            output_bytes: 16 * 1024 * 1024,
            log_bytes: 64 * 1024,
            scan_entries: 10_000,
        }
    }
}

/// The data of one plugin instance's `Store`.
pub(crate) struct HostState {
    /// The plugin's name, for the log and for errors.
    pub(crate) plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    stdout: LogPipe,
    stderr: LogPipe,
    /// Milliseconds since the epoch that the wall clock reads.
    clock_ms: Arc<AtomicU64>,
    /// `wasi:random/random` and `wasi:random/insecure`, reseeded per call.
    secure_random: CallRng,
    insecure_random: CallRng,
    /// The read model lent to a projection for the current call.
    pub(crate) read_model: Option<Box<dyn ReadModel>>,
    /// Whether the current call may write to the read model.
    pub(crate) read_only: bool,
    /// A fault raised by a host function during the current call (it also traps the guest).
    pub(crate) fault: Option<HostFault>,
    scan_entries: u32,
    /// The output limit, which also bounds the read-model writes of one call.
    output_bytes: usize,
    /// Bytes of keys and values written to the read model during the current call.
    written_bytes: usize,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("plugin", &self.plugin)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl HostState {
    pub(crate) fn new(plugin: Arc<str>, limits: &Limits) -> HostState {
        let clock_ms = Arc::new(AtomicU64::new(0));
        let stdout = LogPipe::new(limits.log_bytes);
        let stderr = LogPipe::new(limits.log_bytes);
        let secure_random = CallRng::new(0);
        let insecure_random = CallRng::new(RANDOM_SEED.rotate_left(32));
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(FixedWallClock(clock_ms.clone()))
            .monotonic_clock(FrozenMonotonicClock)
            .secure_random(secure_random.clone())
            .insecure_random(insecure_random.clone())
            .insecure_random_seed(u128::from(RANDOM_SEED))
            .max_random_size(1024 * 1024)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        HostState {
            plugin,
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(limits.memory_bytes),
            stdout,
            stderr,
            clock_ms,
            secure_random,
            insecure_random,
            read_model: None,
            read_only: true,
            fault: None,
            scan_entries: limits.scan_entries,
            output_bytes: limits.output_bytes,
            written_bytes: 0,
        }
    }

    /// Resets the per-call state before a call; `now_ms` is what the wall clock will read,
    /// `seed` what the call's randomness starts from ([`call_seed`](crate::seed::call_seed)).
    pub(crate) fn begin_call(&mut self, now_ms: u64, seed: u64) {
        self.clock_ms.store(now_ms, Ordering::Relaxed);
        self.secure_random.reseed(seed);
        self.insecure_random.reseed(seed);
        self.limiter.denied = None;
        self.fault = None;
        self.written_bytes = 0;
    }

    /// Writes what the call printed to the host log. Returns the tail of stderr (where a
    /// panic message lands), for error messages.
    pub(crate) fn end_call(&mut self) -> String {
        self.stdout.drain_to_log(&self.plugin, "stdout");
        self.stderr.drain_to_log(&self.plugin, "stderr")
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A fault raised by the host while serving the guest's read-model calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostFault {
    #[error("read model: {0}")]
    ReadModel(ReadModelError),
    #[error("{op} during a query; queries are read-only")]
    WriteDuringQuery { op: &'static str },
    #[error("the read model is not available outside handle and query")]
    NoReadModel,
    #[error(
        "read-model writes of one call reached {bytes} bytes, over the output limit of {limit}"
    )]
    WritesTooLarge { bytes: usize, limit: usize },
}

/// The `read-model` import, whatever the WIT version that declares it.
impl HostState {
    /// The value under `key`.
    pub(crate) fn read_model_get(&mut self, key: &str) -> wasmtime::Result<Option<String>> {
        let result = match &self.read_model {
            Some(model) => model.get(key).map_err(HostFault::ReadModel),
            None => Err(HostFault::NoReadModel),
        };
        self.serve(result)
    }

    /// Stores `value` under `key`; refused during a query, and once the call's writes pass
    /// the output limit (each write is a copy the host holds until the batch commits).
    pub(crate) fn read_model_put(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        let bytes = self.written_bytes + key.len() + value.len();
        if bytes > self.output_bytes {
            let fault = HostFault::WritesTooLarge {
                bytes,
                limit: self.output_bytes,
            };
            return self.serve(Err(fault));
        }
        self.written_bytes = bytes;
        let result = self
            .writable("put")
            .and_then(|model| model.put(key, value).map_err(HostFault::ReadModel));
        self.serve(result)
    }

    /// Removes `key`; refused during a query.
    pub(crate) fn read_model_delete(&mut self, key: &str) -> wasmtime::Result<()> {
        let result = self
            .writable("delete")
            .and_then(|model| model.delete(key).map_err(HostFault::ReadModel));
        self.serve(result)
    }

    /// Up to `limit` entries under `prefix` after `start_after`, never more than the sandbox's
    /// `scan_entries`.
    pub(crate) fn read_model_scan(
        &mut self,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> wasmtime::Result<Vec<(String, String)>> {
        let limit = limit.min(self.scan_entries) as usize;
        let result = match &self.read_model {
            Some(model) => model
                .scan(prefix, start_after, limit)
                .map_err(HostFault::ReadModel),
            None => Err(HostFault::NoReadModel),
        };
        self.serve(result)
    }

    fn writable(&mut self, op: &'static str) -> Result<&mut Box<dyn ReadModel>, HostFault> {
        if self.read_only {
            return Err(HostFault::WriteDuringQuery { op });
        }
        self.read_model.as_mut().ok_or(HostFault::NoReadModel)
    }

    /// Passes a result to the guest, or records the fault and traps it.
    fn serve<T>(&mut self, result: Result<T, HostFault>) -> wasmtime::Result<T> {
        result.map_err(|fault| {
            let error = wasmtime::format_err!("{fault}");
            self.fault = Some(fault);
            error
        })
    }
}

/// Links the capability-less WASI into `linker`, with sleeping made instant.
pub(crate) fn link_wasi(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    // `subscribe-duration`/`subscribe-instant` would wait in real time on the host thread,
    // out of reach of the epoch deadline. With a frozen clock every deadline is already due.
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: wasmtime::StoreContextMut<'_, HostState>, (_,): (u64,)| {
            Ok((due_now(&mut store.data_mut().table)?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: wasmtime::StoreContextMut<'_, HostState>, (_,): (u64,)| {
            Ok((due_now(&mut store.data_mut().table)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The monotonic-clock interface as wasmtime-wasi registers it (guests importing an older
/// 0.2.x link to it by semver). A test sleeps in a guest to prove the shadowing holds.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// A pollable that is always ready.
struct Due;

#[wasmtime_wasi::async_trait]
impl Pollable for Due {
    async fn ready(&mut self) {}
}

fn due_now(table: &mut ResourceTable) -> wasmtime::Result<Resource<DynPollable>> {
    let due = table.push(Due)?;
    wasmtime_wasi::p2::subscribe(table, due)
}

/// A new engine-compatible linker for one world, WASI included.
pub(crate) fn new_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    link_wasi(&mut linker)?;
    Ok(linker)
}

/// The wall clock: a fixed instant set by the host before each call.
struct FixedWallClock(Arc<AtomicU64>);

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// The monotonic clock: it never advances.
struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The memory limit of one plugin instance, counted over all its linear memories and
/// tables: a component may declare many of each (multi-memory), and a limit per memory or
/// per table would let each take the whole budget. Also records the growth it refused, so
/// that the trap that usually follows (Rust aborts when an allocation fails) is reported as a
/// memory limit.
pub(crate) struct MemoryLimiter {
    pub(crate) max_bytes: usize,
    /// Bytes of every linear memory of the instance.
    memory_bytes: usize,
    /// Elements of every table of the instance.
    table_elements: usize,
    /// The size a refused `memory.grow` asked for, during the current call.
    pub(crate) denied: Option<usize>,
}

impl MemoryLimiter {
    /// Function tables of real plugins hold thousands of entries (tens of thousands for an
    /// interpreter); this bounds an instance's tables to ~8 MiB of host memory.
    const MAX_TABLE_ELEMENTS: usize = 1 << 20;
    /// Linear memories, tables and core instances an instance may create: far more than any
    /// compiler emits (an interpreter component links a few dozen core instances), far fewer
    /// than wasmtime's default of 10,000, each of which reserves address space.
    const MAX_MEMORIES: usize = 32;
    const MAX_TABLES: usize = 256;
    const MAX_INSTANCES: usize = 256;

    pub(crate) fn new(max_bytes: usize) -> MemoryLimiter {
        MemoryLimiter {
            max_bytes,
            memory_bytes: 0,
            table_elements: 0,
            denied: None,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = (self.memory_bytes - current.min(self.memory_bytes)).saturating_add(desired);
        if total > self.max_bytes || maximum.is_some_and(|maximum| desired > maximum) {
            self.denied = Some(total);
            return Ok(false);
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total =
            (self.table_elements - current.min(self.table_elements)).saturating_add(desired);
        if total > Self::MAX_TABLE_ELEMENTS || maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        Self::MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        Self::MAX_TABLES
    }

    fn memories(&self) -> usize {
        Self::MAX_MEMORIES
    }
}

/// A guest's stdout or stderr: buffered up to a byte budget per call, then written to the
/// host log line by line. Writes past the budget are accepted and dropped, so a chatty plugin
/// neither fails nor floods the log.
#[derive(Clone)]
struct LogPipe(Arc<Mutex<PipeBuffer>>);

struct PipeBuffer {
    bytes: Vec<u8>,
    budget: usize,
    dropped: usize,
}

impl LogPipe {
    fn new(budget: usize) -> LogPipe {
        LogPipe(Arc::new(Mutex::new(PipeBuffer {
            bytes: Vec::new(),
            budget,
            dropped: 0,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, PipeBuffer> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, data: &[u8]) {
        let mut buffer = self.lock();
        let room = buffer.budget.saturating_sub(buffer.bytes.len());
        let kept = data.len().min(room);
        buffer.bytes.extend_from_slice(&data[..kept]);
        buffer.dropped += data.len() - kept;
    }

    /// Logs and clears what was written; returns the last few hundred bytes of it.
    fn drain_to_log(&self, plugin: &str, stream: &'static str) -> String {
        let (bytes, dropped) = {
            let mut buffer = self.lock();
            let dropped = std::mem::take(&mut buffer.dropped);
            (std::mem::take(&mut buffer.bytes), dropped)
        };
        if bytes.is_empty() && dropped == 0 {
            return String::new();
        }
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines() {
            if stream == "stderr" {
                tracing::warn!(target: "eshost::plugin", plugin, stream, "{line}");
            } else {
                tracing::info!(target: "eshost::plugin", plugin, stream, "{line}");
            }
        }
        if dropped > 0 {
            tracing::warn!(
                target: "eshost::plugin",
                plugin,
                stream,
                dropped_bytes = dropped,
                "plugin output over the per-call log limit was dropped"
            );
        }
        tail(&text, 512).trim_end().to_owned()
    }
}

/// The last `max` bytes of `text` (cut at a character boundary).
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::Store;
    use wasmtime::component::{Component, Linker};

    use super::*;

    #[test]
    fn log_pipe_keeps_its_budget_and_counts_the_rest() {
        let pipe = LogPipe::new(8);
        pipe.push(b"hello ");
        pipe.push(b"world");
        {
            let buffer = pipe.lock();
            assert_eq!(buffer.bytes, b"hello wo");
            assert_eq!(buffer.dropped, 3);
        }
        assert_eq!(pipe.drain_to_log("p", "stderr"), "hello wo");
        assert!(pipe.lock().bytes.is_empty());
        assert_eq!(pipe.lock().dropped, 0);
    }

    #[test]
    fn the_memory_limit_counts_every_memory_and_table_of_an_instance() {
        let mut limiter = MemoryLimiter::new(10 << 20);
        // Three memories of 3 MiB fit; a fourth does not, nor does growing one past the total.
        for _ in 0..3 {
            assert!(limiter.memory_growing(0, 3 << 20, None).unwrap());
        }
        assert!(!limiter.memory_growing(0, 3 << 20, None).unwrap());
        assert!(!limiter.memory_growing(3 << 20, 5 << 20, None).unwrap());
        assert!(limiter.memory_growing(3 << 20, 4 << 20, None).unwrap());
        assert!(limiter.denied.is_some());
        // Tables share one element budget.
        let half = MemoryLimiter::MAX_TABLE_ELEMENTS / 2;
        assert!(limiter.table_growing(0, half, None).unwrap());
        assert!(limiter.table_growing(0, half, None).unwrap());
        assert!(!limiter.table_growing(0, 1, None).unwrap());
    }

    #[test]
    fn a_component_of_many_memories_cannot_instantiate_past_the_limit() {
        let engine = Engine::default();
        // One core module with 20 memories of 128 pages (8 MiB) each: 160 MiB in all.
        let memories = "(memory 128) ".repeat(20);
        let text =
            format!("(component (core module $m {memories}) (core instance (instantiate $m)))");
        let component = Component::new(&engine, text).unwrap();
        let linker = Linker::<MemoryLimiter>::new(&engine);
        let mut store = Store::new(&engine, MemoryLimiter::new(64 << 20));
        store.limiter(|limiter| limiter);
        let error = linker.instantiate(&mut store, &component).unwrap_err();
        assert!(format!("{error:?}").contains("memor"), "{error:?}");
        assert!(store.data().memory_bytes <= 64 << 20);

        // Within the limit, the same shape instantiates.
        let text = format!(
            "(component (core module $m {}) (core instance (instantiate $m)))",
            "(memory 128) ".repeat(4)
        );
        let component = Component::new(&engine, text).unwrap();
        let mut store = Store::new(&engine, MemoryLimiter::new(64 << 20));
        store.limiter(|limiter| limiter);
        linker.instantiate(&mut store, &component).unwrap();
        assert_eq!(store.data().memory_bytes, 4 * (8 << 20));

        // Many tiny memories are refused by their count.
        let text = format!(
            "(component (core module $m {}) (core instance (instantiate $m)))",
            "(memory 1) ".repeat(40)
        );
        let component = Component::new(&engine, text).unwrap();
        let mut store = Store::new(&engine, MemoryLimiter::new(64 << 20));
        store.limiter(|limiter| limiter);
        assert!(linker.instantiate(&mut store, &component).is_err());
    }

    #[test]
    fn read_model_writes_of_one_call_stop_at_the_output_limit() {
        let limits = Limits {
            output_bytes: 4 << 20,
            ..Limits::default()
        };
        let mut state = HostState::new("bomb".into(), &limits);
        state.read_model = Some(Box::new(crate::read_model::MemoryReadModel::default()));
        state.read_only = false;
        let value = "x".repeat(1 << 20);
        let mut stored = 0;
        while state
            .read_model_put(format!("key-{stored}"), value.clone())
            .is_ok()
        {
            stored += 1;
            assert!(stored < 100, "writes never stopped");
        }
        assert_eq!(stored, 3);
        assert!(
            matches!(state.fault, Some(HostFault::WritesTooLarge { limit, .. }) if limit == 4 << 20)
        );
        // The next call starts with a fresh budget.
        state.begin_call(0, 0);
        assert!(state.read_model_put("again".into(), value).is_ok());
    }

    #[test]
    fn tail_cuts_at_a_char_boundary() {
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 10), "abc");
    }
}
