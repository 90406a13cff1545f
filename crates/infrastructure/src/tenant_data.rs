//! What the tenant-data adapters (`supabase::sql`, `supabase::postgrest` and `embedded`)
//! share: stored rows (tenants, sessions, documents, chunks, search results) turned into
//! domain values, and the session listing's paging.
//!
//! Nothing here knows how a row was fetched. Each adapter reads its columns (or decodes
//! PostgREST's JSON) into these rows, converting its own forms of ids, times and JSON, so
//! that what makes a stored row valid is decided once, the same way for every store.

use std::fmt::Display;

use chrono::{DateTime, Utc};
use sba_application::context::Caller;
use sba_application::pagination::{Cursor, Page, PageRequest};
use sba_application::ports::RepositoryError;
use sba_domain::knowledge::{ChunkSummary, KnowledgeDocument, KnowledgeMatch};
use sba_domain::ratelimit::Quota;
use sba_domain::{
    ChunkId, DocumentId, Metadata, Session, SessionId, SessionTitle, Tenant, TenantId, TenantStatus, UserId,
    WebOrigin,
};
use serde::Deserialize;
use uuid::Uuid;

/// A JSON object, as a `metadata` column holds it.
pub(crate) type JsonObject = serde_json::Map<String, serde_json::Value>;

/// A stored row that breaks the domain's rules: data corruption (or a schema out of step
/// with this code), not the caller's fault.
pub(crate) fn corrupt_row(table: &'static str, what: impl Display) -> RepositoryError {
    RepositoryError::Unexpected(anyhow::anyhow!("corrupt row in {table}: {what}"))
}

/// The metadata object of a row of `table`.
pub(crate) fn metadata_of(table: &'static str, map: JsonObject) -> Result<Metadata, RepositoryError> {
    Metadata::parse(map).map_err(|e| corrupt_row(table, e))
}

/// A stored ordinal (never negative) as the domain's.
fn ordinal_of(table: &'static str, ordinal: i64) -> Result<u32, RepositoryError> {
    u32::try_from(ordinal).map_err(|_| corrupt_row(table, format_args!("ordinal {ordinal}")))
}

/// A `tenants` row, before the domain's checks.
#[derive(Deserialize)]
pub(crate) struct TenantRow {
    pub(crate) id: Uuid,
    pub(crate) status: String,
    pub(crate) cors_origins: Vec<String>,
    pub(crate) plan: Option<String>,
    pub(crate) rate_limit_requests: Option<i64>,
    pub(crate) rate_limit_window_secs: Option<i64>,
}

impl TenantRow {
    const TABLE: &str = "tenants";

    /// The domain tenant; a row that breaks its rules is a corrupt row of `tenants`.
    pub(crate) fn into_tenant(self) -> Result<Tenant, RepositoryError> {
        let status = match self.status.as_str() {
            "active" => TenantStatus::Active,
            "suspended" => TenantStatus::Suspended,
            other => return Err(corrupt_row(Self::TABLE, format_args!("status `{other}`"))),
        };
        let rate_limit = match (self.rate_limit_requests, self.rate_limit_window_secs) {
            (Some(requests), Some(window)) => Some(
                u32::try_from(requests)
                    .ok()
                    .zip(u32::try_from(window).ok())
                    .and_then(|(r, w)| Quota::new(r, w).ok())
                    .ok_or_else(|| {
                        corrupt_row(Self::TABLE, format_args!("rate limit {requests}/{window}"))
                    })?,
            ),
            _ => None,
        };
        let id = TenantId::from_uuid(self.id);
        Ok(Tenant {
            id,
            status,
            allowed_origins: web_origins(id, self.cors_origins),
            plan: self.plan,
            rate_limit,
        })
    }
}

/// The stored origins that are [`WebOrigin`]s. Another (`null`, `file://`, a path, upper
/// case) can never match what a browser sends, so it is dropped with a warning and the
/// tenant keeps working with the rest: one bad entry must not lock a tenant's browsers out.
/// The warning names the tenant and the entry's position, not its text (it may carry user
/// info).
fn web_origins(tenant: TenantId, stored: Vec<String>) -> Vec<String> {
    stored
        .into_iter()
        .enumerate()
        .filter_map(|(position, origin)| match WebOrigin::parse(&origin) {
            Ok(origin) => Some(origin.into_string()),
            Err(error) => {
                tracing::warn!(
                    tenant = %tenant,
                    position,
                    reason = %error.message,
                    "ignoring a stored CORS origin of the tenant that is not a web origin"
                );
                None
            }
        })
        .collect()
}

