-- labbot's state on PostgreSQL: webhook deliveries, the job queue, the build ledger.
-- Applied once, in a transaction, by bot/pgstore.py (tracked in schema_migrations).
-- Timestamps are seconds since the epoch (double precision) from the App's clock, as in the
-- SQLite queue, so that both backends pass the same contract tests with an injected clock.

CREATE TABLE deliveries (
    delivery_id text PRIMARY KEY,
    event text NOT NULL,
    action text,
    received_at double precision NOT NULL,
    outcome text NOT NULL,
    job_count integer NOT NULL DEFAULT 0,
    duplicates integer NOT NULL DEFAULT 0
);
CREATE INDEX deliveries_received ON deliveries (received_at);

CREATE TABLE jobs (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    repo text NOT NULL,
    pr bigint,
    head_sha text NOT NULL,
    installation_id bigint,
    payload text NOT NULL,  -- JSON text, kept verbatim (jsonb would refuse "\u0000")
    delivery_id text,
    state text NOT NULL CHECK (state IN ('pending', 'leased', 'done', 'dead', 'superseded')),
    superseded boolean NOT NULL DEFAULT false,
    attempts integer NOT NULL DEFAULT 0,
    expirations integer NOT NULL DEFAULT 0,
    run_after double precision NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    lease_owner text,
    lease_expires_at double precision,
    finished_at double precision,
    outcome text,
    last_error text
);

-- Coalescing: at most one active, unflagged job per key (a backstop: enqueues of one group
-- are serialised by an advisory lock, so they never race into it).
CREATE UNIQUE INDEX jobs_active_key
    ON jobs (repo, COALESCE(pr, -1), kind, head_sha)
    WHERE state IN ('pending', 'leased') AND NOT superseded;
CREATE INDEX jobs_group ON jobs (repo, COALESCE(pr, -1), kind, head_sha, finished_at)
    WHERE state = 'done';
CREATE INDEX jobs_pending ON jobs (id, run_after) WHERE state = 'pending';
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE state = 'leased';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('done', 'dead', 'superseded');

