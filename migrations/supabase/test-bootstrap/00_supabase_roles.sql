-- What a Supabase project already has and a plain PostgreSQL lacks: the API roles and
-- auth.jwt(). Applied by the tests (and for self-hosting without Supabase) before the
-- migrations in migrations/supabase/; never pushed to Supabase (`supabase db push` takes
-- only migrations/supabase/*.sql).
--
-- Roles are cluster-wide and tests create databases in parallel: creation tolerates a
-- concurrent creator.
-- Catalog rows of roles are shared by every database: concurrent updates fail with "tuple
-- concurrently updated", so a role is only ever created (with its attributes), never altered.
do $$
declare
    role_name text;
begin
    foreach role_name in array array['anon', 'authenticated', 'service_role'] loop
        if not exists (select 1 from pg_roles where rolname = role_name) then
            begin
                execute format(
                    'create role %I nologin noinherit %s',
                    role_name,
                    case when role_name = 'service_role' then 'bypassrls' else '' end
                );
            exception when duplicate_object or unique_violation then
                null;
            end;
        end if;
    end loop;
    if not (select rolbypassrls from pg_roles where rolname = 'service_role') then
        raise exception 'role service_role exists without BYPASSRLS';
    end if;
end
$$;

create schema if not exists auth;

-- Supabase's auth.jwt(): the verified claims PostgREST put in `request.jwt.claims`.
create or replace function auth.jwt() returns jsonb
language sql stable
as $$
    select coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;

grant usage on schema auth to anon, authenticated, service_role;
