//! `/v1/knowledge`: a tenant's documents, cut into chunks with embeddings, and similarity
//! search over them.

use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use sba_application::RequestContext;
use sba_domain::ValidationError;
use sba_domain::knowledge::{
    ChunkSummary, EMBEDDING_DIMENSION, Embedding, KnowledgeDocument, KnowledgeMatch, KnowledgeQuery,
    NewChunk, NewDocument,
};
use sba_domain::{ChunkId, DocumentId, Metadata};
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use utoipa::ToSchema;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{Array, ArrayBuilder, ObjectBuilder, Type};

use super::auth::Authenticated;
use super::error::{ApiError, FieldErrors, Problem, ProblemCode};
use crate::http::AppState;

/// The largest `POST /v1/knowledge/documents` body (its route's own `JsonConfig`): a
/// document of 1000 chunks with 384 numbers each is about 4 MiB of JSON before its text.
pub const DOCUMENT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Every embedding's schema: exactly 384 numbers that fit an `f32`, not all zero.
fn embedding_schema() -> Array {
    let value =
        ObjectBuilder::new().schema_type(Type::Number).minimum(Some(-F32_BOUND)).maximum(Some(F32_BOUND));
    ArrayBuilder::new()
        .items(value)
        .min_items(Some(EMBEDDING_DIMENSION))
        .max_items(Some(EMBEDDING_DIMENSION))
        // JSON Schema's `contains` (utoipa has no builder for it): at least one value is not 0.
        .extensions(Some(Extensions::from_iter([(
            "contains",
            serde_json::json!({"type": "number", "not": {"const": 0}}),
        )])))
        .build()
}

/// An embedding as a request sends it, decoded with bounded memory: the first
/// [`EMBEDDING_DIMENSION`] values are kept, any further ones are only counted (skipped
/// without being stored), so an overlong array in a 16 MiB body costs 384 numbers, not
/// millions. Its refusal is the usual one, naming the length sent.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingInput {
    values: Vec<f64>,
    /// How many values the array held.
    len: usize,
}

impl EmbeddingInput {
    fn parse(&self, field: &'static str) -> Result<Embedding, ValidationError> {
        if self.len == self.values.len() {
            Embedding::parse(field, &self.values)
        } else {
            Err(Embedding::wrong_dimension(field, self.len))
        }
    }
}

impl<'de> Deserialize<'de> for EmbeddingInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bounded;

        impl<'de> Visitor<'de> for Bounded {
            type Value = EmbeddingInput;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "an array of {EMBEDDING_DIMENSION} numbers")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EmbeddingInput, A::Error> {
                let mut values = Vec::with_capacity(EMBEDDING_DIMENSION);
                while values.len() < EMBEDDING_DIMENSION {
                    match seq.next_element::<f64>()? {
                        Some(value) => values.push(value),
                        None => return Ok(EmbeddingInput { len: values.len(), values }),
                    }
                }
                let mut len = values.len();
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    len += 1;
                }
                Ok(EmbeddingInput { values, len })
            }
        }

        deserializer.deserialize_seq(Bounded)
    }
}

/// The largest magnitude documented for an embedding value (just under `f32::MAX`, so that
/// every documented value narrows to a finite `f32`).
const F32_BOUND: f64 = 3.4e38;

/// One chunk of a new document.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChunkRequest {
    /// 1–32768 characters, not blank (and no NUL character, like every text).
    #[schema(min_length = 1, max_length = 32_768, pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$")]
    pub content: String,
    #[serde(default)]
    #[schema(schema_with = super::openapi::metadata_schema)]
    pub metadata: Option<serde_json::Map<String, Value>>,
    /// Exactly 384 finite numbers, not all zero.
    #[schema(schema_with = embedding_schema)]
    pub embedding: EmbeddingInput,
}

/// Body of `POST /v1/knowledge/documents`: a document with all its chunks, stored together
/// or not at all. Unknown fields are rejected.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDocumentRequest {
    /// 1–500 characters, not blank.
    #[schema(
        example = "Returns policy",
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub title: String,
    /// Where the document comes from (a URL, a file name), 1–2048 characters, not blank.
    #[schema(min_length = 1, max_length = 2048, pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$")]
    pub source: Option<String>,
    #[serde(default)]
    #[schema(schema_with = super::openapi::metadata_schema)]
    pub metadata: Option<serde_json::Map<String, Value>>,
    /// 1–1000 chunks, in document order.
    #[schema(min_items = 1, max_items = 1000)]
    pub chunks: Vec<NewChunkRequest>,
}

