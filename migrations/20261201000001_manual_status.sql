-- The manual status of DESIGN §7.1, part of the user's record so it is
-- written by the same compare-and-set as everything else:
--   manual_status     the status as set, JSON {"state", "message",
--                     "expires_at_ms"}; NULL for none. Readers apply the
--                     expiry at their own clock, so an expired value left
--                     here is never shown.
--   manual_announced  the manual status last published as
--                     manual_status_changed (JSON, NULL for none)
ALTER TABLE user_status
    ADD COLUMN manual_status TEXT NULL,
    ADD COLUMN manual_announced TEXT NULL;
