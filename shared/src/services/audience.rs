//! Audiences (DESIGN §13) in the services: setting one through the one
//! write path, reading one back, and applying the viewer rule on the read
//! path. The rule itself is [`crate::domain::audience`]; this module only
//! fetches what it needs: the except lists, and only for the users whose
//! record names one and viewers the list can matter for.
//!
//! # Cost on the read path
//!
//! A user who never set an audience carries [`AudienceRule::EVERYONE`] in
//! the read model already fetched, so reading them costs nothing more. A
//! rule alone (no list, or a service or the user themself asking) is
//! applied from the read model too. Only an end user asking about users
//! whose list names anyone asks the lists: one `SMISMEMBER` per such user,
//! each in that user's slot (a Redis Cluster sends them one pipeline per
//! primary, together), in the load's own round trip where the cache
//! guessed them ([`crate::ports::CacheViews::load_views_for`]) and in one
//! more otherwise, plus, for lists the cache lost, one SQL statement per
//! 1,000 lists, after which those lists are cached again.

use std::collections::HashMap;
use std::time::Duration;

use super::commit::{CommitError, CommitMode, CommitOutcome, Committer};
use super::read::{Loaded, ReadError, Reader};
use crate::domain::{Audience, AudienceRule, ListTag, Millis, UserId, UserRecord, View, ViewerClass};
use crate::ports::{
    CacheAudience, CacheRead, CacheViews, CacheWrite, ChangeFeed, ChangePublisher, ListAsk, Listed, Outbox,
    RepairBuffer, StoreAudience, StoreRead, StoreWrite,
};

/// How long a list no record names is kept before it is deleted: the
/// longest a Lambda invocation runs (15 min), so no writer can still be
/// committing a record that names it, and no reader still holds one.
pub const LIST_GRACE: Duration = Duration::from_secs(15 * 60);

