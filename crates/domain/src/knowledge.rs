//! Knowledge: a tenant's documents, cut into chunks with embeddings, searched by cosine
//! similarity.

use chrono::{DateTime, Utc};

use crate::ValidationError;
use crate::ids::{ChunkId, DocumentId, TenantId};
use crate::runs::Metadata;

/// The dimension of every embedding (the `vector(384)` column of the Supabase schema).
pub const EMBEDDING_DIMENSION: usize = 384;

/// An embedding: exactly [`EMBEDDING_DIMENSION`] finite numbers, not all zero (a zero
/// vector has no direction, so no cosine similarity).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding(Vec<f32>);

impl Embedding {
    /// # Errors
    /// When the dimension is wrong, a value is not finite (or does not fit an `f32`), or
    /// every value is zero. `field` names the embedding in the client's request.
    pub fn parse(field: &'static str, values: &[f64]) -> Result<Self, ValidationError> {
        if values.len() != EMBEDDING_DIMENSION {
            return Err(Self::wrong_dimension(field, values.len()));
        }
        let mut out = Vec::with_capacity(values.len());
        for value in values {
            #[allow(clippy::cast_possible_truncation, reason = "range checked just below")]
            let narrowed = *value as f32;
            if !narrowed.is_finite() {
                return Err(ValidationError::new(field, "every value must be a finite number"));
            }
            out.push(narrowed);
        }
        if out.iter().all(|v| *v == 0.0) {
            return Err(ValidationError::new(field, "must not be the zero vector"));
        }
        Ok(Self(out))
    }

    /// The refusal of an embedding of `len` values, `len` not being the dimension: for a
    /// decoder that stops keeping values past the dimension and only counts the rest.
    pub fn wrong_dimension(field: &'static str, len: usize) -> ValidationError {
        ValidationError::new(field, format!("must have {EMBEDDING_DIMENSION} dimensions, not {len}"))
    }

    /// An embedding read back from a store, which checked it when it was written.
    ///
    /// # Errors
    /// When the stored values do not make an embedding.
    pub fn from_stored(values: Vec<f32>) -> Result<Self, ValidationError> {
        if values.len() != EMBEDDING_DIMENSION || values.iter().any(|v| !v.is_finite()) {
            return Err(ValidationError::new("embedding", "stored embedding is malformed"));
        }
        Ok(Self(values))
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// Cosine similarity with `other`, in `[-1, 1]` (computed in `f64`).
    pub fn cosine_similarity(&self, other: &Self) -> f64 {
        let (mut dot, mut a, mut b) = (0.0_f64, 0.0_f64, 0.0_f64);
        for (x, y) in self.0.iter().zip(&other.0) {
            let (x, y) = (f64::from(*x), f64::from(*y));
            dot += x * y;
            a += x * x;
            b += y * y;
        }
        (dot / (a.sqrt() * b.sqrt())).clamp(-1.0, 1.0)
    }

    /// pgvector's text form, `[0.1,0.2,...]`.
    pub fn to_pgvector_text(&self) -> String {
        let mut text = String::with_capacity(self.0.len() * 10 + 2);
        text.push('[');
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&v.to_string());
        }
        text.push(']');
        text
    }
}

/// Bounded free text of a document or chunk.
fn text(field: &'static str, value: &str, max_chars: usize) -> Result<String, ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::new(field, "must not be blank"));
    }
    if value.chars().count() > max_chars {
        return Err(ValidationError::new(field, format!("must be at most {max_chars} characters")));
    }
    if value.contains('\0') {
        return Err(ValidationError::new(field, "must not contain NUL characters"));
    }
    Ok(value.to_owned())
}

/// A chunk to store: its text, metadata and embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChunk {
    pub content: String,
    pub metadata: Metadata,
    pub embedding: Embedding,
}

impl NewChunk {
    pub const MAX_CONTENT_CHARS: usize = 32_768;

    /// # Errors
    /// When the content is blank or too long.
    pub fn new(content: &str, metadata: Metadata, embedding: Embedding) -> Result<Self, ValidationError> {
        Ok(Self { content: text("chunks[].content", content, Self::MAX_CONTENT_CHARS)?, metadata, embedding })
    }
}

