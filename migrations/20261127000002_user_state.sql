-- What the merge needs beyond the seed's columns:
--   version     compare-and-set guard; every write stores the previous + 1
--   write_token random per write, to tell which writer won a version
--   sessions    the per-session last-writer-wins registers, as JSON
--   hidden_at / hidden_last_active_at
--               when the user hid, and the last activity others still see
--   announced   the public status last published as status_changed
ALTER TABLE user_status
    ADD COLUMN version BIGINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN write_token BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN sessions MEDIUMTEXT NULL,
    ADD COLUMN hidden_at DATETIME(3) NULL,
    ADD COLUMN hidden_last_active_at DATETIME(3) NULL,
    ADD COLUMN announced ENUM('online', 'idle', 'offline') NULL;
