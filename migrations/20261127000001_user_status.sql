-- The seed's table: one row per user with the status derived at the time of
-- the last write. Timestamps are DATETIME(3) in UTC so an answer served from
-- SQL equals the one Redis gives, to the millisecond.
CREATE TABLE IF NOT EXISTS user_status (
    user_id        BIGINT NOT NULL PRIMARY KEY,
    status         ENUM('online', 'idle', 'offline') NOT NULL DEFAULT 'offline',
    last_active_at DATETIME(3) NULL,
    device_count   INT UNSIGNED NOT NULL DEFAULT 0,
    visible        BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at     DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    INDEX idx_last_active (last_active_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
