//! The client messages of one connection (DESIGN §12): subscribe with its
//! snapshot or exact resume, unsubscribe, ping, and the error frames.

use super::{frames, sent_of, token, Outgoing, StreamError, Streamer};
use crate::domain::stream::message::{self, ClientMessage, Refusal};
use crate::domain::stream::{frame, ConnectionId, Cursor, DataKind, Entry, ErrorCode};
use crate::domain::{AudienceRule, ViewerClass};
use crate::domain::{Millis, UserId};
use crate::ports::{
    Begin, CacheAudience, CacheViews, CacheWrite, ConnectionState, FramePoster, HeldChanges, Posted, Sent,
    StoreAudience, StoreRead, StreamRegistry,
};

impl<C, S, R, P> Streamer<C, S, R, P>
where
    C: CacheViews + CacheWrite + HeldChanges + CacheAudience,
    S: StoreRead + StoreAudience,
    R: StreamRegistry,
    P: FramePoster,
{
    /// One client message (`body`, as received) on `connection`: answers
    /// with frames posted to it, an `error` frame for a refused message
    /// (the connection's state untouched). Returns what an accepted
    /// subscribe did (`None` for any other message, or a refused one).
    ///
    /// When the registry or the stores fail (a timeout, a lock that stayed
    /// taken), the client gets an `error` frame `unavailable` and sends
    /// the message again (docs/DESIGN.md §12, the table of messages), rather than the
    /// gateway's bare `Internal server error`. Errors only when that frame
    /// could not be posted either, or the poster failed.
    pub async fn message(
        &self,
        connection: &ConnectionId,
        body: &[u8],
        now: Millis,
    ) -> Result<Option<Subscribed>, StreamError> {
        match self.answer(connection, body, now).await {
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, %connection, "a message could not be served; the client is told to send it again");
                let text = frame::error(ErrorCode::Unavailable, UNAVAILABLE);
                match self.post_control(connection, &text, now).await {
                    Ok(()) => Ok(None),
                    Err(_) => Err(error),
                }
            }
            outcome => outcome,
        }
    }

    async fn answer(
        &self,
        connection: &ConnectionId,
        body: &[u8],
        now: Millis,
    ) -> Result<Option<Subscribed>, StreamError> {
        match message::parse(body) {
            Ok(ClientMessage::Ping) => {
                if self.registry.is_connected(connection).await? {
                    self.post_control(connection, &frame::pong(), now).await.map(|()| None)
                } else {
                    self.end_unknown(connection, now).await.map(|()| None)
                }
            }
            Ok(ClientMessage::Unsubscribe { user_ids }) => {
                self.unsubscribe(connection, &user_ids, now).await.map(|()| None)
            }
            Ok(ClientMessage::Subscribe { user_ids, since }) => {
                self.subscribe(connection, &user_ids, since.as_deref(), now).await
            }
            Err(refusal) => self.refuse(connection, &refusal, now).await.map(|()| None),
        }
    }

    /// A message on a connection the registry does not know (ended,
    /// lapsed, or forgotten with every key when Redis lost its data): an
    /// `error` frame saying to connect again, then the connection closed
    /// (`DeleteConnection`), so that no client stays open hearing nothing
    /// (docs/DESIGN.md §12 "State and loss"). A close that fails is only
    /// logged: the client was told.
    async fn end_unknown(&self, connection: &ConnectionId, now: Millis) -> Result<(), StreamError> {
        self.refuse(connection, &unknown(), now).await?;
        if let Err(error) = self.poster.close(connection).await {
            tracing::warn!(%error, %connection, "an unregistered connection was not closed; it was told to connect again");
        }
        Ok(())
    }

    async fn refuse(&self, connection: &ConnectionId, refusal: &Refusal, now: Millis) -> Result<(), StreamError> {
        self.post_control(connection, &frame::error(refusal.code, &refusal.message), now).await
    }

    /// Posts a frame without `seq` (pong, unsubscribed, error).
    async fn post_control(&self, connection: &ConnectionId, text: &str, now: Millis) -> Result<(), StreamError> {
        match self.poster.post(connection, text).await? {
            Posted::Sent => Ok(()),
            Posted::Gone => self.disconnect(connection, now).await,
        }
    }

    async fn unsubscribe(&self, connection: &ConnectionId, users: &[UserId], now: Millis) -> Result<(), StreamError> {
        let token = token();
        match self.begin(connection, &token, &[]).await? {
            Begin::Ready(state) => {
                let removed = self.registry.unwatch(connection, users).await;
                self.release(connection, &token, state.viewer).await;
                removed?;
                self.post_control(connection, &frame::unsubscribed(users), now).await
            }
            _ => self.end_unknown(connection, now).await,
        }
    }

    async fn subscribe(
        &self,
        connection: &ConnectionId,
        users: &[UserId],
        since: Option<&str>,
        now: Millis,
    ) -> Result<Option<Subscribed>, StreamError> {
        let token = token();
        let state = match self.begin(connection, &token, users).await? {
            Begin::Ready(state) => state,
            _ => return self.end_unknown(connection, now).await.map(|()| None),
        };
        let added = state.holds.iter().filter(|held| !**held).count();
        if state.held.saturating_add(added) > self.settings.max_ids {
            self.release(connection, &token, state.viewer).await;
            let message = format!(
                "a connection holds at most {} distinct ids; it holds {} and this adds {}",
                self.settings.max_ids, state.held, added
            );
            return self.refuse(connection, &Refusal::new(ErrorCode::TooManyIds, message), now).await.map(|()| None);
        }
        let answered = self.watch_and_answer(connection, users, since, &token, &state, added, now).await;
        if answered.is_err() {
            // Best effort: the ids this subscribe added are dropped again,
            // so a client that does not send it again gets no changes of
            // ids it never had a whole snapshot of.
            let fresh: Vec<UserId> =
                users.iter().zip(&state.holds).filter(|(_, held)| !**held).map(|(user, _)| *user).collect();
            if let Err(undo) = self.registry.unwatch(connection, &fresh).await {
                tracing::warn!(error = %undo, %connection, "a failed subscribe's watches stay until they lapse");
            }
        }
        answered
    }

    /// The rest of an accepted subscribe, under the lock `token` holds:
    /// the ids watched, the entries read and the answer sent. Every error
    /// gives the lock back.
    #[allow(clippy::too_many_arguments)]
    async fn watch_and_answer(
        &self,
        connection: &ConnectionId,
        users: &[UserId],
        since: Option<&str>,
        token: &str,
        state: &ConnectionState,
        added: usize,
        now: Millis,
    ) -> Result<Option<Subscribed>, StreamError> {
        // Watch first, then read: a change committed after the read finds
        // this connection among its watchers and waits for the lock.
        let loaded = async {
            self.registry.watch(connection, users, state.lapse_ms).await?;
            Ok::<_, StreamError>(self.reader.load_models(users, now).await?)
        }
        .await;
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                self.release(connection, token, state.viewer).await;
                return Err(error);
            }
        };
        let rules = self.reader.rules;
        // The bulk read's entries for this viewer, audiences applied
        // (DESIGN §13).
        let audiences: Vec<AudienceRule> = loaded.models.iter().map(|found| found.model.audience).collect();
        let reader = state.viewer.reader();
        let allowed = self.reader.allowed(users, &audiences, reader, loaded.cache_up).await;
        let entries: Vec<Entry> = users
            .iter()
            .zip(&loaded.models)
            .zip(allowed)
            .map(|((user, found), allowed)| {
                Entry::for_viewer(*user, &found.model, ViewerClass::of(*user, reader), allowed, now, &rules)
            })
            .collect();
        let digests: Vec<u64> = entries.iter().map(Entry::digest).collect();

        // Which entries go out: all for a snapshot; for a resume, those
        // the cursor's connection had not sent as they are now.
        // Only a cursor still within its retention resumes, and only its
        // age is measured: an older one (or a forged `t`) is a reset,
        // counted as such, and would skew the age's statistics without
        // bound.
        let retention = self.settings.cursor_retention_ms;
        let cursor = since.and_then(Cursor::decode).filter(|c| !c.expired(now, retention));
        let cursor_age_ms = cursor.as_ref().map(|c| now.saturating_sub(c.issued_ms).max(0));
        let resume = match cursor {
            Some(cursor) => {
                match self.registry.sent_by(&cursor.connection, users).await {
                    // Same viewer, and a seq the connection reached: an
                    // edited cursor resets rather than skipping changes.
                    Ok(Some(by)) if by.viewer == state.viewer && by.last_seq.is_none_or(|last| cursor.seq <= last) => {
                        Some((cursor, by.sent))
                    }
                    Ok(_) => None,
                    Err(error) => {
                        self.release(connection, token, state.viewer).await;
                        return Err(error.into());
                    }
                }
            }
            None => None,
        };
        let subscribed = Subscribed {
            added,
            held: state.held.saturating_add(added),
            resume: since.map(|_| Resumed {
                log_entries: resume.as_ref().map_or(0, |(_, sent)| sent.iter().flatten().count()),
                cursor_age_ms,
                reset: resume.is_none(),
            }),
        };
        let (kind, reset, include): (DataKind, bool, Vec<bool>) = match &resume {
            Some((cursor, sent)) => {
                let changed = sent
                    .iter()
                    .zip(&digests)
                    .map(|(sent, digest)| !sent.is_some_and(|s| s.seq <= cursor.seq && s.digest == *digest))
                    .collect();
                (DataKind::Delta, false, changed)
            }
            None => (DataKind::Snapshot, since.is_some(), vec![true; users.len()]),
        };

        let order: Vec<usize> = (0..entries.len()).filter(|i| include[*i]).collect();
        let texts: Vec<String> = order.iter().map(|i| entries[*i].to_json()).collect();
        let outgoing: Vec<Outgoing> = frames(kind, connection, state.seq, &texts, reset, now);
        let last = outgoing.last().map_or(state.seq, |f| f.seq);
        let mut sent: Vec<(UserId, Sent)> = Vec::with_capacity(order.len());
        for out in &outgoing {
            for k in out.users.clone() {
                let i = order[k];
                sent.push(sent_of(&entries[i], digests[i], out.seq, loaded.models[i].version, now));
            }
        }
        // Entries the client already holds as they are: recorded as sent
        // in this answer, so a later resume from its cursor skips them.
        let also: Vec<(UserId, Sent)> = (0..entries.len())
            .filter(|i| !include[*i])
            .map(|i| sent_of(&entries[i], digests[i], last, loaded.models[i].version, now))
            .collect();
        self.send(connection, token, state, outgoing, sent, also, None, now).await?;
        Ok(Some(subscribed))
    }
}

