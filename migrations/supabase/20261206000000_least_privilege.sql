-- Least privilege on SBA's Supabase schema (issue 13, ADR 0014).
--
-- Until now `authenticated` could select, insert, update and delete sessions, documents and
-- chunks of its whole tenant, and call add_knowledge_document and set_tenant_context: any
-- end user holding a Supabase JWT and the public anon key could go around SBA (delete the
-- tenant's knowledge base, rename other users' sessions, write unlimited documents) with no
-- validation, rate limit or audit. From here on:
--   * the API roles hold exactly what SBA's adapters use, and nothing deletes;
--   * a plain user sees and changes only its own sessions (`user_id = auth.jwt()->>'sub'`),
--     admins and services (role claim `admin` / `service`, set by SBA's direct-SQL adapter)
--     all of the tenant's; a session is only ever inserted for its caller;
--   * knowledge is written only through add_knowledge_document, which is `security definer`
--     and refuses every role claim but `admin`, `service` and Supabase's `service_role`;
--   * rows of a suspended tenant are invisible (active_tenant_id());
--   * set_tenant_context is the schema owner's alone: SBA calls it before `set local role`;
--   * every function pins its search_path;
--   * every stored CORS origin is a web origin (is_web_origin()).
-- PostgREST requests on behalf of admins and services go "through the service": the
-- service-role key, explicit tenant filters, and the tenant in the `X-SBA-Tenant` header,
-- which sba_pre_request honours for `service_role` requests only.

-- Functions: the search_path is pinned (a caller's path can then not redirect a name), and
-- `extensions` is named for Supabase projects that keep pgvector there.

-- The caller's tenant when it is active, else NULL (which matches no row). Security
-- definer, so the API roles need no access to `tenants`; policies call it as
-- `(select public.active_tenant_id())`, evaluated once per statement.
create function public.active_tenant_id() returns uuid
language sql stable security definer
set search_path = public, extensions, pg_temp
as $$
    select t.id from public.tenants t
    where t.id = public.current_tenant_id() and t.status = 'active'
$$;

-- Whether the JWT's role claim acts on every user's sessions of its tenant (the permission
-- matrix, docs/security.md): SBA's `admin` and `service`. Through PostgREST the role claim
-- is a database role, so only SBA's direct-SQL adapter ever presents these claims.
create function public.claims_see_whole_tenant() returns boolean
language sql stable
set search_path = public, extensions, pg_temp
as $$
    select coalesce(auth.jwt() ->> 'role', '') in ('admin', 'service')
$$;

-- The JWT's subject: the user a plain user's sessions belong to.
create function public.claims_subject() returns text
language sql stable
set search_path = public, extensions, pg_temp
as $$
    select auth.jwt() ->> 'sub'
$$;

-- Whether `origin` is a web origin as browsers send it: `http` or `https` `://` host
-- `[:port]`, lower case; the host a DNS name, an IPv4 address or a bracketed IPv6 address;
-- the port 1-65535; no path, query, fragment, user info or trailing slash. `null` and
-- `file:` origins are not web origins. The same rule as SBA's check when it loads a tenant.
create function public.is_web_origin(origin text) returns boolean
language plpgsql immutable
set search_path = public, extensions, pg_temp
as $$
declare
    parts text[] := regexp_match(origin, '^https?://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::([0-9]+))?$');
    host text := parts[1];
    port text := parts[2];
    octet constant text := '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
begin
    if parts is null then
        return false;
    end if;
    if port is not null and (port !~ '^[1-9][0-9]{0,4}$' or port::integer > 65535) then
        return false;
    end if;
    if left(host, 1) = '[' then
        begin
            return family(substr(host, 2, length(host) - 2)::inet) = 6;
        exception when invalid_text_representation then
            return false;
        end;
    end if;
    if host ~ '^[0-9.]+$' then
        return host ~ ('^(' || octet || '\.){3}' || octet || '$');
    end if;
    -- A DNS name: labels of letters, digits and inner hyphens; the last one not all digits
    -- (browsers read such a host as an IPv4 address).
    return length(host) <= 253
        and host ~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'
        and host !~ '(^|\.)[0-9]+$';
end
$$;

-- Whether every element of `origins` is a web origin (a NULL element is not).
create function public.are_web_origins(origins text[]) returns boolean
language sql immutable
set search_path = public, extensions, pg_temp
as $$
    select coalesce(bool_and(coalesce(public.is_web_origin(o), false)), true) from unnest(origins) as o
$$;

alter table public.tenants
    add constraint tenants_cors_origins_are_web_origins check (public.are_web_origins(cors_origins));

-- PostgREST's db-pre-request, now also for requests SBA makes with the service-role key on
-- behalf of an admin or a service: the tenant then comes from the `X-SBA-Tenant` header.
-- Only a `service_role` request (its role is the verified JWT's role claim) may name its
-- tenant that way; a user's tenant still comes from its token alone.
create or replace function public.sba_pre_request() returns void
language plpgsql volatile
set search_path = public, extensions, pg_temp
as $$
declare
    claims jsonb := coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb;
    headers jsonb := coalesce(nullif(current_setting('request.headers', true), ''), '{}')::jsonb;
    tenant text := coalesce(claims ->> 'tenant_id', claims -> 'app_metadata' ->> 'tenant_id');
begin
    if claims ->> 'role' = 'service_role' and current_user = 'service_role' then
        tenant := headers ->> 'x-sba-tenant';
    end if;
    if tenant is null
        or tenant !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
        tenant := '';
    end if;
    perform set_config('app.tenant_id', tenant, true);
end
$$;

-- Knowledge is written through this function only. Security definer (the API roles hold no
-- INSERT on the knowledge tables); it checks what a direct insert's privileges and policies
-- would have: a tenant context, an active tenant, and a role claim that the permission
-- matrix lets write documents (`admin`, `service`; `service_role` when SBA calls PostgREST
-- for them). Errors as before, and 42501 for a suspended tenant or another role claim.
create or replace function public.add_knowledge_document(
    document_id uuid,
    title text,
    source text,
    metadata jsonb,
    created_at timestamptz,
    chunks jsonb
) returns table (chunk_id uuid, ordinal integer)
language plpgsql volatile security definer
set search_path = public, extensions, pg_temp
as $$
#variable_conflict use_column
declare
    tenant uuid := public.current_tenant_id();
begin
    if tenant is null then
        raise exception 'add_knowledge_document needs a tenant context'
            using errcode = '42501';
    end if;
    if public.active_tenant_id() is distinct from tenant then
        raise exception 'add_knowledge_document needs an active tenant'
            using errcode = '42501';
    end if;
    -- `service_role` only as PostgREST's request role too (the `role` setting: a security
    -- definer function runs as its owner, but the setting stays the caller's).
    if not (coalesce(auth.jwt() ->> 'role', '') in ('admin', 'service')
            or (auth.jwt() ->> 'role' = 'service_role'
                and current_setting('role', true) = 'service_role')) then
        raise exception 'add_knowledge_document is for admins and services'
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

alter function public.current_tenant_id() set search_path = public, extensions, pg_temp;
alter function public.set_tenant_context(uuid) set search_path = public, extensions, pg_temp;
alter function public.match_knowledge(vector, integer, double precision, jsonb)
    set search_path = public, extensions, pg_temp;

-- Policies: the context's *active* tenant, and for sessions the caller's own rows unless
-- its claims see the whole tenant. Subqueries make each function an init plan, evaluated
-- once per statement rather than per row.
drop policy sessions_of_tenant on public.sessions;
drop policy documents_of_tenant on public.knowledge_documents;
drop policy chunks_of_tenant on public.knowledge_chunks;

create policy sessions_read on public.sessions
    for select to authenticated
    using (
        tenant_id = (select public.active_tenant_id())
        and (user_id = (select public.claims_subject()) or (select public.claims_see_whole_tenant()))
    );
create policy sessions_insert_own on public.sessions
    for insert to authenticated
    with check (
        tenant_id = (select public.active_tenant_id())
        and user_id = (select public.claims_subject())
    );
create policy sessions_update on public.sessions
    for update to authenticated
    using (
        tenant_id = (select public.active_tenant_id())
        and (user_id = (select public.claims_subject()) or (select public.claims_see_whole_tenant()))
    )
    with check (
        tenant_id = (select public.active_tenant_id())
        and (user_id = (select public.claims_subject()) or (select public.claims_see_whole_tenant()))
    );

create policy documents_read on public.knowledge_documents
    for select to authenticated
    using (tenant_id = (select public.active_tenant_id()));
create policy chunks_read on public.knowledge_chunks
    for select to authenticated
    using (tenant_id = (select public.active_tenant_id()));
-- For add_knowledge_document, which runs as the schema owner (bound by the forced row-level
-- security unless it bypasses it); no API role holds INSERT on these tables.
create policy documents_insert_by_rpc on public.knowledge_documents
    for insert
    with check (tenant_id = (select public.active_tenant_id()));
create policy chunks_insert_by_rpc on public.knowledge_chunks
    for insert
    with check (tenant_id = (select public.active_tenant_id()));

-- Privileges: nothing for the API roles but what the adapters use (docs/security.md,
-- "Supabase grants"). `service_role` bypasses row-level security, so its grants are all
-- that bound it.
revoke all on public.tenants, public.sessions, public.knowledge_documents, public.knowledge_chunks
    from public, anon, authenticated, service_role;
revoke all on function
    public.current_tenant_id(),
    public.set_tenant_context(uuid),
    public.sba_pre_request(),
    public.match_knowledge(vector, integer, double precision, jsonb),
    public.add_knowledge_document(uuid, text, text, jsonb, timestamptz, jsonb),
    public.active_tenant_id(),
    public.claims_see_whole_tenant(),
    public.claims_subject(),
    public.is_web_origin(text),
    public.are_web_origins(text[])
    from public, anon, authenticated, service_role;
revoke create on schema public from public, anon, authenticated;

-- Users (PostgREST with the user's token; the direct-SQL adapter as `authenticated`).
grant select, insert on public.sessions to authenticated;
grant update (title, metadata, updated_at) on public.sessions to authenticated;
grant select on public.knowledge_documents, public.knowledge_chunks to authenticated;

-- SBA with the service-role key: tenant lookups, and PostgREST work of admins and services.
grant select on public.tenants to service_role;
grant select, insert on public.sessions to service_role;
grant update (title, metadata, updated_at) on public.sessions to service_role;
grant select on public.knowledge_documents, public.knowledge_chunks to service_role;

-- PostgREST runs the pre-request function for every request, whatever its role.
grant execute on function public.sba_pre_request() to anon, authenticated, service_role;
grant execute on function
    public.current_tenant_id(),
    public.active_tenant_id(),
    public.claims_see_whole_tenant(),
    public.claims_subject(),
    public.match_knowledge(vector, integer, double precision, jsonb),
    public.add_knowledge_document(uuid, text, text, jsonb, timestamptz, jsonb)
    to authenticated, service_role;

-- Supabase grants the API roles everything on new objects of `public` by default (for the
-- owner that runs migrations): objects that later migrations create get no privilege unless
-- they grant it. PostgreSQL's own default, EXECUTE on every new function for PUBLIC, cannot
-- be revoked per schema: a new function revokes it itself.
alter default privileges in schema public revoke all on tables from anon, authenticated, service_role;
alter default privileges in schema public revoke all on sequences from anon, authenticated, service_role;
alter default privileges in schema public revoke all on functions from anon, authenticated, service_role;
