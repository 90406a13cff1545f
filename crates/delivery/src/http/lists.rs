//! Query parameters and the response envelope shared by every listing.

use sba_application::pagination::{Cursor, Page, PageRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;

/// `?limit=&cursor=` of a listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Which kind of cursor a listing accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest first by `(created_at, id)`.
    NewestFirst,
    /// Oldest first by `seq`.
    BySeq,
}

impl PageQuery {
    /// The page asked for; see [`page_request`].
    pub fn page(&self, order: Order) -> Result<PageRequest, ApiError> {
        page_request(self.limit, self.cursor.as_deref(), order)
    }
}

/// The page asked for; 400 `invalid_request` for a limit outside 1..=100 or a cursor this
/// listing did not issue.
pub fn page_request(limit: Option<u64>, cursor: Option<&str>, order: Order) -> Result<PageRequest, ApiError> {
    let after = cursor.map(|text| decode_cursor(text, order)).transpose()?;
    PageRequest::new(limit, after).map_err(|e| ApiError::invalid_request(e.to_string()))
}

pub fn decode_cursor(text: &str, order: Order) -> Result<Cursor, ApiError> {
    let cursor = Cursor::decode(text).map_err(|_| ApiError::invalid_request("The cursor is not valid."))?;
    match (order, cursor) {
        (Order::NewestFirst, Cursor::Time { .. }) | (Order::BySeq, Cursor::Seq(_)) => Ok(cursor),
        _ => Err(ApiError::invalid_request("The cursor belongs to another listing.")),
    }
}

/// `{"data": [...], "next_cursor": "<opaque>"|null}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> ListResponse<T> {
    pub fn from_page<U>(page: Page<U>, to_dto: impl FnMut(U) -> T) -> Self {
        let next_cursor = page.next.map(|c| c.encode());
        Self { data: page.items.into_iter().map(to_dto).collect(), next_cursor }
    }
}