/// What an accepted `subscribe` did (DESIGN §12), for the function's
/// metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribed {
    /// Ids new to the connection's set.
    pub added: usize,
    /// Distinct ids the connection holds after it (at most
    /// `STREAM_MAX_IDS`).
    pub held: usize,
    /// For a subscribe with `since`: how the resume went.
    pub resume: Option<Resumed>,
}

/// A subscribe with `since`: what it read of the change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resumed {
    /// Change-log entries the delta was computed from: the cursor's
    /// connection's sent state, one per (connection, subscribed user)
    /// that had one; 0 for a reset.
    pub log_entries: usize,
    /// How old the cursor was (ms since it was issued, 0 for one from
    /// a clock ahead, at most `STREAM_CURSOR_RETENTION_S`); `None` when it
    /// could not be decoded or was past its retention.
    pub cursor_age_ms: Option<Millis>,
    /// Answered by a `reset` snapshot: the cursor was malformed, foreign,
    /// unknown or older than `STREAM_CURSOR_RETENTION_S`.
    pub reset: bool,
}

/// The `unavailable` error frame's message.
const UNAVAILABLE: &str = "the service could not finish this message in time; send it again";

/// The refusal for a message on a connection the registry does not know
/// (ended, lapsed, or never registered).
fn unknown() -> Refusal {
    Refusal::new(ErrorCode::InvalidRequest, "the connection is not registered; connect again")
}
