-- Resources, one row each. Bodies are kept as JSON text (not jsonb) so a read returns exactly
-- what was written, key order included; labels are jsonb because lists filter on them.
CREATE TABLE resources (
    type              TEXT   NOT NULL,
    mesh              TEXT   NOT NULL,
    name              TEXT   NOT NULL,
    version           BIGINT NOT NULL,
    spec              TEXT   NOT NULL,
    status            TEXT,
    labels            JSONB  NOT NULL DEFAULT '{}'::jsonb,
    creation_time     BIGINT NOT NULL,
    modification_time BIGINT NOT NULL,
    PRIMARY KEY (type, mesh, name)
);

CREATE INDEX resources_mesh ON resources (mesh);
CREATE INDEX resources_labels ON resources USING gin (labels);

-- Every change is announced to every replica; payloads stay far below NOTIFY's 8000 bytes.
CREATE FUNCTION kuma_notify_resource_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('kuma_resource_events', json_build_object(
            'op', 'delete', 'type', OLD.type, 'mesh', OLD.mesh, 'name', OLD.name, 'version', OLD.version)::text);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('kuma_resource_events', json_build_object(
        'op', lower(TG_OP), 'type', NEW.type, 'mesh', NEW.mesh, 'name', NEW.name, 'version', NEW.version)::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER resources_notify AFTER INSERT OR UPDATE OR DELETE ON resources
    FOR EACH ROW EXECUTE FUNCTION kuma_notify_resource_change();

-- Leader election: one row per election, held by whoever renewed it last before it expired.
CREATE TABLE leader_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