impl<C, S> Reader<C, S>
where
    C: CacheViews + CacheWrite + CacheAudience,
    S: StoreRead + StoreAudience,
{
    /// Narrows `views` (one per user, each the entry an allowed viewer of
    /// the reader's kind reads) to what `reader` (an end user, or `None`
    /// for a service or the public route) may see under each user's
    /// audience at `now` ([`AudienceRule::entry`]), from what the load
    /// found (`loaded`): each user's rule, whether Redis answered (a Redis
    /// that is down is not asked again) and the lists the load asked
    /// already ([`Loaded::listed`]).
    pub async fn apply_audiences(
        &self,
        users: &[UserId],
        loaded: &Loaded,
        reader: Option<UserId>,
        views: &mut [View],
        now: Millis,
    ) {
        let rules: Vec<AudienceRule> = loaded.models.iter().map(|found| found.model.audience).collect();
        if rules.iter().all(|rule| *rule == AudienceRule::EVERYONE) {
            return;
        }
        let each = [(users, rules.as_slice(), reader)];
        let allowed = self.allowed_each_knowing(&each, &loaded.listed, loaded.cache_up).await.pop().unwrap_or_default();
        for ((view, rule), allowed) in views.iter_mut().zip(&rules).zip(allowed) {
            if !allowed {
                *view = rule.entry(false, std::mem::replace(view, View::UNKNOWN), now);
            }
        }
    }

    /// Whether `reader` (an end user, or `None` for a service or the
    /// public route) is in the audience of each of `users`, whose rules
    /// are `rules` ([`AudienceRule::allows`]). Lists are looked up only
    /// where the rule alone cannot say, in one round trip for all of them
    /// ([`Reader::listed`]); a list no store holds leaves the reader out.
    pub async fn allowed(
        &self,
        users: &[UserId],
        rules: &[AudienceRule],
        reader: Option<UserId>,
        cache_up: bool,
    ) -> Vec<bool> {
        self.allowed_each(&[(users, rules, reader)], cache_up).await.pop().unwrap_or_default()
    }

    /// [`Reader::allowed`] for several readers at once, each `(users,
    /// rules, reader)` answered in order, with the lists of all of them in
    /// one round trip (a fan-out's batch of connections).
    pub async fn allowed_each(
        &self,
        each: &[(&[UserId], &[AudienceRule], Option<UserId>)],
        cache_up: bool,
    ) -> Vec<Vec<bool>> {
        self.allowed_each_knowing(each, &[], cache_up).await
    }

    /// [`Reader::allowed_each`], taking the answers in `known` (asked with
    /// the load, [`crate::ports::CacheViews::load_views_for`]) where they
    /// are the same question and the cache held the list; the rest are
    /// asked.
    async fn allowed_each_knowing(
        &self,
        each: &[(&[UserId], &[AudienceRule], Option<UserId>)],
        known: &[Listed],
        cache_up: bool,
    ) -> Vec<Vec<bool>> {
        let known: HashMap<ListAsk, bool> =
            known.iter().filter_map(|(ask, listed)| listed.map(|listed| (*ask, listed))).collect();
        let mut allowed: Vec<Vec<bool>> = Vec::with_capacity(each.len());
        let mut asks: Vec<(usize, usize, ListAsk)> = Vec::new();
        for (k, (users, rules, reader)) in each.iter().enumerate() {
            let mut theirs = Vec::with_capacity(users.len());
            for (i, (user, rule)) in users.iter().zip(rules.iter()).enumerate() {
                let viewer = ViewerClass::of(*user, *reader);
                match (rule.asks_about(viewer), rule.list) {
                    (Some(viewer), Some(tag)) => {
                        let ask = ListAsk { user: *user, tag, viewer };
                        match known.get(&ask) {
                            Some(listed) => theirs.push(rule.allows(ViewerClass::User(viewer), *listed)),
                            None => {
                                asks.push((k, i, ask));
                                theirs.push(false);
                            }
                        }
                    }
                    _ => theirs.push(rule.allows(viewer, false)),
                }
            }
            allowed.push(theirs);
        }
        if asks.is_empty() {
            return allowed;
        }
        let questions: Vec<ListAsk> = asks.iter().map(|(_, _, ask)| *ask).collect();
        let listed = self.listed(&questions, cache_up).await;
        for ((k, i, ask), listed) in asks.into_iter().zip(listed) {
            let rule = each[k].1[i];
            allowed[k][i] = listed.is_some_and(|listed| rule.allows(ViewerClass::User(ask.viewer), listed));
        }
        allowed
    }

    /// Whether each ask's list names its viewer: from the cache, and for
    /// what it lacks from the durable store, whose lists are then cached
    /// again. `None` where no store holds the list (or SQL is down as
    /// well), which every caller reads as "not allowed".
    pub async fn listed(&self, asks: &[ListAsk], cache_up: bool) -> Vec<Option<bool>> {
        let mut answers = vec![None; asks.len()];
        let mut cache_up = cache_up;
        if cache_up {
            match self.cache.listed(asks).await {
                Ok(cached) => answers = cached,
                Err(error) => {
                    tracing::warn!(%error, "redis unavailable for except lists; reading them from SQL");
                    cache_up = false;
                }
            }
        }
        let mut missing: Vec<(UserId, ListTag)> =
            asks.iter().zip(&answers).filter(|(_, a)| a.is_none()).map(|(ask, _)| (ask.user, ask.tag)).collect();
        if missing.is_empty() {
            return answers;
        }
        missing.sort_unstable();
        missing.dedup();
        let lists = match self.store.load_lists(&missing).await {
            Ok(lists) => lists,
            Err(error) => {
                tracing::error!(%error, lists = missing.len(), "except lists unreadable; those viewers are left out");
                return answers;
            }
        };
        for (ask, answer) in asks.iter().zip(answers.iter_mut()) {
            if answer.is_none() {
                *answer = lists.get(&(ask.user, ask.tag)).map(|ids| ids.binary_search(&ask.viewer).is_ok());
            }
        }
        if cache_up && !lists.is_empty() {
            let puts: Vec<(UserId, ListTag, &[UserId])> =
                lists.iter().map(|((user, tag), ids)| (*user, *tag, ids.as_slice())).collect();
            if let Err(error) = self.cache.put_lists(&puts).await {
                tracing::warn!(%error, "except lists not cached again; the next read asks SQL too");
            }
        }
        answers
    }

    /// `user`'s audience as stored (DESIGN §13 `GET
    /// /v1/users/{id}/audience`), from the durable store: everyone's for a
    /// user who never set one. Errors: [`ReadError::Unavailable`] when SQL
    /// does not answer.
    pub async fn audience_of(&self, user: UserId) -> Result<Audience, ReadError> {
        let unavailable = |error: crate::ports::StoreError| {
            tracing::error!(%error, %user, "audience unreadable");
            ReadError::Unavailable
        };
        let records: HashMap<UserId, UserRecord> = self.store.load(&[user]).await.map_err(unavailable)?;
        let rule = records.get(&user).map_or(AudienceRule::EVERYONE, |r| r.state.audience);
        let ids = match rule.list {
            None => Vec::new(),
            Some(tag) => {
                let mut lists = self.store.load_lists(&[(user, tag)]).await.map_err(unavailable)?;
                lists.remove(&(user, tag)).unwrap_or_else(|| {
                    // Readers fail closed meanwhile: every end user asked
                    // about is left out until the audience is set again.
                    tracing::error!(%user, "the stored audience names a list no row holds");
                    Vec::new()
                })
            }
        };
        // A stored list is at most MAX_EXCEPT ids (checked when read).
        Audience::new(rule.default, ids, rule.last_seen).map_err(|_| ReadError::Unavailable)
    }
}