-- The advisory lock that serialises enqueues of one supersede group (repo, pr, kind).
CREATE FUNCTION labbot_group_key(p_repo text, p_pr bigint, p_kind text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('labbot:group:' || p_repo || '#' || COALESCE(p_pr::text, '-')
                            || ':' || p_kind, 0)
$$;

-- Enqueue one job: coalesce with an active job of the same key (or a recent successful one,
-- within p_window seconds), supersede the group's other head SHAs, insert, and wake the
-- listening workers when the transaction commits. Returns the job id.
CREATE FUNCTION labbot_enqueue(
    p_kind text, p_repo text, p_pr bigint, p_sha text, p_inst bigint, p_payload text,
    p_delivery text, p_now double precision, p_run_after double precision,
    p_window double precision
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(labbot_group_key(p_repo, p_pr, p_kind));
    SELECT id INTO v_id FROM jobs
     WHERE repo = p_repo AND COALESCE(pr, -1) = COALESCE(p_pr, -1) AND kind = p_kind
       AND head_sha = p_sha AND state IN ('pending', 'leased') AND NOT superseded;
    IF FOUND THEN
        RETURN v_id;
    END IF;
    IF p_window > 0 THEN
        SELECT id INTO v_id FROM jobs
         WHERE repo = p_repo AND COALESCE(pr, -1) = COALESCE(p_pr, -1) AND kind = p_kind
           AND head_sha = p_sha AND state = 'done' AND NOT superseded
           AND finished_at >= p_now - p_window
         ORDER BY id DESC LIMIT 1;
        IF FOUND THEN
            RETURN v_id;
        END IF;
    END IF;
    UPDATE jobs SET superseded = true, updated_at = p_now,
           state = CASE state WHEN 'pending' THEN 'superseded' ELSE state END,
           finished_at = CASE state WHEN 'pending' THEN p_now ELSE finished_at END
     WHERE repo = p_repo AND COALESCE(pr, -1) = COALESCE(p_pr, -1) AND kind = p_kind
       AND head_sha <> p_sha AND state IN ('pending', 'leased') AND NOT superseded;
    INSERT INTO jobs (kind, repo, pr, head_sha, installation_id, payload, delivery_id, state,
                      run_after, created_at, updated_at)
    VALUES (p_kind, p_repo, p_pr, p_sha, p_inst, p_payload, p_delivery, 'pending',
            p_run_after, p_now, p_now)
    RETURNING id INTO v_id;
    PERFORM pg_notify('labbot_jobs', '');
    RETURN v_id;
END
$$;

-- Record a batch of webhook deliveries and enqueue their jobs, in the caller's transaction:
-- the group commit of bot/intake.py in one round trip. p_batch is a JSON array of
-- {"id", "event", "action", "window", "outcome" (null: queued/no_jobs), "jobs": [{"kind",
-- "repo", "pr", "head_sha", "installation_id", "payload"}]}. Returns, per delivery, true when it was new.
-- Every advisory lock the batch needs is taken first, in one global order, so two replicas
-- recording overlapping batches wait for each other instead of deadlocking.
CREATE FUNCTION labbot_record_deliveries(p_batch json, p_now double precision)
RETURNS boolean[] LANGUAGE plpgsql AS $$
DECLARE
    v_key bigint;
    v_record json;
    v_job json;
    v_duplicates integer;
    v_results boolean[] := '{}';
BEGIN
    FOR v_key IN
        SELECT DISTINCT k FROM (
            SELECT hashtextextended('labbot:delivery:' || (r.value->>'id'), 0) AS k
              FROM json_array_elements(p_batch) r
            UNION ALL
            SELECT labbot_group_key(j.value->>'repo', (j.value->>'pr')::bigint,
                                    j.value->>'kind')
              FROM json_array_elements(p_batch) r, json_array_elements(r.value->'jobs') j
        ) keys ORDER BY k
    LOOP
        PERFORM pg_advisory_xact_lock(v_key);
    END LOOP;
    FOR v_record IN SELECT value FROM json_array_elements(p_batch) LOOP
        INSERT INTO deliveries (delivery_id, event, action, received_at, outcome, job_count)
        VALUES (v_record->>'id', v_record->>'event', v_record->>'action', p_now,
                COALESCE(v_record->>'outcome',
                         CASE WHEN json_array_length(v_record->'jobs') > 0 THEN 'queued'
                              ELSE 'no_jobs' END),
                json_array_length(v_record->'jobs'))
        ON CONFLICT (delivery_id) DO UPDATE SET duplicates = deliveries.duplicates + 1
        RETURNING duplicates INTO v_duplicates;
        IF v_duplicates > 0 THEN
            v_results := v_results || false;
            CONTINUE;
        END IF;
        FOR v_job IN SELECT value FROM json_array_elements(v_record->'jobs') LOOP
            PERFORM labbot_enqueue(
                v_job->>'kind', v_job->>'repo', (v_job->>'pr')::bigint, v_job->>'head_sha',
                (v_job->>'installation_id')::bigint, v_job->>'payload', v_record->>'id',
                p_now, p_now, (v_record->>'window')::double precision);
        END LOOP;
        v_results := v_results || true;
    END LOOP;
    RETURN v_results;
END
$$;

-- Lease the oldest runnable job for p_worker: a pending job whose run_after has come, or a
-- leased job whose lease expired (its worker is presumed dead). Expired leases that cannot
-- run again are settled first. SKIP LOCKED: concurrent workers take different jobs and never
-- wait for each other.
CREATE FUNCTION labbot_lease(
    p_worker text, p_now double precision, p_lease double precision, p_max integer
) RETURNS SETOF jobs LANGUAGE plpgsql AS $$
DECLARE
    v_pending bigint;
    v_expired bigint;
BEGIN
    UPDATE jobs SET state = 'superseded', expirations = expirations + 1,
           last_error = 'lease expired after being superseded',
           finished_at = p_now, updated_at = p_now
     WHERE id IN (SELECT id FROM jobs
                   WHERE state = 'leased' AND lease_expires_at <= p_now AND superseded
                   FOR UPDATE SKIP LOCKED);
    UPDATE jobs SET state = 'dead', expirations = expirations + 1,
           last_error = 'lease expired ' || (expirations + 1) || ' times',
           finished_at = p_now, updated_at = p_now
     WHERE id IN (SELECT id FROM jobs
                   WHERE state = 'leased' AND lease_expires_at <= p_now AND attempts >= p_max
                   FOR UPDATE SKIP LOCKED);
    SELECT id INTO v_pending FROM jobs
     WHERE state = 'pending' AND run_after <= p_now
     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED;
    SELECT id INTO v_expired FROM jobs
     WHERE state = 'leased' AND lease_expires_at <= p_now
     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF v_pending IS NULL AND v_expired IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE jobs SET expirations = expirations + (state = 'leased')::integer,
           state = 'leased', attempts = attempts + 1, lease_owner = p_worker,
           lease_expires_at = p_now + p_lease, updated_at = p_now
     WHERE id = LEAST(COALESCE(v_pending, v_expired), COALESCE(v_expired, v_pending))
    RETURNING *;
END
$$;

-- The build ledger (bot/builds.py's tables).
CREATE TABLE builds (
    id bigserial PRIMARY KEY,
    repo text NOT NULL,
    sha text NOT NULL,
    installation_id bigint,
    state text NOT NULL,
    check_run_id bigint,
    run_id bigint,
    run_url text,
    failed_job_url text,
    conclusion text,
    superseded_by bigint,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL
);
CREATE INDEX builds_repo_sha ON builds (repo, sha);
CREATE INDEX builds_repo_run ON builds (repo, run_id);
CREATE TABLE build_prs (
    build_id bigint NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    pr bigint NOT NULL,
    leaves text NOT NULL,
    PRIMARY KEY (build_id, pr)
);
