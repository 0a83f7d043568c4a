//! Test helpers shared by the audience tests: contacts written directly as rows, so that a
//! test controls every column (the import path has tests of its own).

use herald::audience::ContactFacts;
use sqlx::SqliteConnection;

/// Inserts `c` into contacts, contact_tags and contact_media.
pub async fn insert_contact(conn: &mut SqliteConnection, c: &ContactFacts) {
    sqlx::query(
        "INSERT INTO contacts (pk, id, name, phone, email, telegram, locale, timezone, \
         country, created_at, updated_at, attributes) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(c.pk)
    .bind(&c.id)
    .bind(&c.name)
    .bind(&c.phone)
    .bind(&c.email)
    .bind(&c.telegram)
    .bind(&c.locale)
    .bind(&c.timezone)
    .bind(&c.country)
    .bind(c.created_at)
    .bind(c.created_at)
    .bind(serde_json::to_string(&c.attributes).unwrap())
    .execute(&mut *conn)
    .await
    .unwrap();
    for tag in &c.tags {
        sqlx::query("INSERT INTO contact_tags (contact_pk, tag) VALUES (?, ?)")
            .bind(c.pk)
            .bind(tag)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    for (medium, m) in &c.media {
        sqlx::query(
            "INSERT INTO contact_media (contact_pk, medium, opted_in_at, opted_out_at, \
             last_inbound_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(c.pk)
        .bind(medium.as_str())
        .bind(m.opted_in_at)
        .bind(m.opted_out_at)
        .bind(m.last_inbound_at)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
}
