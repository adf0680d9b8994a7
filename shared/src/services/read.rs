//! The read path: hot users' read models from Redis in one round trip (DESIGN
//! §10), the rest from SQL (the rows and the erasure watermarks, two
//! statements per 1,000 users) and backfilled into Redis before
//! answering; status derived at the reader's `now`, and the visibility rule
//! applied on the way out.

use crate::domain::{Millis, ReadModel, Rules, UserId, UserRecord, View};
use crate::ports::{CacheAudience, CacheViews, CacheWrite, HotCopy, Listed, StoreAudience, StoreRead, Write};

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

impl<C, S> Reader<C, S>
where
    C: CacheViews + CacheWrite + CacheAudience,
    S: StoreRead + StoreAudience,
{
    /// Views of `users` (distinct, in the order wanted) as `viewer` sees
    /// them: the truth for the viewer's own id, the public view otherwise,
    /// each narrowed by the user's audience (DESIGN §13).
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
        let loaded = self.load_models_for(users, viewer, now).await?;
        let mut views: Vec<View> = {
            // Pure: no await while the span is entered.
            let _derive = tracing::info_span!("derive", users = users.len()).entered();
            users
                .iter()
                .zip(&loaded.models)
                .map(|(user, found)| found.model.view_for(viewer == Some(*user), now, &self.rules))
                .collect()
        };
        self.apply_audiences(users, &loaded, viewer, &mut views, now).await;
        Ok(ReadOutcome { views, adopt: loaded.adopt, hits: loaded.hits, fallbacks: loaded.fallbacks })
    }
}

impl<C: CacheViews + CacheWrite, S: StoreRead> Reader<C, S> {
    /// What the read path knows of `users` (distinct, in the order wanted)
    /// at `now`: each one's read model with any hide found only in the
    /// visibility flag applied ([`found_model`]), and its version. Every
    /// entry the service shows, on the bulk read and on the push path
    /// (DESIGN §12), is [`ReadModel::view_for`] of one of these.
    pub async fn load_models(&self, users: &[UserId], now: Millis) -> Result<Loaded, ReadError> {
        self.load_models_for(users, None, now).await
    }

    /// [`Reader::load_models`] for `reader`; for an end user, the except
    /// lists the cache guesses will matter are asked in the same round
    /// trip ([`CacheViews::load_views_for`], [`Loaded::listed`]).
    pub async fn load_models_for(
        &self,
        users: &[UserId],
        reader: Option<UserId>,
        now: Millis,
    ) -> Result<Loaded, ReadError> {
        let cached = match reader {
            Some(reader) => self.cache.load_views_for(users, reader).await,
            None => self.cache.load_views(users).await.map(|views| (views, Vec::new())),
        };
        let (mut copies, flags, mut versions, cache_up, listed) = match cached {
            Ok((cached, listed)) => {
                let mut copies = Vec::with_capacity(cached.len());
                let mut flags = Vec::with_capacity(cached.len());
                let mut versions = Vec::with_capacity(cached.len());
                for c in cached {
                    copies.push(c.copy);
                    flags.push(c.visible_flag);
                    versions.push(c.version);
                }
                (copies, flags, versions, true, listed)
            }
            Err(error) => {
                tracing::warn!(%error, "redis unavailable; reading from SQL");
                (vec![None; users.len()], vec![None; users.len()], vec![0; users.len()], false, Vec::new())
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
            for ((user, slot), version) in users.iter().zip(copies.iter_mut()).zip(versions.iter_mut()) {
                if slot.is_none() {
                    // A user SQL has never seen is cached too (version 0), so
                    // a friend list full of unknown ids stops costing queries.
                    let record = durable.remove(user).unwrap_or_default();
                    *version = record.version;
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

        let mut adopt = Vec::new();
        let models = users
            .iter()
            .zip(copies)
            .zip(flags)
            .zip(versions)
            .map(|(((user, copy), flag), version)| {
                let (model, hidden_by_flag) = found_model(copy, flag, now);
                if hidden_by_flag {
                    adopt.push(*user);
                }
                Found { model, version }
            })
            .collect();
        Ok(Loaded { models, adopt, hits, fallbacks, cache_up, listed })
    }
}

/// One user as [`Reader::load_models`] found them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Answers every viewer at any `now` ([`ReadModel::view_for`]).
    pub model: ReadModel,
    /// The record version the copy was read at (`v`, §5); 0 for a user
    /// never stored.
    pub version: u64,
}

/// What [`Reader::load_models`] found.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// One per user, in the order wanted.
    pub models: Vec<Found>,
    /// Users whose hide was found only in Redis's visibility flag.
    pub adopt: Vec<UserId>,
    /// Users whose record Redis held.
    pub hits: usize,
    /// Users read from SQL.
    pub fallbacks: usize,
    /// Whether Redis answered the load.
    pub cache_up: bool,
    /// Except lists asked in the load's round trip, with the cache's
    /// answers ([`CacheViews::load_views_for`]): guesses, each usable only
    /// where the model read names the same list.
    pub listed: Vec<Listed>,
}

/// The read model a copy answers with, and whether a hide was found only
/// in the flag (DESIGN §4 property 4): the contract's flag says hidden even
/// though the copy may not, so hide, never leak, as of the copy's last
/// write (a fixed time, so the view does not move; the write path adopts
/// the hide at the same time). A whole record answers through its read
/// model, which answers exactly as the record would (`ReadModel`, property
/// tested in `domain/read_model/tests.rs`). No copy at all is a user never
/// seen. The one function every entry is made from.
pub fn found_model(copy: Option<HotCopy>, flag: Option<bool>, now: Millis) -> (ReadModel, bool) {
    let mut model = match copy {
        Some(HotCopy::ReadModel(model)) => model,
        Some(HotCopy::Record(record)) => ReadModel::of(&record.state, record.written_ms),
        None => ReadModel::of(&UserRecord::default().state, 0),
    };
    let hidden = flag == Some(false) && model.hide_for_flag(now);
    (model, hidden)
}
