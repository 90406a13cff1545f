-- SBA's tenant data on Supabase (issue 7): tenants, sessions, knowledge with pgvector.
-- Every tenant table has row-level security enabled and FORCED, with policies that compare
-- tenant_id with the tenant context `app.tenant_id`. The context is read with
-- nullif(current_setting('app.tenant_id', true), '')::uuid, so a request without one sees
-- no rows, never all rows. The context is set transaction-locally, by set_tenant_context()
-- (direct SQL) or by sba_pre_request() (PostgREST's db-pre-request, from the JWT claims).
-- Roles as in Supabase: anon, authenticated, service_role (BYPASSRLS, platform work only).

create extension if not exists vector;

-- The caller's tenant, or NULL without a context (NULL matches no row).
create or replace function public.current_tenant_id() returns uuid
language sql stable
as $$
    select nullif(current_setting('app.tenant_id', true), '')::uuid
$$;

-- Sets the tenant context for the current transaction only (set_config(..., true)), so a
-- pooled connection never carries it into the next transaction.
create or replace function public.set_tenant_context(tenant uuid) returns void
language plpgsql volatile
as $$
begin
    perform set_config('app.tenant_id', coalesce(tenant::text, ''), true);
end
$$;

-- PostgREST's db-pre-request: runs after PostgREST has set the role and
-- `request.jwt.claims` (transaction-locally) and before the request's query. The tenant
-- comes from `tenant_id` or `app_metadata.tenant_id`, never from `user_metadata` (users can
-- edit it); anything that is not a UUID leaves the context empty (no rows).
create or replace function public.sba_pre_request() returns void
language plpgsql volatile
as $$
declare
    claims jsonb := coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb;
    tenant text := coalesce(claims ->> 'tenant_id', claims -> 'app_metadata' ->> 'tenant_id');
begin
    if tenant is null
        or tenant !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
        tenant := '';
    end if;
    perform set_config('app.tenant_id', tenant, true);
end
$$;

create table public.tenants (
    id uuid primary key default gen_random_uuid(),
    name text not null check (length(name) between 1 and 200),
    plan text check (plan is null or length(plan) between 1 and 64),
    status text not null default 'active' check (status in ('active', 'suspended')),
    -- Exact origins (`scheme://host[:port]`), lower case as browsers send them.
    cors_origins text[] not null default '{}'
        check (array_to_string(cors_origins, ' ') = lower(array_to_string(cors_origins, ' '))),
    rate_limit_requests integer check (rate_limit_requests > 0),
    rate_limit_window_secs integer check (rate_limit_window_secs between 1 and 86400),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    check ((rate_limit_requests is null) = (rate_limit_window_secs is null))
);

create table public.sessions (
    id uuid primary key default gen_random_uuid(),
    tenant_id uuid not null references public.tenants (id) on delete cascade,
    user_id text not null check (length(user_id) between 1 and 255),
    title text check (title is null or length(title) <= 500),
    metadata jsonb not null default '{}',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index sessions_tenant_created on public.sessions (tenant_id, created_at desc, id desc);

create table public.knowledge_documents (
    id uuid primary key default gen_random_uuid(),
    tenant_id uuid not null references public.tenants (id) on delete cascade,
    title text not null check (length(title) between 1 and 500),
    source text,
    metadata jsonb not null default '{}',
    created_at timestamptz not null default now(),
    unique (tenant_id, id)
);

create table public.knowledge_chunks (
    id uuid primary key default gen_random_uuid(),
    tenant_id uuid not null,
    document_id uuid not null,
    ordinal integer not null check (ordinal >= 0),
    content text not null,
    metadata jsonb not null default '{}',
    embedding vector(384) not null,
    -- The chunk's tenant is its document's tenant.
    foreign key (tenant_id, document_id)
        references public.knowledge_documents (tenant_id, id) on delete cascade,
    unique (document_id, ordinal)
);
create index knowledge_chunks_tenant on public.knowledge_chunks (tenant_id);
create index knowledge_chunks_embedding on public.knowledge_chunks
    using hnsw (embedding vector_cosine_ops);

-- Row-level security, enabled and forced (the tables' owner is bound too).
alter table public.tenants enable row level security;
alter table public.tenants force row level security;
alter table public.sessions enable row level security;
alter table public.sessions force row level security;
alter table public.knowledge_documents enable row level security;
alter table public.knowledge_documents force row level security;
alter table public.knowledge_chunks enable row level security;
alter table public.knowledge_chunks force row level security;

-- A tenant reads its own row; tenants are changed by platform work (service_role) only.
create policy tenants_read_own on public.tenants
    for select using (id = public.current_tenant_id());
create policy sessions_of_tenant on public.sessions
    for all using (tenant_id = public.current_tenant_id())
    with check (tenant_id = public.current_tenant_id());
create policy documents_of_tenant on public.knowledge_documents
    for all using (tenant_id = public.current_tenant_id())
    with check (tenant_id = public.current_tenant_id());
create policy chunks_of_tenant on public.knowledge_chunks
    for all using (tenant_id = public.current_tenant_id())
    with check (tenant_id = public.current_tenant_id());

-- The caller tenant's best chunks by cosine similarity (security invoker: RLS applies, and
-- the explicit tenant filter lets the planner use the tenant index).
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
language sql stable security invoker
as $$
    select c.id, c.document_id, c.ordinal, c.content, c.metadata,
           1 - (c.embedding <=> query_embedding) as similarity
    from public.knowledge_chunks c
    where c.tenant_id = public.current_tenant_id()
      and c.metadata @> coalesce(filter, '{}')
      and 1 - (c.embedding <=> query_embedding) >= min_similarity
    order by c.embedding <=> query_embedding
    limit least(greatest(match_count, 1), 100)
$$;

grant usage on schema public to anon, authenticated, service_role;
grant select on public.tenants to authenticated;
grant select, insert, update, delete on public.sessions, public.knowledge_documents,
    public.knowledge_chunks to authenticated;
grant all on public.tenants, public.sessions, public.knowledge_documents,
    public.knowledge_chunks to service_role;
grant execute on function public.current_tenant_id(), public.set_tenant_context(uuid),
    public.sba_pre_request(), public.match_knowledge(vector, integer, double precision, jsonb)
    to anon, authenticated, service_role;
