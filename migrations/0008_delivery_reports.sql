-- Per-delivery reports (src/store/reports.rs): a run's deliveries listed in id order, a
-- page at a time after the last id seen (keyset pagination), with or without a channel
-- filter. deliveries_by_run (run_id, status, id) serves a status filter, but without one
-- SQLite would read every row of the run and sort it for each page: a 1M-row export would
-- read the run a thousand times. An id never changes, so status updates never touch this
-- index; only the snapshot's inserts do, in id order.
CREATE INDEX deliveries_by_run_id ON deliveries(run_id, id);
