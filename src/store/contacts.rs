//! Contacts, their tags and their per-medium consent and interaction times.
