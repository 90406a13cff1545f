//! Keyset pagination in SQL: `ORDER BY … LIMIT n + 1` after the cursor's position, never
//! `OFFSET`, so pages stay stable while rows are inserted.

use sba_application::pagination::{Cursor, PageRequest};
use sba_application::ports::RepositoryError;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select};

/// Newest first by `(time, id)`, resuming after a `Cursor::Time`; fetches one row more than
/// the page so `Page::from_rows` knows whether another page exists.
pub(super) fn newest_first<E: EntityTrait>(
    query: Select<E>,
    time: impl ColumnTrait,
    id: impl ColumnTrait,
    page: &PageRequest,
) -> Result<Select<E>, RepositoryError> {
    let query = match page.after {
        None => query,
        Some(Cursor::Time { at, id: last }) => query.filter(
            Condition::any().add(time.lt(at)).add(Condition::all().add(time.eq(at)).add(id.lt(last))),
        ),
        Some(Cursor::Seq(_)) => {
            return Err(anyhow::anyhow!("a seq cursor was given to a time listing").into());
        }
    };
    Ok(query.order_by_desc(time).order_by_desc(id).limit(page.limit + 1))
}