impl CreateDocumentRequest {
    fn try_into_domain(self) -> Result<NewDocument, ApiError> {
        let mut errors = FieldErrors::default();
        let metadata = errors.check("metadata", Metadata::parse(self.metadata.unwrap_or_default()));
        let mut chunks = Vec::with_capacity(self.chunks.len());
        for (i, chunk) in self.chunks.into_iter().enumerate() {
            let field = |name: &str| format!("chunks[{i}].{name}");
            let chunk_metadata =
                errors.check(&field("metadata"), Metadata::parse(chunk.metadata.unwrap_or_default()));
            let embedding = errors.check(&field("embedding"), chunk.embedding.parse("embedding"));
            if let (Some(metadata), Some(embedding)) = (chunk_metadata, embedding)
                && let Some(chunk) =
                    errors.check(&field("content"), NewChunk::new(&chunk.content, metadata, embedding))
            {
                chunks.push(chunk);
            }
        }
        let document = metadata.and_then(|metadata| {
            errors.check_domain(NewDocument::new(&self.title, self.source.as_deref(), metadata, chunks))
        });
        errors.finish(document)
    }
}

/// A stored chunk (its embedding is not returned).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChunkResponse {
    #[schema(value_type = uuid::Uuid)]
    pub id: ChunkId,
    /// Position in the document, from 0.
    pub ordinal: u32,
    pub content: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, Value>,
}

impl From<ChunkSummary> for ChunkResponse {
    fn from(chunk: ChunkSummary) -> Self {
        Self {
            id: chunk.id,
            ordinal: chunk.ordinal,
            content: chunk.content,
            metadata: chunk.metadata.into_map(),
        }
    }
}

/// A document as clients see it, with its chunks in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentResponse {
    #[schema(value_type = uuid::Uuid)]
    pub id: DocumentId,
    #[schema(value_type = uuid::Uuid)]
    pub tenant_id: sba_domain::TenantId,
    pub title: String,
    pub source: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub chunks: Vec<ChunkResponse>,
}

impl From<KnowledgeDocument> for DocumentResponse {
    fn from(document: KnowledgeDocument) -> Self {
        Self {
            id: document.id,
            tenant_id: document.tenant_id,
            title: document.title,
            source: document.source,
            metadata: document.metadata.into_map(),
            created_at: document.created_at,
            chunks: document.chunks.into_iter().map(ChunkResponse::from).collect(),
        }
    }
}

/// Body of `POST /v1/knowledge/search`. Unknown fields are rejected.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The query's embedding: exactly 384 finite numbers, not all zero.
    #[schema(schema_with = embedding_schema)]
    pub embedding: EmbeddingInput,
    /// How many chunks at most, 1–100 (default 10).
    #[schema(minimum = 1, maximum = 100)]
    pub top_k: Option<u32>,
    /// Leave out chunks whose cosine similarity is below this, -1 to 1 (default 0).
    #[schema(minimum = -1.0, maximum = 1.0)]
    pub min_similarity: Option<f64>,
    /// Only chunks whose metadata contains every key-value pair of this object (JSON
    /// containment, like PostgreSQL's `@>`).
    #[serde(default)]
    #[schema(schema_with = super::openapi::metadata_schema)]
    pub filter: Option<serde_json::Map<String, Value>>,
}

impl SearchRequest {
    fn try_into_domain(self) -> Result<KnowledgeQuery, ApiError> {
        let mut errors = FieldErrors::default();
        let embedding = errors.check("embedding", self.embedding.parse("embedding"));
        let filter = errors.check("filter", Metadata::parse(self.filter.unwrap_or_default()));
        let query = embedding.zip(filter).and_then(|(embedding, filter)| {
            errors.check_domain(KnowledgeQuery::new(embedding, self.top_k, self.min_similarity, filter))
        });
        errors.finish(query)
    }
}

/// One search result.
#[derive(Debug, Serialize, ToSchema)]
pub struct MatchResponse {
    #[schema(value_type = uuid::Uuid)]
    pub chunk_id: ChunkId,
    #[schema(value_type = uuid::Uuid)]
    pub document_id: DocumentId,
    pub ordinal: u32,
    pub content: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, Value>,
    /// Cosine similarity with the query, -1 to 1.
    pub similarity: f64,
}

impl From<KnowledgeMatch> for MatchResponse {
    fn from(found: KnowledgeMatch) -> Self {
        Self {
            chunk_id: found.chunk_id,
            document_id: found.document_id,
            ordinal: found.ordinal,
            content: found.content,
            metadata: found.metadata.into_map(),
            similarity: found.similarity,
        }
    }
}

/// `{"data": [...]}`, best match first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    pub data: Vec<MatchResponse>,
}

/// An admitted upload of the authenticated caller, extracted before the JSON body (so its
/// refusals come before the body is read): the caller may write the knowledge base (else
/// 403 `forbidden`, so that users who may not write neither have their bodies decoded nor
/// take the upload places writers need), and holds a place among the document uploads
/// being read (`SBA_KNOWLEDGE__MAX_CONCURRENT_UPLOADS`; over the cap, 503 `server_busy`
/// with `Retry-After`).
pub struct UploadSlot {
    ctx: RequestContext,
    _permit: OwnedSemaphorePermit,
}

