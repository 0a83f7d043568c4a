//! The scheduler's memory (table `schedule_state`): per campaign, the schedule the times
//! were computed for, the next occurrence to fire and the last one fired or skipped.
//!
//! The run of an occurrence is created by the engine (unique per campaign and occurrence),
//! and the state is advanced after it exists: a crash in between leaves the occurrence due,
//! and firing it again finds the run already there.

use sqlx::Row;

use super::{Store, StoreError, millis};
use crate::schedule::ScheduleState;

fn instant(ms: Option<i64>) -> Option<jiff::Timestamp> {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
}

impl Store {
    /// Every campaign's schedule state, by campaign name.
    pub async fn schedule_states(
        &self,
    ) -> Result<std::collections::BTreeMap<String, ScheduleState>, StoreError> {
        let rows = sqlx::query(
            "SELECT campaign, schedule_hash, next_fire_at, last_fired_at FROM schedule_state",
        )
        .fetch_all(self.reader())
        .await?;
        let mut out = std::collections::BTreeMap::new();
        for row in rows {
            out.insert(
                row.try_get("campaign")?,
                ScheduleState {
                    schedule_hash: row.try_get("schedule_hash")?,
                    next_fire_at: instant(row.try_get("next_fire_at")?),
                    last_fired_at: instant(row.try_get("last_fired_at")?),
                },
            );
        }
        Ok(out)
    }

    /// Stores a campaign's schedule state, replacing the one it had.
    pub async fn put_schedule_state(
        &self,
        campaign: &str,
        state: &ScheduleState,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO schedule_state (campaign, schedule_hash, next_fire_at, last_fired_at, updated_at) \
             VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (campaign) DO UPDATE SET schedule_hash = excluded.schedule_hash, \
             next_fire_at = excluded.next_fire_at, last_fired_at = excluded.last_fired_at, \
             updated_at = excluded.updated_at",
        )
        .bind(campaign)
        .bind(&state.schedule_hash)
        .bind(state.next_fire_at.map(millis))
        .bind(state.last_fired_at.map(millis))
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