/// A document to store, with all its chunks (stored together or not at all).
#[derive(Debug, Clone, PartialEq)]
pub struct NewDocument {
    pub title: String,
    pub source: Option<String>,
    pub metadata: Metadata,
    pub chunks: Vec<NewChunk>,
}

impl NewDocument {
    pub const MAX_TITLE_CHARS: usize = 500;
    pub const MAX_SOURCE_CHARS: usize = 2048;
    pub const MAX_CHUNKS: usize = 1000;

    /// # Errors
    /// When the title or source is blank or too long, or there are no chunks or too many.
    pub fn new(
        title: &str,
        source: Option<&str>,
        metadata: Metadata,
        chunks: Vec<NewChunk>,
    ) -> Result<Self, ValidationError> {
        if chunks.is_empty() || chunks.len() > Self::MAX_CHUNKS {
            return Err(ValidationError::new(
                "chunks",
                format!("a document has 1 to {} chunks", Self::MAX_CHUNKS),
            ));
        }
        Ok(Self {
            title: text("title", title, Self::MAX_TITLE_CHARS)?,
            source: source.map(|s| text("source", s, Self::MAX_SOURCE_CHARS)).transpose()?,
            metadata,
            chunks,
        })
    }

    /// The document as stored under `id` for `tenant_id` at `created_at`, given the ids the
    /// store made for its chunks, in the chunks' order: a chunk's ordinal is its position.
    ///
    /// `None` unless there is exactly one id per chunk.
    pub fn stored(
        &self,
        id: DocumentId,
        tenant_id: TenantId,
        created_at: DateTime<Utc>,
        chunk_ids: Vec<ChunkId>,
    ) -> Option<KnowledgeDocument> {
        if chunk_ids.len() != self.chunks.len() {
            return None;
        }
        let chunks = self
            .chunks
            .iter()
            .zip(chunk_ids)
            .enumerate()
            .map(|(position, (chunk, id))| {
                Some(ChunkSummary {
                    id,
                    ordinal: u32::try_from(position).ok()?,
                    content: chunk.content.clone(),
                    metadata: chunk.metadata.clone(),
                })
            })
            .collect::<Option<_>>()?;
        Some(KnowledgeDocument {
            id,
            tenant_id,
            title: self.title.clone(),
            source: self.source.clone(),
            metadata: self.metadata.clone(),
            created_at,
            chunks,
        })
    }
}

/// A stored chunk as clients read it (its embedding is not returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSummary {
    pub id: ChunkId,
    /// Its position in the document, from 0.
    pub ordinal: u32,
    pub content: String,
    pub metadata: Metadata,
}

/// A stored document with its chunks, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnowledgeDocument {
    pub id: DocumentId,
    pub tenant_id: TenantId,
    pub title: String,
    pub source: Option<String>,
    pub metadata: Metadata,
    pub created_at: DateTime<Utc>,
    pub chunks: Vec<ChunkSummary>,
}

/// A similarity search over the caller tenant's chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct KnowledgeQuery {
    pub embedding: Embedding,
    /// 1 to [`KnowledgeQuery::MAX_TOP_K`].
    pub top_k: u32,
    /// Chunks less similar than this are left out; in `[-1, 1]`.
    pub min_similarity: f64,
    /// Only chunks whose metadata contains every key-value pair of this object (JSON
    /// containment, like PostgreSQL's `@>`).
    pub filter: Metadata,
}

impl KnowledgeQuery {
    pub const DEFAULT_TOP_K: u32 = 10;
    pub const MAX_TOP_K: u32 = 100;

