//! A reactor's pending timers: learnt from its own stream (`TimerScheduled` adds one,
//! `TimerFired` removes it), kept in `views.redb` with the checkpoint, and fired by the runner
//! when due. The log is the truth: the table is rebuilt from it if `views.redb` is lost.

use std::collections::{BTreeMap, HashSet};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Deserialize;

use super::effects::{TIMER_FIRED, TIMER_SCHEDULED};
use eshost_runtime::Event;

/// (reactor, timer id) → (due at, payload JSON).
const TIMERS: TableDefinition<(&str, &str), (u64, &str)> = TableDefinition::new("reactor_timers");

/// A change a batch makes to the pending timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimerChange {
    Scheduled {
        timer: String,
        due_at: u64,
        payload: String,
    },
    Fired {
        timer: String,
    },
}

#[derive(Deserialize)]
struct Recorded {
    timer: String,
    #[serde(default)]
    due_at: u64,
    #[serde(default)]
    payload: serde_json::Value,
}

/// The change an event of the reactor's own stream makes, if any.
pub(crate) fn change_of(event: &Event) -> Option<TimerChange> {
    let recorded = |event: &Event| serde_json::from_str::<Recorded>(&event.data).ok();
    match event.event_type.as_str() {
        TIMER_SCHEDULED => recorded(event).map(|r| TimerChange::Scheduled {
            timer: r.timer,
            due_at: r.due_at,
            payload: r.payload.to_string(),
        }),
        TIMER_FIRED => recorded(event).map(|r| TimerChange::Fired { timer: r.timer }),
        _ => None,
    }
}

/// The pending timers of one reactor.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// (due at, timer id) → payload.
    pending: BTreeMap<(u64, String), String>,
    /// Fired (`TimerFired` appended) but not read back yet.
    fired: HashSet<String>,
}

impl Timers {
    pub(crate) fn load(db: &redb::Database, reactor: &str) -> Result<Timers, redb::Error> {
        let txn = db.begin_read()?;
        let mut timers = Timers::default();
        let table = match txn.open_table(TIMERS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(timers),
            Err(error) => return Err(error.into()),
        };
        for entry in table.range((reactor, "")..)? {
            let (key, value) = entry?;
            let (owner, timer) = key.value();
            if owner != reactor {
                break;
            }
            let (due_at, payload) = value.value();
            timers
                .pending
                .insert((due_at, timer.to_owned()), payload.to_owned());
        }
        Ok(timers)
    }

    /// Writes `changes` in the batch's transaction.
    pub(crate) fn write(
        txn: &redb::WriteTransaction,
        reactor: &str,
        changes: &[TimerChange],
    ) -> Result<(), redb::Error> {
        let mut table = txn.open_table(TIMERS)?;
        for change in changes {
            match change {
                TimerChange::Scheduled {
                    timer,
                    due_at,
                    payload,
                } => {
                    table.insert((reactor, timer.as_str()), (*due_at, payload.as_str()))?;
                }
                TimerChange::Fired { timer } => {
                    table.remove((reactor, timer.as_str()))?;
                }
            }
        }
        Ok(())
    }

    /// Drops every timer of `reactor` (a restart from another position re-learns them).
    pub(crate) fn clear(txn: &redb::WriteTransaction, reactor: &str) -> Result<(), redb::Error> {
        let mut table = txn.open_table(TIMERS)?;
        let keys: Vec<String> = table
            .range((reactor, "")..)?
            .map_while(|entry| {
                let (key, _) = entry.ok()?;
                let (owner, timer) = key.value();
                (owner == reactor).then(|| timer.to_owned())
            })
            .collect();
        for timer in keys {
            table.remove((reactor, timer.as_str()))?;
        }
        Ok(())
    }

    /// Applies `changes` once their transaction committed.
    pub(crate) fn apply(&mut self, changes: &[TimerChange]) {
        for change in changes {
            match change {
                TimerChange::Scheduled {
                    timer,
                    due_at,
                    payload,
                } => {
                    self.pending
                        .insert((*due_at, timer.clone()), payload.clone());
                }
                TimerChange::Fired { timer } => {
                    self.pending.retain(|(_, id), _| id != timer);
                    self.fired.remove(timer);
                }
            }
        }
    }

    pub(crate) fn reset(&mut self) {
        self.pending.clear();
        self.fired.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// The timers due at `now` not fired yet: (timer, due at, payload).
    pub(crate) fn due(&self, now: u64) -> Vec<(String, u64, String)> {
        self.pending
            .range(..(now.saturating_add(1), String::new()))
            .filter(|((_, timer), _)| !self.fired.contains(timer))
            .map(|((due_at, timer), payload)| (timer.clone(), *due_at, payload.clone()))
            .collect()
    }

    pub(crate) fn mark_fired(&mut self, timer: &str) {
        self.fired.insert(timer.to_owned());
    }

    /// When the next unfired timer is due (ms since the epoch).
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.pending
            .keys()
            .find(|(_, timer)| !self.fired.contains(timer))
            .map(|(due_at, _)| *due_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_is_due_from_its_time_until_it_is_read_back_fired() {
        let mut timers = Timers::default();
        timers.apply(&[TimerChange::Scheduled {
            timer: "t1".into(),
            due_at: 100,
            payload: "{}".into(),
        }]);
        assert!(timers.due(99).is_empty());
        assert_eq!(timers.due(100), vec![("t1".into(), 100, "{}".into())]);
        assert_eq!(timers.next_due(), Some(100));
        timers.mark_fired("t1");
        assert!(timers.due(200).is_empty(), "fired, not read back yet");
        assert_eq!(timers.next_due(), None);
        assert_eq!(timers.len(), 1);
        timers.apply(&[TimerChange::Fired { timer: "t1".into() }]);
        assert_eq!(timers.len(), 0);
    }
}
