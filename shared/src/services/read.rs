//! The read path: hot users' read models from Redis in one round trip (DESIGN
//! §10), the rest from SQL (the rows and the erasure watermarks, two
//! statements per 1,000 users) and backfilled into Redis before
//! answering; status derived at the reader's `now`, and the visibility rule
//! applied on the way out.

use crate::domain::{Millis, Rules, UserId, UserRecord, View};
use crate::ports::{CacheViews, CacheWrite, HotCopy, StoreRead, Write};

/// Why a read could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("neither redis nor the database answered")]
    Unavailable,
}

/// What one read found.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    /// The views, in the order wanted.
    pub views: Vec<View>,
    /// Users whose hide was found only in Redis's visibility flag.
    pub adopt: Vec<UserId>,
    /// Users whose record Redis held.
    pub hits: usize,
    /// Users read from SQL (missing from Redis, or all when it was down).
    pub fallbacks: usize,
}

/// The read service over its ports.
#[derive(Clone)]
pub struct Reader<C, S> {
    pub cache: C,
    pub store: S,
    pub rules: Rules,
}

impl<C: CacheViews + CacheWrite, S: StoreRead> Reader<C, S> {
    /// Views of `users` (distinct, in the order wanted) as `viewer` sees
    /// them: the truth for the viewer's own id, the public view otherwise.
    pub async fn read(&self, users: &[UserId], viewer: Option<UserId>, now: Millis) -> Result<Vec<View>, ReadError> {
        self.read_adopting(users, viewer, now).await.map(|(views, _)| views)
    }

    /// [`Reader::read`], also naming the users whose hide was found only in
    /// Redis's visibility flag: the caller may adopt those hides into SQL
    /// (`Committer::adopt_hides`) so they survive a cache loss.
    pub async fn read_adopting(
        &self,
        users: &[UserId],
        viewer: Option<UserId>,
        now: Millis,
    ) -> Result<(Vec<View>, Vec<UserId>), ReadError> {
        self.read_counted(users, viewer, now).await.map(|read| (read.views, read.adopt))
    }

    /// [`Reader::read_adopting`], also saying where the records came from
    /// (the API's `RedisHits` and `SqlFallbacks` metrics).
    pub async fn read_counted(
        &self,
        users: &[UserId],
        viewer: Option<UserId>,
        now: Millis,
    ) -> Result<ReadOutcome, ReadError> {
        let (mut copies, flags, cache_up) = match self.cache.load_views(users).await {
            Ok(cached) => {
                let (copies, flags): (Vec<_>, Vec<_>) = cached.into_iter().map(|c| (c.copy, c.visible_flag)).unzip();
                (copies, flags, true)
            }
            Err(error) => {
                tracing::warn!(%error, "redis unavailable; reading from SQL");
                (vec![None; users.len()], vec![None; users.len()], false)
            }
        };

        let misses: Vec<UserId> = users.iter().zip(&copies).filter(|(_, c)| c.is_none()).map(|(u, _)| *u).collect();
        let (hits, fallbacks) = (users.len() - misses.len(), misses.len());
        if !misses.is_empty() {
            let mut durable = self.store.load(&misses).await.map_err(|error| {
                tracing::error!(%error, cache_up, "database unavailable for a read");
                ReadError::Unavailable
            })?;
            let mut filled: Vec<(UserId, UserRecord)> = Vec::with_capacity(misses.len());
            for (user, slot) in users.iter().zip(copies.iter_mut()) {
                if slot.is_none() {
                    // A user SQL has never seen is cached too (version 0), so
                    // a friend list full of unknown ids stops costing queries.
                    let record = durable.remove(user).unwrap_or_default();
                    filled.push((*user, record.clone()));
                    *slot = Some(HotCopy::Record(record));
                }
            }
            if cache_up {
                let writes: Vec<Write<'_>> =
                    filled.iter().map(|(user, record)| Write::derived(*user, record, now, &self.rules)).collect();
                if let Err(error) = self.cache.backfill(&writes, now).await {
                    tracing::warn!(%error, "backfill failed; answering from SQL anyway");
                }
            }
        }

        // Pure from here on: no await while the span is entered.
        let _derive = tracing::info_span!("derive", users = users.len()).entered();
        let mut adopt = Vec::new();
        let views = users
            .iter()
            .zip(copies)
            .zip(flags)
            .map(|((user, copy), flag)| {
                let is_self = viewer == Some(*user);
                // The contract's flag says hidden even though the copy may
                // not: hide, never leak, as of the copy's last write (a fixed
                // time, so the view does not move; the write path adopts the
                // hide at the same time). A read model answers exactly as its
                // record would (`ReadModel`), flag included.
                let (view, hidden_by_flag) = match copy.unwrap_or_else(|| HotCopy::Record(UserRecord::default())) {
                    HotCopy::ReadModel(mut summary) => {
                        let hidden = flag == Some(false) && summary.hide_for_flag(now);
                        (summary.view_for(is_self, now, &self.rules), hidden)
                    }
                    HotCopy::Record(mut record) => {
                        let hidden = flag == Some(false) && record.hide_for_flag(now);
                        (record.state.view_for(is_self, now, &self.rules), hidden)
                    }
                };
                if hidden_by_flag {
                    adopt.push(*user);
                }
                view
            })
            .collect();
        Ok(ReadOutcome { views, adopt, hits, fallbacks })
    }
}
