//! A test hook, read once when a runner starts: with
//! `ESHOST_TEST_FAULT=reactor-abort:{stage}:{n}` the process aborts in the `n`th batch that
//! sends commands, at `stage`: `after-commands` (the commands are decided and durable, nothing
//! of the batch is recorded yet) or `after-records` (the outcomes are recorded, the checkpoint
//! has not moved). These are the crashes that exactly-once effects exist for. Never set it in
//! production.

use crate::aggregate::TEST_FAULT_VAR;

/// Where in a batch the hook may abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    AfterCommands,
    AfterRecords,
}

/// The hook: which stage of which batch, and the batches seen so far.
#[derive(Debug, Default)]
pub(crate) struct CrashHook {
    armed: Option<(Stage, u64)>,
    seen: u64,
}

impl CrashHook {
    /// The hook the environment asks for, if any.
    pub(crate) fn from_env(reactor: &str) -> CrashHook {
        let armed = std::env::var(TEST_FAULT_VAR).ok().and_then(|fault| {
            let rest = fault.strip_prefix("reactor-abort:")?;
            let (stage, n) = rest.split_once(':')?;
            let stage = match stage {
                "after-commands" => Stage::AfterCommands,
                "after-records" => Stage::AfterRecords,
                _ => return None,
            };
            Some((stage, n.parse().ok()?))
        });
        if let Some((stage, n)) = armed {
            tracing::warn!(%reactor, "{TEST_FAULT_VAR}: the host aborts at {stage:?} of the reactor's batch {n} that sends commands (a test hook)");
        }
        CrashHook { armed, seen: 0 }
    }

    /// A batch that sends commands begins.
    pub(crate) fn batch(&mut self) {
        self.seen += 1;
    }

    /// The batch reached `stage`: abort here if asked to.
    pub(crate) fn reached(&self, stage: Stage) {
        if self.armed == Some((stage, self.seen)) {
            std::process::abort();
        }
    }
}
