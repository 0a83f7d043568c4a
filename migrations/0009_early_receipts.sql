-- Receipts that arrive before herald has stored their message id. A provider may call back
-- (Twilio's StatusCallback, WhatsApp's statuses) before the answer to the send itself is
-- recorded, which happens once per batch; Twilio never retries a status callback, so a
-- receipt turned away then would be lost. Such a receipt keeps its inbound_events row and
-- waits here; recording a delivery with that message id applies it in the same
-- transaction. Receipts that never meet their message (a number also used outside herald)
-- are dropped after a day.
CREATE TABLE early_receipts (
    event_id            INTEGER PRIMARY KEY REFERENCES inbound_events(id) ON DELETE CASCADE,
    channel             TEXT    NOT NULL,
    provider_message_id TEXT    NOT NULL,
    status              TEXT    NOT NULL CHECK (status IN ('delivered', 'read', 'failed')),
    error               TEXT,
    at                  INTEGER NOT NULL,  -- when it happened (unix ms)
    opt_out             TEXT,              -- the medium to opt the contact out of, if any
    received_at         INTEGER NOT NULL
);
CREATE INDEX early_receipts_by_message ON early_receipts(channel, provider_message_id);
CREATE INDEX early_receipts_by_age ON early_receipts(received_at);
