-- The transactional outbox (DESIGN §6): every announcement (status_changed,
-- ...) is written here in the same transaction as the state change that
-- made it, and deleted once the bus accepted it. (user_id, version) names
-- the write that made it, which is also the event's id and its per-user
-- order.
CREATE TABLE IF NOT EXISTS status_outbox (
    user_id     BIGINT NOT NULL,
    version     BIGINT UNSIGNED NOT NULL,
    detail_type VARCHAR(64) NOT NULL,
    detail      TEXT NOT NULL,
    created_at  DATETIME(3) NOT NULL,
    PRIMARY KEY (user_id, version, detail_type),
    INDEX idx_outbox_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- The idle scanner's schedule, kept durable: when the user's derived status
-- may next change without a new event (NULL: only an event can change it).
-- A due index lost from Redis is rebuilt from this column's index.
ALTER TABLE user_status
    ADD COLUMN next_change_at DATETIME(3) NULL,
    ADD INDEX idx_next_change (next_change_at);

-- Rows written before the column existed: any that may still change are
-- due at once, so the first rebuild looks at them and sets the real time.
UPDATE user_status SET next_change_at = updated_at WHERE status <> 'offline' AND next_change_at IS NULL;