impl FromRequest for UploadSlot {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        ready(Self::admit(req, payload))
    }
}

impl UploadSlot {
    fn admit(req: &HttpRequest, payload: &mut Payload) -> Result<Self, ApiError> {
        let Authenticated(ctx) = Authenticated::from_request(req, payload).into_inner()?;
        let state = req
            .app_data::<web::Data<AppState>>()
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the application state is missing")))?;
        state.knowledge.admit_upload(&ctx)?;
        let permit = Arc::clone(&state.uploads).try_acquire_owned().ok();
        permit.map(|permit| Self { ctx, _permit: permit }).ok_or_else(|| {
            ApiError::new(ProblemCode::ServerBusy, "Too many documents are being uploaded; retry shortly.")
                .with_retry_after_ms(1000)
        })
    }
}

/// Stores a document with its chunks and their embeddings (384 dimensions), all or nothing.
#[utoipa::path(post, path = "/v1/knowledge/documents", tag = "knowledge", operation_id = "createDocument",
    request_body(content = CreateDocumentRequest, description = "At most 16 MiB."),
    responses(
        (status = 201, description = "The document was stored.", body = DocumentResponse,
            headers(("Location" = String, description = "`/v1/knowledge/documents/{document_id}`"))),
        (status = 400, description = "`invalid_json`: malformed JSON or an unknown field.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: only tenant admins and services write the knowledge base.",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`, with `errors` per field (e.g. `chunks[3].embedding`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`server_busy`: too many uploads are being read; retry after `Retry-After` seconds.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    ),
    security(("bearer" = [])))]
pub(super) async fn create_document(
    state: web::Data<AppState>,
    upload: UploadSlot,
    body: web::Json<CreateDocumentRequest>,
) -> Result<HttpResponse, ApiError> {
    let document = body.into_inner().try_into_domain()?;
    let stored = state.knowledge.add_document(&upload.ctx, &document).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/knowledge/documents/{}", stored.id)))
        .json(DocumentResponse::from(stored)))
}

/// A document of the caller's tenant, with its chunks in order (without embeddings).
#[utoipa::path(get, path = "/v1/knowledge/documents/{document_id}", tag = "knowledge", operation_id = "getDocument",
    params(("document_id" = uuid::Uuid, Path, description = "The document's id")),
    responses(
        (status = 200, description = "The document.", body = DocumentResponse),
        (status = 404, description = "No such document in the caller's tenant (also for a malformed id).",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn get_document(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.parse::<DocumentId>().map_err(|_| ApiError::not_found())?;
    let document = state.knowledge.get_document(&ctx, id).await?;
    Ok(HttpResponse::Ok().json(DocumentResponse::from(document)))
}

/// The caller's tenant's chunks most similar to an embedding (cosine similarity), best
/// first.
#[utoipa::path(post, path = "/v1/knowledge/search", tag = "knowledge", operation_id = "searchKnowledge",
    request_body = SearchRequest,
    responses(
        (status = 200, description = "The best matches, best first.", body = SearchResponse),
        (status = 400, description = "`invalid_json`: malformed JSON or an unknown field.",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: wrong dimension, `top_k` or `min_similarity` out of range.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn search(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    body: web::Json<SearchRequest>,
) -> Result<HttpResponse, ApiError> {
    let query = body.into_inner().try_into_domain()?;
    let found = state.knowledge.search(&ctx, &query).await?;
    Ok(HttpResponse::Ok().json(SearchResponse { data: found.into_iter().map(MatchResponse::from).collect() }))
}

const _: () = assert!(EMBEDDING_DIMENSION == 384, "the OpenAPI descriptions say 384");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_embedding_keeps_at_most_its_dimension_in_memory_and_counts_the_rest() {
        let json = format!("[{}]", vec!["0.5"; 100_000].join(","));
        let decoded: EmbeddingInput = serde_json::from_str(&json).unwrap();
        assert_eq!(decoded.len, 100_000);
        assert!(decoded.values.capacity() <= EMBEDDING_DIMENSION, "{}", decoded.values.capacity());
        let refused = decoded.parse("embedding").unwrap_err();
        assert_eq!(refused.message, "must have 384 dimensions, not 100000");
    }

    #[test]
    fn an_embedding_of_the_dimension_or_shorter_decodes_as_before() {
        let exact: EmbeddingInput = serde_json::from_str(&format!("[1{}]", ",0".repeat(383))).unwrap();
        assert!(exact.parse("embedding").is_ok());
        let short: EmbeddingInput = serde_json::from_str("[1, 2]").unwrap();
        assert_eq!(short.parse("embedding").unwrap_err().message, "must have 384 dimensions, not 2");
        assert!(serde_json::from_str::<EmbeddingInput>("\"[1,2]\"").is_err(), "not an array");
        assert!(serde_json::from_str::<EmbeddingInput>("[1, \"x\"]").is_err(), "not a number");
    }
}