impl<C, S, R, P, F> Committer<C, S, R, P, F>
where
    C: CacheRead + CacheWrite + CacheAudience,
    S: StoreWrite + Outbox + StoreAudience,
    R: RepairBuffer,
    P: ChangePublisher,
    F: ChangeFeed,
{
    /// Sets `user`'s audience at `now` (DESIGN §13), with the authority of
    /// a hide (§4 property 4): its list is stored first, under a new tag,
    /// in SQL and then in Redis; then the rule goes into the record through
    /// the one write path, which must reach Redis before it is
    /// acknowledged (Redis down from the start: nothing changes; failing
    /// after the durable write: the change stands, the user goes to the
    /// repair buffer, and the call fails so its retry rewrites Redis). No
    /// other write changes the rule, so nothing the service does undoes
    /// it. A change of the public view is announced like any transition.
    /// Lists no record names any more are deleted after [`LIST_GRACE`].
    pub async fn set_audience(
        &self,
        user: UserId,
        audience: &Audience,
        now: Millis,
    ) -> Result<CommitOutcome, CommitError> {
        let tag = (!audience.except().is_empty()).then(|| ListTag(rand::random()));
        if let Some(tag) = tag {
            self.store.put_list(user, tag, audience.except(), now).await?;
            // Readers that miss it in Redis read it from SQL, so this may
            // fail without failing the call.
            if let Err(error) = self.cache.put_lists(&[(user, tag, audience.except())]).await {
                tracing::warn!(%error, %user, "except list not cached; readers take it from SQL");
            }
        }
        let rule = audience.rule(tag.unwrap_or(ListTag(0)));
        let change = |_: UserId, record: &mut UserRecord, _: Millis| {
            record.state.audience = rule;
            false
        };
        let outcome = self.commit_with(&[user], now, &change, CommitMode { cache_required: true, shows: false }).await;
        // An erasure between the list's write and the record's deleted the
        // list; the record that landed after it names it, so it is written
        // again (also when the commit failed after its durable write).
        if let Some(tag) = tag {
            match self.store.restore_list(user, rule, audience.except(), now).await {
                Ok(true) => {
                    if let Err(error) = self.cache.put_lists(&[(user, tag, audience.except())]).await {
                        tracing::warn!(%error, %user, "except list not cached; readers take it from SQL");
                    }
                }
                Ok(false) => {}
                Err(error) => tracing::error!(%error, %user, "except list not checked after the audience write"),
            }
        }
        let outcome = outcome?;
        let before = now.saturating_sub(LIST_GRACE.as_millis() as Millis);
        if let Err(error) = self.store.prune_lists(user, tag, before).await {
            tracing::warn!(%error, %user, "old except lists not pruned yet; the next change prunes them");
        }
        Ok(outcome)
    }
}
