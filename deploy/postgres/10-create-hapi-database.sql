-- Creates HAPI FHIR's own database next to ours in the compose stack's single Postgres.
--
-- The postgres image runs the files in /docker-entrypoint-initdb.d once, as POSTGRES_USER
-- (outreach) against POSTGRES_DB (outreach), and only when the data volume is empty.
-- An existing volume keeps whatever it has: see docs/compose.md ("Starting over").
--
-- These are local-stack credentials: the Postgres port is not published outside the
-- compose network. Use your own database server for anything real.
CREATE ROLE hapi LOGIN PASSWORD 'hapi';
CREATE DATABASE hapi OWNER hapi;
