-- Indexes for what /metrics and the status page read on every scrape and every refresh
-- (src/store/metrics.rs), so that neither scans the deliveries or the outbox history.

-- The status page's recent failures: the latest failed (or unknown: maybe sent, maybe not)
-- deliveries. Only those rows are in the index, so the newest few are found at its end.
CREATE INDEX deliveries_failed_by_time ON deliveries(updated_at)
    WHERE status IN ('failed', 'unknown');

-- Webhook events given up (the outbox's failures), counted at each scrape.
CREATE INDEX webhook_outbox_expired ON webhook_outbox(id) WHERE status = 'expired';
