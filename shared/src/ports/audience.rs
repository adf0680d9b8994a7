//! The ports of audiences (DESIGN §13): the except lists, cached and
//! durable. The rule without its list travels in the user's record like
//! any other part of it; only the lists live here, each under the
//! [`ListTag`] its record names.

use std::collections::HashMap;
use std::future::Future;

use super::{CacheError, StoreError};
use crate::domain::{AudienceRule, ListTag, Millis, UserId};

/// One question to an except list: does `user`'s list stored under `tag`
/// name `viewer`?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListAsk {
    pub user: UserId,
    pub tag: ListTag,
    pub viewer: UserId,
}

/// A question asked of the cached lists, with the cache's answer as
/// [`CacheAudience::listed`] gives it.
pub type Listed = (ListAsk, Option<bool>);

/// Except lists in the hot cache: asked only for users whose record names
/// a list, and only for end-user viewers other than the user, so a read of
/// users without an audience never touches them.
pub trait CacheAudience: Send + Sync {
    /// One round trip for all `asks`, answered in their order: `Some`
    /// whether the list names the viewer, when the cache holds the list
    /// under that tag; `None` when it does not (never cached, evicted,
    /// flushed, or held under another tag), and the caller must ask the
    /// durable store.
    fn listed(&self, asks: &[ListAsk]) -> impl Future<Output = Result<Vec<Option<bool>>, CacheError>> + Send;

    /// Replaces each user's cached list by `ids` under `tag` (at most
    /// 1,000 ids each); one round trip, each list replaced atomically.
    fn put_lists(&self, lists: &[(UserId, ListTag, &[UserId])]) -> impl Future<Output = Result<(), CacheError>> + Send;
}

/// Except lists in the durable store.
pub trait StoreAudience: Send + Sync {
    /// The lists stored under the tags wanted; one statement per 1,000. A
    /// list absent from the answer was never stored, or was pruned, or
    /// cannot be read: the caller fails closed.
    fn load_lists(
        &self,
        wanted: &[(UserId, ListTag)],
    ) -> impl Future<Output = Result<HashMap<(UserId, ListTag), Vec<UserId>>, StoreError>> + Send;

    /// Stores `user`'s list `ids` (ascending, distinct, at most 1,000)
    /// under `tag` at `now` (epoch ms). Idempotent.
    fn put_list(
        &self,
        user: UserId,
        tag: ListTag,
        ids: &[UserId],
        now: Millis,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores `user`'s list `ids` under `rule`'s tag again when the user's
    /// record still names `rule`, in one statement that an erasure's
    /// transaction cannot interleave with: an erasure that landed between
    /// the list's first write and the record's deleted the list, leaving
    /// the record naming none (DESIGN §13). Nothing happens when the record
    /// is gone or names another rule, so an erased user keeps no list.
    /// Answers whether the list was written. Idempotent.
    fn restore_list(
        &self,
        user: UserId,
        rule: AudienceRule,
        ids: &[UserId],
        now: Millis,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes `user`'s lists stored before `before` (epoch ms) other than
    /// `keep`: lists no record names any more, once no writer can still be
    /// committing a record that names them.
    fn prune_lists(
        &self,
        user: UserId,
        keep: Option<ListTag>,
        before: Millis,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
