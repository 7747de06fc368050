-- public.users: one row per confirmed Cognito user.
--
-- Idempotent: safe to run again on a database that already has the table, including one created
-- by the original seed schema without the unique key. The tests and the local stack apply exactly
-- this file.

-- Sign-ups never queue behind this file for long: a step that must lock the table (the first time
-- only: each one below is skipped when already done) gives up after 1 s (under the function's
-- default statement cap, 1.8 s) rather than wait behind a long transaction or a VACUUM while every
-- INSERT waits behind it. Run it again later.
SET lock_timeout = '1s';

CREATE TABLE IF NOT EXISTS public.users (
  uuid            uuid        NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
  display_name    text        NOT NULL,
  handle          text        NOT NULL,
  email           text        NOT NULL,
  cognito_user_id text        NOT NULL,
  created_at      timestamp   NOT NULL DEFAULT current_timestamp
);

-- The key that makes the trigger idempotent: Cognito's retries and repeated events meet
-- `ON CONFLICT (cognito_user_id) DO NOTHING` and write nothing. Added separately so that a table
-- from the seed schema gets it too (this fails loudly if that table already holds duplicates).
DO $$
BEGIN
  IF NOT EXISTS (
    SELECT 1 FROM pg_constraint
    WHERE conrelid = 'public.users'::regclass AND conname = 'users_cognito_user_id_key'
  ) THEN
    ALTER TABLE public.users
      ADD CONSTRAINT users_cognito_user_id_key UNIQUE (cognito_user_id);
  END IF;
END
$$;

-- `handle` is deliberately NOT unique: Cognito does not guarantee unique preferred_username
-- values unless the pool makes it an alias, and refusing a confirmed user because someone else
-- chose the same handle would lose that user. Look-ups by handle still want an index, and it is
-- a hash index: a btree entry may not exceed 2704 bytes, while a preferred_username of 2048
-- characters takes up to 8 KiB, and a btree would refuse that user's row (SQLSTATE 54000).
-- A hash index stores a 4-byte hash whatever the length and serves `WHERE handle = ...`.
-- One block, so that it does all or nothing whether or not the caller stops on errors. The index
-- is created only if missing (CREATE INDEX IF NOT EXISTS would lock the table before it looks);
-- one not valid (a CREATE INDEX CONCURRENTLY failed, or still running) is an error, and the block
-- does nothing. Then the btree that earlier versions of this file made goes. On a large table,
-- build the hash index with CREATE INDEX CONCURRENTLY before running this file (README, "The
-- database"): built here, it holds sign-ups back while it builds.
DO $$
BEGIN
  IF to_regclass('public.users_handle_hash_idx') IS NULL THEN
    CREATE INDEX users_handle_hash_idx ON public.users USING hash (handle);
  ELSIF NOT (SELECT indisvalid FROM pg_index
             WHERE indexrelid = to_regclass('public.users_handle_hash_idx')) THEN
    RAISE EXCEPTION 'index users_handle_hash_idx is not valid: a CREATE INDEX CONCURRENTLY failed, '
      'or is still running'
      USING HINT = 'If pg_stat_progress_create_index shows no build, drop it with DROP INDEX '
        'CONCURRENTLY and build it again; then run this file again (README, "The database").';
  END IF;
  DROP INDEX IF EXISTS public.users_handle_idx;
END
$$;

RESET lock_timeout;
