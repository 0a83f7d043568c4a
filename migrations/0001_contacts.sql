-- Contacts: personal data, entered through the API, CSV import and provider callbacks;
-- never through the files in git. Instants are INTEGER unix milliseconds (text forms sort
-- wrongly with sub-second parts). `id` is the external id, the upsert key.
CREATE TABLE contacts (
    pk          INTEGER PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    name        TEXT,
    phone       TEXT,          -- E.164
    email       TEXT,
    telegram    TEXT,          -- Telegram chat id
    locale      TEXT,          -- BCP 47, e.g. pt-BR
    timezone    TEXT,          -- IANA name
    country     TEXT,          -- ISO 3166-1 alpha-2
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    attributes  TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(attributes))  -- JSON object
);
CREATE INDEX contacts_by_phone ON contacts(phone) WHERE phone IS NOT NULL;
CREATE INDEX contacts_by_email ON contacts(email) WHERE email IS NOT NULL;
CREATE INDEX contacts_by_telegram ON contacts(telegram) WHERE telegram IS NOT NULL;
CREATE INDEX contacts_by_created_at ON contacts(created_at);

CREATE TABLE contact_tags (
    contact_pk  INTEGER NOT NULL REFERENCES contacts(pk) ON DELETE CASCADE,
    tag         TEXT    NOT NULL,
    PRIMARY KEY (contact_pk, tag)
) WITHOUT ROWID;
CREATE INDEX contact_tags_by_tag ON contact_tags(tag, contact_pk);

-- Per medium: consent, opt-out and the last interaction each way.
CREATE TABLE contact_media (
    contact_pk        INTEGER NOT NULL REFERENCES contacts(pk) ON DELETE CASCADE,
    medium            TEXT    NOT NULL CHECK (medium IN ('sms', 'whatsapp', 'telegram', 'email')),
    opted_in_at       INTEGER,
    opted_in_source   TEXT,
    opted_out_at      INTEGER,
    opted_out_source  TEXT,
    last_inbound_at   INTEGER,
    last_outbound_at  INTEGER,
    PRIMARY KEY (contact_pk, medium)
) WITHOUT ROWID;
CREATE INDEX contact_media_by_inbound ON contact_media(medium, last_inbound_at);
