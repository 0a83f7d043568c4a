-- Outbound webhooks (src/store/webhooks.rs, src/webhooks/) and inbound provider callbacks
-- (src/store/inbound.rs, src/http/inbound.rs). Instants are INTEGER unix milliseconds.

-- Runs started by an `on_reply` rule for the contact who replied: trigger 'reply'.
-- SQLite cannot alter a CHECK constraint, and rebuilding `runs` would break the foreign
-- keys of `deliveries` inside this migration's transaction; widening a CHECK in the stored
-- schema is the change SQLite documents as safe for this (lang_altertable.html, "other
-- kinds of table schema changes"). RESET reloads the schema on this connection; the
-- statements after it change the schema cookie, so other connections reload it too.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, '''manual'', ''test'')', '''manual'', ''test'', ''reply'')')
 WHERE type = 'table' AND name = 'runs'
   AND sql LIKE '%CHECK (trigger IN (''schedule'', ''manual'', ''test''))%';
PRAGMA writable_schema = RESET;

-- What the sender learnt of the last attempt: the HTTP status (NULL when no answer came:
-- a timeout, a refused connection). `last_error` (0002) says why in words.
ALTER TABLE webhook_outbox ADD COLUMN last_status INTEGER;
-- Delivery events of a subscription with `batching` go out together: the rows of one
-- request share this id, which is that request's webhook-id, the same on every retry.
ALTER TABLE webhook_outbox ADD COLUMN batch_id TEXT;
CREATE INDEX webhook_outbox_by_batch ON webhook_outbox(batch_id) WHERE batch_id IS NOT NULL;
-- Rows still to send per subscription (batching, expiring a disabled subscription's rows).
CREATE INDEX webhook_outbox_pending_by_webhook ON webhook_outbox(webhook, created_at)
    WHERE status = 'pending';

-- Subscriptions disabled because their receiver answered 410 Gone. Kept per spec version:
-- a restart keeps the subscription disabled; a changed Webhook spec (another hash) is a new
-- subscription and is enabled again.
CREATE TABLE webhook_disabled (
    webhook      TEXT    PRIMARY KEY,
    spec_hash    TEXT    NOT NULL,
    disabled_at  INTEGER NOT NULL,
    reason       TEXT    NOT NULL
);

-- Inbound callbacks already handled, by the sender's webhook-id: a provider retrying a
-- request finds its row (written in the same transaction as the change the request made)
-- and gets the first answer again, changing nothing.
CREATE TABLE inbound_events (
    id           INTEGER PRIMARY KEY,
    channel      TEXT    NOT NULL,
    webhook_id   TEXT    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('reply', 'receipt')),
    received_at  INTEGER NOT NULL,
    contact_pk   INTEGER,           -- no foreign key: a deleted contact keeps its history
    delivery_id  INTEGER,
    answer       TEXT    NOT NULL CHECK (json_valid(answer)),
    UNIQUE (channel, webhook_id)
);
