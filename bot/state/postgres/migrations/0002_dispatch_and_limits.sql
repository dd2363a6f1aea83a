-- What the App dispatched for each build (bot/builds.py, run_mismatch), and the command
-- limits (bot/limits.py) shared by every replica.
ALTER TABLE builds
    ADD COLUMN dispatch_event text,
    ADD COLUMN workflow_id bigint,
    ADD COLUMN workflow_path text,
    ADD COLUMN dispatch_branch text,
    ADD COLUMN dispatched_at double precision,
    ADD COLUMN dispatch_run_id bigint;
CREATE INDEX builds_repo_state ON builds (repo, state);

CREATE TABLE command_permissions (
    repo text NOT NULL,
    login text NOT NULL,
    allowed boolean NOT NULL,
    at double precision NOT NULL,
    PRIMARY KEY (repo, login)
);
CREATE INDEX command_permissions_at ON command_permissions (at);
CREATE TABLE command_refusals (
    repo text NOT NULL,
    pr bigint NOT NULL,
    login text NOT NULL,
    at double precision NOT NULL,
    PRIMARY KEY (repo, pr, login)
);
CREATE INDEX command_refusals_at ON command_refusals (at);
CREATE TABLE preview_starts (
    installation_id bigint NOT NULL,
    repo text NOT NULL,
    pr bigint NOT NULL,
    at double precision NOT NULL
);
CREATE INDEX preview_starts_installation ON preview_starts (installation_id, at);
CREATE INDEX preview_starts_pr ON preview_starts (repo, pr, at);
