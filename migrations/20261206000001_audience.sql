-- Audiences, DESIGN §13 (PUT/GET /v1/users/{id}/audience).
--   user_status.audience  the rule without its list, part of the record so
--                         the same compare-and-set writes it and every
--                         reader has it with the rest: e|n (default
--                         everyone or nobody), w|c (last seen none or
--                         coarse), then :tag when anyone is listed. NULL
--                         for a user who never set one (everyone).
--   user_audience         the except lists, one row per tag: the record
--                         names the tag of its list, so a reader never
--                         takes one audience's list for another's. A list
--                         is written before the record that names it and
--                         the rows no record names any more are deleted
--                         later (at least 15 minutes after they were made,
--                         the longest a writer can still be committing).
--     except_ids          the listed ids, ascending and distinct, in
--                         decimal, split by commas (at most 1,000)
-- An erasure deletes the user's rows here with the user_status row.
ALTER TABLE user_status
    ADD COLUMN audience VARCHAR(48) NULL;

CREATE TABLE IF NOT EXISTS user_audience (
    user_id    BIGINT NOT NULL,
    tag        BIGINT UNSIGNED NOT NULL,
    except_ids MEDIUMTEXT NOT NULL,
    created_at DATETIME(3) NOT NULL,
    PRIMARY KEY (user_id, tag)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
