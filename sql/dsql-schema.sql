-- public.users for Aurora DSQL: the same columns and the same unique key on cognito_user_id as
-- sql/schema.sql, written in what DSQL accepts: no PL/pgSQL (so no DO block; the key is part of
-- CREATE TABLE), one DDL statement per transaction (run this file with psql's default
-- autocommit, one statement at a time), and a secondary index, if one is ever added, built
-- asynchronously (CREATE INDEX ASYNC). Re-runnable. DSQL has a single database, `postgres`.
--
--   psql "host=<cluster>.dsql.<region>.on.aws user=admin dbname=postgres sslmode=verify-full" \
--        -f sql/dsql-schema.sql        (password: an admin token, docs/deploy.md)

CREATE TABLE IF NOT EXISTS public.users (
  uuid            uuid        NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
  display_name    text        NOT NULL,
  handle          text        NOT NULL,
  email           text        NOT NULL,
  cognito_user_id text        NOT NULL,
  created_at      timestamp   NOT NULL DEFAULT current_timestamp,
  CONSTRAINT users_cognito_user_id_key UNIQUE (cognito_user_id)
);

-- No index on `handle`: DSQL limits a secondary index key to 1 KiB, and a preferred_username of
-- 2048 characters takes up to 8 KiB, so the index would refuse that user's row (SQLSTATE 54000)
-- and lose them. DSQL has only btree indexes. Earlier versions of this file made one; it goes.
DROP INDEX IF EXISTS public.users_handle_idx;
