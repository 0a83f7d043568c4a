-- Indexes for audience breakdowns (src/store/segments.rs; measured in bench/audience.rs).
--
-- The frequency cap counts each contact's deliveries sent since a moment (now - per):
-- with sent_at first, that is a range over recent sends only, however long the history.
CREATE INDEX deliveries_by_sent_at ON deliveries(sent_at, contact_pk) WHERE sent_at IS NOT NULL;
