//! Adapters on Supabase's data (migrations/supabase/): row-level-secured tenant data.
//!
//! `sql` talks to the database directly (Supabase's pooler, or a self-hosted PostgreSQL):
//! every unit of work is one transaction that sets its role and tenant context first, so it
//! is safe behind a transaction-mode pooler. `postgrest` talks to Supabase's REST API,
//! forwarding a plain user's token so that row-level security applies there too; admins,
//! agents and services go through the service (ADR 0014).

pub mod postgrest;
pub mod sql;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sba_application::ports::RepositoryError;
use sba_domain::knowledge::{KnowledgeDocument, NewDocument};
use sba_domain::{ChunkId, DocumentId, Metadata, TenantId};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use uuid::Uuid;

use crate::sql::{PoolOptions, connect, connect_options};

pub use postgrest::{
    PostgrestClient, PostgrestKnowledgeStore, PostgrestSessionStore, PostgrestSettings,
    PostgrestTenantDirectory,
};
pub use sql::{
    SupabaseSql, SupabaseSqlKnowledgeStore, SupabaseSqlSessionStore, SupabaseSqlTenantDirectory, UnitOfWork,
};

/// How many connections the direct-SQL adapters keep at most.
const SQL_POOL_SIZE: u32 = 10;

/// Connects the direct-SQL adapters to `url` (`SUPABASE_DB_URL`); connecting and waiting for
/// a pooled connection are bounded by `timeout`.
///
/// # Errors
/// When the database cannot be reached (the message never shows the URL's password).
pub async fn connect_sql(url: &SecretString, timeout: Duration) -> anyhow::Result<SupabaseSql> {
    let pool = PoolOptions { max_connections: SQL_POOL_SIZE, connect_timeout: timeout };
    let db = connect(
        connect_options(url.expose_secret().to_owned(), pool),
        "connecting to the Supabase database".to_owned(),
    )
    .await?;
    Ok(SupabaseSql::new(db))
}

/// One element of `add_knowledge_document`'s `chunks` array, the same for both adapters;
/// a chunk's ordinal is its position in the array.
#[derive(Serialize)]
struct ChunkArg<'a> {
    content: &'a str,
    metadata: &'a Metadata,
    /// pgvector's text form: JSON has no form of `vector`.
    embedding: String,
}

/// The `chunks` argument of `add_knowledge_document` for `document`.
fn chunk_args(document: &NewDocument) -> Vec<ChunkArg<'_>> {
    document
        .chunks
        .iter()
        .map(|chunk| ChunkArg {
            content: &chunk.content,
            metadata: &chunk.metadata,
            embedding: chunk.embedding.to_pgvector_text(),
        })
        .collect()
}

/// The document that `add_knowledge_document` stored as `id` for `tenant`, from the
/// `(ordinal, chunk_id)` rows it returned.
///
/// # Errors
/// `Unexpected` unless there is exactly one row per chunk sent, for ordinals `0..n`.
fn added_document(
    document: &NewDocument,
    id: DocumentId,
    tenant: TenantId,
    created_at: DateTime<Utc>,
    returned: impl IntoIterator<Item = (i64, Uuid)>,
) -> Result<KnowledgeDocument, RepositoryError> {
    let mismatch = || {
        RepositoryError::Unexpected(anyhow::anyhow!(
            "adding a knowledge document: the chunk ids returned do not match the chunks sent"
        ))
    };
    let mut ids = vec![None; document.chunks.len()];
    for (ordinal, chunk_id) in returned {
        let slot = usize::try_from(ordinal).ok().and_then(|i| ids.get_mut(i)).ok_or_else(mismatch)?;
        if slot.replace(ChunkId::from_uuid(chunk_id)).is_some() {
            return Err(mismatch());
        }
    }
    let ids = ids.into_iter().collect::<Option<Vec<_>>>().ok_or_else(mismatch)?;
    document.stored(id, tenant, created_at, ids).ok_or_else(mismatch)
}
