-- Revisions of the campaign directory and the specs they put in force; the run engine's
-- tables (schedule state, runs, deliveries) and the webhook outbox. Instants are INTEGER
-- unix milliseconds, UTC.

-- One row per reconcile that found the directory changed: applied, or rejected with every
-- error (the revision in force is then the latest applied one).
CREATE TABLE revisions (
    id          INTEGER PRIMARY KEY,
    hash        TEXT    NOT NULL,   -- sha256 of the documents' canonical JSON, hex
    status      TEXT    NOT NULL CHECK (status IN ('applied', 'rejected')),
    source      TEXT    NOT NULL,   -- the directory, as given
    created_at  INTEGER NOT NULL,
    errors      TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(errors))  -- diagnostics
);
CREATE INDEX revisions_by_status ON revisions(status, id);

-- Every version of every object. A change retires the old row and inserts a new one, so a
-- run pinned to a revision can still read the campaign, template and channels it started
-- with: the version in force at revision R is introduced_in <= R < retired_in.
CREATE TABLE specs (
    id             INTEGER PRIMARY KEY,
    kind           TEXT    NOT NULL CHECK (kind IN ('Channel', 'Segment', 'Template', 'Campaign', 'Webhook')),
    name           TEXT    NOT NULL,
    introduced_in  INTEGER NOT NULL REFERENCES revisions(id),
    retired_in     INTEGER REFERENCES revisions(id),
    hash           TEXT    NOT NULL,  -- sha256 of body
    body           TEXT    NOT NULL CHECK (json_valid(body)),  -- {"metadata": .., "spec": ..}; secrets stay references
    file           TEXT    NOT NULL,
    line           INTEGER NOT NULL
);
CREATE UNIQUE INDEX specs_in_force ON specs(kind, name) WHERE retired_in IS NULL;
CREATE INDEX specs_by_name ON specs(kind, name, introduced_in);

-- The scheduler's memory per campaign: the next occurrence to fire, and the last one
-- fired or skipped, so that a restart never fires an occurrence twice.
CREATE TABLE schedule_state (
    campaign       TEXT    PRIMARY KEY,
    schedule_hash  TEXT    NOT NULL,  -- the schedule these times were computed for
    next_fire_at   INTEGER,           -- NULL: never again (a one-off that fired)
    last_fired_at  INTEGER,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX schedule_state_due ON schedule_state(next_fire_at) WHERE next_fire_at IS NOT NULL;

-- A run is one firing of a campaign, pinned to the spec version it started with.
CREATE TABLE runs (
    id                INTEGER PRIMARY KEY,
    campaign          TEXT    NOT NULL,
    campaign_spec_id  INTEGER NOT NULL REFERENCES specs(id),
    revision_id       INTEGER NOT NULL REFERENCES revisions(id),
    trigger           TEXT    NOT NULL CHECK (trigger IN ('schedule', 'manual', 'test')),
    occurrence_at     INTEGER,        -- the scheduled instant; NULL for manual and test runs
    status            TEXT    NOT NULL CHECK (status IN ('scheduled', 'running', 'paused', 'finished', 'cancelled', 'failed', 'skipped')),
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER,
    expires_at        INTEGER,        -- started_at + max_duration
    total             INTEGER NOT NULL DEFAULT 0,  -- deliveries to attempt
    error             TEXT
);
CREATE UNIQUE INDEX runs_once_per_occurrence ON runs(campaign, occurrence_at) WHERE occurrence_at IS NOT NULL;
CREATE INDEX runs_by_campaign ON runs(campaign, id);
CREATE INDEX runs_active ON runs(status) WHERE status IN ('scheduled', 'running', 'paused');

-- One row per recipient and channel of a run, and one per contact left out (status
-- 'excluded', channel NULL, reason why). `idempotency_key` is stable across retries and
-- restarts and is what providers that honour one receive.
CREATE TABLE deliveries (
    id                   INTEGER PRIMARY KEY,
    run_id               INTEGER NOT NULL REFERENCES runs(id),
    contact_pk           INTEGER NOT NULL,  -- no foreign key: a deleted contact stays in reports
    contact_id           TEXT    NOT NULL,
    channel              TEXT,
    address              TEXT,
    status               TEXT    NOT NULL CHECK (status IN ('excluded', 'pending', 'sending', 'retry', 'sent', 'delivered', 'read', 'failed', 'skipped', 'expired', 'cancelled', 'unknown')),
    reason               TEXT,              -- exclusion, skip or failure reason
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      INTEGER,           -- retry backoff, send window or local time
    idempotency_key      TEXT    NOT NULL UNIQUE,
    provider_message_id  TEXT,
    error                TEXT,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    sent_at              INTEGER,
    delivered_at         INTEGER,
    read_at              INTEGER
);
CREATE UNIQUE INDEX deliveries_once ON deliveries(run_id, contact_pk, ifnull(channel, ''));
CREATE INDEX deliveries_claimable ON deliveries(next_attempt_at, id) WHERE status IN ('pending', 'retry');
CREATE INDEX deliveries_by_run ON deliveries(run_id, status, id);
CREATE INDEX deliveries_by_provider_id ON deliveries(channel, provider_message_id) WHERE provider_message_id IS NOT NULL;
CREATE INDEX deliveries_by_contact ON deliveries(contact_pk, sent_at) WHERE sent_at IS NOT NULL;

-- Events for webhook subscribers, written in the same transaction as the state change they
-- report and sent until acknowledged or expired. `event_id` is the webhook-id header.
CREATE TABLE webhook_outbox (
    id               INTEGER PRIMARY KEY,
    webhook          TEXT    NOT NULL,
    event_id         TEXT    NOT NULL UNIQUE,
    event_type       TEXT    NOT NULL,
    payload          TEXT    NOT NULL CHECK (json_valid(payload)),
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'expired')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER,
    last_error       TEXT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox(next_attempt_at, id) WHERE status = 'pending';
