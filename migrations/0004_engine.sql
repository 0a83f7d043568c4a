-- The run engine (src/engine/, src/store/runs.rs, src/store/deliveries.rs).

-- Who paused a run: an operator, or the revision that disabled its campaign. Only the
-- latter resume by themselves when a later revision enables the campaign again.
ALTER TABLE runs ADD COLUMN paused_by TEXT CHECK (paused_by IN ('operator', 'campaign_disabled'));

-- The claim: due rows of one run on one channel, oldest due first. A range of this index
-- per (run, channel), so a run's rows waiting for a later time (local time, send windows,
-- backoff) are never scanned by claims of the others.
CREATE INDEX deliveries_due ON deliveries(run_id, channel, next_attempt_at)
    WHERE status IN ('pending', 'retry');

-- Replaced by deliveries_due: the claim always names its run and channel. One index fewer
-- to maintain on every snapshot row and every claim.
DROP INDEX deliveries_claimable;
