-- Knowledge RPCs shared by both Supabase adapters (PostgREST and direct SQL), so a document is
-- stored the same way whichever adapter serves the request:
--   * add_knowledge_document(): a document and all its chunks in the caller's transaction,
--     for the caller's tenant (RLS applies: security invoker).
--   * match_knowledge() again, with the same signature and result, now correct when the
--     tenant and metadata filters discard most of what the HNSW index hands up.
-- Needs pgvector 0.8.0 or later (iterative index scans); on Supabase, `alter extension
-- vector update` first if the project has an older one.

do $$
begin
    if (select string_to_array(extversion, '.')::int[] from pg_extension where extname = 'vector')
        < array[0, 8] then
        raise exception 'match_knowledge needs pgvector 0.8.0 or later (iterative index scans)'
            using hint = 'alter extension vector update';
    end if;
end
$$;

-- Stores a document and its chunks for the caller's tenant, all or nothing (one statement
-- each, in the caller's transaction): a malformed chunk fails the call and the caller's
-- transaction, so nothing is left behind. `chunks` is a JSON array of
-- {"content": text, "metadata": object, "embedding": "[0.1,...]" (pgvector text)}; a
-- chunk's ordinal is its position in the array, from 0. Returns the chunks' new ids.
-- The parameter names are the JSON keys of PostgREST's `/rpc/add_knowledge_document`, so
-- they are not prefixed: the body names them through the function (`add_knowledge_document.title`).
-- Errors: 42501 without a tenant context, 23505 when the document id exists, 22023 when
-- `chunks` is not a non-empty array, 22000 when an embedding does not have 384 dimensions.
create function public.add_knowledge_document(
    document_id uuid,
    title text,
    source text,
    metadata jsonb,
    created_at timestamptz,
    chunks jsonb
) returns table (chunk_id uuid, ordinal integer)
language plpgsql volatile security invoker
as $$
#variable_conflict use_column
declare
    tenant uuid := public.current_tenant_id();
begin
    if tenant is null then
        raise exception 'add_knowledge_document needs a tenant context'
            using errcode = '42501';
    end if;
    if jsonb_typeof(add_knowledge_document.chunks) is distinct from 'array'
        or jsonb_array_length(add_knowledge_document.chunks) = 0 then
        raise exception 'chunks must be a non-empty JSON array'
            using errcode = '22023';
    end if;
    insert into public.knowledge_documents (id, tenant_id, title, source, metadata, created_at)
    values (
        add_knowledge_document.document_id,
        tenant,
        add_knowledge_document.title,
        add_knowledge_document.source,
        coalesce(add_knowledge_document.metadata, '{}'),
        coalesce(add_knowledge_document.created_at, now())
    );
    return query
    insert into public.knowledge_chunks as c (tenant_id, document_id, ordinal, content, metadata, embedding)
    select tenant,
           add_knowledge_document.document_id,
           (chunk.position - 1)::integer,
           chunk.value ->> 'content',
           coalesce(chunk.value -> 'metadata', '{}'),
           (chunk.value ->> 'embedding')::vector
    from jsonb_array_elements(add_knowledge_document.chunks) with ordinality as chunk (value, position)
    order by chunk.position
    returning c.id, c.ordinal;
end
$$;

-- The caller tenant's best chunks by cosine similarity (security invoker: RLS applies).
--
-- An HNSW scan hands up `hnsw.ef_search` candidates (40 by default) before any filter, so the
-- first version returned too few rows when other tenants' chunks (or chunks that fail the
-- metadata filter) were nearer, and never more than 40. pgvector 0.8's iterative scan keeps
-- scanning until the LIMIT is met (or `hnsw.max_scan_tuples`, 20 000 by default, are
-- visited); `relaxed_order` may yield rows slightly out of order, so the nearest rows are
-- materialised and sorted again. The similarity threshold is applied outside the
-- materialised CTE, as pgvector's README advises: inside, a threshold that no further row
-- meets would keep the iterative scan going to its limit. The SET clauses scope both
-- settings (and the set_config below) to this function: the caller's transaction keeps its own.
-- `plan_cache_mode = force_custom_plan`: PL/pgSQL caches a statement's plan per connection,
-- and after a few calls a generic plan, built without knowing the tenant; on a pooled
-- connection a small tenant's exact plan (tenant index, sort) was then reused for a large
-- tenant, whose searches became exact scans (107 ms instead of 2 ms at 100k chunks,
-- docs/benchmarks.md). Planning per call costs well under a millisecond here.
create or replace function public.match_knowledge(
    query_embedding vector(384),
    match_count integer default 10,
    min_similarity double precision default 0,
    filter jsonb default '{}'
) returns table (
    id uuid,
    document_id uuid,
    ordinal integer,
    content text,
    metadata jsonb,
    similarity double precision
)
language plpgsql stable security invoker
set hnsw.iterative_scan = relaxed_order
set hnsw.ef_search = 40
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
declare
    wanted integer := least(greatest(coalesce(match_knowledge.match_count, 10), 1), 100);
begin
    -- The first pass yields at least `wanted` candidates.
    perform set_config('hnsw.ef_search', greatest(wanted, 40)::text, true);
    return query
    with nearest as materialized (
        select c.id, c.document_id, c.ordinal, c.content, c.metadata,
               c.embedding <=> match_knowledge.query_embedding as distance
        from public.knowledge_chunks c
        where c.tenant_id = public.current_tenant_id()
          and c.metadata @> coalesce(match_knowledge.filter, '{}')
        order by c.embedding <=> match_knowledge.query_embedding
        limit wanted
    )
    select n.id, n.document_id, n.ordinal, n.content, n.metadata, 1 - n.distance
    from nearest n
    where 1 - n.distance >= coalesce(match_knowledge.min_similarity, -1)
    order by n.distance, n.id;
end
$$;

revoke execute on function public.add_knowledge_document(uuid, text, text, jsonb, timestamptz, jsonb)
    from public, anon;
grant execute on function public.add_knowledge_document(uuid, text, text, jsonb, timestamptz, jsonb)
    to authenticated, service_role;
