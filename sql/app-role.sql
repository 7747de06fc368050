-- The database role the function logs in as (through RDS Proxy): it may INSERT into public.users
-- the five columns its statement names, and read the cognito_user_id column, and nothing else (no
-- other column, no chosen `uuid`, no UPDATE, DELETE or TRUNCATE, no other table, no CREATE). The
-- trigger's statement needs both: INSERT, and SELECT on cognito_user_id because
-- `ON CONFLICT (cognito_user_id)` reads the arbiter column (tests/integration/least_privilege.rs
-- shows INSERT alone is refused); the backfill's dry run reads only that column too. Nobody's
-- email or name can be read with the function's secret, and `uuid`, which other tables may
-- reference, always comes from its default.
--
-- Run after sql/schema.sql, in the application database, as the table's owner (on RDS: the master
-- user); re-runnable:
--   psql "$ADMIN_URL" -v app_role=cognito_post_confirmation -f sql/app-role.sql
-- Then give the role the password stored in the function's secret (rotation keeps them in step),
-- in an interactive psql, so that it lands in no shell history, process list or server log:
--   \password cognito_post_confirmation
-- The tests and the local stack run the function as a role made by exactly this file.

\set ON_ERROR_STOP on
\if :{?app_role}
\else
  \set app_role cognito_post_confirmation
\endif

-- One transaction: sessions see the role's rights before the file or after it, never between its
-- REVOKEs and its GRANTs (a re-run on a live database refuses no sign-up), and a file stopped by
-- an error changes nothing.
BEGIN;

-- Before PostgreSQL 15 every role (PUBLIC) may create objects in schema public, and nothing done
-- to one role takes that away. Taking it from PUBLIC is the database owner's call (15 made it the
-- default), so this file stops, having changed nothing, until it is done.
DO $$
BEGIN
  IF EXISTS (
    SELECT 1 FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
    WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE'
  ) THEN
    RAISE EXCEPTION 'every role (PUBLIC) may create objects in schema public, the function''s too'
      USING HINT = 'Run REVOKE CREATE ON SCHEMA public FROM PUBLIC (the default since PostgreSQL '
        '15), then this file again. Nothing was changed.';
  END IF;
END
$$;

SELECT format('CREATE ROLE %I LOGIN', :'app_role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app_role') \gexec

-- No rights from other roles it is a member of (the memberships go last), and no role or
-- database creation.
SELECT format('ALTER ROLE %I LOGIN NOCREATEDB NOCREATEROLE NOINHERIT', :'app_role') \gexec

-- Server-side backstops for every session of this role (the function never sends SET: RDS Proxy
-- would pin the session). The function gives up on an INSERT at the invocation's deadline and
-- drops its connection, but a statement already running on the server (waiting on a lock, say)
-- goes on until it ends; statement_timeout ends it within 3 s (under the function's 4 s Lambda
-- timeout and Cognito's 5 s) and rolls it back. The function refuses a DB_STATEMENT_TIMEOUT_MS
-- above 3000 (src/config.rs, ROLE_STATEMENT_TIMEOUT_MS) and template.yaml allows at most 1800:
-- change all three together (README, "Time budget").
-- client_connection_check_interval ends a statement whose client is gone where the proxy closes
-- the server connection; idle_in_transaction_session_timeout ends a transaction left open.
SELECT format('ALTER ROLE %I SET statement_timeout = %L', :'app_role', '3s') \gexec
SELECT format('ALTER ROLE %I SET client_connection_check_interval = %L', :'app_role', '250ms') \gexec
SELECT format('ALTER ROLE %I SET idle_in_transaction_session_timeout = %L', :'app_role', '5s') \gexec

-- Start from nothing in this schema, then grant exactly what is needed.
SELECT format('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %I', :'app_role') \gexec
SELECT format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM %I', :'app_role') \gexec
SELECT format('REVOKE ALL ON SCHEMA public FROM %I', :'app_role') \gexec
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'app_role') \gexec
SELECT format('GRANT INSERT (display_name, email, handle, cognito_user_id, created_at), '
  'SELECT (cognito_user_id) ON public.users TO %I', :'app_role') \gexec

-- Last, no membership in another role but rds_iam (how RDS lets it log in with an IAM token):
-- NOINHERIT above keeps a membership's rights from applying by themselves, but not from being
-- taken with SET ROLE, and from PostgreSQL 16 a grant made WITH INHERIT TRUE inherits anyway. A
-- membership this user may not revoke (granted by another role, on 16 or later) stops the file
-- here with PostgreSQL's error, having changed nothing.
SELECT format('REVOKE %I FROM %I', r.rolname, :'app_role')
  || coalesce(' GRANTED BY ' || quote_ident(g.rolname), '')
FROM pg_auth_members m
JOIN pg_roles r ON r.oid = m.roleid
LEFT JOIN pg_roles g ON g.oid = m.grantor
WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = :'app_role') AND r.rolname <> 'rds_iam'
\gexec

COMMIT;