/// A stored session, before the domain's checks.
#[derive(Deserialize)]
pub(crate) struct SessionRow {
    pub(crate) id: Uuid,
    pub(crate) tenant_id: Uuid,
    pub(crate) user_id: String,
    pub(crate) title: Option<String>,
    pub(crate) metadata: JsonObject,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl SessionRow {
    /// The domain session; a row that breaks its rules is a corrupt row of `table`.
    pub(crate) fn into_session(self, table: &'static str) -> Result<Session, RepositoryError> {
        Ok(Session {
            id: SessionId::from_uuid(self.id),
            tenant_id: TenantId::from_uuid(self.tenant_id),
            user_id: UserId::parse(&self.user_id).map_err(|e| corrupt_row(table, e))?,
            title: self
                .title
                .as_deref()
                .map(SessionTitle::parse)
                .transpose()
                .map_err(|e| corrupt_row(table, e))?,
            metadata: metadata_of(table, self.metadata)?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Refuses to create a session of another tenant than the caller's, or of another user
/// than the caller: a session always belongs to the user who created it, whatever the
/// caller's role (admins and services see every session of their tenant, but create only
/// their own). Row-level security's `with check` would refuse it too (and SQLite has none):
/// it is a bug, not a conflict.
pub(crate) fn check_session_tenant(caller: &Caller, session: &Session) -> Result<(), RepositoryError> {
    if session.tenant_id != caller.tenant {
        return Err(anyhow::anyhow!(
            "a session of tenant {} cannot be created for tenant {}",
            session.tenant_id,
            caller.tenant
        )
        .into());
    }
    if session.user_id != caller.user {
        // User ids are not secrets, but they are personal data: name neither in the error.
        return Err(anyhow::anyhow!("a session cannot be created for another user than the caller").into());
    }
    Ok(())
}

/// One page of a session listing as every store reads it: newest first by
/// `(created_at, id)`, resuming after a `Cursor::Time`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionListing {
    /// The `(created_at, id)` the page starts below, if it is not the first.
    pub(crate) after: Option<(DateTime<Utc>, Uuid)>,
    /// How many rows to read: one more than the page, which only proves that a next page
    /// exists.
    pub(crate) fetch: i64,
    limit: u64,
}

impl SessionListing {
    /// # Errors
    /// `Unexpected` for a `Cursor::Seq`, which belongs to other listings.
    pub(crate) fn new(page: PageRequest) -> Result<Self, RepositoryError> {
        let after = match page.after {
            None => None,
            Some(Cursor::Time { at, id }) => Some((at, id)),
            Some(Cursor::Seq(_)) => {
                return Err(
                    anyhow::anyhow!("listing sessions: a seq cursor was given to a time listing").into()
                );
            }
        };
        let fetch = i64::try_from(page.limit.saturating_add(1)).unwrap_or(i64::MAX);
        Ok(Self { after, fetch, limit: page.limit })
    }

    /// The page of `sessions`, the rows read, with the cursor of the next page if any.
    pub(crate) fn page(self, sessions: Vec<Session>) -> Page<Session> {
        Page::from_rows(sessions, self.limit, |s| Cursor::Time { at: s.created_at, id: s.id.as_uuid() })
    }
}

/// A stored chunk without its embedding.
#[derive(Deserialize)]
pub(crate) struct ChunkRow {
    pub(crate) id: Uuid,
    pub(crate) ordinal: i64,
    pub(crate) content: String,
    pub(crate) metadata: JsonObject,
}

impl ChunkRow {
    /// The chunk as readers see it; a row that breaks the rules is a corrupt row of `table`.
    pub(crate) fn into_summary(self, table: &'static str) -> Result<ChunkSummary, RepositoryError> {
        Ok(ChunkSummary {
            id: ChunkId::from_uuid(self.id),
            ordinal: ordinal_of(table, self.ordinal)?,
            content: self.content,
            metadata: metadata_of(table, self.metadata)?,
        })
    }
}

/// A stored document with its chunks, in order.
#[derive(Deserialize)]
pub(crate) struct DocumentRow {
    pub(crate) id: Uuid,
    pub(crate) tenant_id: Uuid,
    pub(crate) title: String,
    pub(crate) source: Option<String>,
    pub(crate) metadata: JsonObject,
    pub(crate) created_at: DateTime<Utc>,
    /// Named after the chunks' table, as PostgREST embeds them.
    #[serde(rename = "knowledge_chunks")]
    pub(crate) chunks: Vec<ChunkRow>,
}

impl DocumentRow {
    /// The domain document; a row that breaks the rules is a corrupt row of `documents`
    /// (or, for a chunk, of `chunks`).
    pub(crate) fn into_document(
        self,
        documents: &'static str,
        chunks: &'static str,
    ) -> Result<KnowledgeDocument, RepositoryError> {
        Ok(KnowledgeDocument {
            id: DocumentId::from_uuid(self.id),
            tenant_id: TenantId::from_uuid(self.tenant_id),
            title: self.title,
            source: self.source,
            metadata: metadata_of(documents, self.metadata)?,
            created_at: self.created_at,
            chunks: self
                .chunks
                .into_iter()
                .map(|chunk| chunk.into_summary(chunks))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A search result: a stored chunk with its document and its similarity to the query.
#[derive(Deserialize)]
pub(crate) struct MatchRow {
    pub(crate) id: Uuid,
    pub(crate) document_id: Uuid,
    pub(crate) ordinal: i64,
    pub(crate) content: String,
    pub(crate) metadata: JsonObject,
    pub(crate) similarity: f64,
}

impl MatchRow {
    /// The domain search result; a row that breaks the rules is a corrupt row of `table`.
    pub(crate) fn into_match(self, table: &'static str) -> Result<KnowledgeMatch, RepositoryError> {
        Ok(KnowledgeMatch {
            chunk_id: ChunkId::from_uuid(self.id),
            document_id: DocumentId::from_uuid(self.document_id),
            ordinal: ordinal_of(table, self.ordinal)?,
            content: self.content,
            metadata: metadata_of(table, self.metadata)?,
            similarity: self.similarity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_origins_that_are_not_web_origins_are_dropped_and_the_tenant_keeps_the_rest() {
        let row = TenantRow {
            id: Uuid::now_v7(),
            status: "active".to_owned(),
            cors_origins: [
                "https://app.example.com",
                "null",
                "file:///x",
                "https://a.example/path",
                "https://a.example/",
                "https://user@a.example",
                "https://A.example",
                "https://a.example:0",
                "http://[::1]:3000",
            ]
            .map(str::to_owned)
            .to_vec(),
            plan: None,
            rate_limit_requests: None,
            rate_limit_window_secs: None,
        };
        let tenant = row.into_tenant().unwrap();
        assert_eq!(tenant.status, TenantStatus::Active);
        assert_eq!(tenant.allowed_origins, ["https://app.example.com", "http://[::1]:3000"]);
        assert!(!tenant.allows_origin("null"));
    }
}
