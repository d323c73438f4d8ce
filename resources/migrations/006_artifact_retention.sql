-- Artifact retention: every artifact goes by a rule (promotion/retention.py), and the row says why it went.
--
-- deleted_reason: the rule that deleted it (or the blue deletion after the rollback window). The indexes serve
-- the retention pass, which reads the live artifacts and what still needs each: the deployments restored from
-- it and the pending deletion of a blue backup.
ALTER TABLE ops.artifacts ADD COLUMN IF NOT EXISTS deleted_reason text;
CREATE INDEX IF NOT EXISTS artifacts_live ON ops.artifacts (environment_id, role, created_at)
    WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS deployments_by_artifact ON ops.deployments (artifact_id)
    WHERE state <> 'deleted';
