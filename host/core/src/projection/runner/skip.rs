//! An operator's skip: a lane stopped at a failing event parks it as a dead letter (with the
//! operator's reason), moves its checkpoint past it, and runs on. Only the event a lane is
//! stopped at can be skipped, so a skip never drops an event that would have succeeded.

use super::Runner;
use super::lane::placeholder;
use crate::projection::ProjectionHostError;
use crate::projection::schema::DeadLetter;
use eshost_store::{AllRead, now_ms};

impl Runner {
    /// Skips the event at `position` in the lane stopped at it.
    pub(super) fn skip(&mut self, position: u64, reason: &str) -> Result<(), ProjectionHostError> {
        let name = self.config.name.clone();
        let refused = |stopped_at| ProjectionHostError::NotStoppedAt {
            name: name.clone(),
            position,
            stopped_at,
        };
        let shadow_stopped_there = self
            .shadow
            .as_ref()
            .is_some_and(|shadow| shadow.failed_at == Some(position));
        let mut lane = if self.active.failed_at == Some(position) {
            let stand_in = placeholder(&self.active);
            std::mem::replace(&mut self.active, stand_in)
        } else if shadow_stopped_there {
            self.shadow.take().expect("checked")
        } else {
            return Err(refused(self.active.failed_at));
        };
        let event = self
            .store
            .read_all(&AllRead {
                limit: 1,
                ..AllRead::from(position)
            })
            .ok()
            .and_then(|events| events.into_iter().next())
            .filter(|event| event.position == position);
        let letter = DeadLetter {
            position,
            stream_id: event
                .as_ref()
                .map_or_else(String::new, |e| e.stream_id.clone()),
            event_type: event.map_or_else(String::new, |e| e.event_type),
            reason: format!("skipped by an operator: {reason}"),
            attempts: lane.attempts,
            parked_at: now_ms(),
        };
        let parked = self.park(&lane, &letter);
        if parked.is_ok() {
            self.processed += position.saturating_sub(lane.checkpoint);
            lane.checkpoint = position;
            lane.bound = None;
            lane.clear_failure();
        }
        if shadow_stopped_there && self.active.failed_at != Some(position) {
            self.shadow = Some(lane);
        } else {
            self.active = lane;
        }
        parked.map_err(|error| ProjectionHostError::Views {
            name,
            message: format!("parking the skipped event: {error}"),
        })
    }
}