    /// # Errors
    /// When `top_k` or `min_similarity` is out of range.
    pub fn new(
        embedding: Embedding,
        top_k: Option<u32>,
        min_similarity: Option<f64>,
        filter: Metadata,
    ) -> Result<Self, ValidationError> {
        let top_k = top_k.unwrap_or(Self::DEFAULT_TOP_K);
        if !(1..=Self::MAX_TOP_K).contains(&top_k) {
            return Err(ValidationError::new("top_k", format!("must be between 1 and {}", Self::MAX_TOP_K)));
        }
        let min_similarity = min_similarity.unwrap_or(0.0);
        if !(-1.0..=1.0).contains(&min_similarity) {
            return Err(ValidationError::new("min_similarity", "must be between -1 and 1"));
        }
        Ok(Self { embedding, top_k, min_similarity, filter })
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct KnowledgeMatch {
    pub chunk_id: ChunkId,
    pub document_id: DocumentId,
    pub ordinal: u32,
    pub content: String,
    pub metadata: Metadata,
    /// Cosine similarity with the query, in `[-1, 1]`.
    pub similarity: f64,
}

/// Whether `metadata` contains `filter` (JSON containment, as PostgreSQL's `jsonb @>` for
/// objects: every key of the filter is present with a containing value; arrays contain
/// arrays whose elements they contain; below the top level, an array does not contain a
/// bare scalar).
pub fn metadata_contains(metadata: &Metadata, filter: &Metadata) -> bool {
    filter
        .as_map()
        .iter()
        .all(|(key, wanted)| metadata.as_map().get(key).is_some_and(|have| json_contains(have, wanted)))
}

fn json_contains(have: &serde_json::Value, wanted: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (have, wanted) {
        (Value::Object(have), Value::Object(wanted)) => {
            wanted.iter().all(|(k, w)| have.get(k).is_some_and(|h| json_contains(h, w)))
        }
        (Value::Array(have), Value::Array(wanted)) => {
            wanted.iter().all(|w| have.iter().any(|h| json_contains(h, w)))
        }
        (have, wanted) => have == wanted,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn unit(axis: usize) -> Vec<f64> {
        let mut v = vec![0.0; EMBEDDING_DIMENSION];
        v[axis] = 1.0;
        v
    }

    fn metadata(value: &serde_json::Value) -> Metadata {
        Metadata::parse(value.as_object().unwrap().clone()).unwrap()
    }

    #[test]
    fn an_embedding_needs_the_exact_dimension_finite_values_and_a_direction() {
        assert!(Embedding::parse("embedding", &unit(0)).is_ok());
        let short = Embedding::parse("embedding", &[1.0; 3]).unwrap_err();
        assert_eq!(short.message, "must have 384 dimensions, not 3");
        let mut huge = unit(0);
        huge[1] = 1e300;
        assert!(Embedding::parse("embedding", &huge).is_err(), "does not fit an f32");
        assert!(Embedding::parse("embedding", &[0.0; EMBEDDING_DIMENSION]).is_err());
    }

    #[test]
    fn a_stored_embedding_reads_back_only_with_the_exact_dimension_and_finite_values() {
        let values: Vec<f32> =
            (1..=u16::try_from(EMBEDDING_DIMENSION).unwrap()).map(|i| f32::from(i).recip()).collect();
        assert_eq!(Embedding::from_stored(values.clone()).unwrap().as_slice(), values.as_slice());
        assert!(Embedding::from_stored(values[1..].to_vec()).is_err(), "one value short");
        let mut nan = values.clone();
        nan[5] = f32::NAN;
        assert_eq!(Embedding::from_stored(nan).unwrap_err().field, "embedding");
        let mut infinite = values;
        infinite[0] = f32::INFINITY;
        assert!(Embedding::from_stored(infinite).is_err());
    }

    #[test]
    fn cosine_similarity_of_known_vectors() {
        let x = Embedding::parse("e", &unit(0)).unwrap();
        let y = Embedding::parse("e", &unit(1)).unwrap();
        let mut diagonal = unit(0);
        diagonal[1] = 1.0;
        let d = Embedding::parse("e", &diagonal).unwrap();
        assert!((x.cosine_similarity(&x) - 1.0).abs() < 1e-9);
        assert!(x.cosine_similarity(&y).abs() < 1e-9);
        assert!((x.cosine_similarity(&d) - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    }

    #[test]
    fn pgvector_text_lists_every_value() {
        let text = Embedding::parse("e", &unit(2)).unwrap().to_pgvector_text();
        assert!(text.starts_with("[0,0,1,0"));
        assert_eq!(text.matches(',').count(), EMBEDDING_DIMENSION - 1);
    }

    #[test]
    fn a_query_bounds_top_k_and_min_similarity() {
        let e = || Embedding::parse("e", &unit(0)).unwrap();
        assert_eq!(KnowledgeQuery::new(e(), None, None, Metadata::default()).unwrap().top_k, 10);
        assert_eq!(KnowledgeQuery::new(e(), Some(0), None, Metadata::default()).unwrap_err().field, "top_k");
        assert_eq!(
            KnowledgeQuery::new(e(), Some(101), None, Metadata::default()).unwrap_err().field,
            "top_k"
        );
        assert_eq!(
            KnowledgeQuery::new(e(), None, Some(1.5), Metadata::default()).unwrap_err().field,
            "min_similarity"
        );
    }

    #[test]
    fn a_document_has_one_to_a_thousand_chunks_and_a_title() {
        let chunk =
            || NewChunk::new("text", Metadata::default(), Embedding::parse("e", &unit(0)).unwrap()).unwrap();
        assert!(NewDocument::new("Manual", None, Metadata::default(), vec![chunk()]).is_ok());
        assert_eq!(
            NewDocument::new("Manual", None, Metadata::default(), vec![]).unwrap_err().field,
            "chunks"
        );
        assert_eq!(
            NewDocument::new(" ", None, Metadata::default(), vec![chunk()]).unwrap_err().field,
            "title"
        );
        assert!(NewChunk::new("", Metadata::default(), Embedding::parse("e", &unit(0)).unwrap()).is_err());
    }

    #[test]
    fn a_title_may_have_exactly_its_maximum_of_characters_and_no_more() {
        let chunk = || NewChunk::new("text", Metadata::default(), Embedding::parse("e", &unit(0)).unwrap());
        let longest = "é".repeat(NewDocument::MAX_TITLE_CHARS);
        let document = NewDocument::new(&longest, None, Metadata::default(), vec![chunk().unwrap()]).unwrap();
        assert_eq!(document.title, longest);
        let too_long = format!("{longest}x");
        let refused = NewDocument::new(&too_long, None, Metadata::default(), vec![chunk().unwrap()]);
        assert_eq!(refused.unwrap_err().message, "must be at most 500 characters");
    }

    #[test]
    fn a_stored_document_numbers_its_chunks_by_position_and_needs_one_id_each() {
        let chunk = |text: &str| {
            NewChunk::new(text, Metadata::default(), Embedding::parse("e", &unit(0)).unwrap()).unwrap()
        };
        let new =
            NewDocument::new("Manual", None, Metadata::default(), vec![chunk("a"), chunk("b")]).unwrap();
        let (id, tenant) =
            (DocumentId::from_uuid(uuid::Uuid::from_u128(1)), TenantId::from_uuid(uuid::Uuid::from_u128(2)));
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let ids =
            [ChunkId::from_uuid(uuid::Uuid::from_u128(3)), ChunkId::from_uuid(uuid::Uuid::from_u128(4))];
        let stored = new.stored(id, tenant, at, ids.to_vec()).unwrap();
        assert_eq!(
            (stored.id, stored.tenant_id, stored.created_at, stored.title.as_str()),
            (id, tenant, at, "Manual")
        );
        let chunks: Vec<_> = stored.chunks.iter().map(|c| (c.id, c.ordinal, c.content.as_str())).collect();
        assert_eq!(chunks, [(ids[0], 0, "a"), (ids[1], 1, "b")]);
        assert_eq!(new.stored(id, tenant, at, ids[..1].to_vec()), None);
    }

    #[test]
    fn metadata_containment_follows_jsonb() {
        let have = metadata(&json!({"lang": "en", "tags": ["a", "b"], "meta": {"v": 2, "w": 3}}));
        assert!(metadata_contains(&have, &Metadata::default()));
        assert!(metadata_contains(&have, &metadata(&json!({"lang": "en"}))));
        assert!(metadata_contains(&have, &metadata(&json!({"tags": ["b"]}))));
        assert!(!metadata_contains(&have, &metadata(&json!({"tags": "a"}))), "as jsonb: nested scalar");
        assert!(metadata_contains(&have, &metadata(&json!({"meta": {"v": 2}}))));
        assert!(!metadata_contains(&have, &metadata(&json!({"lang": "de"}))));
        assert!(!metadata_contains(&have, &metadata(&json!({"missing": 1}))));
        assert!(!metadata_contains(&have, &metadata(&json!({"meta": {"v": 3}}))));
    }
}
