//! The embedded store's tables, created idempotently when the store opens.
//!
//! They mirror the Supabase schema (`migrations/supabase/20261201000000_tenant_data.sql`)
//! minus what SQLite lacks: row-level security (every statement filters by `tenant_id`
//! instead), the `tenants` table (the tenant directory is elsewhere in development mode),
//! and the HNSW index (search scans the tenant's chunks).

use sea_orm::{ConnectionTrait as _, DatabaseConnection, DbErr, TransactionTrait as _};

/// `create … if not exists`, so opening an existing database changes nothing.
const STATEMENTS: [&str; 5] = [
    "create table if not exists embedded_sessions (
        id text primary key,
        tenant_id text not null,
        user_id text not null check (length(user_id) between 1 and 255),
        title text check (title is null or length(title) <= 500),
        metadata text not null default '{}' check (json_valid(metadata)),
        created_at integer not null,
        updated_at integer not null
    )",
    // Serves the listing `where tenant_id = ? order by created_at desc, id desc` and its
    // keyset condition, read backwards.
    "create index if not exists embedded_sessions_tenant_created
        on embedded_sessions (tenant_id, created_at, id)",
    "create table if not exists embedded_knowledge_documents (
        id text primary key,
        tenant_id text not null,
        title text not null check (length(title) between 1 and 500),
        source text,
        metadata text not null default '{}' check (json_valid(metadata)),
        created_at integer not null,
        unique (tenant_id, id)
    )",
    "create table if not exists embedded_knowledge_chunks (
        id text primary key,
        tenant_id text not null,
        document_id text not null,
        ordinal integer not null check (ordinal >= 0),
        content text not null,
        metadata text not null default '{}' check (json_valid(metadata)),
        -- 384 little-endian f32 values.
        embedding blob not null check (length(embedding) = 1536),
        -- The chunk's tenant is its document's tenant.
        foreign key (tenant_id, document_id)
            references embedded_knowledge_documents (tenant_id, id) on delete cascade,
        unique (document_id, ordinal)
    )",
    // SQLite appends the rowid to every index, so this is (tenant_id, rowid): the search
    // scan pages through one tenant's chunks in rowid order on it.
    "create index if not exists embedded_knowledge_chunks_tenant
        on embedded_knowledge_chunks (tenant_id)",
];

/// Creates every table and index that is missing, all or nothing.
pub(super) async fn create(db: &DatabaseConnection) -> Result<(), DbErr> {
    let txn = db.begin().await?;
    for statement in STATEMENTS {
        txn.execute_unprepared(statement).await?;
    }
    txn.commit().await
}

#[cfg(test)]
mod tests {
    use sba_domain::knowledge::EMBEDDING_DIMENSION;

    use super::STATEMENTS;

    #[test]
    fn the_embedding_check_matches_the_domain_dimension() {
        let bytes = format!("length(embedding) = {}", EMBEDDING_DIMENSION * size_of::<f32>());
        assert!(STATEMENTS.iter().any(|s| s.contains(&bytes)));
    }
}
