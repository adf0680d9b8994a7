-- The erasure watermark of DESIGN §7.1 (DELETE /v1/users/{id}): all that is
-- left of an erased user, and nothing about them beyond the id.
--   erased_at     the service clock at the last erasure: events stamped at
--                 or before it are ignored, so a replay of the topic never
--                 brings the erased history back
--   last_version  the version the erasure took: the user's next write is
--                 numbered after it, so an event_id ({user}-{version}-...)
--                 is never used twice
-- Kept for as long as the user id may appear again (no expiry): dropping a
-- row would let a replay restore the history and restart the versions.
CREATE TABLE IF NOT EXISTS user_erasure (
    user_id      BIGINT NOT NULL PRIMARY KEY,
    erased_at    DATETIME(3) NOT NULL,
    last_version BIGINT UNSIGNED NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
